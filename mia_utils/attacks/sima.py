"""The ε-norm attack: SimA (Rao, Qu & Moyer 2025) and the Qu (2024) thesis.

Clean input, one query at a "false" time step t (the image is not noised):

    A(x, t) = ‖ε̂(x, t)‖_p,         p = 2 in the thesis, p = 4 in the SimA code;

the noisy variant ("Epsilon" in the SimA code) first diffuses the image with a seeded ε:

    A(x, t) = ‖ε̂(√ᾱ_t x + √(1 − ᾱ_t) ε, t)‖_p.

Why it works (chapter 01): the loss-minimising denoiser is ε* = (x − √ᾱ_t μ_t(x))/σ_t with
μ_t a kernel-weighted mean of training points, so the norm is small near a training image.
Smaller means member; the score is −A (higher = member). Cost: 1 query per image per t.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import checks
from ..models import DiffusionModel
from ..noise import image_noise


def score(model: DiffusionModel, images: torch.Tensor, t: int = 50, p: float = 4, noisy: bool = False,
          seed: int = 0, batch_size: int | None = None) -> np.ndarray:
    """−‖ε̂(x, t)‖_p for each image [N, C, H, W] in [-1, 1] (higher = member).

    ``noisy=True`` queries at √ᾱ_t x + √(1 − ᾱ_t) ε with each image's ε drawn from its own
    generator, seeded by (``seed``, the image's content: ``mia_utils.noise``). Images may lie on
    any device; the scores come back as a CPU float64 array. Cost: 1 query per image.
    """
    x = model.clean_images(images)
    t = model.check_t(t)
    p = checks.positive("p", p)
    batch_size = checks.batch_size(batch_size)
    if noisy:
        # x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, ε seeded by (seed, image content)
        x = model.q_sample(x, t, image_noise(x, seed, salt="sima/noisy"))
    # ε̂(x, t): one query per image
    eps_hat = model.eps(x, t, batch_size=batch_size).double().flatten(1)
    # ‖ε̂‖_p = (Σ |ε̂|^p)^{1/p}; negated so that members score higher
    return -eps_hat.abs().pow(p).sum(1).pow(1.0 / p).cpu().numpy()
