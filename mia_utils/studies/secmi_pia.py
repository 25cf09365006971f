"""Chapter 03's attacks that train a classifier on the calibration split: SecMI_NN on SecMI's
error maps, GSA1 / GSA2 on per-layer gradient norms. Each is trained on calibration only and
scored once on the evaluation split (the honest protocol, ``harness.report``)."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from ..attacks import gsa, secmi
from ..data import MembershipSets
from ..harness import measure, report
from ..models import DiffusionModel
from ..probes import binary_scores, fit


def evaluate_secmi_nn(model: DiffusionModel, sets: MembershipSets, setting: Mapping, epochs: int = 40,
                      seed: int = 0, n_boot: int = 1000) -> dict:
    """SecMI_NN under the honest protocol: error maps at ``setting`` ({t_sec, k}, the one
    SecMI_stat chose on calibration), the network trained on the calibration maps with its
    epoch chosen on a held-out calibration part, scored once on the evaluation split.

    Returns {"honest": row, "oracle": {"setting", "auc"} (the epoch the evaluation split would
    have chosen: a pitfall, never used), "history": fit_nn's}; the row's seconds count the error
    maps and the scoring, ``train_seconds`` the training apart.
    """
    parts = sets.parts()
    n_images = sum(len(x) for x in parts.values())
    with measure([model], n_images) as maps_cost:
        maps = {part: secmi.round_trip(model, images, **setting) for part, images in parts.items()}
    t1 = time.perf_counter()
    net, history = secmi.fit_nn(maps["members_cal"], maps["nonmembers_cal"], epochs=epochs, seed=seed,
                                monitor=(maps["members_eval"], maps["nonmembers_eval"]))
    train_seconds = time.perf_counter() - t1
    with measure([], n_images) as score_cost:
        s = {part: secmi.nn_score(net, m) for part, m in maps.items()}
    seconds = maps_cost["seconds"] + score_cost["seconds"]
    row = report(s, n_boot, seed, setting=f"{', '.join(f'{k}={v}' for k, v in setting.items())}, "
                 f"epoch {history['chosen_epoch']}", queries_per_image=maps_cost["queries_per_image"],
                 images_per_second=n_images / seconds, seconds=seconds, train_seconds=train_seconds,
                 access="gray box")
    oracle = {"setting": f"epoch {int(np.argmax(history['monitor_auc'])) + 1}", "auc": max(history["monitor_auc"])}
    return {"honest": row, "oracle": oracle, "history": history}


def evaluate_gsa(model: DiffusionModel, sets: MembershipSets, ts=(100, 200, 300, 400), mode: str = "gsa1",
                 seed: int = 0, n_boot: int = 1000) -> dict:
    """GSA1 / GSA2 (``attacks.gsa``) under the honest protocol: log per-layer gradient norms of
    every part, a linear probe trained on the calibration split (members against non-members),
    scored once on the evaluation split. Returns {"honest": row, "scores": {part: scores}}; the row counts queries and
    backward passes per image and the seconds of the features and the scoring."""
    parts = sets.parts()
    n_images = sum(len(x) for x in parts.values())
    with measure([model], n_images) as cost:
        feats = {part: gsa.features(model, x, ts=ts, mode=mode, seed=seed) for part, x in parts.items()}
        x_cal = np.concatenate([feats["members_cal"], feats["nonmembers_cal"]])
        y_cal = np.r_[np.ones(len(feats["members_cal"]), int), np.zeros(len(feats["nonmembers_cal"]), int)]
        probe = fit(x_cal, y_cal, seed=seed)
        s = {part: binary_scores(probe, f) for part, f in feats.items()}
    row = report(s, n_boot, seed, setting=f"{mode.upper()}, ts={tuple(ts)}",
                 queries_per_image=cost["queries_per_image"], backward_per_image=1 if mode == "gsa1" else len(ts),
                 seconds=cost["seconds"], images_per_second=cost["images_per_second"], access="white box")
    return {"honest": row, "scores": s}  # the probe's scores of every part (its calibration ones in-sample)
