"""CLiD: the conditional likelihood discrepancy (Zhai et al., NeurIPS 2024).

A text-to-image model fine-tuned on (image, caption) pairs overfits the *conditional*
distribution more than the unconditional one: on a member, the caption lowers the denoising
loss more than it does on a non-member. With ∅ the reduced condition (the empty prompt; the
paper also uses captions with words removed) and the same seeded ε for both terms::

    L_c(x)  = (1/|S|K) Σ_{t∈S} Σ_k ‖ε_k − ε̂(x_t, t, c)‖²
    L_∅(x)  = (1/|S|K) Σ_{t∈S} Σ_k ‖ε_k − ε̂(x_t, t, ∅)‖²
    D(x, c) = L_∅(x) − L_c(x)                          (the discrepancy; larger = member)
    score   = D(x, c) − λ · L_c(x)                     (the paper's CLiD_th; λ = 0: D alone)

x is the latent z_0 the UNet diffuses. Gray box (ε̂ with and without the caption). Cost: 2
queries per image per time step and noise draw (2 × the number of steps × K in all).
"""

from __future__ import annotations

import numpy as np
import torch

from . import _conditional


def score(model, images: torch.Tensor, ts=(100, 200, 300), n_noise: int = 1, lam: float = 0.0,
          seed: int = 0, batch_size: int | None = None) -> np.ndarray:
    """D(x, c) − λ L_c(x) for each latent [N, C, H, W] of a model bound to the images' captions
    (higher = member). ``ts``: the time steps S; ``n_noise``: K seeded noises per step."""
    model = _conditional.bound(model)
    x0 = model.clean_images(images)
    ts = _conditional.ts_of(model, ts)
    l_c = torch.zeros(len(x0), dtype=torch.float64)
    l_null = torch.zeros(len(x0), dtype=torch.float64)
    for eps, e_c, e_null in _conditional.paired_eps(model, x0, ts, n_noise, seed, "clid", batch_size):
        l_c += (eps - e_c).pow(2).flatten(1).sum(1)
        l_null += (eps - e_null).pow(2).flatten(1).sum(1)
    draws = len(ts) * n_noise
    l_c, l_null = l_c / draws, l_null / draws
    return (l_null - l_c - float(lam) * l_c).numpy()
