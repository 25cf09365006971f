"""The honest protocol: run an attack, measure what it costs, report it on held-out images.

``evaluate(attack, model, sets, grid)`` is the protocol every chapter follows:

1. for each setting of the grid (a time step, a (t_sec, k) pair, …): zero the query counters,
   score the four parts of the ``MembershipSets`` (calibration and evaluation members and
   non-members), and keep the wall time and the counted queries per image (``measure``);
2. choose the setting with the best *calibration* AUC and report it on the *evaluation*
   split, with bootstrap CIs (``metrics.honest_and_oracle``); the setting with the best
   evaluation AUC is kept as the labelled oracle;
3. attach to both rows the measured cost of the setting actually chosen, the attack's access
   level, and the FPR/TPR that the calibration threshold at 1 % FPR realises on evaluation.

The counted queries must equal the registry's declared cost; a mismatch is an error (the cost
column of every table is measured, and the declaration is checked against it).

``measure`` and ``report`` are the two halves of that protocol for a study that scores in its
own way (``studies``): the measured cost of a block of work, and the evaluation row of scores
on the four parts with the thresholds set on calibration. The tables are in ``tables``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from . import attacks as _attacks
from . import metrics
from .data import MembershipSets
from .metrics import honest_and_oracle
from .models import DiffusionModel

EVAL = ("members_eval", "nonmembers_eval")


def settings(grid) -> dict:
    """A grid as {label: hyper-parameters}: a mapping as it is, or time steps as {t: {"t": t}}."""
    if isinstance(grid, Mapping):
        return dict(grid)
    return {int(t): {"t": int(t)} for t in grid}


class PartViews:
    """A latent or text-to-image target (``pipelines.Target``) prepared for the harness: each
    part's latents z_0 (encoded once: the posterior mean, or with ``mode="sample"`` a seeded
    sample) and the model bound to that part's captions (or to the empty prompt,
    ``captions=False``) at ``guidance``. ``evaluate`` takes it where it takes a
    model; ``encoder_passes`` counts the VAE's passes, apart from the UNet's queries."""

    def __init__(self, target, sets: MembershipSets, captions: bool = True, guidance: float = 1.0,
                 latents: Mapping | None = None, mode: str = "mean", seed: int = 0):
        self.model = target.model
        parts = sets.parts()
        before = target.codec.encoder_queries if target.codec is not None else 0
        # z_0 = s·μ(x) (mode "mean"), or s·(μ + σ n) with n seeded by (seed, the image) (mode "sample")
        self.inputs = dict(latents) if latents is not None else {p: target.encode(x, mode, seed) for p, x in parts.items()}
        self.encoder_passes = (target.codec.encoder_queries - before) if target.codec is not None else 0
        self.views = {p: target.bind(sets.captions_of(p) if captions else None, n=len(x), guidance=guidance)
                      for p, x in parts.items()}


def _models(model, hyper: dict) -> list[DiffusionModel]:
    """Every model an attack call queries: the target and any model among its hyper-parameters."""
    model = model.model if isinstance(model, PartViews) else model
    others = _attacks.models_in({k: v.model if isinstance(v, PartViews) else v for k, v in hyper.items()})
    return [model, *[v for v in others if v is not model]]


def _calls(model, sets: MembershipSets, hyper: dict) -> dict:
    """part -> (model, images, hyper) of each part's call; a PartViews gives each part its own view
    and latents (the hyper-parameters' PartViews, e.g. a base, theirs)."""
    def part_of(value, part):
        return value.views[part] if isinstance(value, PartViews) else value

    if isinstance(model, PartViews):
        return {part: (model.views[part], model.inputs[part], {k: part_of(v, part) for k, v in hyper.items()})
                for part in sets.parts()}
    return {part: (model, images, hyper) for part, images in sets.parts().items()}


def _guidance(model) -> float:
    return getattr(next(iter(model.views.values())), "guidance", 1.0) if isinstance(model, PartViews) else 1.0


def _guided_cost(attack, model, hyper: dict) -> int:
    """The declared queries per image, each query of a model bound at guidance γ ≠ 1 counted twice
    (ε̂(∅) and ε̂(c)); the noise probe's inversion is paid by the model that inverts."""
    declared = attack.queries_per_image(**hyper)
    g_target, g_base = _guidance(model) != 1.0, _guidance(hyper.get("base")) != 1.0
    if attack.name != "noise_probe":
        return declared * (2 if g_target else 1)
    h = attack.check_hyper(hyper)
    generation = h["generation_steps"]
    inversion = declared - generation
    inverter = g_base if h["noise"] == "semantic" else g_target
    return inversion * (2 if inverter else 1) + generation * (2 if g_target else 1)


@contextmanager
def measure(models: Iterable, n_images: int, declared: float | None = None, what: str = "") -> Iterator[dict]:
    """Measure a block of work: the query counters of ``models`` (``DiffusionModel``s; None
    and repeats ignored) are zeroed on entry; on exit the yielded dict holds ``queries_per_image``
    (every model counted, over ``n_images``), ``seconds`` and ``images_per_second``. With
    ``declared``, counted queries that differ from it are an error naming ``what``."""
    models = list({id(m): m for m in models if m is not None}.values())
    for m in models:
        m.reset_queries()
    cost: dict = {}
    t0 = time.perf_counter()
    yield cost
    seconds = time.perf_counter() - t0
    queries = sum(m.reset_queries() for m in models) / n_images
    if declared is not None and not np.isclose(queries, declared, rtol=1e-12, atol=0):
        raise RuntimeError(f"{what} declares {declared:g} queries per image but made {queries:g}: "
                           "fix its registry entry (attacks.ATTACKS) or the attack.")
    cost.update(queries_per_image=queries, seconds=seconds, images_per_second=n_images / seconds)


def calibration_key(fpr: float) -> str:
    """The row key of the threshold set on calibration at ``fpr``: ``calibrated_at_1pct_fpr``."""
    return f"calibrated_at_{100 * fpr:g}pct_fpr"


def report(scores: Mapping[str, np.ndarray], n_boot: int = 1000, seed: int = 0, setting: str | None = None,
           calibrate: Iterable[float] = (0.01,), **extra) -> dict:
    """The evaluation row of scores on the four parts ({part: scores}): ``metrics.evaluate`` on
    the evaluation split (``extra``: cost, access …), the ``setting``, and for each FPR of
    ``calibrate`` the FPR/TPR that the threshold set on the calibration non-members realises on
    evaluation (``calibration_key``)."""
    row = metrics.evaluate(scores["members_eval"], scores["nonmembers_eval"], n_boot=n_boot, seed=seed, **extra)
    if setting is not None:
        row["setting"] = setting
    for fpr in calibrate:
        row[calibration_key(fpr)] = metrics.calibrated(scores["members_cal"], scores["nonmembers_cal"],
                                                       scores["members_eval"], scores["nonmembers_eval"], fpr=fpr)
    return row


def score_parts(attack, model: DiffusionModel | PartViews, sets: MembershipSets, hyper: dict) -> tuple[dict, dict]:
    """One setting on the four parts: ({part: scores}, cost) with measured queries per image
    (every queried model counted), seconds and images per second."""
    attack = _attacks.get(attack) if isinstance(attack, str) else attack
    n_images = sum(len(x) for x in sets.parts().values())
    calls = _calls(model, sets, hyper)
    # per image, and what each call pays once (RMIA's population samples), spread over the images
    declared = _guided_cost(attack, model, hyper) + attack.queries_per_call(**hyper) * len(calls) / n_images
    with measure(_models(model, hyper), n_images, declared, f"{attack.name} with {hyper}") as cost:
        scores = {part: attack(m, x, **h) for part, (m, x, h) in calls.items()}
    return scores, cost


def evaluate(attack, model: DiffusionModel, sets: MembershipSets, grid: Iterable | Mapping | None = None,
             n_boot: int = 1000, boot_seed: int = 0, **hyper) -> dict:
    """The honest protocol for one attack over a grid of settings (module docstring).

    ``attack``: a registry name or ``attacks.Attack``; ``grid``: {label: hyper} or time steps
    (None: the attack's defaults, one setting); ``hyper``: fixed hyper-parameters of every
    setting (the attack's own ``seed`` among them); ``boot_seed`` seeds the bootstrap.
    Returns {"attack", "title", "access", "honest": row, "oracle": row,
    "scores": {part: {label: scores}}, "cost": {label: cost}}; rows as ``metrics.evaluate``
    writes them plus ``setting``, ``access``, ``queries_per_image``, ``seconds`` and
    ``images_per_second`` (of the chosen setting), and ``calibrated_at_1pct_fpr``.
    """
    attack = _attacks.get(attack) if isinstance(attack, str) else attack
    if isinstance(attack, _attacks.FeatureAttack):
        raise ValueError(f"{attack.name} gives features, not scores: its probe is trained on calibration "
                         "(studies.secmi_pia.evaluate_gsa, probes.membership, or mia-book score).")
    grid = {"default": {}} if grid is None else settings(grid)
    if not grid:
        raise ValueError("The grid is empty: give at least one setting.")
    scores: dict[str, dict] = {part: {} for part in sets.parts()}
    cost = {}
    for label, setting in grid.items():
        by_part, cost[label] = score_parts(attack, model, sets, {**hyper, **setting})
        for part, s in by_part.items():
            scores[part][label] = s
    result = honest_and_oracle(**scores, n_boot=n_boot, seed=boot_seed)
    for row in (result["honest"], result["oracle"]):
        row.update(cost[row["setting"]], access=attack.access)
    return {"attack": attack.name, "title": attack.title, "access": attack.access, **result,
            "scores": scores, "cost": cost}


def chosen_scores(result: dict, part: str) -> np.ndarray:
    """The scores of one part at the setting the calibration split chose."""
    return result["scores"][part][result["honest"]["setting"]]


def score_chosen(result: dict, model: DiffusionModel, images, grid=None, **hyper) -> np.ndarray:
    """Score new images (a suspect set) with ``evaluate``'s attack at the setting its calibration
    split chose; ``grid`` and ``hyper`` as given to ``evaluate``."""
    setting = ({"default": {}} if grid is None else settings(grid))[result["honest"]["setting"]]
    return _attacks.get(result["attack"])(model, images, **hyper, **setting)
