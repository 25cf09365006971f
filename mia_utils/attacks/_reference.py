"""The signal the reference-model attacks (``lira``, ``rmia``) compare between the target and
its reference models (``mia_utils.references``).

``loss_signals``: for each image and time step t of ``ts``, the per-pixel
ε-prediction loss averaged over K fixed noises,

    L_t(x) = (1 / (K d)) Σ_k ‖ε_k − ε̂(√ᾱ_t x + √(1 − ᾱ_t) ε_k, t)‖²,

the loss attack's statistic (``attacks.loss``) divided by the pixel count d. Its noises are
seeded by (seed, the image's content), so the target and every reference see the *same* K
noises for an image: the differences between models are the models', not the draws' (Carlini
et al. 2023 fix the noises so too). LiRA fits Gaussians to s = −log L_t (a log-loss is close to
Gaussian over models, the loss itself is skewed); RMIA reads exp(−L̄) as a likelihood proxy.
Cost: K·len(ts) queries per image and model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..models import DiffusionModel
from ..references import ReferenceModels
from . import loss


def check_references(references, name: str) -> ReferenceModels:
    """``references`` as given, or a clear error when the attack was called without them."""
    if not isinstance(references, ReferenceModels):
        raise ValueError(f"{name} compares the target with reference models: pass references="
                         "ReferenceModels(...) (mia_utils.references; `mia-book score --references DIR`).")
    return references


def loss_signals(model: DiffusionModel, images: torch.Tensor, ts: Sequence[int], n_noise: int = 4, seed: int = 0,
                 batch_size: int | None = None) -> np.ndarray:
    """L_t(x) [N, len(ts)]: the per-pixel loss at each t over ``n_noise`` noises (module docstring).
    Cost: ``n_noise × len(ts)`` queries per image."""
    d = int(np.prod(images.shape[1:]))
    return np.stack([-loss.score(model, images, t=int(t), n_noise=n_noise, seed=seed, batch_size=batch_size) / d
                     for t in ts], axis=1).reshape(len(images), len(ts))


def reference_signals(references: ReferenceModels, images: torch.Tensor, ts: Sequence[int], n_noise: int = 4,
                      seed: int = 0, batch_size: int | None = None) -> np.ndarray:
    """``loss_signals`` of every reference: [R, N, len(ts)]."""
    return np.stack([loss_signals(m, images, ts, n_noise, seed, batch_size) for m in references.models])
