"""PFAMI: the loss's fluctuation under small perturbations (Fu et al. 2023).

A model that memorised x puts a local maximum of its density at x: perturb a member slightly
and its likelihood drops sharply; perturb a non-member and it barely moves. With the
denoising loss as the (negative log-)likelihood proxy, PFAMI's metric attack reads

    Δ(x) = (1/M) Σ_m [ L̄(x̃_m) − L̄(x) ] / L̄(x),    L̄(x) = (1/K) Σ_k L_{t_k}(x),

the mean *relative* rise of the loss when x is replaced by its perturbations x̃_m; higher =
member. The perturbation here is the paper's cropping family at increasing strengths λ_m:
the central (1 − λ_m) part of the image resized back to full size (bilinear), deterministic.
L_t is the loss attack's, with every image's noise seeded by (seed, the *original* image's
content) and the same ε for x and each x̃_m (common random numbers: the difference measures
the perturbation, not the noise draw); t_1..t_K are ``ts``. Access: **gray box** (ε̂ at
chosen inputs). Cost: (M + 1) × K queries per image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..models import DiffusionModel
from ..noise import draw, generators

STRENGTHS = (0.05, 0.1, 0.15, 0.2)


def crop(images: torch.Tensor, strength: float) -> torch.Tensor:
    """The central (1 − strength) of each image, resized back to its size (bilinear): a zoom-in."""
    if not 0 <= strength < 1:
        raise ValueError(f"strength={strength!r}: a crop keeps the central (1 - strength); give 0 <= strength < 1.")
    scale = 1 - strength
    theta = torch.tensor([[scale, 0.0, 0.0], [0.0, scale, 0.0]], dtype=images.dtype, device=images.device)
    grid = F.affine_grid(theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def score(model: DiffusionModel, images: torch.Tensor, ts: tuple[int, ...] = (50, 100, 150),
          strengths: tuple[float, ...] = STRENGTHS, seed: int = 0) -> np.ndarray:
    """Δ(x): the mean relative rise of L̄ from x to its crops (higher = member).
    (len(strengths) + 1) × len(ts) queries per image."""
    x0 = model.clean_images(images)
    ts = [model.check_t(t, "ts") for t in ts]
    if not ts or not strengths:
        raise ValueError("PFAMI needs at least one time step (ts) and one perturbation strength (strengths).")
    variants = [x0, *[crop(x0, float(s)) for s in strengths]]
    gens = generators(x0, seed, salt="pfami")
    losses = torch.zeros(len(variants), len(x0), dtype=torch.float64)
    for t in ts:
        # 1. one seeded ε per image and time step, shared by the image and its perturbations
        eps = draw(gens, tuple(x0.shape[1:])).to(x0.device)
        for v, x in enumerate(variants):
            # 2. L_t of each variant: ‖ε − ε̂(√ᾱ_t x + √(1 − ᾱ_t) ε, t)‖², one query
            e_hat = model.eps(model.q_sample(x, t, eps), t)
            losses[v] += (eps - e_hat).double().flatten(1).pow(2).sum(1).cpu() / len(ts)
    # 3. the mean relative rise over the perturbations
    return ((losses[1:] - losses[0]) / losses[0]).mean(0).numpy()
