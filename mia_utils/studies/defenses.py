"""Chapter 10's study: defended victims side by side. What each defense buys (the attacks' honest
rows), what it costs (sample quality, held-out loss, near-copies of members), and what an audit
proves of a differential-privacy claim (``privacy``: ε lower bounds from an attack's ROC and from
the canaries of one training run)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from .. import extraction, harness, privacy, quality, specs, zoo
from ..attacks import loss
from ..data import MembershipSets, near_duplicates
from ..images import folder_images
from ..metrics import format_ci
from ..models import DiffusionModel
from ..plots import image_grid
from ..sampling import ddim_sample
from ..tables import Stacked, stacked
from .secmi_pia import evaluate_gsa


def claim(spec, epsilon: float | None = None, delta: float | None = None) -> dict:
    """A model's privacy claim: the ``epsilon`` / ``delta`` given, else a zoo DP model's accountant
    ε and δ (zoo.json), else none. {"epsilon": float | None (None: no claim; inf: DP-SGD without
    noise), "delta", "source"}."""
    if epsilon is not None:
        return {"epsilon": float(epsilon), "delta": None if delta is None else float(delta), "source": "claimed"}
    if specs.is_zoo(spec):
        dp = zoo.info(specs.zoo_name(spec)).get("dp")
        if dp is not None:
            eps = math.inf if dp["epsilon"] is None else dp["epsilon"]
            return {"epsilon": eps, "delta": dp["delta"], "source": "accountant (PRV)"}
    return {"epsilon": None, "delta": delta, "source": "no claim"}


def ordered(models: Mapping[str, str], claims: Mapping[str, dict]) -> dict[str, str]:
    """The models as tables list them: those without a claim in the order given, then the claimed
    ones from the weakest claim (ε = ∞) to the strongest."""
    free = {n: s for n, s in models.items() if claims[n]["epsilon"] is None}
    claimed = sorted((n for n in models if n not in free), key=lambda n: -claims[n]["epsilon"])
    return {**free, **{n: models[n] for n in claimed}}


def attack_rows(model: DiffusionModel, sets: MembershipSets, runs: Mapping[str, tuple], gsa_ts=None, seed: int = 0,
                n_boot: int = 1000) -> dict[str, dict]:
    """Every attack of ``runs`` ({title: (registry name, grid, hyper)}) under the honest protocol
    (``harness.evaluate``), plus white-box GSA1 at ``gsa_ts`` (None: left out). Returns {title: the
    harness result}; GSA's has the harness's keys that the ε bounds read ("honest", "scores")."""
    out = {title: harness.evaluate(attack, model, sets, grid, n_boot=n_boot, boot_seed=seed, **hyper)
           for title, (attack, grid, hyper) in runs.items()}
    if gsa_ts:
        out["GSA1"] = evaluate_gsa(model, sets, ts=gsa_ts, mode="gsa1", seed=seed, n_boot=n_boot)
    return out


def chosen(result: dict, part: str) -> np.ndarray:
    """One part's scores at the setting calibration chose (GSA: its probe's scores)."""
    scores = result["scores"][part]
    return scores if isinstance(scores, np.ndarray) else harness.chosen_scores(result, part)


def held_out_loss(model: DiffusionModel, images: torch.Tensor, ts=quality.HELD_OUT_TS, seed: int = 0) -> float:
    """The training objective on images no model saw: the ε-loss per pixel, averaged over the time
    steps ``ts`` and the images (one seeded noise each, ``attacks.loss``): lower = a better model."""
    pixels = int(np.prod(images.shape[1:]))
    return float(np.mean([-loss.score(model, images, t=t, seed=seed).mean() / pixels for t in ts]))


def utility(model: DiffusionModel, sets: MembershipSets, n_samples: int = 256, ddim_steps: int = 50,
            seed: int = 0) -> tuple[dict, torch.Tensor]:
    """What a defense costs in quality: precision and recall (k = 3, ``quality``) of ``n_samples``
    DDIM samples against the evaluation non-members, the held-out loss on them, and the share of
    samples that are near-copies of a member (d₁/d₂ < 1/3, ``extraction``). Returns (row, samples)."""
    samples = ddim_sample(model, n_samples, num_inference_steps=ddim_steps,
                          generator=torch.Generator().manual_seed(seed), progress=False).cpu()
    copies = extraction.near_copies(samples, sets.members())
    row = {**quality.precision_recall(samples, sets.nonmembers_eval), "held-out loss": held_out_loss(
        model, sets.nonmembers_eval, seed=seed), "near-copies (%)": 100 * float(np.mean(copies["is_copy"]))}
    return row, samples


def epsilon_lower(results: Mapping[str, dict], delta: float = 0.0, level: float = 0.95) -> dict:
    """The ε lower bound of the strongest attack (``privacy.epsilon_from_scores``): each attack's
    threshold is chosen on calibration, the attack whose calibration bound is largest is chosen
    there too, and only its evaluation counts give the bound. Returns the bound's dict plus
    "attack" and every attack's calibration bound ("calibration")."""
    bounds = {}
    for title, r in results.items():
        parts = [chosen(r, p) for p in ("members_cal", "nonmembers_cal", "members_eval", "nonmembers_eval")]
        bounds[title] = privacy.epsilon_from_scores(*parts, delta=delta, level=level)
    best = max(bounds, key=lambda t: bounds[t]["calibration_epsilon"])
    return {**bounds[best], "attack": best, "calibration": {t: b["calibration_epsilon"] for t, b in bounds.items()}}


def load_canaries(spec, canaries, shape=None) -> tuple[torch.Tensor, np.ndarray] | None:
    """The one-run audit's canaries and whether each was trained on: "zoo" (a zoo model's
    canaries.json; None when it has none), a folder with ``in/`` and ``out/`` images (of the
    model's [C, H, W] ``shape``), or None."""
    if canaries is None:
        return None
    if canaries == "zoo":
        return zoo.canaries(specs.zoo_name(spec)) if specs.is_zoo(spec) and _has_canaries(spec) else None
    inside, outside = folder_images(f"{canaries}/in", shape), folder_images(f"{canaries}/out", shape)
    return torch.cat([inside, outside]), np.r_[np.ones(len(inside), bool), np.zeros(len(outside), bool)]


def _has_canaries(spec) -> bool:
    return (specs.folder(spec) / "canaries.json").is_file()


def one_run(results: Mapping[str, dict], roc: dict, model: DiffusionModel, canaries: tuple[torch.Tensor, np.ndarray],
            guesses: int, runs: Mapping[str, tuple], beta: float = 0.05) -> dict:
    """Steinke et al.'s audit on one training run: the canaries scored by the attack of ``runs``
    whose calibration bound was largest (``roc`` from ``epsilon_lower``; the canaries never choose
    it), at the setting its calibration chose; "in" guessed for the highest ``guesses // 2``, "out"
    for as many lowest, and the correct guesses turned into ε's lower bound at confidence
    1 − ``beta`` (``privacy.epsilon_one_run``). Returns {"epsilon", "guesses", "correct",
    "canaries", "included", "attack"}."""
    images, included = canaries
    title = max(runs, key=lambda t: roc["calibration"][t])
    _, grid, hyper = runs[title]
    scores = harness.score_chosen(results[title], model, model.clean_images(images), grid, **hyper)
    r, v = privacy.one_run_guesses(scores, included, min(guesses, len(images)))
    return {"epsilon": privacy.epsilon_one_run(r, v, beta), "guesses": r, "correct": v, "canaries": len(images),
            "included": int(included.sum()), "attack": title}


def ceilings(n_members: int, n_nonmembers: int, guesses: int, delta: float = 0.0, beta: float = 0.05) -> dict:
    """The largest bounds these counts can prove, a perfect attack's: every member above the
    threshold and no non-member (the ROC bound), every guess right (the one-run bound)."""
    return {"roc": privacy.epsilon_from_counts(n_members, n_members, 0, n_nonmembers, delta),
            "one run": privacy.epsilon_one_run(guesses, guesses, beta)}


def epsilon_row(claimed: dict, roc: dict, run: dict | None) -> dict:
    """One row of the ε table: the claim, both lower bounds and their ratio to the claim."""
    eps = claimed["epsilon"]

    def ratio(bound):
        return "—" if eps is None or math.isinf(eps) or bound is None else f"{bound / eps:.2f}"

    run_eps = None if run is None else run["epsilon"]
    return {"ε claimed": "—" if eps is None else "∞" if math.isinf(eps) else f"{eps:.2f}",
            "δ": "—" if claimed["delta"] is None else f"{claimed['delta']:.1e}",
            "ε_lower, ROC": f"{roc['epsilon']:.2f}", "strongest attack": roc["attack"],
            "TP / FP at its threshold": f"{roc['tp']}/{roc['n_members']} · {roc['fp']}/{roc['n_nonmembers']}",
            "ratio (ROC)": ratio(roc["epsilon"]),
            "ε_lower, one run": "—" if run is None else f"{run_eps:.2f}",
            "correct / guesses": "—" if run is None else f"{run['correct']}/{run['guesses']}",
            "ratio (one run)": ratio(run_eps)}


# the ε table's figures (its first part); the second part says how each bound was obtained
EPSILON_NUMBERS = ("ε claimed", "ε_lower, ROC", "ratio (ROC)", "ε_lower, one run", "ratio (one run)")


def epsilon_table(results: Mapping[str, dict]):
    """The ε table of ``study_model`` results, one row per model (``epsilon_row``), as two
    stacked tables that fit the page: the figures, then the attack, counts and δ behind them."""
    import pandas as pd

    frame = pd.DataFrame({name: epsilon_row(r["claim"], r["roc"], r["one_run"])
                          for name, r in results.items()}).T.rename_axis("model").reset_index()
    return stacked(frame, key="model", numbers=EPSILON_NUMBERS)


def facts(names: Mapping[str, str], results: Mapping[str, dict], attack: str) -> dict:
    """Figures for the chapter's text, under short keys ({key: model name}; names absent from
    the ``study_model`` ``results`` are skipped): ``auc_KEY``, ``tpr_KEY`` (the ``attack``'s, with
    intervals), ``prec_KEY``, ``rec_KEY``, ``loss_KEY`` (the utility row's), ``roc_KEY`` and
    ``run_KEY`` (the ε lower bounds; "—" without canaries)."""
    out = {}
    for key, name in names.items():
        if name not in results:
            continue
        row, util, run = results[name]["attacks"][attack]["honest"], results[name]["utility"], results[name]["one_run"]
        out.update({f"auc_{key}": format_ci(row, "auc"), f"tpr_{key}": format_ci(row, "tpr_at_1pct_fpr", pct=True),
                    f"prec_{key}": f"{util['precision']:.2f}", f"rec_{key}": f"{util['recall']:.2f}",
                    f"loss_{key}": f"{util['held-out loss']:.3f}", f"roc_{key}": f"{results[name]['roc']['epsilon']:.2f}",
                    f"run_{key}": "—" if run is None else f"{run['epsilon']:.2f}"})
    return out


def frontier_points(rows: Mapping[str, dict], quality_rows: Mapping[str, dict], attack: str) -> dict:
    """{model: (utility row, the attack's honest row)} for the privacy–utility figure."""
    return {name: (quality_rows[name], rows[name][attack]["honest"]) for name in rows}


def summary(rows: Mapping[str, dict], attack: str, key: str = "tpr_at_1pct_fpr") -> dict[str, str]:
    """Each model's ``attack`` figure, formatted with its interval, for the text."""
    return {name: format_ci(r[attack]["honest"], key, pct=key != "auc") for name, r in rows.items()}


def auc_table(rows: Mapping[str, Mapping[str, dict]]):
    """Every model (rows) against every attack (columns): the honest AUC with its 95 % interval
    (the names may wrap, the figures never do)."""
    import pandas as pd

    frame = pd.DataFrame({name: {attack: format_ci(r["honest"], "auc") for attack, r in by_attack.items()}
                          for name, by_attack in rows.items()}).T.rename_axis("model").reset_index()
    return Stacked([frame], numbers=tuple(frame.columns[1:]))


def describe(models: Mapping[str, str], claims: Mapping[str, dict]):
    """The models compared, one row each: the spec, its training steps (a snapshot's own), its
    claim (ε with δ; "∞": DP-SGD without noise), DP-SGD's noise multiplier σ and the training
    seconds the zoo recorded ("—" for a snapshot or a folder)."""
    import pandas as pd

    rows = {}
    for name, spec in models.items():
        info = zoo.info(specs.zoo_name(spec)) if specs.is_zoo(spec) else {}
        step, c = specs.snapshot_step(spec), claims[name]
        eps = c["epsilon"]
        rows[name] = {"model": specs.display(spec),
                      "steps": step or info.get("recipe", {}).get("train", {}).get("steps", "—"),
                      "ε (δ)": "—" if eps is None else "∞" if math.isinf(eps) else
                      f"{eps:.2f} ({c['delta']:.1e})" if c["delta"] is not None else f"{eps:.2f}",
                      "σ": f"{info['dp']['noise_multiplier']:.2f}" if "dp" in info else "—",
                      "training s": f"{info['train_seconds']:.0f}" if info and not step else "—"}
    frame = pd.DataFrame(rows).T.rename_axis("defense").reset_index()
    return Stacked([frame], numbers=("steps", "ε (δ)", "σ", "training s"))


def utility_table(results: Mapping[str, dict]):
    """Each model's utility row (``utility``), three decimals (a share in percent: one), no index."""
    import pandas as pd

    frame = pd.DataFrame({name: {k: f"{v:.1f}" if k.endswith("(%)") else f"{v:.3f}" for k, v in r["utility"].items()}
                          for name, r in results.items()}).T
    return Stacked([frame.rename_axis("defense").reset_index()], numbers=tuple(frame.columns))


def member_duplicates(sets: MembershipSets) -> int:
    """Pairs of members that are near-copies of each other (``data.near_duplicates``): what
    de-duplicating the training set would remove."""
    members = sets.members()
    return sum(1 for i, j, _ in near_duplicates(members, members) if i < j)


def sample_panel(samples: Mapping[str, torch.Tensor], n: int = 12):
    """The first ``n`` samples of each model, one row per model, its name on the left."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(samples), 1, figsize=(0.45 * n + 2.2, 0.5 * len(samples) + 0.3))
    for ax, (name, x) in zip(np.atleast_1d(axes), samples.items()):
        image_grid(x[:n], ncol=n, ax=ax)
        ax.text(-0.01, 0.5, name, transform=ax.transAxes, ha="right", va="center", fontsize="small")
    fig.subplots_adjust(left=0.22, right=0.99, top=0.99, bottom=0.01, hspace=0.15)
    return fig


def study_model(spec, sets: MembershipSets, runs: Mapping[str, tuple], gsa_ts=None, claimed: dict | None = None,
                canaries="zoo", guesses: int = 64, n_samples: int = 256, ddim_steps: int = 50, seed: int = 0,
                n_boot: int = 1000, device="auto", batch_size: int = 256) -> dict:
    """Everything chapter 10 measures on one model trained on ``sets``' members: the attacks
    (``attack_rows``), the utility (``utility``), its claim (``claim`` unless given), the ROC bound
    at the claim's δ (``epsilon_lower``) and, where it has canaries, the one-run bound (``one_run``)."""
    model = specs.load_model(spec, device=device, batch_size=batch_size)
    claimed = claimed or claim(spec)
    attacks = attack_rows(model, sets, runs, gsa_ts, seed=seed, n_boot=n_boot)
    quality_row, samples = utility(model, sets, n_samples, ddim_steps, seed)
    roc = epsilon_lower(attacks, delta=claimed["delta"] or 0.0)
    found = load_canaries(spec, canaries, model.sample_shape)
    run = None if found is None else one_run(attacks, roc, model, found, guesses, runs)
    return {"attacks": attacks, "utility": quality_row, "samples": samples, "claim": claimed, "roc": roc,
            "one_run": run}
