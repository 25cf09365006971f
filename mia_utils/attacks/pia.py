"""PIA and PIAN (Kong et al. 2024): the proximal-initialisation attack.

    ε_0 = ε̂(x_0, 0)                               (the model's noise at t = 0, one query)
    x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε_0               (deterministic: no random noise)
    A(x) = ‖ε_0 − ε̂(x_t, t)‖_p^p,  p = 4, t = 200  (one more query)

PIAN first rescales ε_0 per image so that its mean absolute value is √(2/π), the mean of
the absolute value of N(0, 1), making it look like Gaussian noise. Smaller means member; the score is −A.
Cost: 2 queries per image.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import checks
from ..models import DiffusionModel


def score(model: DiffusionModel, images: torch.Tensor, t: int = 200, p: float = 4,
          normalize: bool = False, batch_size: int | None = None) -> np.ndarray:
    """−‖ε_0 − ε̂(x_t, t)‖_p^p for each image (PIA; ``normalize=True`` for PIAN). 2 queries per image."""
    x0 = model.clean_images(images)
    t = model.check_t(t)
    p = checks.positive("p", p)
    batch_size = checks.batch_size(batch_size)
    # 1. ε_0 = ε̂(x_0, 0)
    eps0 = model.eps(x0, 0, batch_size=batch_size)
    if normalize:
        # PIAN: mean |ε_0| per image rescaled to √(2/π)
        eps0 = eps0 / eps0.abs().flatten(1).mean(1).view(-1, *[1] * (eps0.ndim - 1)) * math.sqrt(2 / math.pi)
    # 2. x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε_0
    x_t = model.q_sample(x0, t, eps0)
    # 3. ‖ε_0 − ε̂(x_t, t)‖_p^p
    diff = (eps0 - model.eps(x_t, t, batch_size=batch_size)).double().flatten(1)
    return -diff.abs().pow(p).sum(1).cpu().numpy()


def score_pian(model: DiffusionModel, images: torch.Tensor, t: int = 200, p: float = 4,
               batch_size: int | None = None) -> np.ndarray:
    """PIAN: PIA with ε_0 normalised to a mean absolute value of √(2/π). 2 queries per image."""
    return score(model, images, t=t, p=p, normalize=True, batch_size=batch_size)
