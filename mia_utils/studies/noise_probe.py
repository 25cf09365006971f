"""Chapter 06's noise probe (``attacks.noise_probe``): its variants on the four parts, each
initial noise and regeneration paid once, and two sweeps read on the evaluation split."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from .. import attacks
from ..attacks import noise_probe as probe
from ..data import MembershipSets
from ..harness import EVAL, measure, report
from ..models import DiffusionModel


def noise_probe_study(target: DiffusionModel, base: DiffusionModel, sets: MembershipSets,
                      variants: Mapping[str, tuple[str, str]], inversion_steps: int = 100, generation_steps: int = 50,
                      seed: int = 0, n_boot: int = 1000) -> dict:
    """The variants of the noise probe ({name: (noise, metric)}) on the four parts, each initial
    noise and each regeneration computed once and shared by the variants that differ only in
    the distance (MSE and SSIM of one regeneration). Each row is the probe's (no setting to
    choose) on the evaluation split, with the measured queries per image of its noise (base and
    target counted), its seconds, and the thresholds at 1 % and at the paper's 15 % FPR set on
    calibration. Returns {"rows", "scores": {name: {part: scores}}, "x_init": {noise: {part:
    x_T}}} (the inverted noises, reused by ``noise_probe_sweeps``).
    """
    parts = {k: target.clean_images(x) for k, x in sets.parts().items()}
    n_images = sum(len(x) for x in parts.values())
    x_init, regenerated, cost = {}, {}, {}
    for noise in dict.fromkeys(noise for noise, _ in variants.values()):
        declared = attacks.get("noise_probe").queries_per_image(noise=noise, inversion_steps=inversion_steps,
                                                                generation_steps=generation_steps)
        with measure([target, base], n_images, declared, f"noise_probe ({noise})") as cost[noise]:
            x_init[noise] = {k: probe.initial_noise(target, x, noise, base, None, inversion_steps, seed)
                             for k, x in parts.items()}
            regenerated[noise] = {k: probe.reconstruct(target, x, generation_steps=generation_steps,
                                                       x_init=x_init[noise][k]) for k, x in parts.items()}
    rows, scores = {}, {}
    for name, (noise, metric) in variants.items():
        t0 = time.perf_counter()
        s = {k: -probe.distance(x.cpu(), regenerated[noise][k].cpu(), metric) for k, x in parts.items()}
        seconds = cost[noise]["seconds"] + time.perf_counter() - t0
        rows[name] = report(s, n_boot, seed, setting=f"{noise}, {metric}", calibrate=(0.01, probe.FPR),
                            access="gray box", queries_per_image=cost[noise]["queries_per_image"], seconds=seconds,
                            images_per_second=n_images / seconds)
        scores[name] = s
    return {"rows": rows, "scores": scores, "x_init": x_init}


def noise_probe_sweeps(study: dict, target: DiffusionModel, base: DiffusionModel, sets: MembershipSets,
                       lengths: Mapping, t_starts: Iterable[int], semantic: str, random: str,
                       inversion_steps: int = 100, generation_steps: int = 50, seed: int = 0, n_boot: int = 1000) -> dict:
    """Two sweeps on the evaluation split (curves to read, nothing chosen on them):

    * fine-tuning length: for each snapshot of ``lengths`` ({step: DiffusionModel, or None for
      the target itself}), the semantic probe (the base's inversion does not depend on the
      target: ``study``'s inverted noises are reused, only the generation is paid) and the
      random-noise probe;
    * inversion depth: the semantic probe from each t_s of ``t_starts``.

    Scores ``study`` already holds (the target itself; t_s = T − 1) are taken from it, under the
    variant names ``semantic`` and ``random``. Returns {"length": {(step, noise): row},
    "depth": {t_s: row}}, rows of ``metrics.evaluate``.
    """
    images = {k: getattr(sets, k) for k in EVAL}
    done = {"semantic": study["scores"][semantic], "random": study["scores"][random]}

    def row(s):
        return report(s, n_boot, seed, calibrate=())

    length = {}
    for step, model in lengths.items():
        for noise in ("semantic", "random"):
            if model is None:
                s = done[noise]
            else:
                x_init = {k: study["x_init"]["semantic"][k] if noise == "semantic" else None for k in EVAL}
                s = {k: probe.score(model, images[k], noise=noise, generation_steps=generation_steps, seed=seed,
                                    x_init=x_init[k]) for k in EVAL}
            length[(step, noise)] = row(s)
    depth = {}
    for t_start in t_starts:
        if int(t_start) == target.num_train_timesteps - 1:
            s = done["semantic"]
        else:
            s = {k: probe.score(target, images[k], base=base, t_start=int(t_start), inversion_steps=inversion_steps,
                                generation_steps=generation_steps, seed=seed) for k in EVAL}
        depth[int(t_start)] = row(s)
    return {"length": length, "depth": depth}
