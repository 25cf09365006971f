"""Chapter 02's replication: one attack on several zoo victims, each with its own members."""

from __future__ import annotations

from collections.abc import Iterable

from .. import specs
from ..harness import evaluate


def evaluate_victims(victims: Iterable[str], attack, grid=None, *, device="auto", batch_size: int = 256,
                     seed: int = 0, n_boot: int = 1000, **hyper) -> dict[str, dict]:
    """``harness.evaluate`` on each zoo victim (``zoo:NAME``) with its own members and non-members.

    Returns {spec: result}; each result's ``victim`` holds the data set, the member count and
    the image shape, for the row labels.
    """
    out = {}
    for spec in victims:
        model = specs.load_model(spec, device=device, batch_size=batch_size)
        sets = specs.load_membership_sets(f"{spec}/members", f"{spec}/nonmembers", model=model, seed=seed)
        result = evaluate(attack, model, sets, grid, n_boot=n_boot, boot_seed=seed, **hyper)
        recipe = specs.recipe(spec)
        result["victim"] = {"dataset": recipe.dataset if recipe else "folder", "shape": model.sample_shape,
                            "members": len(sets.members_cal) + len(sets.members_eval)}
        out[spec] = result
    return out
