"""Chapter 09's study: LiRA and RMIA against a target with R reference models, and how their
TPR at low FPR grows with R.

The signal (``attacks._reference.loss_signals``: the per-pixel ε-loss at each t over K fixed
noises) is computed once per model and image, then every attack and every number of references
k is a computation on those arrays: the curve over k costs no further query. The arrays are the
ones ``attacks.lira.score`` and ``attacks.rmia.score`` compute (``tests/test_studies.py`` checks
that the study's scores equal the registry's). Cost: (1 + R) · K · len(ts) queries per image and
per population sample, counted by ``harness.measure``.

LiRA's σ here is the global one (Carlini et al. for fewer than ~64 references), pooled over the
calibration parts' images (no membership label of the target is used, only which references
hold each image), so no evaluated image's score depends on another's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import specs
from ..attacks import lira, rmia
from ..attacks._reference import loss_signals
from ..data import MembershipSets
from ..datasets import load_dataset
from ..harness import calibration_key, measure, report
from ..images import folder_images
from ..metrics import with_exact_intervals
from ..models import DiffusionModel
from ..references import ReferenceModels
from ..zoo import split_of as zoo_split
from ..zoo.recipes import LIRA_REFERENCES, RECIPES, reference_name

CAL = ("members_cal", "nonmembers_cal")
FPRS = (0.01, 0.001)  # the FPRs whose thresholds are set on calibration and read on evaluation
# the study's attack variants: registry name and fixed parameters
VARIANTS = {
    "LiRA online": ("lira", {"online": True}),
    "LiRA offline": ("lira", {"online": False}),
    "RMIA online": ("rmia", {"online": True}),
    "RMIA offline": ("rmia", {"online": False}),
}
# the fewest references each variant runs with when they come in complementary pairs: LiRA's σ is
# a spread over models, so each calibration image must be on each side of 2 references (two pairs;
# one pair gives σ = 0); offline RMIA averages OUT models, so each image must be OUT of one (a
# pair); online RMIA averages whatever models there are.
MIN_REFERENCES = {"LiRA online": 4, "LiRA offline": 4, "RMIA online": 1, "RMIA offline": 2}
ACCESS = "gray box + k references"


def zoo_references(target: str = "fashion-lira", n: int = LIRA_REFERENCES, device: str = "auto",
                   batch_size: int = 256) -> ReferenceModels:
    """The zoo's first ``n`` reference models of ``target`` (trained when not cached)."""
    return ReferenceModels.load([specs.folder(f"zoo:{reference_name(r, target)}") for r in range(n)], device=device,
                                batch_size=batch_size)


def zoo_population(n: int, target: str = "fashion-lira", seed: int = 0) -> torch.Tensor:
    """RMIA's z: ``n`` images of the target's data set outside its population (members +
    non-members, the halves every reference is trained on), drawn with ``seed``, in data-set order."""
    split = zoo_split(target)
    data = load_dataset(split.dataset)
    pool = np.array(sorted(set(range(len(data))) - set(split.index("members")) - set(split.index("nonmembers"))))
    if n > len(pool):
        raise ValueError(f"{n} population samples asked but {target}'s data set holds {len(pool)} outside its population.")
    return data[np.sort(np.random.default_rng(seed).choice(pool, n, replace=False))]


def inputs(checkpoint: str, references: str, population: str, model: DiffusionModel, n_population: int | None = 2000,
           seed: int = 0, device: str = "auto", batch_size: int = 256, resize: bool = False):
    """(``ReferenceModels``, z) as chapter 09's parameters name them: ``references`` "zoo" (the
    zoo's references of a ``zoo:`` target) or a folder of reference folders (each with
    ``members.json``); ``population`` "zoo" (``zoo_population``) or a folder of images none of the
    models was trained on (the first ``n_population`` in name order; None: all)."""
    zoo_target = str(checkpoint).removeprefix("zoo:") if str(checkpoint).startswith("zoo:") else None
    if "zoo" in (references, population) and zoo_target is None:
        raise ValueError(f"references/population = 'zoo' need a zoo: target, not {checkpoint!r}: give folders.")
    if references == "zoo":
        if reference_name(0, zoo_target) not in RECIPES:
            raise ValueError(f"The zoo holds no reference models of {zoo_target} (it does of fashion-lira): give "
                             "references= a folder of reference models.")
        refs = zoo_references(zoo_target, device=device, batch_size=batch_size)
    else:
        refs = ReferenceModels.from_folder(references, device=device, batch_size=batch_size)
    if population == "zoo":
        z = zoo_population(n_population or 2000, zoo_target, seed)
    else:
        z = folder_images(population, model.sample_shape, resize=resize)[:n_population]
    return refs, z


@dataclass
class Signals:
    """L_t of every part's images and of the population z under the target and each reference."""

    target: dict[str, np.ndarray]       # part -> [N, T]
    references: dict[str, np.ndarray]   # part -> [R, N, T]
    inside: dict[str, np.ndarray]       # part -> [R, N]
    population: np.ndarray              # [M, T] under the target
    population_refs: np.ndarray         # [R, M, T]
    cost: dict
    per_model: int                      # queries per image and model: K · len(ts)


def compute_signals(model: DiffusionModel, references: ReferenceModels, sets: MembershipSets,
                    population: torch.Tensor, ts: Sequence[int] = (20, 50, 100, 200), n_noise: int = 4,
                    seed: int = 0, batch_size: int | None = None) -> Signals:
    """Every model's signal on the four parts and the population, measured (module docstring)."""
    parts = sets.parts()
    n_images = sum(len(x) for x in parts.values()) + len(population)
    declared = (1 + len(references)) * n_noise * len(ts)
    models = [model, *references.models]
    with measure(models, n_images, declared, "the reference study's signals") as cost:
        by_model = [{p: loss_signals(m, x, ts, n_noise, seed, batch_size) for p, x in
                     {**parts, "population": population}.items()} for m in models]
    inside = {p: references.membership(x) for p, x in parts.items()}
    if references.membership(population).any():
        raise ValueError("A population sample z is a training image of a reference model: z must be OUT of all.")
    return Signals(target={p: by_model[0][p] for p in parts},
                   references={p: np.stack([b[p] for b in by_model[1:]]) for p in parts},
                   inside=inside, population=by_model[0]["population"],
                   population_refs=np.stack([b["population"] for b in by_model[1:]]), cost=cost,
                   per_model=n_noise * len(ts))


def global_sigma(sig: Signals, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """LiRA's global (σ_in [T], σ_out [T]) of the first ``k`` references (None: all), pooled over
    the calibration parts' images (``lira.pooled_sigma`` on the signals s = −log L)."""
    k = len(sig.population_refs) if k is None else k
    refs = np.concatenate([sig.references[p][:k] for p in CAL], axis=1)
    return lira.pooled_sigma(-np.log(refs), np.concatenate([sig.inside[p][:k] for p in CAL], axis=1))


def scores(sig: Signals, variant: str, k: int | None = None, a: float = 0.5, gamma: float = 1.0) -> dict:
    """{part: scores} of one variant (``VARIANTS``, or "loss" for the global-threshold baseline)
    with the first ``k`` references (None: all)."""
    if variant == "loss":  # the loss attack on the target alone: −mean_t L_t
        return {p: -s.mean(1) for p, s in sig.target.items()}
    name, hyper = VARIANTS[variant]
    k = len(sig.population_refs) if k is None else k
    refs = {p: r[:k] for p, r in sig.references.items()}
    inside = {p: i[:k] for p, i in sig.inside.items()}
    if name == "lira":
        sigma = global_sigma(sig, k)
        return {p: lira.from_signals(-np.log(sig.target[p]), -np.log(refs[p]), inside[p], sigma=sigma, **hyper)
                for p in sig.target}
    like = rmia.likelihood
    p_z, p_z_refs = like(sig.population), like(sig.population_refs[:k])
    return {p: rmia.from_likelihoods(like(sig.target[p]), like(refs[p]), inside[p], p_z, p_z_refs, a=a, gamma=gamma,
                                     **hyper) for p in sig.target}


def curve(sig: Signals, ks: Iterable[int] = (2, 4, 8), variants: Iterable[str] = tuple(VARIANTS), a: float = 0.5,
          n_boot: int = 1000, seed: int = 0) -> dict[tuple[str, int], dict]:
    """{(variant, k): evaluation row} (``harness.report``: AUC, TPR at 1 % and 0.1 % FPR with
    bootstrap CIs, the calibration thresholds realised on evaluation) for each number of
    references k and variant (from ``MIN_REFERENCES`` on); ("loss", 0) is the global-threshold
    baseline. Each row's ``queries_per_image`` is (1 + k) · K · len(ts), what scoring one image
    costs; RMIA's population samples cost as much each, once."""
    def row(by_part, k, access):
        r = report(by_part, n_boot=n_boot, seed=seed, calibrate=FPRS, references=k, access=access,
                   queries_per_image=(1 + k) * sig.per_model)
        for fpr in FPRS:  # a threshold fixed on calibration: exact binomial intervals of its TPR and FPR
            r[calibration_key(fpr)] = with_exact_intervals(r[calibration_key(fpr)], r["n_members"], r["n_nonmembers"])
        return r

    rows = {("loss", 0): row(scores(sig, "loss"), 0, "gray box")}
    for variant in variants:
        for k in ks:
            if k >= MIN_REFERENCES[variant]:
                rows[(variant, k)] = row(scores(sig, variant, k, a=a), k, ACCESS)
    return rows


def compare_intervals(row: dict, other: dict, key: str = "auc") -> str:
    """How ``row``'s 95 % interval of ``key`` stands to ``other``'s, in words: "overlaps",
    "lies above" or "lies below" (the chapter's answer to "does RMIA with one reference match
    LiRA with all?" without reading a difference inside the noise as one)."""
    (lo, hi), (olo, ohi) = row[f"{key}_ci"], other[f"{key}_ci"]
    return "lies above" if lo > ohi else "lies below" if hi < olo else "overlaps"


def label(variant: str, k: int) -> str:
    """A row's name in the chapter's tables and metrics: "RMIA online, k = 8"; the baseline's."""
    return "loss (global threshold)" if variant == "loss" else f"{variant}, k = {k}"


def headline(rows: dict[tuple[str, int], dict]) -> dict[str, dict]:
    """{variant: its row with the most references} of a ``curve`` (the loss baseline's included)."""
    out: dict[str, dict] = {}
    for (variant, k), row in rows.items():  # in the curve's order of variants
        if variant not in out or k > out[variant]["references"]:
            out[variant] = row
    return out


def threshold_table(rows: dict[str, dict]):
    """TPR and FPR (%) with Clopper–Pearson intervals of the thresholds set on calibration at each
    of ``FPRS``, one row per named evaluation row (``curve``'s)."""
    import pandas as pd

    def cell(c, what):
        lo, hi = c[f"{what}_ci"]
        return f"{100 * c[what]:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]"

    return pd.DataFrame({name: {f"{100 * fpr:g} % on cal.: {w.upper()} (%)": cell(row[calibration_key(fpr)], w)
                                for fpr in FPRS for w in ("fpr", "tpr")} for name, row in rows.items()}).T


def evaluation_view(sig: Signals, t_index: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The evaluation images' signals s = −log L at one time step, members first: the target's
    [N], the references' [R, N] and which reference holds each image [R, N] (the LiRA figure)."""
    parts = ("members_eval", "nonmembers_eval")
    target = -np.log(np.concatenate([sig.target[p][:, t_index] for p in parts]))
    refs = -np.log(np.concatenate([sig.references[p][:, :, t_index] for p in parts], axis=1))
    return target, refs, np.concatenate([sig.inside[p] for p in parts], axis=1)


def examples(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> dict[str, int]:
    """Three images to draw, as indices into ``evaluation_view``'s order: the member a score is
    surest of, the median member and the median non-member."""
    m, n = np.argsort(member_scores), np.argsort(nonmember_scores)
    return {"the member LiRA is surest of": int(m[-1]), "a typical member": int(m[len(m) // 2]),
            "a typical non-member": len(m) + int(n[len(n) // 2])}
