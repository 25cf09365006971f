"""The loss attack against a loop with diffusers directly; seeds; direction on a memorising model."""

from __future__ import annotations

import numpy as np
import torch

import mia_utils as mu


def test_loss_score_matches_a_loop_with_diffusers(tiny_model, digits):
    x, t, k = digits[:6], 70, 3
    got = mu.attacks.loss.score(tiny_model, x, t=t, n_noise=k, seed=11, batch_size=4)
    assert tiny_model.queries == 6 * k
    ab = tiny_model.scheduler.alphas_cumprod[t]
    expected = []
    for i in range(len(x)):
        # image i's noises: the first k draws of its own generator, seeded by (seed, its content)
        (gen,) = mu.noise.generators(x[i:i + 1], seed=11, salt="loss")
        losses = []
        for _ in range(k):
            eps = torch.randn(x.shape[1:], generator=gen)[None]
            x_t = tiny_model.scheduler.add_noise(x[i:i + 1], eps, torch.tensor([t]))
            assert torch.allclose(x_t, ab.sqrt() * x[i:i + 1] + (1 - ab).sqrt() * eps, atol=1e-6)
            with torch.no_grad():
                eps_hat = tiny_model.unet(x_t, torch.tensor([t])).sample
            losses.append(float(((eps - eps_hat) ** 2).sum()))
        expected.append(-np.mean(losses))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_loss_score_is_reproducible_and_seeded(tiny_model, digits):
    a = mu.attacks.loss.score(tiny_model, digits[:8], seed=1)
    b = mu.attacks.loss.score(tiny_model, digits[:8], seed=1, batch_size=3)
    c = mu.attacks.loss.score(tiny_model, digits[:8], seed=2)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert not np.allclose(a, c)


def test_members_score_higher_on_a_model_built_to_memorise(memorised):
    model, members, nonmembers = memorised
    s_in = mu.attacks.loss.score(model, members, t=50, n_noise=8)
    s_out = mu.attacks.loss.score(model, nonmembers, t=50, n_noise=8)
    assert mu.metrics.auc(s_in, s_out) > 0.8
