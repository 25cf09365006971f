"""The optimal denoiser against a brute-force loop, its limits, and its optimality."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mia_utils import kde
from mia_utils.models import default_scheduler

ALPHA_BAR = default_scheduler().alphas_cumprod.double()


def brute_force(train, x, ab):
    # one query, one training point at a time, the softmax written out in float64
    out_eps, out_mu, out_neff = [], [], []
    for q in x.double():
        logits = [-float(((q - math.sqrt(ab) * xi.double()) ** 2).sum()) / (2 * (1 - ab)) for xi in train]
        m = max(logits)
        w = np.exp(np.array(logits) - m)
        w /= w.sum()
        mu = sum(float(wi) * xi.double() for wi, xi in zip(w, train))
        out_eps.append((q - math.sqrt(ab) * mu) / math.sqrt(1 - ab))
        out_mu.append(mu)
        out_neff.append(1 / float((w ** 2).sum()))
    return torch.stack(out_eps), torch.stack(out_mu), torch.tensor(out_neff, dtype=torch.float64)


@pytest.mark.parametrize("t", [1, 20, 200, 900])
def test_matches_brute_force_any_shape(t):
    g = torch.Generator().manual_seed(t)
    train, x = torch.randn(37, 3, 2, 2, generator=g), torch.randn(9, 3, 2, 2, generator=g)
    got = kde.optimal_denoiser(train, x, t, chunk_size=5, query_batch=4)
    eps, mu, neff = brute_force(train, x, float(ALPHA_BAR[t]))
    assert got.eps.shape == x.shape
    torch.testing.assert_close(got.eps.double(), eps, atol=1e-4, rtol=1e-4)  # float32 results
    torch.testing.assert_close(got.mu.double(), mu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.n_eff.double(), neff, atol=1e-3, rtol=1e-4)


def test_chunked_and_unchunked_agree():
    g = torch.Generator().manual_seed(0)
    train, x = torch.randn(500, 1, 8, 8, generator=g), torch.randn(40, 1, 8, 8, generator=g)
    one = kde.optimal_denoiser(train, x, 100, chunk_size=10_000, query_batch=1000)
    many = kde.optimal_denoiser(train, x, 100, chunk_size=7, query_batch=3)
    torch.testing.assert_close(one.eps, many.eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one.n_eff, many.n_eff, atol=1e-4, rtol=1e-5)


def test_small_t_points_to_the_nearest_training_point(digits):
    train, x = digits[:200], digits[200:220]
    ab = float(ALPHA_BAR[0])
    out = kde.optimal_denoiser(train, x, 0)
    nearest = torch.cdist(x.flatten(1), math.sqrt(ab) * train.flatten(1)).argmin(1)
    torch.testing.assert_close(out.mu, train[nearest], atol=1e-4, rtol=0)
    assert torch.all(out.n_eff < 1.01)
    # ε* is the (scaled) vector from √ᾱ x_nearest to the query
    torch.testing.assert_close(out.eps, (x - math.sqrt(ab) * train[nearest]) / math.sqrt(1 - ab), atol=1e-3, rtol=1e-4)


def test_large_t_gives_the_data_mean(digits):
    train = digits[:200]
    x = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = kde.optimal_denoiser(train, x, 999)
    # √ᾱ_999 ≈ 0.006: the kernel is nearly flat, μ within a few hundredths of the mean (range [-1, 1])
    torch.testing.assert_close(out.mu, train.mean(0, keepdim=True).expand_as(out.mu), atol=0.05, rtol=0)
    assert torch.all(out.n_eff > 0.99 * len(train))


def test_is_the_loss_minimiser_on_the_training_set(digits):
    # Monte Carlo: E‖ε − f(x_t)‖² over x_0 ~ train, ε ~ N(0, I) is smallest for f = ε*
    train, t = digits[:100], 300
    ab = float(ALPHA_BAR[t])
    g = torch.Generator().manual_seed(1)
    x0 = train[torch.randint(len(train), (4000,), generator=g)]
    eps = torch.randn(x0.shape, generator=g)
    x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
    best = kde.eps_star(train, x_t, t)

    def loss(f):
        return float((eps - f).pow(2).flatten(1).sum(1).mean())

    base = loss(best)
    for scale in (0.9, 1.1):
        assert loss(best * scale) > base
    for seed in range(3):
        delta = 0.2 * torch.randn(1, *x0.shape[1:], generator=torch.Generator().manual_seed(10 + seed))
        assert loss(best + delta) > base
    # a trivial predictor (the input itself, rescaled) is far worse
    assert loss(x_t / math.sqrt(1 - ab)) > 2 * base


def test_oracle_score_ranks_members_first(digits):
    members, nonmembers = digits[:150], digits[150:300]
    s_in, s_out = kde.score(members, members, t=10), kde.score(members, nonmembers, t=10)
    assert s_in.shape == (150,) and np.all(s_in <= 0)
    assert s_in.min() > s_out.max()  # at small t the kernel sees the member itself


def test_needs_a_time_or_alpha_bar_and_matching_shapes():
    with pytest.raises(ValueError, match="time step"):
        kde.optimal_denoiser(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="queries are"):
        kde.optimal_denoiser(torch.zeros(3, 4), torch.zeros(2, 5), 10)
    out = kde.optimal_denoiser(torch.zeros(3, 4), torch.ones(2, 4), alpha_bar=0.5)
    torch.testing.assert_close(out.eps, torch.full((2, 4), 1 / math.sqrt(0.5)))
