"""GSA1 and GSA2: white-box attacks on the loss's gradients (Pang et al., PoPETs 2025).

A model that trained on x has pushed its loss at x towards a minimum, so the loss's gradient
with respect to the weights is smaller there, layer by layer, than at an image it never saw.
For K time steps t_1..t_K (each with its own noise ε_k, seeded by the image's content) and
every parameter tensor (layer) l:

    GSA1: g_l(x) = ‖∇_θl (1/K) Σ_k L_{t_k}(x)‖        (losses averaged, one gradient)
    GSA2: g_l(x) = (1/K) Σ_k ‖∇_θl L_{t_k}(x)‖        (one gradient per step, norms averaged)

with L_t(x) = ‖ε − ε̂_θ(√ᾱ_t x + √(1 − ᾱ_t) ε, t)‖². The features log g(x) (one per layer)
feed a classifier. The paper trains it on a shadow model's members and non-members; we train
it on the victim's calibration split (what an auditor holding known members has), a
standardised logistic regression with cross-validated regularisation (``probes.fit``: with a
few hundred calibration images, the paper's gradient-boosted trees overfit). Access: **white
box** (weights and gradients). Cost: K queries per image and 1 (GSA1) or K (GSA2) backward
passes.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models import DiffusionModel
from ..noise import draw, generators

MODES = ("gsa1", "gsa2")


def features(model: DiffusionModel, images: torch.Tensor, ts: tuple[int, ...] = (100, 200, 300, 400),
             mode: str = "gsa1", seed: int = 0, chunk: int = 32) -> np.ndarray:
    """log g_l(x) per image and layer [N, L] (GSA1 or GSA2, module docstring). K = len(ts)
    queries per image; 1 (GSA1) or K (GSA2) backward passes."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: use 'gsa1' (losses averaged, then one gradient) or 'gsa2' (norms averaged).")
    x0 = model.clean_images(images)
    ts = [model.check_t(t, "ts") for t in ts]
    if not ts:
        raise ValueError("GSA needs at least one time step (ts).")
    gens = generators(x0, seed, salt="gsa")
    eps = torch.stack([draw(gens, tuple(x0.shape[1:])) for _ in ts], dim=1).to(x0.device)  # [N, K, C, H, W]
    x_t = torch.stack([model.q_sample(x0, t, eps[:, k]) for k, t in enumerate(ts)], dim=1)
    t = torch.tensor(ts).expand(len(x0), len(ts))
    if mode == "gsa1":
        norms = model.per_sample_layer_grad_norms(x_t, t, eps, chunk)
    else:
        norms = torch.stack([model.per_sample_layer_grad_norms(x_t[:, k:k + 1], t[:, k:k + 1], eps[:, k:k + 1], chunk)
                             for k in range(len(ts))]).mean(0)
    return norms.double().clamp_min(1e-30).log().cpu().numpy()


def feature_matrix(model: DiffusionModel, images: torch.Tensor, ts: tuple[int, ...] = (100, 200, 300, 400),
                   mode: str = "gsa1", seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """``features`` with one name per column: ``grad_{parameter name}`` (the registry's feature
    attack ``gsa``)."""
    names = [f"grad_{name}" for name, _ in model.unet.named_parameters()]
    return features(model, images, ts=tuple(ts), mode=mode, seed=seed), names
