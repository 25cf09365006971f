"""Samplers: reproducible, counted, and the DDIM step as its closed form."""

from __future__ import annotations

import torch

import mia_utils as mu


def test_ddim_matches_its_closed_form(tiny_model):
    n, steps = 3, 5
    out = mu.sampling.ddim_sample(tiny_model, n, num_inference_steps=steps,
                                  generator=torch.Generator().manual_seed(1), progress=False)
    assert tiny_model.queries == n * steps
    # independent loop: x_{t'} = √ᾱ_{t'} x̂_0 + √(1−ᾱ_{t'}) ε̂ with x̂_0 clipped to [-1, 1] but ε̂ the
    # model's own (diffusers' default use_clipped_model_output=False); ᾱ after the last step = 1
    ab = tiny_model.alpha_bar
    ts = list(range(0, 1000, 1000 // steps))[::-1]  # "leading" spacing: 800, 600, ..., 0
    x = torch.randn((n, 1, 8, 8), generator=torch.Generator().manual_seed(1)).double()
    for i, t in enumerate(ts):
        with torch.no_grad():
            eps = tiny_model.unet(x.float(), torch.full((n,), t)).sample.double()
        x0 = ((x - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()).clamp(-1, 1)
        ab_prev = ab[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
        x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
    assert torch.allclose(out, x.float().clamp(-1, 1), atol=1e-4)


def test_samplers_reproduce_with_a_generator(tiny_model):
    a = mu.sampling.ddpm_sample(tiny_model, 2, generator=torch.Generator().manual_seed(3),
                                num_inference_steps=20, progress=False)
    b = mu.sampling.ddpm_sample(tiny_model, 2, generator=torch.Generator().manual_seed(3),
                                num_inference_steps=20, progress=False)
    c = mu.sampling.ddpm_sample(tiny_model, 2, generator=torch.Generator().manual_seed(4),
                                num_inference_steps=20, progress=False)
    assert a.shape == (2, 1, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    assert tiny_model.queries == 3 * 2 * 20
    assert a.min() >= -1 and a.max() <= 1
