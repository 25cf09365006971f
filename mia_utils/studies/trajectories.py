"""Chapter 04's allocation and shift questions on another zoo victim."""

from __future__ import annotations

from collections.abc import Iterable

from .. import probes, specs
from ..datasets import class_sample, distribution_shift
from ..images import image_hashes


def class_shift_study(victim: str, elsewhere: str, classes: Iterable[int], ts, window: int, n_dev: int = 32, *,
                      device="auto", batch_size: int = 256, seed: int = 0, n_boot: int = 1000) -> tuple[dict, dict]:
    """``probes.shift_study`` on the zoo victim ``victim``: its members, its non-members, and
    non-members "collected elsewhere": images of the data set ``elsewhere`` of the given
    ``classes`` only, none of them a member (content hashes excluded)."""
    model = specs.load_model(victim, device=device, batch_size=batch_size)
    sets = specs.load_membership_sets(f"{victim}/members", f"{victim}/nonmembers", model=model, seed=seed)
    other = class_sample(elsewhere, list(classes), n_dev + len(sets.members_eval), seed=seed,
                         exclude=image_hashes(sets.members()))
    return probes.shift_study(model, sets, other, ts, window, n_dev, seed, n_boot)


# the groups whose parameter gradients are taken (costlier: the four classes of the origin probe)
THETA_GROUPS = ("members", "external", "generated (DDPM)", "generated (DDIM)")


def image_groups(sets, n_dev: int, generated: dict, others: dict, shift: str) -> dict:
    """Every image set of chapter 04, each a (development, evaluation) pair: the members and the
    external non-members (``probes.dev_eval``), the victim's generations by sampler
    (``generated ({sampler})``), the other generators' images, and the external images under a
    ``datasets.distribution_shift`` (``external, shifted``); evaluation parts of the members'
    size."""
    n_ev = len(sets.members_eval)
    groups = {**probes.dev_eval(sets, n_dev),
              **{f"generated ({k})": (v[:n_dev], v[n_dev:n_dev + n_ev]) for k, v in generated.items()},
              **{k: (v[:n_dev], v[n_dev:n_dev + n_ev]) for k, v in others.items()}}
    groups["external, shifted"] = tuple(distribution_shift(x, shift) for x in groups["external"])
    return groups


def feature_sets(ts, theta_ts) -> dict:
    """The probes' feature sets: {name: (kinds, time steps, forward queries and backward passes
    per image)}: L_t; L_t and the input gradient; both and the parameter gradient at ``theta_ts``."""
    return {"L_t": (["loss"], ts, len(ts), 0),
            "L_t + ∇x": (["loss", "grad_x"], ts, len(ts), len(ts)),
            "L_t + ∇x + ∇θ (∇θ steps)": (["loss", "grad_x", "grad_theta"], theta_ts, 2 * len(theta_ts),
                                         2 * len(theta_ts))}


def metrics_rows(membership: dict, shifted: dict, replication_shift: dict, sets_: dict, shift: str) -> dict:
    """The rows of chapter 04's metrics.json: every membership probe (members vs external), the
    model-blind probe, both again against the shifted non-members, and the second victim's L_t and
    model-blind probes per panel (``replication_shift``: ``class_shift_study``'s, or empty)."""
    rows = {f"trajectory probe {k} (members vs external)": membership[probes.probe_name(k)] for k in sets_}
    rows[probes.BLIND_PROBE] = membership[probes.BLIND_PROBE]
    rows[f"trajectory probe L_t + ∇x ({shift}ed non-members)"] = shifted[probes.probe_name("L_t + ∇x")]
    rows[f"model-blind probe ({shift}ed non-members)"] = shifted[probes.BLIND_PROBE]
    for panel, panel_rows in replication_shift.items():
        for name in (probes.probe_name("L_t"), probes.BLIND_PROBE):
            rows[f"{name} (Fashion-MNIST, non-members {panel})"] = panel_rows[name]
    return rows
