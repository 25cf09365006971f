"""LiRA, the likelihood-ratio attack with reference models (Carlini et al., S&P 2022), with
Strong LiRA's signal for diffusion models (Carlini et al., USENIX Security 2023).

Reference models r = 1 … R share the target's architecture and recipe, each trained on a known
half of a population (``mia_utils.references``), so every image x is IN for some of them and
OUT for the others. The signal is s_t(x) = −log L_t(x), the per-pixel ε-loss at time step t
averaged over K fixed noises (``_reference``: the same noises for every model; Strong LiRA's
"many noises averaged"). Per image and t, Gaussians are fitted to the references' signals:

    μ_in, σ_in over the IN references,   μ_out, σ_out over the OUT ones;

    online:   Λ(x) = Σ_t [log N(s_t; μ_in, σ_in²) − log N(s_t; μ_out, σ_out²)]
    offline:  Λ(x) = Σ_t log Φ((s_t − μ_out) / σ_out)      (OUT references only)

for the target's signal s_t; higher = member (a member's loss is lower than the OUT models'
loss on it). The time steps are treated as independent (a diagonal Gaussian), as the paper
treats its augmentations. σ is the standard deviation over models as the paper's code computes
it (``np.std``, ddof 0). With few references a per-image σ is noisy (Carlini et al.: a global
variance helps below ~64 models): the global σ pools each t's residuals s − μ over a set of
images (IN and OUT apart), the spread of one image over models, not of images around each other.
The paper pools over the images it scores, which makes one image's score depend on the others;
here the pool is a separate set, ``variance_images`` (any images of the population: no
membership label is used), so a score depends on its image alone.

Access: gray box (ε̂ on chosen inputs) plus R reference models of the target's recipe.
Cost: (1 + R) · K · len(ts) queries per image (the target's and every reference's), and with a
global σ R · K · len(ts) per variance image, once per call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.special import log_ndtr

from .. import checks
from ..models import DiffusionModel
from ._reference import check_references, loss_signals, reference_signals

_LOG_2PI = np.log(2 * np.pi)


def _log_normal(s: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return -0.5 * ((s - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * _LOG_2PI


def _fit(signals: np.ndarray, mask: np.ndarray, side: str, min_count: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """μ [N, T] and the per-image σ [N, T] of ``signals`` [R, N, T] over the references where
    ``mask`` [R, N]."""
    counts = mask.sum(0)
    if (counts < min_count).any():
        raise ValueError(f"{int((counts < min_count).sum())} image(s) are {side} of fewer than {min_count} reference "
                         f"model(s): LiRA needs each image {side} of at least {min_count} (the references must be "
                         "trained on halves of a population that holds the images scored; a σ, per image or pooled "
                         "over images, needs 2 on each side; given a pooled σ, the scored images need 1).")
    w = mask[:, :, None].astype(np.float64)
    mu = (w * signals).sum(0) / counts[:, None]
    return mu, np.sqrt((w * (signals - mu) ** 2).sum(0) / counts[:, None])


def pooled_sigma(references: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The global σ_in [T] and σ_out [T]: each t's residuals s − μ pooled over the images of
    ``references`` [R, N, T] (IN and OUT apart; ``inside`` [R, N]), the pooled variance
    Σ (s − μ)² / Σ (n_i − 1) (each image's mean costs one degree of freedom). Each image must be
    on each side of 2 references at least: with one, its residual is 0 and σ would be 0 (a
    complementary pair alone cannot measure any spread)."""
    refs, inside = np.asarray(references, float), np.asarray(inside, bool)
    out = []
    for mask, side in ((inside, "IN"), (~inside, "OUT")):
        mu, _ = _fit(refs, mask, side, min_count=2)
        w = mask[:, :, None]
        out.append(np.sqrt((w * (refs - mu) ** 2).sum((0, 1)) / (w.sum((0, 1)) - mask.shape[1])))
    return out[0], out[1]


def from_signals(target: np.ndarray, references: np.ndarray, inside: np.ndarray, online: bool = True,
                 sigma: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Λ(x) for each image from the signals s = −log L: ``target`` [N, T], ``references``
    [R, N, T] and ``inside`` [R, N] (reference r trained on image n); ``sigma``: the global
    (σ_in [T], σ_out [T]) of ``pooled_sigma``, or None for each image's own σ."""
    s, refs, inside = np.asarray(target, float), np.asarray(references, float), np.asarray(inside, bool)
    if refs.shape[1:] != s.shape or inside.shape != refs.shape[:2]:
        raise ValueError(f"signal shapes disagree: target {s.shape}, references {refs.shape}, inside {inside.shape}.")
    least = 1 if sigma is not None else 2

    def fit(mask, side, k):
        mu, sd = _fit(refs, mask, side, least)
        sd = sd if sigma is None else np.broadcast_to(np.asarray(sigma[k], float), sd.shape)
        return mu, np.maximum(sd, 1e-12)

    mu_out, sd_out = fit(~inside, "OUT", 1)
    if not online:
        return log_ndtr((s - mu_out) / sd_out).sum(1)
    mu_in, sd_in = fit(inside, "IN", 0)
    return (_log_normal(s, mu_in, sd_in) - _log_normal(s, mu_out, sd_out)).sum(1)


def score(model: DiffusionModel, images: torch.Tensor, references=None, ts: Sequence[int] = (20, 50, 100, 200),
          n_noise: int = 4, online: bool = True, variance_images: torch.Tensor | None = None, seed: int = 0,
          batch_size: int | None = None) -> np.ndarray:
    """LiRA's Λ(x) for each image [N, C, H, W] in [-1, 1] (module docstring).

    ``references``: a ``references.ReferenceModels``; ``ts``: the time steps of the signal;
    ``n_noise``: K fixed noises per image (seeded by (seed, the image's content), the same for
    the target and every reference); ``online``: IN and OUT fits (False: OUT only);
    ``variance_images``: images of the population to pool a global σ over (None: each image's
    own σ, which needs it IN and OUT of 2 references at least). Cost: (1 + R) · ``n_noise`` ·
    len(``ts``) queries per image, and R · ``n_noise`` · len(``ts``) per variance image.
    """
    references = check_references(references, "LiRA")
    n_noise = checks.positive_int("n_noise", n_noise)
    ts = [model.check_t(t) for t in ts]
    if not ts:
        raise ValueError("ts is empty: give at least one time step.")
    x0 = model.clean_images(images)
    sigma = None
    if variance_images is not None:
        v0 = model.clean_images(variance_images)
        sigma = pooled_sigma(-np.log(reference_signals(references, v0, ts, n_noise, seed, batch_size)),
                             references.membership(v0))
    target = -np.log(loss_signals(model, x0, ts, n_noise, seed, batch_size))
    refs = -np.log(reference_signals(references, x0, ts, n_noise, seed, batch_size))
    return from_signals(target, refs, references.membership(x0), online=online, sigma=sigma)
