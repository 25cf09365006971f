"""The loss-threshold attack (Matsumoto et al. 2023; Carlini et al. 2023).

    L_t(x) = (1/K) Σ_k ‖ε_k − ε̂(√ᾱ_t x + √(1 − ᾱ_t) ε_k, t)‖²,   ε_k ~ N(0, I) seeded,

the model's denoising loss on the image at time step t; members were trained on, so their
loss is lower. Score = −L_t (higher = member). Cost: K queries per image.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import checks
from ..models import DiffusionModel
from ..noise import draw, generators


def score(model: DiffusionModel, images: torch.Tensor, t: int = 50, n_noise: int = 1,
          seed: int = 0, batch_size: int | None = None) -> np.ndarray:
    """−L_t(x) for each image [N, C, H, W] in [-1, 1]; K = ``n_noise`` seeded noises.

    Image i's k-th noise is the k-th draw of its own generator, seeded by (``seed``, the image's
    content: ``mia_utils.noise``), so a score depends on neither device, batch size, nor the
    other images or their order. Cost: ``n_noise`` queries per image.
    """
    x0 = model.clean_images(images)
    t = model.check_t(t)
    n_noise = checks.positive_int("n_noise", n_noise)
    batch_size = checks.batch_size(batch_size)
    gens = generators(x0, seed, salt="loss")
    total = torch.zeros(len(x0), dtype=torch.float64)
    for _ in range(n_noise):
        # 1. a seeded ε ~ N(0, I) per image
        eps = draw(gens, tuple(x0.shape[1:]))
        # 2. x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
        x_t = model.q_sample(x0, t, eps)
        # 3. ‖ε − ε̂(x_t, t)‖² per image: one query
        eps_hat = model.eps(x_t, t, batch_size=batch_size).cpu()
        total += (eps - eps_hat).double().pow(2).flatten(1).sum(1)
    return -(total / n_noise).numpy()
