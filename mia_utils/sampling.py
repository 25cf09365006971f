"""Synthetic sets from a model: DDPM ancestral and DDIM sampling through diffusers' schedulers.

Every sampler takes a ``generator`` (a CPU ``torch.Generator``) so a synthetic set reproduces
exactly; each denoising step is one query per image, counted by the model wrapper.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from tqdm.auto import tqdm

from .models import DiffusionModel


def _run(model: DiffusionModel, scheduler, n: int, generator: torch.Generator | None,
         progress: bool, desc: str, **step_kwargs) -> torch.Tensor:
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    # x_T ~ N(0, I), drawn on the CPU so the set does not depend on the device
    x = torch.randn((n, *model.sample_shape), generator=generator)
    for t in tqdm(scheduler.timesteps, desc=desc, disable=not progress, mininterval=2):
        eps_hat = model.eps(x, int(t))
        x = scheduler.step(eps_hat, int(t), x, generator=generator, **step_kwargs).prev_sample
    # images are clamped to the model's pixel range; latents (no input range) are left as they are
    return x.clamp(*model.input_range) if model.input_range is not None else x


def ddpm_sample(model: DiffusionModel, n: int, generator: torch.Generator | None = None,
                num_inference_steps: int | None = None, progress: bool = True) -> torch.Tensor:
    """n images by DDPM ancestral sampling (Ho et al. 2020, Alg. 2), [n, C, H, W] in [-1, 1].

    x_{t-1} = (x_t − β_t/√(1−ᾱ_t) ε̂(x_t, t))/√α_t + σ_t z. Cost: T queries per image
    (``num_inference_steps`` fewer, strided, when given).
    """
    scheduler = DDPMScheduler.from_config(model.scheduler.config)
    scheduler.set_timesteps(num_inference_steps or model.num_train_timesteps)
    return _run(model, scheduler, n, generator, progress, "DDPM sampling")


def ddim_sample(model: DiffusionModel, n: int, num_inference_steps: int = 50, eta: float = 0.0,
                generator: torch.Generator | None = None, progress: bool = True) -> torch.Tensor:
    """n images by DDIM (Song et al. 2021), deterministic for ``eta=0`` given x_T.

    x_{t'} = √ᾱ_{t'} x̂_0 + √(1−ᾱ_{t'} − σ²) ε̂ + σ z,  x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t.
    Cost: ``num_inference_steps`` queries per image.
    """
    scheduler = DDIMScheduler.from_config(model.scheduler.config)
    scheduler.set_timesteps(num_inference_steps)
    return _run(model, scheduler, n, generator, progress, "DDIM sampling", eta=eta)


def sample(model: DiffusionModel, n: int, sampler: str = "ddim", steps: int | None = None,
           generator: torch.Generator | None = None, progress: bool = True) -> torch.Tensor:
    """n samples by ``sampler``: "ddpm" (ancestral, ``steps`` default T) or "ddim" (``steps``
    default 50)."""
    if sampler == "ddpm":
        return ddpm_sample(model, n, generator=generator, num_inference_steps=steps, progress=progress)
    if sampler == "ddim":
        return ddim_sample(model, n, num_inference_steps=steps or 50, generator=generator, progress=progress)
    raise ValueError(f"sampler must be 'ddpm' or 'ddim', not {sampler!r}.")


def ddim_step(model: DiffusionModel, x: torch.Tensor, t_from: int, t_to: int,
              eps_hat: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One deterministic DDIM step from t_from to t_to, up or down (SecMI's step).

        ε = ε̂(x, t_from);  x̂_0 = (x − √(1−ᾱ_{t_from}) ε)/√ᾱ_{t_from};
        x_{t_to} = √ᾱ_{t_to} x̂_0 + √(1−ᾱ_{t_to}) ε.

    Returns (x_{t_to}, ε). Costs one query unless ``eps_hat`` is given. Written here because
    diffusers' DDIMScheduler steps only downward by a stride fixed by ``num_inference_steps``
    (and clips x̂_0 by default), and DDIMInverseScheduler shifts which time step the model is
    queried at; tests check this step against DDIMScheduler (clipping off) where both apply.
    """
    ab = model.alpha_bar
    a_from, a_to = ab[t_from].item(), ab[t_to].item()
    eps = model.eps(x, t_from) if eps_hat is None else eps_hat
    x0_hat = (x - (1 - a_from) ** 0.5 * eps) / a_from ** 0.5
    return a_to ** 0.5 * x0_hat + (1 - a_to) ** 0.5 * eps, eps
