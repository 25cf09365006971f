"""RMIA, the relative membership-inference attack (Zarifzadeh et al., ICML 2024).

A pairwise likelihood ratio of the image x against population samples z (images of the data
distribution that no model was trained on):

    LR(x, z) = [p(x | θ) / p(x)] / [p(z | θ) / p(z)],      score(x) = #{z : LR(x, z) ≥ γ} / #Z,

with p(x) = mean of p(x | θ_r) over the reference models (online), or, with OUT references
only (offline), the paper's linear approximation of the missing IN models:

    p(x) ≈ ½ [(1 + a) · p_OUT(x) + (1 − a)],      p_OUT(x) = mean of p(x | θ_r) over OUT r.

For a diffusion model p(x | θ) is a likelihood proxy: exp(−L̄(x)), L̄ the per-pixel ε-loss averaged
over the time steps ``ts`` and K fixed noises (``_reference``, the noises LiRA uses). The z are
OUT of every reference, so p(z) is the same formula over all references (offline: with ``a``).
Higher = member.

For a fixed set Z the score is a non-decreasing step function of p(x | θ) / p(x): RMIA ranks
images as that ratio does, coarsened to #Z + 1 levels. Ties between levels cost TPR at low
FPR, so #Z should be well above 1 / FPR (the chapter takes 2,000).

Access: gray box (ε̂ on chosen inputs) plus R reference models and population samples.
Cost: (1 + R) · K · len(ts) queries per image, and as many per population sample, once per call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .. import checks
from ..models import DiffusionModel
from ._reference import check_references, loss_signals


def marginal(p_refs: np.ndarray, inside: np.ndarray, online: bool = True, a: float = 0.5) -> np.ndarray:
    """p(x) [N] from the references' p(x | θ_r) [R, N] and ``inside`` [R, N] (module docstring)."""
    p_refs, inside = np.asarray(p_refs, float), np.asarray(inside, bool)
    if online:
        return p_refs.mean(0)
    out = ~inside
    if (out.sum(0) == 0).any():
        raise ValueError("Offline RMIA needs each image OUT of at least one reference model.")
    p_out = (p_refs * out).sum(0) / out.sum(0)
    return 0.5 * ((1 + a) * p_out + (1 - a))


def from_likelihoods(p_x: np.ndarray, p_x_refs: np.ndarray, inside: np.ndarray, p_z: np.ndarray,
                     p_z_refs: np.ndarray, online: bool = True, a: float = 0.5, gamma: float = 1.0) -> np.ndarray:
    """score(x) from the target's p(x | θ) [N] and p(z | θ) [M], the references' [R, N] and
    [R, M], and which references hold each x (``inside`` [R, N]; no z is inside any)."""
    ratio_x = np.asarray(p_x, float) / marginal(p_x_refs, inside, online, a)
    ratio_z = np.asarray(p_z, float) / marginal(p_z_refs, np.zeros(np.shape(p_z_refs), bool), online, a)
    if not len(ratio_z):
        raise ValueError("RMIA needs at least one population sample z.")
    # LR(x, z) ≥ γ  ⇔  ratio_z ≤ ratio_x / γ: count the z at or below each x's threshold
    order = np.sort(ratio_z)
    return np.searchsorted(order, ratio_x / gamma, side="right") / len(order)


def likelihood(signals: np.ndarray) -> np.ndarray:
    """p(x | θ) = exp(−L̄(x)) from the signals L_t [..., T] (``_reference.loss_signals``), L̄ their
    mean over the time steps."""
    return np.exp(-np.asarray(signals, float).mean(-1))


def likelihoods(model: DiffusionModel, images: torch.Tensor, ts: Sequence[int], n_noise: int, seed: int,
                batch_size: int | None) -> np.ndarray:
    """p(x | θ) [N] of ``model`` (``likelihood``), L̄ over ``ts`` and ``n_noise`` noises."""
    return likelihood(loss_signals(model, images, ts, n_noise, seed, batch_size))


def score(model: DiffusionModel, images: torch.Tensor, references=None, population: torch.Tensor | None = None,
          ts: Sequence[int] = (20, 50, 100, 200), n_noise: int = 4, online: bool = True, a: float = 0.5,
          gamma: float = 1.0, seed: int = 0, batch_size: int | None = None) -> np.ndarray:
    """RMIA's score for each image [N, C, H, W] in [-1, 1] (module docstring).

    ``references``: a ``references.ReferenceModels``; ``population``: the z [M, C, H, W], images
    no model was trained on; ``a``: the offline approximation's slope (``online=False``);
    ``gamma``: the pairwise threshold. Cost: (1 + R) · ``n_noise`` · len(``ts``) queries per image
    and per population sample.
    """
    references = check_references(references, "RMIA")
    if population is None:
        raise ValueError("RMIA compares each image with population samples z: pass population= images of the data "
                         "distribution that neither the target nor any reference was trained on.")
    n_noise = checks.positive_int("n_noise", n_noise)
    ts = [model.check_t(t) for t in ts]
    if not ts or not 0 <= a <= 1 or not gamma > 0:
        raise ValueError(f"RMIA needs time steps, 0 <= a <= 1 (got {a}) and gamma > 0 (got {gamma}).")
    x0, z = model.clean_images(images), model.clean_images(population)
    if references.membership(z).any():
        raise ValueError("A population sample z is a training image of a reference model: z must be OUT of all.")

    def per_model(m):
        return likelihoods(m, x0, ts, n_noise, seed, batch_size), likelihoods(m, z, ts, n_noise, seed, batch_size)

    p_x, p_z = per_model(model)
    refs = [per_model(m) for m in references.models]
    return from_likelihoods(p_x, np.stack([r[0] for r in refs]), references.membership(x0), p_z,
                            np.stack([r[1] for r in refs]), online=online, a=a, gamma=gamma)
