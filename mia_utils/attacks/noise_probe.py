"""Noise as a Probe (2026): membership in a fine-tuned model through a semantic initial noise.

A fine-tuned target regenerates its (few) training images more faithfully than other images
when it starts from a noise that still carries the image's semantics. Common schedules leave
such residue even at the last step: x_T = √ᾱ_T x_0 + √(1 − ᾱ_T) ε keeps a signal-to-noise
ratio ᾱ_T / (1 − ᾱ_T) ≈ 4e-5 for the linear schedule, and DDIM inversion keeps more.

    1. x_{t_s} = DDIM-Inv_base(x_0)                 (the pre-trained base model, n_inv steps)
    2. x̂_0    = DDIM_target(x_{t_s})               (the fine-tuned target, n_gen steps)
    3. A(x_0)  = MSE(x_0, x̂_0)   (or 1 − SSIM)      smaller = member; the score is −A.

DDIM on the grid 0 = s_0 < s_1 < … < s_n = t_s (``n`` equal steps, rounded):
inversion steps s_i → s_{i+1} with ε̂ queried at s_i; generation s_{i+1} → s_i with ε̂
queried at s_{i+1}; both by ``sampling.ddim_step`` (the output is x at s_0 = 0, where
ᾱ_0 = 1 − 1e-4 ≈ 1). The initial noise variants:

* ``"semantic"``: DDIM inversion with the base (the paper's attack);
* ``"graybox"``: DDIM inversion with the target itself;
* ``"closed_form"``: √ᾱ_{t_s} x_0 + √(1 − ᾱ_{t_s}) ε, ε seeded (no inversion query);
* ``"random"``: ε alone, seeded (no information about x_0).

ε is drawn per image from a generator seeded by (seed, the image's content): ``mia_utils.noise``.

Cost per image: ``inversion_steps`` base queries (semantic) or target queries (graybox),
plus ``generation_steps`` target queries. Both models count their own queries.
The paper's threshold needs no shadow model: the 15th percentile of known non-members' A,
i.e. ``metrics.calibrated(..., fpr=0.15)`` on the calibration scores.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import torch

from .. import checks
from ..models import DiffusionModel
from ..noise import image_noise
from ..sampling import ddim_step

NOISES = ("semantic", "graybox", "closed_form", "random")
FPR = 0.15  # the paper's threshold: the 15th percentile of known non-members' distances


def grid(t_start: int, n_steps: int) -> list[int]:
    """0 = s_0 < s_1 < … < s_n = t_start: ``n_steps`` equal DDIM steps, rounded (duplicates dropped)."""
    return sorted({round(float(s)) for s in np.linspace(0, t_start, n_steps + 1)})


def ddim_invert(model: DiffusionModel, x0: torch.Tensor, t_start: int, n_steps: int) -> torch.Tensor:
    """Deterministic DDIM inversion of x_0 up to x_{t_start}. Cost: n_steps queries per image."""
    s = grid(t_start, n_steps)
    x = x0.float()
    for a, b in pairwise(s):
        x, _ = ddim_step(model, x, a, b)
    return x


def ddim_generate(model: DiffusionModel, x_t: torch.Tensor, t_start: int, n_steps: int) -> torch.Tensor:
    """Deterministic DDIM from x_{t_start} down to t = 0. Cost: n_steps queries per image."""
    s = grid(t_start, n_steps)
    x = x_t.float()
    for a, b in pairwise(s[::-1]):
        x, _ = ddim_step(model, x, a, b)
    return x


def initial_noise(target: DiffusionModel, images: torch.Tensor, noise: str = "semantic",
                  base: DiffusionModel | None = None, t_start: int | None = None,
                  inversion_steps: int = 100, seed: int = 0) -> torch.Tensor:
    """The starting point x_{t_start} of each image under one of ``NOISES``."""
    t_start = target.num_train_timesteps - 1 if t_start is None else target.check_t(t_start, "t_start")
    images = target.clean_images(images)
    inversion_steps = checks.positive_int("inversion_steps", inversion_steps)
    if noise == "semantic":
        if base is None:
            raise ValueError("noise='semantic' inverts with the pre-trained base model: pass base=.")
        return ddim_invert(base, images, t_start, inversion_steps)
    if noise == "graybox":
        return ddim_invert(target, images, t_start, inversion_steps)
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, not {noise!r}.")
    eps = image_noise(images, seed, salt="noise_probe")  # seeded by (seed, image content)
    if noise == "closed_form":
        return target.q_sample(images.float(), t_start, eps)
    if noise == "random":
        return eps
    raise ValueError(f"noise must be one of {NOISES}, not {noise!r}.")


def distance(x0: torch.Tensor, x_hat: torch.Tensor, metric: str = "mse") -> np.ndarray:
    """Per-image MSE, or 1 − SSIM (scikit-image's structural_similarity, data range 2)."""
    if metric == "mse":
        return (x0.double() - x_hat.double()).pow(2).flatten(1).mean(1).numpy()
    if metric == "ssim":
        from skimage.metrics import structural_similarity

        a, b = x0.double().numpy(), x_hat.double().numpy()
        side = min(a.shape[-2:])
        win = min(7, side - (1 - side % 2))  # odd, at most the image side
        return np.array([1 - structural_similarity(u, v, data_range=2.0, channel_axis=0, win_size=win)
                         for u, v in zip(a, b)])
    raise ValueError(f"metric must be 'mse' or 'ssim', not {metric!r}.")


def reconstruct(target: DiffusionModel, images: torch.Tensor, base: DiffusionModel | None = None,
                noise: str = "semantic", t_start: int | None = None, inversion_steps: int = 100,
                generation_steps: int = 50, seed: int = 0, x_init: torch.Tensor | None = None) -> torch.Tensor:
    """x̂_0: the target's DDIM generation from the image's initial noise (``x_init`` when given:
    the base's inversion does not depend on the target, so several targets can share it)."""
    t_start = target.num_train_timesteps - 1 if t_start is None else target.check_t(t_start, "t_start")
    generation_steps = checks.positive_int("generation_steps", generation_steps)
    if x_init is None:
        x_init = initial_noise(target, images, noise, base, t_start, inversion_steps, seed)
    return ddim_generate(target, x_init, t_start, generation_steps)


def score(target: DiffusionModel, images: torch.Tensor, base: DiffusionModel | None = None,
          noise: str = "semantic", t_start: int | None = None, inversion_steps: int = 100,
          generation_steps: int = 50, metric: str = "mse", seed: int = 0,
          x_init: torch.Tensor | None = None) -> np.ndarray:
    """−A(x_0) = −distance(x_0, DDIM_target(init(x_0))) per image (higher = member).

    Defaults are the paper's: semantic noise by 100 base inversion steps to t = T − 1, 50
    target generation steps, pixel MSE. Cost: ``inversion_steps`` base queries (semantic; target
    queries for graybox; none for closed_form / random) + ``generation_steps`` target queries;
    with a precomputed ``x_init`` (from ``initial_noise``) only the generation is paid again.
    """
    images = target.clean_images(images)
    x_hat = reconstruct(target, images, base, noise, t_start, inversion_steps, generation_steps, seed, x_init)
    return -distance(images.cpu(), x_hat.cpu(), metric)
