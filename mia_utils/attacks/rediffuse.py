"""ReDiffuse: a black-box attack through image variations (Li et al. 2025).

An attacker who can only ask for *variations* of an image (the "image-to-image" door of most
deployed generators: noise the image to a strength t, then let the model denoise it) sends the
image n times and averages what comes back:

    x̂^(j) = V_t(x; ε_j)   (x_t = √ᾱ_t x + √(1 − ᾱ_t) ε_j, then deterministic DDIM t → 0),
    score(x) = −‖x − (1/n) Σ_j x̂^(j)‖².

A member is one the model has learnt to reconstruct: its variations scatter around the image
itself, and their average (which cancels part of the noise each variation brings) lands
closer to it than a non-member's. The attack never reads ε̂ or a weight: only images in and
out, so its access level is **black box**; we run the variation with the victim's own DDIM
(``steps`` steps from t down to 0). Cost: n × ``steps`` model queries per image (n calls of
the variation door).
"""

from __future__ import annotations

import numpy as np
import torch

from .. import checks
from ..models import DiffusionModel
from ..noise import draw, generators
from ..sampling import ddim_step


def time_grid(t: int, steps: int) -> list[int]:
    """The DDIM path of a variation: ``steps`` near-even strides from t down to 0."""
    grid = np.unique(np.linspace(0, t, steps + 1).round().astype(int))[::-1]
    if len(grid) != steps + 1:
        raise ValueError(f"steps={steps} strides from t={t} to 0 would repeat a time step: give steps <= t.")
    return [int(s) for s in grid]


def variations(model: DiffusionModel, images: torch.Tensor, t: int = 200, n: int = 4, steps: int = 10,
               seed: int = 0) -> torch.Tensor:
    """n variations of each image [n, N, C, H, W]; variation j's noise is the j-th draw of the
    image's own generator (seed, its content). Cost: n × ``steps`` queries per image."""
    x0 = model.clean_images(images)
    t = model.check_t(t)
    n = checks.positive_int("n", n)
    path = time_grid(t, checks.positive_int("steps", steps))
    gens = generators(x0, seed, salt="rediffuse")
    out = []
    for _ in range(n):
        # 1. noise the image to strength t with its own seeded ε
        x = model.q_sample(x0, t, draw(gens, tuple(x0.shape[1:])))
        # 2. deterministic DDIM from t down to 0: one query per step
        for t_from, t_to in zip(path[:-1], path[1:]):
            x, _ = ddim_step(model, x, t_from, t_to)
        out.append(x)
    return torch.stack(out)


def score(model: DiffusionModel, images: torch.Tensor, t: int = 200, n: int = 4, steps: int = 10,
          seed: int = 0) -> np.ndarray:
    """−‖x − mean of its n variations‖² (higher = member). n × ``steps`` queries per image."""
    x0 = model.clean_images(images)
    mean = variations(model, images, t=t, n=n, steps=steps, seed=seed).double().mean(0)
    return -(x0.double() - mean).flatten(1).pow(2).sum(1).cpu().numpy()
