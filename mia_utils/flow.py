"""Rectified flow (Stable Diffusion 3, Flux) seen as a variance-preserving ε-predictor.

A rectified-flow model is trained on the straight path from data to noise and predicts its
velocity (Liu et al. 2023; Esser et al. 2024):

    x_σ = (1 − σ) x₀ + σ ε,   v = dx_σ/dσ = ε − x₀,   loss ‖v̂(x_σ, σ) − v‖²,   σ ∈ (0, 1).

Given v̂ and x_σ, the noise and the clean image it implies are exact linear maps:

    ε̂ = x_σ + (1 − σ) v̂,     x̂₀ = x_σ − σ v̂.

Every attack of the package is written for the variance-preserving process
x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε. The flow's path is that process up to a scale: with
s(σ) = √((1 − σ)² + σ²),

    x_σ / s = ((1 − σ)/s) x₀ + (σ/s) ε,   so  √ᾱ = (1 − σ)/s,  √(1 − ᾱ) = σ/s,

i.e. ᾱ(σ) = (1 − σ)² / ((1 − σ)² + σ²). A flow model therefore *is* a VP ε-predictor
ε̂_VP(x, t) = ε̂(s·x, σ_t) on a schedule ᾱ_t, and every attack runs on it unchanged:

* **loss**: ε̂ − ε = x_σ + (1 − σ) v̂ − ε = (1 − σ)(v̂ − v), so the ε-loss is the flow's own
  training loss times (1 − σ)²: at one σ it ranks images exactly as the velocity loss does;
* **SimA**: ‖ε̂(x₀, σ)‖ on the clean image = ‖x₀ + (1 − σ) v̂(x₀, σ)‖, the norm of the noise the
  flow would send x₀ to in one straight step (1 − σ of the way);
* **PIA**: its deterministic noise ε̂(x₀, σ_0) ≈ x₀ + v̂(x₀, 0), the one-step Euler image of x₀
  at σ = 1, is diffused to σ and compared with the model's ε̂ there, as for a DDPM;
* **CLiD / Wen et al.**: conditional minus unconditional ε-losses on the same x_σ, each
  (1 − σ)² times the velocity losses' difference;
* **the noise probe (DDIM inversion and generation)**: a DDIM step in VP coordinates from t to
  t' is x_{t'} = √ᾱ' x̂₀ + √(1 − ᾱ') ε̂; multiplied by s' it is x_{σ'} = (1 − σ') x̂₀ + σ' ε̂
  = x_σ + (σ' − σ) v̂, the flow ODE's own Euler step (what ``FlowMatchEulerDiscreteScheduler``
  does), up or down. Inversion and generation are the flow's ODE, exactly.

The time grid: step t of T is the scheduler's σ grid, ascending, (t + 1)/(T + 1) mapped
through its ``shift`` (σ' = shift·σ / (1 + (shift − 1) σ), SD3: 3), so that σ stays inside
(0, 1) and ᾱ inside (0, 1): DDIM's x̂₀ = (x − √(1 − ᾱ) ε̂)/√ᾱ is defined at every step.
The network is queried at its own timestep σ · ``num_train_timesteps`` (SD3's convention).
This module holds the maps only; ``models.DiffusionModel`` applies them.
"""

from __future__ import annotations

import torch


def sigmas(scheduler) -> torch.Tensor:
    """σ_t for t = 0 … T − 1 (float64, ascending, inside (0, 1)) of a
    ``FlowMatchEulerDiscreteScheduler``: (t + 1)/(T + 1) through its static ``shift``."""
    config = scheduler.config
    T = int(config.num_train_timesteps)
    s = torch.arange(1, T + 1, dtype=torch.float64) / (T + 1)
    shift = float(getattr(config, "shift", 1.0))
    if getattr(config, "use_dynamic_shifting", False):
        raise ValueError("This flow scheduler shifts σ by the image's resolution (use_dynamic_shifting, as Flux "
                         "does): set a static shift in its config to audit it.")
    return shift * s / (1 + (shift - 1) * s)


def alpha_bar(sigma: torch.Tensor) -> torch.Tensor:
    """The VP schedule of the flow's path: ᾱ = (1 − σ)² / ((1 − σ)² + σ²)."""
    return (1 - sigma) ** 2 / ((1 - sigma) ** 2 + sigma ** 2)


def scale(sigma: torch.Tensor) -> torch.Tensor:
    """s(σ) = √((1 − σ)² + σ²): x_σ = s · x_VP."""
    return ((1 - sigma) ** 2 + sigma ** 2).sqrt()


def eps_from_velocity(x_sigma: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """ε̂ = x_σ + (1 − σ) v̂ (``sigma`` broadcast over the image dimensions)."""
    return x_sigma + (1 - sigma) * v


def betas(alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """β_t = 1 − ᾱ_t / ᾱ_{t−1} (β_0 = 1 − ᾱ_0): the VP schedule as a DDPM scheduler's ``trained_betas``."""
    prev = torch.cat([alpha_bar_t.new_ones(1), alpha_bar_t[:-1]])
    return 1 - alpha_bar_t / prev
