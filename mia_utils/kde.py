"""The optimal denoiser of a finite training set: a kernel-weighted local mean.

For training points {x_i}_{i=1..N} and the forward process x_t = √ᾱ_t x_0 + σ_t ε
(σ_t² = 1 − ᾱ_t), the ε-predictor that minimises the DDPM loss over the *empirical*
distribution is the posterior mean of ε given x_t (Alain & Bengio 2014; the SimA paper):

    w_i(x_t)   = softmax_i( −‖x_t − √ᾱ_t x_i‖² / (2 σ_t²) )       (Gaussian kernel weights)
    μ_t(x_t)   = Σ_i w_i x_i                                       (the local mean)
    ε*(x_t, t) = (x_t − √ᾱ_t μ_t(x_t)) / σ_t
    n_eff      = 1 / Σ_i w_i²                                      (effective neighbours)

The kernel's bandwidth σ_t/√ᾱ_t (in x_0 units) shrinks as t → 0, where μ_t is the nearest
training point, and grows with t, where μ_t tends to the mean of the training set.

No library computes this (scikit-learn's KernelDensity gives densities, not the weighted
mean, and materialises all N distances at once), so it is written here: queries in batches,
the training set in chunks, with a streaming log-sum-exp in float64, so memory stays bounded
whatever N is. The oracle score uses the training set itself and no model query.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .models import default_scheduler


@dataclass
class Denoised:
    """The optimal denoiser at a batch of queries: ε* [M, ...], μ_t [M, ...], n_eff [M]."""

    eps: torch.Tensor
    mu: torch.Tensor
    n_eff: torch.Tensor


def _alpha_bar(t: int | None, alpha_bar: float | None) -> float:
    if alpha_bar is not None:
        ab = float(alpha_bar)
    elif t is None:
        raise ValueError("Give the time step t (DDPM linear schedule) or alpha_bar directly.")
    else:

        schedule = default_scheduler().alphas_cumprod.double()
        if isinstance(t, bool) or int(t) != t or not 0 <= int(t) < len(schedule):
            raise ValueError(f"t={t!r} lies outside [0, {len(schedule) - 1}] (the DDPM linear schedule's time steps).")
        ab = float(schedule[int(t)])
    if not 0 < ab <= 1:
        raise ValueError(f"ᾱ must lie in (0, 1]; got {ab}.")
    return ab


def optimal_denoiser(train: torch.Tensor, x_t: torch.Tensor, t: int | None = None, *,
                     alpha_bar: float | None = None, chunk_size: int = 4096, query_batch: int = 256,
                     device: str | torch.device | None = None) -> Denoised:
    """ε*(x_t, t), μ_t(x_t) and n_eff for queries ``x_t`` [M, ...] against ``train`` [N, ...].

    ``t`` indexes the DDPM linear schedule (T = 1000); pass ``alpha_bar`` for another schedule.
    The training set is visited ``chunk_size`` points at a time and the queries ``query_batch``
    at a time: memory is O(query_batch × (chunk_size + d)) beyond the inputs. Computed in
    float64 on ``device`` (default: the queries' device); results are float32 on the CPU.
    """
    ab = _alpha_bar(t, alpha_bar)
    a, sigma2 = np.sqrt(ab), 1.0 - ab
    if sigma2 <= 0:
        raise ValueError("σ_t must be positive (ᾱ_t < 1).")
    if len(train) == 0:
        raise ValueError("The training set is empty: the optimal denoiser needs at least one training image.")
    if train.shape[1:] != x_t.shape[1:]:
        raise ValueError(f"train images are {tuple(train.shape[1:])} but queries are {tuple(x_t.shape[1:])}.")
    device = torch.device(device) if device is not None else x_t.device
    f64 = torch.float64
    n, shape = len(train), x_t.shape[1:]
    eps_out, mu_out, neff_out = [], [], []
    for q0 in range(0, len(x_t), query_batch):
        q = x_t[q0:q0 + query_batch].to(device, f64).flatten(1)                # [B, d]
        q_sq = q.pow(2).sum(1, keepdim=True)                                    # ‖x_t‖²
        run_max = torch.full((len(q), 1), -torch.inf, dtype=f64, device=device)
        run_sum = torch.zeros((len(q), 1), dtype=f64, device=device)            # Σ e^{ℓ_i − m}
        run_sq = torch.zeros((len(q), 1), dtype=f64, device=device)             # Σ e^{2(ℓ_i − m)}
        run_vec = torch.zeros_like(q)                                           # Σ e^{ℓ_i − m} x_i
        for c0 in range(0, n, chunk_size):
            xi = train[c0:c0 + chunk_size].to(device, f64).flatten(1)           # [C, d]
            # 1. ℓ_i = −‖x_t − √ᾱ x_i‖² / (2σ²), expanded so the chunk costs one matmul
            d2 = (q_sq - 2 * a * (q @ xi.T) + ab * xi.pow(2).sum(1)).clamp_min(0)
            logits = -d2 / (2 * sigma2)
            # 2. streaming log-sum-exp: rescale the running sums to the new maximum
            new_max = torch.maximum(run_max, logits.max(1, keepdim=True).values)
            scale = torch.exp(run_max - new_max)
            e = torch.exp(logits - new_max)
            run_sum = run_sum * scale + e.sum(1, keepdim=True)
            run_sq = run_sq * scale.pow(2) + e.pow(2).sum(1, keepdim=True)
            run_vec = run_vec * scale + e @ xi
            run_max = new_max
        # 3. μ_t = Σ w_i x_i, ε* = (x_t − √ᾱ μ_t)/σ, n_eff = (Σ e)² / Σ e²
        mu = run_vec / run_sum
        eps_out.append(((q - a * mu) / np.sqrt(sigma2)).float().cpu())
        mu_out.append(mu.float().cpu())
        neff_out.append((run_sum.pow(2) / run_sq).squeeze(1).float().cpu())
    return Denoised(torch.cat(eps_out).view(-1, *shape), torch.cat(mu_out).view(-1, *shape), torch.cat(neff_out))


def eps_star(train: torch.Tensor, x_t: torch.Tensor, t: int | None = None, **kwargs) -> torch.Tensor:
    """ε*(x_t, t) only (see ``optimal_denoiser``)."""
    return optimal_denoiser(train, x_t, t, **kwargs).eps


def score(train_set: torch.Tensor, images: torch.Tensor, t: int = 50, p: float = 2, **kwargs) -> np.ndarray:
    """The oracle ε-norm score: −‖ε*(x, t)‖_p at the *clean* image x (higher = member).

    What the SimA attack would score with a perfect model of the training set: a ceiling that
    needs the training set itself. Cost: no model query; O(N · d) per image.
    """
    eps = eps_star(train_set, images, t, **kwargs).double().flatten(1)
    return -eps.abs().pow(p).sum(1).pow(1 / p).numpy()
