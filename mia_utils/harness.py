"""The chapters' harness: run an attack honestly, measure what it costs, tabulate the result.

``evaluate(attack, model, sets, grid)`` is the protocol every chapter follows:

1. for each setting of the grid (a time step, a (t_sec, k) pair, …): zero the query counters,
   score the four parts of the ``MembershipSets`` (calibration and evaluation members and
   non-members), and keep the wall time and the counted queries per image;
2. choose the setting with the best *calibration* AUC and report it on the *evaluation*
   split, with bootstrap CIs (``metrics.honest_and_oracle``); the setting with the best
   evaluation AUC is kept as the labelled oracle;
3. attach to both rows the measured cost of the setting actually chosen, the attack's access
   level, and the FPR/TPR that the calibration threshold at 1 % FPR realises on evaluation.

The counted queries must equal the registry's declared cost; a mismatch is an error (the cost
column of every table is measured, and the declaration is checked against it).

``table(results)`` is the one results table of the book: chapters and the summary page build
their tables with it, so column names and formats cannot drift.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import numpy as np

from . import attacks as _attacks
from . import metrics
from .data import MembershipSets
from .metrics import format_ci, honest_and_oracle
from .models import DiffusionModel


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
    others = [v.model if isinstance(v, PartViews) else v for v in hyper.values()]
    return [model, *[v for v in others if isinstance(v, DiffusionModel) and v is not model]]


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


def score_parts(attack, model: DiffusionModel | PartViews, sets: MembershipSets, hyper: dict) -> tuple[dict, dict]:
    """One setting on the four parts: ({part: scores}, cost) with measured queries per image
    (every queried model counted), seconds and images per second."""
    attack = _attacks.get(attack) if isinstance(attack, str) else attack
    models = _models(model, hyper)
    for m in models:
        m.reset_queries()
    n_images = sum(len(x) for x in sets.parts().values())
    t0 = time.perf_counter()
    scores = {part: attack(m, x, **h) for part, (m, x, h) in _calls(model, sets, hyper).items()}
    seconds = time.perf_counter() - t0
    queries = sum(m.reset_queries() for m in models) / n_images
    declared = _guided_cost(attack, model, hyper)
    if queries != declared:
        raise RuntimeError(f"{attack.name} with {hyper} declares {declared} queries per image but made {queries:g}: "
                           "fix its registry entry (attacks.ATTACKS) or the attack.")
    return scores, {"queries_per_image": queries, "seconds": seconds, "images_per_second": n_images / seconds}


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


def evaluate_secmi_nn(model: DiffusionModel, sets: MembershipSets, setting: Mapping, epochs: int = 40,
                      seed: int = 0, n_boot: int = 1000) -> dict:
    """SecMI_NN (chapter 03) under the honest protocol: error maps at ``setting`` ({t_sec, k},
    the one SecMI_stat chose on calibration), the network trained on the calibration maps with
    its epoch chosen on a held-out calibration part, scored once on the evaluation split.

    Returns {"honest": row, "oracle": {"setting", "auc"} (the epoch the evaluation split would
    have chosen: a pitfall, never used), "history": fit_nn's}; the row's seconds count the error
    maps and the scoring, ``train_seconds`` the training apart.
    """
    secmi = _attacks.secmi
    parts = sets.parts()
    n_images = sum(len(x) for x in parts.values())
    model.reset_queries()
    t0 = time.perf_counter()
    maps = {part: secmi.round_trip(model, images, **setting) for part, images in parts.items()}
    queries = model.reset_queries() / n_images
    t1 = time.perf_counter()
    net, history = secmi.fit_nn(maps["members_cal"], maps["nonmembers_cal"], epochs=epochs, seed=seed,
                                monitor=(maps["members_eval"], maps["nonmembers_eval"]))
    train_seconds = time.perf_counter() - t1
    t2 = time.perf_counter()
    s = {part: secmi.nn_score(net, m) for part, m in maps.items()}
    seconds = (t1 - t0) + (time.perf_counter() - t2)
    row = metrics.evaluate(s["members_eval"], s["nonmembers_eval"], n_boot=n_boot, seed=seed,
                           queries_per_image=queries, images_per_second=n_images / seconds, seconds=seconds,
                           train_seconds=train_seconds, access="gray box")
    row["setting"] = f"{', '.join(f'{k}={v}' for k, v in setting.items())}, epoch {history['chosen_epoch']}"
    row["calibrated_at_1pct_fpr"] = metrics.calibrated(s["members_cal"], s["nonmembers_cal"],
                                                       s["members_eval"], s["nonmembers_eval"])
    oracle = {"setting": f"epoch {int(np.argmax(history['monitor_auc'])) + 1}", "auc": max(history["monitor_auc"])}
    return {"honest": row, "oracle": oracle, "history": history}


def evaluate_gsa(model: DiffusionModel, sets: MembershipSets, ts=(100, 200, 300, 400), mode: str = "gsa1",
                 seed: int = 0, n_boot: int = 1000) -> dict:
    """GSA1 / GSA2 (``attacks.gsa``) under the honest protocol: log per-layer gradient norms of
    every part, a linear probe trained on the calibration split (members against non-members),
    scored once on the evaluation split. Returns {"honest": row}; the row counts queries and
    backward passes per image and the seconds of the features and the scoring."""
    from .probes import binary_scores, fit

    parts = sets.parts()
    n_images = sum(len(x) for x in parts.values())
    model.reset_queries()
    t0 = time.perf_counter()
    feats = {part: _attacks.gsa.features(model, x, ts=ts, mode=mode, seed=seed) for part, x in parts.items()}
    queries = model.reset_queries() / n_images
    x_cal = np.concatenate([feats["members_cal"], feats["nonmembers_cal"]])
    y_cal = np.r_[np.ones(len(feats["members_cal"]), int), np.zeros(len(feats["nonmembers_cal"]), int)]
    probe = fit(x_cal, y_cal, seed=seed)
    s = {part: binary_scores(probe, f) for part, f in feats.items()}
    seconds = time.perf_counter() - t0
    row = metrics.evaluate(s["members_eval"], s["nonmembers_eval"], n_boot=n_boot, seed=seed, queries_per_image=queries,
                           backward_per_image=1 if mode == "gsa1" else len(ts), seconds=seconds,
                           images_per_second=n_images / seconds, access="white box")
    row["setting"] = f"{mode.upper()}, ts={tuple(ts)}"
    row["calibrated_at_1pct_fpr"] = metrics.calibrated(s["members_cal"], s["nonmembers_cal"],
                                                       s["members_eval"], s["nonmembers_eval"])
    return {"honest": row}


def evaluate_victims(victims: Iterable[str], attack, grid=None, *, device="auto", batch_size: int = 256,
                     seed: int = 0, n_boot: int = 1000, **hyper) -> dict[str, dict]:
    """``evaluate`` on each zoo victim (``zoo:NAME``) with its own members and non-members.

    Returns {spec: result}; each result's ``victim`` holds the data set, the member count and
    the image shape, for the row labels.
    """
    from . import specs  # the harness sits above the specs; the low layers never see them

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


def class_shift_study(victim: str, elsewhere: str, classes: Iterable[int], ts, window: int, n_dev: int = 32, *,
                      device="auto", batch_size: int = 256, seed: int = 0, n_boot: int = 1000) -> tuple[dict, dict]:
    """Chapter 04's allocation and shift questions on another zoo victim (``probes.shift_study``):
    its members, its non-members, and non-members "collected elsewhere": images of the data set
    ``elsewhere`` of the given ``classes`` only, none of them a member (content hashes excluded)."""
    from . import data, specs
    from .probes import shift_study

    model = specs.load_model(victim, device=device, batch_size=batch_size)
    sets = specs.load_membership_sets(f"{victim}/members", f"{victim}/nonmembers", model=model, seed=seed)
    member_hashes = data.image_hashes(sets.members())
    other = data.class_sample(elsewhere, list(classes), n_dev + len(sets.members_eval), seed=seed,
                              exclude=member_hashes)
    return shift_study(model, sets, other, ts, window, n_dev, seed, n_boot)


def latent_study(pixel: DiffusionModel, latents: Mapping[str, tuple], sets: MembershipSets,
                 attacks: Mapping[str, tuple], n_boot: int = 1000, seed: int = 0,
                 sampled: Iterable[str] = ()) -> dict[str, dict[str, dict]]:
    """Chapter 05's measurements: each attack of ``attacks`` ({row: (attack, grid, hyper)}) on the
    pixel model, and on each latent model of ``latents`` ({label: (model, LatentCodec)}) through
    its encoder: on the posterior means μ(x), and for the attacks named in ``sampled`` also on a
    sampled latent μ(x) + σ(x)·n (n seeded by the image's content). Each row carries
    ``encoder_passes`` per image and the oracle AUC. Returns {model label: {attack: row}}.
    """
    def rows(model, parts, encoder_passes=0.0, which=None):
        out = {}
        for name, (attack, grid, hyper) in attacks.items():
            if which is None or name in which:
                res = evaluate(attack, model, parts, grid, n_boot=n_boot, boot_seed=seed, **hyper)
                out[name] = {**res["honest"], "oracle_auc": res["oracle"]["auc"], "encoder_passes": encoder_passes}
        return out

    parts = sets.parts()
    results = {"pixel DDPM": rows(pixel, sets)}
    for label, (model, codec) in latents.items():
        for mode, name, which in (("mean", label, None), ("sample", f"{label}, sampled latent", list(sampled))):
            if which == []:
                continue
            codec.encoder_queries = 0
            z = MembershipSets(**{k: codec.encode(x, mode=mode, seed=seed) for k, x in parts.items()})
            results[name] = rows(model, z, codec.encoder_queries / sum(len(x) for x in parts.values()), which)
    return results


def noise_probe_study(target: DiffusionModel, base: DiffusionModel, sets: MembershipSets,
                      variants: Mapping[str, tuple[str, str]], inversion_steps: int = 100, generation_steps: int = 50,
                      seed: int = 0, n_boot: int = 1000) -> dict:
    """Chapter 06's variants of the noise probe ({name: (noise, metric)}, ``attacks.noise_probe``)
    on the four parts, each initial noise and each regeneration computed once and shared by
    the variants that differ only in the distance (MSE and SSIM of one regeneration). Each row
    is the probe's (no setting to choose) on the evaluation split, with the measured queries per
    image of its noise (base and target counted), its seconds, and the thresholds at 1 % and at
    the paper's 15 % FPR set on calibration. Returns {"rows", "scores": {name: {part: scores}},
    "x_init": {noise: {part: x_T}}} (the inverted noises, reused by ``noise_probe_sweeps``).
    """
    probe = _attacks.noise_probe
    parts = {k: target.clean_images(x) for k, x in sets.parts().items()}
    n_images = sum(len(x) for x in parts.values())
    x_init, regenerated, cost = {}, {}, {}
    for noise in dict.fromkeys(noise for noise, _ in variants.values()):
        target.reset_queries(), base.reset_queries()
        t0 = time.perf_counter()
        x_init[noise] = {k: probe.initial_noise(target, x, noise, base, None, inversion_steps, seed)
                         for k, x in parts.items()}
        regenerated[noise] = {k: probe.reconstruct(target, x, generation_steps=generation_steps, x_init=x_init[noise][k])
                              for k, x in parts.items()}
        queries = (target.reset_queries() + base.reset_queries()) / n_images
        declared = _attacks.get("noise_probe").queries_per_image(noise=noise, inversion_steps=inversion_steps,
                                                                 generation_steps=generation_steps)
        if queries != declared:
            raise RuntimeError(f"noise_probe ({noise}) declares {declared} queries per image but made {queries:g}.")
        cost[noise] = {"queries_per_image": queries, "seconds": time.perf_counter() - t0}
    rows, scores = {}, {}
    for name, (noise, metric) in variants.items():
        t0 = time.perf_counter()
        s = {k: -probe.distance(x.cpu(), regenerated[noise][k].cpu(), metric) for k, x in parts.items()}
        seconds = cost[noise]["seconds"] + time.perf_counter() - t0
        row = metrics.evaluate(s["members_eval"], s["nonmembers_eval"], n_boot=n_boot, seed=seed, access="gray box",
                               queries_per_image=cost[noise]["queries_per_image"], seconds=seconds,
                               images_per_second=n_images / seconds)
        row["setting"] = f"{noise}, {metric}"
        for key, fpr in (("calibrated_at_1pct_fpr", 0.01), ("calibrated_at_15pct_fpr", probe.FPR)):
            row[key] = metrics.calibrated(s["members_cal"], s["nonmembers_cal"], s["members_eval"],
                                          s["nonmembers_eval"], fpr=fpr)
        rows[name], scores[name] = row, s
    return {"rows": rows, "scores": scores, "x_init": x_init}


def noise_probe_sweeps(study: dict, target: DiffusionModel, base: DiffusionModel, sets: MembershipSets,
                       lengths: Mapping, t_starts: Iterable[int], semantic: str, random: str,
                       inversion_steps: int = 100, generation_steps: int = 50, seed: int = 0, n_boot: int = 1000) -> dict:
    """Chapter 06's two sweeps on the evaluation split (curves to read, nothing chosen on them):

    * fine-tuning length: for each snapshot of ``lengths`` ({step: DiffusionModel, or None for
      the target itself}), the semantic probe (the base's inversion does not depend on the
      target: ``study``'s inverted noises are reused, only the generation is paid) and the
      random-noise probe;
    * inversion depth: the semantic probe from each t_s of ``t_starts``.

    Scores ``study`` already holds (the target itself; t_s = T − 1) are taken from it, under the
    variant names ``semantic`` and ``random``. Returns {"length": {(step, noise): row},
    "depth": {t_s: row}}, rows of ``metrics.evaluate``.
    """
    probe = _attacks.noise_probe
    ev = ("members_eval", "nonmembers_eval")
    images = {k: getattr(sets, k) for k in ev}
    done = {"semantic": study["scores"][semantic], "random": study["scores"][random]}

    def row(s):
        return metrics.evaluate(s["members_eval"], s["nonmembers_eval"], n_boot=n_boot, seed=seed)

    length = {}
    for step, model in lengths.items():
        for noise in ("semantic", "random"):
            if model is None:
                s = done[noise]
            else:
                x_init = {k: study["x_init"]["semantic"][k] if noise == "semantic" else None for k in ev}
                s = {k: probe.score(model, images[k], noise=noise, generation_steps=generation_steps, seed=seed,
                                    x_init=x_init[k]) for k in ev}
            length[(step, noise)] = row(s)
    depth = {}
    for t_start in t_starts:
        if int(t_start) == target.num_train_timesteps - 1:
            s = done["semantic"]
        else:
            s = {k: probe.score(target, images[k], base=base, t_start=int(t_start), inversion_steps=inversion_steps,
                                generation_steps=generation_steps, seed=seed) for k in ev}
        depth[int(t_start)] = row(s)
    return {"length": length, "depth": depth}


def chosen_scores(result: dict, part: str) -> np.ndarray:
    """The scores of one part at the setting the calibration split chose."""
    return result["scores"][part][result["honest"]["setting"]]


def score_chosen(result: dict, model: DiffusionModel, images, grid=None, **hyper) -> np.ndarray:
    """Score new images (a suspect set) with ``evaluate``'s attack at the setting its calibration
    split chose; ``grid`` and ``hyper`` as given to ``evaluate``."""
    setting = ({"default": {}} if grid is None else settings(grid))[result["honest"]["setting"]]
    return _attacks.get(result["attack"])(model, images, **hyper, **setting)


# ---------------------------------------------------------------------- the one table
COLUMNS = {
    "auc": "AUC [95 % CI]",
    "p": "p",  # the AUC's label-permutation p-value (evidence, chapter 08)
    "tpr": "TPR@1%FPR (%)",
    "tpr01": "TPR@0.1%FPR (%)",
    "transfer": "FPR / TPR at the calibrated 1% threshold",
    "access": "access",
    "queries": "queries",
    "backward": "backward passes",
    "seconds": "s",
}


def _row_cells(row: dict) -> dict:
    cal = row.get("calibrated_at_1pct_fpr")
    return {
        COLUMNS["auc"]: format_ci(row, "auc"),
        COLUMNS["p"]: f"{row['auc_p']:.1g}" if "auc_p" in row else "",
        COLUMNS["tpr"]: format_ci(row, "tpr_at_1pct_fpr", pct=True),
        COLUMNS["tpr01"]: format_ci(row, "tpr_at_0_1pct_fpr", pct=True),
        COLUMNS["transfer"]: f"{100 * cal['fpr']:.1f} / {100 * cal['tpr']:.1f}" if cal else "",
        COLUMNS["access"]: row.get("access", ""),
        COLUMNS["queries"]: f"{row['queries_per_image']:g}" if "queries_per_image" in row else "",
        COLUMNS["backward"]: f"{row['backward_per_image']:g}" if row.get("backward_per_image") else "",
        COLUMNS["seconds"]: f"{row['seconds']:.1f}" if "seconds" in row else "",
    }


def table(results: Mapping[str, dict], setting: bool = True, oracle: bool = False, group: str | None = None,
          extra: Mapping[str, str] | None = None):
    """The book's results table: numbers first, then access level, cost (queries per image,
    seconds) and the setting the calibration split chose.

    ``results`` maps a row name to an ``evaluate`` result ({"honest": row, ...}) or to a row
    itself (``metrics.evaluate``'s format, as metrics.json stores it). ``setting`` adds the
    calibration-chosen setting; ``oracle`` the oracle setting and AUC; ``group`` names an extra
    first column whose value is each row's ``group`` entry (the summary groups by chapter);
    ``extra`` maps further column names to row keys (``{"encoder passes": "encoder_passes"}``).
    """
    import pandas as pd

    records = []
    for name, res in results.items():
        row = res.get("honest", res)
        rec = {group: row.get("group", "")} if group else {}
        rec["attack"] = name
        rec.update(_row_cells(row))
        if setting:
            rec["setting"] = str(row.get("setting", ""))
        if oracle:  # empty for a row without one (a probe trained on calibration has no oracle t)
            rec["oracle: setting, AUC"] = (f"{res['oracle'].get('setting', '')}, {res['oracle']['auc']:.3f}"
                                           if "oracle" in res else "")
        for column, key in (extra or {}).items():
            value = row.get(key, "")
            rec[column] = f"{value:.3g}" if isinstance(value, float) else str(value)
        records.append(rec)
    out = pd.DataFrame.from_records(records)
    if COLUMNS["backward"] in out and not out[COLUMNS["backward"]].astype(bool).any():
        out = out.drop(columns=COLUMNS["backward"])  # forward-only attacks: no empty column
    return out


def show(results: Mapping[str, dict], **kwargs):
    """``table`` for a notebook, ready to ``display``: as ``stacked`` shows it (no index)."""
    return stacked(table(results, **kwargs))


# The numbers of the results table; the other columns say how each row was obtained.
NUMBER_COLUMNS = tuple(COLUMNS[k] for k in ("auc", "p", "tpr", "tpr01"))


class Stacked:
    """Tables shown one under the other in a notebook (HTML), each without its index; plain text
    elsewhere. ``parts``: the DataFrames; ``numbers``: their columns of figures, never wrapped."""

    def __init__(self, parts, numbers=NUMBER_COLUMNS):
        self.parts, self.numbers = list(parts), tuple(numbers)

    def _repr_html_(self) -> str:
        html = []
        for part in self.parts:  # numbers stay on one line (book.css); words (settings, names) may wrap
            words = [c for c in part.columns if c not in COLUMNS.values() and c not in self.numbers]
            style = part.style.hide(axis="index").set_properties(subset=words, **{"white-space": "normal"})
            html.append(style.to_html())
        return "".join(html)

    def __repr__(self) -> str:
        return "\n\n".join(part.to_string(index=False) for part in self.parts)


def stacked(frame, key: str = "attack", numbers: Iterable[str] = NUMBER_COLUMNS) -> Stacked:
    """A results table (``table``'s columns) as two tables that each fit the book's page: the
    numbers (``NUMBER_COLUMNS``), then how each row was obtained (calibrated transfer, access,
    queries, seconds, setting and any other column), both led by the columns up to ``key``.

    Our own because no library splits a table by width: in one table the 10 to 13 columns were
    850 to 1,370 px wide, the page's text 757, and every chapter's costs sat off-screen.
    """
    numbers = tuple(numbers)
    if key not in frame.columns:
        return Stacked([frame], numbers)
    lead = list(frame.columns[: frame.columns.get_loc(key) + 1])
    figures = [c for c in frame.columns if c in numbers]
    rest = [c for c in frame.columns if c not in lead and c not in figures]
    if not figures or not rest:
        return Stacked([frame], numbers)
    return Stacked([frame[lead + figures], frame[lead + rest]], numbers)


def metrics_rows(results: Mapping[str, dict]) -> dict[str, dict]:
    """{name: honest row} for ``nbrun.save_metrics``: the rows every chapter's metrics.json holds."""
    return {name: res.get("honest", res) for name, res in results.items()}


def multiclass_table(rows: Mapping[str, dict]):
    """The table of multi-class probes (origin or model attribution): balanced accuracy with its
    CI, each class's recall, and the cost, one row per probe (``probes.multiclass`` rows)."""
    import pandas as pd

    frame = pd.DataFrame.from_records([{
        "probe": name, "balanced accuracy [95 % CI]": format_ci(r, "balanced_accuracy"),
        **{f"recall: {c}": f"{v:.2f}" for c, v in r["recall"].items()},
        "access": r.get("access", ""), "forward queries": f"{r['queries_per_image']:g}",
        "backward passes": f"{r['backward_per_image']:g}",
    } for name, r in rows.items()])
    figures = [c for c in frame.columns if c.startswith(("balanced accuracy", "recall: "))]
    return stacked(frame, key="probe", numbers=figures)


PROBE_METRICS = ("pixel MSE", "pixel SSIM", "latent MSE")


def noise_probe_guidance(target, base, sets: MembershipSets, guidances: Iterable[float], assumed: float,
                         base_guidance: float = 1.0, inversion_steps: int = 100, generation_steps: int = 50,
                         captions: bool = True, n_boot: int = 1000, seed: int = 0) -> dict:
    """The noise probe of a text-to-image target (``pipelines.Target``s) at several generation
    guidances γ₁, one inversion shared: each image's latent is inverted once by the base at
    ``base_guidance`` (γ₂), then regenerated by the target at every γ₁ of ``guidances``, decoded,
    and compared with the image as the paper does (pixel MSE; pixel SSIM as its variant) and, as
    a third reading, in latent space (``PROBE_METRICS``).

    The auditor sets the threshold believing the target runs at ``assumed``: the threshold of
    best balanced accuracy on calibration scores made at ``assumed`` (``metrics.calibrated_accuracy``)
    is applied to evaluation scores made at each actual γ₁ (hidden guidance jitter). Returns
    {"rows": {γ₁: {metric: row with AUC [CI], ``balanced_accuracy`` at the transferred threshold,
    ``own_threshold_accuracy`` re-calibrated at γ₁, ``queries_per_image``, ``decoder_passes``}},
    "scores": {γ₁: {metric: {part: scores}}}}. Cost per image: ``inversion_steps`` base queries
    (× 2 at γ₂ ≠ 1) + ``generation_steps`` target queries (× 2 at γ₁ ≠ 1) per γ₁, one decoder pass.
    """
    from .attacks import noise_probe

    guidances = [float(g) for g in guidances]
    if float(assumed) not in guidances:
        raise ValueError(f"assumed={assumed} must be one of the guidances {guidances}.")
    t_start = target.model.num_train_timesteps - 1
    images = sets.parts()
    probe_views = PartViews(target, sets, captions, 1.0)
    base_views = PartViews(base, sets, captions, base_guidance, latents=probe_views.inputs)
    base.model.reset_queries()
    inits = {p: noise_probe.initial_noise(probe_views.views[p], z, "semantic", base_views.views[p], t_start,
                                          inversion_steps, seed) for p, z in probe_views.inputs.items()}
    n_images = sum(len(z) for z in probe_views.inputs.values())
    inversion = base.model.reset_queries() / n_images
    scores, rows = {}, {}
    for g in guidances:
        views = PartViews(target, sets, captions, g, latents=probe_views.inputs)
        target.model.reset_queries()
        t0 = time.perf_counter()
        latents = {p: noise_probe.reconstruct(views.views[p], z, x_init=inits[p], generation_steps=generation_steps,
                                              t_start=t_start) for p, z in views.inputs.items()}
        decoded = {p: target.codec.decode(x) for p, x in latents.items()}
        seconds = time.perf_counter() - t0
        generation = target.model.reset_queries() / n_images
        scores[g] = {  # higher = member: the negated distances
            "pixel MSE": {p: -noise_probe.distance(images[p].cpu(), decoded[p], "mse") for p in images},
            "pixel SSIM": {p: -noise_probe.distance(images[p].cpu(), decoded[p], "ssim") for p in images},
            "latent MSE": {p: -noise_probe.distance(views.inputs[p].cpu(), latents[p].cpu(), "mse") for p in images}}
        rows[g] = {m: metrics.evaluate(s["members_eval"], s["nonmembers_eval"], n_boot=n_boot, seed=seed,
                                       queries_per_image=inversion + generation, decoder_passes=1.0, seconds=seconds,
                                       access="gray box") for m, s in scores[g].items()}
    def accuracy(cal, ev):  # balanced accuracy on ev at the threshold best on cal's calibration parts
        return metrics.calibrated_accuracy(cal["members_cal"], cal["nonmembers_cal"], ev["members_eval"],
                                           ev["nonmembers_eval"])["balanced_accuracy"]

    for g in guidances:
        for m in PROBE_METRICS:
            rows[g][m].update(balanced_accuracy=accuracy(scores[float(assumed)][m], scores[g][m]),
                              own_threshold_accuracy=accuracy(scores[g][m], scores[g][m]))
    return {"rows": rows, "scores": scores}
