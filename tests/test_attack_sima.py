"""SimA (the ε-norm) against a loop with diffusers directly; direction; bit-for-bit reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mia_utils as mu


@pytest.mark.parametrize("p", [2, 4])
def test_clean_sima_matches_a_loop_with_diffusers(tiny_model, digits, p):
    x, t = digits[:7], 30
    got = mu.attacks.sima.score(tiny_model, x, t=t, p=p, batch_size=3)
    assert tiny_model.queries == 7  # one query per image
    expected = []
    for img in x:
        with torch.no_grad():
            eps_hat = tiny_model.unet(img[None], torch.tensor([t])).sample.double()
        expected.append(-float(eps_hat.abs().pow(p).sum() ** (1 / p)))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_noisy_sima_matches_a_loop_with_diffusers(tiny_model, digits):
    x, t = digits[:5], 120
    got = mu.attacks.sima.score(tiny_model, x, t=t, p=2, noisy=True, seed=9)
    expected = []
    for i in range(len(x)):
        (gen,) = mu.noise.generators(x[i:i + 1], seed=9, salt="sima/noisy")  # the image's own generator
        eps = torch.randn(x.shape[1:], generator=gen)[None]
        x_t = tiny_model.scheduler.add_noise(x[i:i + 1], eps, torch.tensor([t]))
        with torch.no_grad():
            expected.append(-float(tiny_model.unet(x_t, torch.tensor([t])).sample.double().norm()))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_members_score_higher_on_a_model_built_to_memorise(memorised):
    model, members, nonmembers = memorised
    for p in (2, 4):
        s_in, s_out = (mu.attacks.sima.score(model, x, t=20, p=p) for x in (members, nonmembers))
        assert mu.metrics.auc(s_in, s_out) > 0.8


def test_scores_reproduce_bit_for_bit(tiny_model, digits):
    for kw in ({}, {"noisy": True, "seed": 3}):
        a = mu.attacks.sima.score(tiny_model, digits[:16], t=10, **kw)
        b = mu.attacks.sima.score(tiny_model, digits[:16], t=10, **kw)
        assert np.array_equal(a, b)
    a = mu.attacks.loss.score(tiny_model, digits[:16], n_noise=2, seed=4)
    assert np.array_equal(a, mu.attacks.loss.score(tiny_model, digits[:16], n_noise=2, seed=4))


def test_sweep_costs_one_query_per_image_per_t(tiny_model, digits):
    out = mu.attacks.sweep(mu.attacks.sima.score, tiny_model, digits[:6], [0, 10, 100], p=2)
    assert sorted(out) == [0, 10, 100] and tiny_model.queries == 18
    np.testing.assert_array_equal(out[10], mu.attacks.sima.score(tiny_model, digits[:6], t=10, p=2))


def test_gpu_images_and_numpy_inputs(tiny_model, digits):
    # numpy arrays are taken as tensors; the scores always come back as a CPU float64 array
    s = mu.attacks.sima.score(tiny_model, digits[:3].numpy(), t=4)
    np.testing.assert_array_equal(s, mu.attacks.sima.score(tiny_model, digits[:3], t=4))
