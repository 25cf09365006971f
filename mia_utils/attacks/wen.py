"""The text-conditional noise magnitude (Wen et al., ICLR 2024), as a membership score.

Wen et al. detect memorised prompts by how strongly the caption steers the noise prediction::

    d(x, c) = (1/|S|K) Σ_{t∈S} Σ_k ‖ε̂(x_t, t, c) − ε̂(x_t, t, ∅)‖₂,
    x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε_k,

large on memorised (image, caption) pairs. Their detector runs it on the first steps of a
generation from pure noise (prompt only); with the image in hand we run it on the image's own
noised latents at steps S (larger = member). Gray box. Cost: 2 queries per image per time step
and noise draw (2 × the number of steps × K in all).
"""

from __future__ import annotations

import numpy as np
import torch

from . import _conditional


def score(model, images: torch.Tensor, ts=(500, 700, 900), n_noise: int = 1, seed: int = 0,
          batch_size: int | None = None) -> np.ndarray:
    """d(x, c) for each latent [N, C, H, W] of a model bound to the images' captions (higher = member)."""
    model = _conditional.bound(model)
    x0 = model.clean_images(images)
    ts = _conditional.ts_of(model, ts)
    total = torch.zeros(len(x0), dtype=torch.float64)
    for _, e_c, e_null in _conditional.paired_eps(model, x0, ts, n_noise, seed, "wen", batch_size):
        total += (e_c - e_null).flatten(1).norm(dim=1)
    return (total / (len(ts) * n_noise)).numpy()
