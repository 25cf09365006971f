"""Noise as a Probe: DDIM inversion and generation against closed forms; the calibration threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mia_utils as mu
from mia_utils.attacks import noise_probe
from mia_utils.models import DiffusionModel, default_scheduler

from .conftest import tiny_unet, zero_eps_model


class OnePointModel(DiffusionModel):
    """The exact ε-predictor of a training set of ONE image μ: ε*(x, t) = (x − √ᾱ_t μ)/σ_t.

    Its probability-flow ODE is solved exactly by DDIM (x̂_0 = μ at every step and ε̂ is
    constant along a trajectory), so inversion followed by generation must return the input.
    """

    def __init__(self, mu_image: torch.Tensor):
        super().__init__(tiny_unet(), default_scheduler(), device="cpu")
        self.mu = mu_image

    def eps(self, x_t, t, batch_size=None, grad=False):
        self.queries += len(x_t)
        ab = float(self.alpha_bar[int(t)])
        return (x_t - ab ** 0.5 * self.mu) / (1 - ab) ** 0.5


def test_grid_is_even_and_ends_at_t_start():
    assert noise_probe.grid(999, 3) == [0, 333, 666, 999]
    assert noise_probe.grid(10, 100) == list(range(11))  # duplicates dropped


def test_inversion_then_generation_reproduces_the_input_for_a_known_eps(digits):
    model = OnePointModel(digits[0:1])
    x = digits[1:5]
    for t_start, n_inv, n_gen in ((999, 100, 50), (300, 7, 13)):
        x_t = noise_probe.ddim_invert(model, x, t_start, n_inv)
        # the inverted noise is the closed form with the implied ε: x_t = √ᾱ μ + σ ε̂
        ab0, ab = float(model.alpha_bar[0]), float(model.alpha_bar[t_start])
        eps = (x - ab0 ** 0.5 * digits[0:1]) / (1 - ab0) ** 0.5
        torch.testing.assert_close(x_t, ab ** 0.5 * digits[0:1] + (1 - ab) ** 0.5 * eps, atol=1e-4, rtol=1e-4)
        back = noise_probe.ddim_generate(model, x_t, t_start, n_gen)
        torch.testing.assert_close(back, x, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(noise_probe.score(model, x, base=model, t_start=500, inversion_steps=20,
                                                 generation_steps=10), 0, atol=1e-8)


def test_zero_eps_model_rescales_by_the_schedule():
    model = zero_eps_model()
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    x_t = noise_probe.ddim_invert(model, x, 400, 8)
    torch.testing.assert_close(x_t, x * (model.alpha_bar[400] / model.alpha_bar[0]).sqrt().float(), atol=1e-5, rtol=1e-5)


def test_queries_go_to_the_right_model(tiny_model, digits):
    base = DiffusionModel(tiny_unet(seed=1), default_scheduler(), device="cpu")
    x = digits[:4]
    noise_probe.score(tiny_model, x, base=base, inversion_steps=10, generation_steps=5)
    assert base.queries == 4 * 10 and tiny_model.queries == 4 * 5
    base.reset_queries(), tiny_model.reset_queries()
    noise_probe.score(tiny_model, x, noise="graybox", inversion_steps=10, generation_steps=5)
    assert tiny_model.queries == 4 * 15
    tiny_model.reset_queries()
    for noise in ("random", "closed_form"):
        noise_probe.score(tiny_model, x, noise=noise, generation_steps=5)
    assert tiny_model.queries == 2 * 4 * 5 and base.queries == 0
    with pytest.raises(ValueError, match="base"):
        noise_probe.score(tiny_model, x, noise="semantic")


def test_score_is_minus_mse_of_the_reconstruction(tiny_model, digits):
    x = digits[:3]
    rec = noise_probe.reconstruct(tiny_model, x, noise="closed_form", t_start=200, generation_steps=4, seed=5)
    got = noise_probe.score(tiny_model, x, noise="closed_form", t_start=200, generation_steps=4, seed=5)
    np.testing.assert_allclose(got, -((x.double() - rec.double()) ** 2).mean((1, 2, 3)).numpy())
    ssim = noise_probe.distance(x, x, "ssim")
    np.testing.assert_allclose(ssim, 0, atol=1e-12)
    # another digit is structurally far; the same digit, slightly noised, is near
    noisy = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert (noise_probe.distance(x, digits[10:13], "ssim") > 5 * noise_probe.distance(x, noisy, "ssim")).all()


def test_random_noise_carries_nothing_of_the_image(tiny_model, digits):
    x = digits[:64]
    a = noise_probe.initial_noise(tiny_model, x, noise="random", seed=3)
    # each image's own seeded draw (seeded by its content, so order and batch do not matter) ...
    torch.testing.assert_close(a, mu.noise.image_noise(x, 3, salt="noise_probe"))
    # ... standard normal and uncorrelated with the image it starts from
    assert abs(float(a.mean())) < 0.05 and abs(float(a.std()) - 1) < 0.05
    assert abs(float(np.corrcoef(a.flatten().numpy(), x.flatten().numpy())[0, 1])) < 0.05


def test_threshold_comes_from_calibration_non_members_only():
    rng = np.random.default_rng(0)
    cal_n = rng.normal(size=200)
    res = mu.metrics.calibrated(rng.normal(1, 1, 50), cal_n, rng.normal(1, 1, 80), rng.normal(size=80),
                                fpr=noise_probe.FPR)
    # the paper's rule: 15 % of the known non-members lie above the threshold
    assert np.mean(cal_n > res["threshold"]) <= 0.15 < np.mean(cal_n >= res["threshold"]) + 1 / 200
    other = mu.metrics.calibrated(rng.normal(5, 1, 50), cal_n, rng.normal(9, 1, 80), rng.normal(3, 1, 80),
                                  fpr=noise_probe.FPR)
    assert other["threshold"] == res["threshold"]  # evaluation scores and members do not move it
