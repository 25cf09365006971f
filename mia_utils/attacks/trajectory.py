"""Trajectory features: the loss and its input gradient along the diffusion time axis, scored
by a linear probe trained on labelled calibration images (the book's chapter 04).

For each time step t of ``ts`` (one seeded noise ε_t per image and t, seeded by its content):

    L_t(x) = ‖ε_t − ε̂_θ(√ᾱ_t x + √(1 − ᾱ_t) ε_t, t)‖²,    G_t(x) = ‖∇_x L_t(x)‖²

and the features are log L_t and log G_t (``features.trajectory_features``), one column per
(kind, t). A member's loss dips at the time steps where the model memorised it; the probe
learns which dips matter. Access: **white box** for ``grad_x`` (a backward pass through the
model), gray box for ``loss`` alone. Cost per image: len(ts) queries and one backward pass per
t for each gradient kind.
"""

from __future__ import annotations

import numpy as np
import torch

from ..features import stride, trajectory_features
from ..models import DiffusionModel

TS = tuple(stride(100))  # 0, 100, ..., 900


def features(model: DiffusionModel, images: torch.Tensor, ts: tuple[int, ...] = TS,
             kinds: tuple[str, ...] = ("loss", "grad_x"), seed: int = 0,
             batch_size: int | None = None) -> tuple[np.ndarray, list[str]]:
    """The log features [N, len(kinds) · len(ts)] and their names ``{kind}_t{t}``."""
    f = trajectory_features(model, images, ts, kinds=kinds, seed=seed, batch_size=batch_size, progress=False)
    return f.matrix(log=True), [f"{k}_t{t}" for k in f.values for t in f.ts]
