"""privacy: ε lower bounds checked against mechanisms of known ε, and Opacus's per-sample
gradients checked against torch.func's on every parameter of the book's UNet."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import mia_utils as mu
from mia_utils import privacy


def _rr_scores(eps: float, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Randomised response of known ε as an attack: each image reports its membership truthfully
    with probability e^ε / (1 + e^ε); the report is the score (1 = member). The best test of this
    mechanism has TPR = e^ε FPR exactly: its ε is tight."""
    p = 1 / (1 + math.exp(-eps))
    return (rng.random(n) < p).astype(float), (rng.random(n) >= p).astype(float)


def test_the_roc_bound_holds_on_a_mechanism_of_known_epsilon_and_nears_it():
    rng = np.random.default_rng(0)
    eps, found = 2.0, []
    for _ in range(200):
        cal = _rr_scores(eps, 2000, rng)
        ev = _rr_scores(eps, 2000, rng)
        found.append(privacy.epsilon_from_scores(*cal, *ev)["epsilon"])
    found = np.array(found)
    # a 95 % lower bound: above the true ε in at most ~5 % of runs (each end at 97.5 %, both ≥ 95 %)
    assert np.mean(found > eps) <= 0.05 and np.median(found) > 0.8 * eps
    # by hand for one threshold: log(TPR_lo / FPR_hi) with scipy's beta quantiles
    from scipy.stats import beta

    tp, n, fp, m = 880, 1000, 120, 1000
    tpr_lo, fpr_hi = beta.ppf(0.025, tp, n - tp + 1), beta.ppf(0.975, fp + 1, m - fp)
    want = max(math.log(tpr_lo / fpr_hi), math.log((1 - fpr_hi) / (1 - tpr_lo)))
    assert privacy.epsilon_from_counts(tp, n, fp, m) == pytest.approx(want, rel=1e-12)
    assert privacy.epsilon_from_counts(500, 1000, 500, 1000) == 0.0  # chance proves nothing
    assert privacy.epsilon_from_counts(880, 1000, 120, 1000, delta=0.1) < want  # δ weakens the bound


def test_the_one_run_bound_holds_on_randomised_response_and_nears_it():
    """Steinke et al.'s bound on a simulated ε-DP mechanism: r guesses each right with probability
    e^ε / (1 + e^ε) (the most a ε-DP training run allows): the bound stays below ε in ≥ 95 % of
    runs and comes close with many guesses; the tail equals β at the bound."""
    rng = np.random.default_rng(1)
    for eps, r in ((1.0, 1000), (4.0, 300)):
        p = 1 / (1 + math.exp(-eps))
        lows = np.array([privacy.epsilon_one_run(r, int(rng.binomial(r, p))) for _ in range(300)])
        assert np.mean(lows > eps) <= 0.05 + 0.03  # 5 % by construction, plus sampling noise of 300 runs
        assert np.median(lows) > 0.75 * eps
    low = privacy.epsilon_one_run(1000, 700, beta=0.05)
    from scipy.stats import binom

    assert binom.sf(699, 1000, 1 / (1 + math.exp(-low))) == pytest.approx(0.05, abs=1e-6)
    assert privacy.epsilon_one_run(100, 50) == 0.0 and privacy.epsilon_one_run(100, 100, eps_max=10) > 3
    with pytest.raises(ValueError, match="0 <= correct <= guesses"):
        privacy.epsilon_one_run(10, 11)


def _per_sample(model, x, t, eps, **mode):
    from opacus import GradSampleModule

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus's notices on secure RNG and full backward hooks
        gsm = GradSampleModule(model, loss_reduction="sum", **mode)
        ((gsm(x, t).sample - eps) ** 2).sum().backward()
    return {n: p.grad_sample.detach().clone() for n, p in gsm._module.named_parameters()}


def test_opacus_per_sample_gradients_in_the_mode_we_use_agree_with_torch_func_on_every_parameter():
    """The default victim's UNet2DModel (widths 32, 64, mid-block attention): every parameter's
    per-example gradient in PER_SAMPLE_MODE equals torch.func's (absolute tolerance, since some
    true gradients are zero: a softmax does not see a bias added to every key); in Opacus's default
    hooks mode two layers come back all zero, which would train them on noise alone."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    config = mu.models.small_unet_config()
    reference_model = UNet2DModel(**config)
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([10, 200, 500, 900])
    eps = torch.randn_like(x)

    def loss(call, xi, ti, ei):
        return ((call(xi, ti).sample - ei[None]) ** 2).sum()

    want = privacy.per_sample_gradients(reference_model, loss, x, t, eps)

    def disagree(got):  # float32 sums of large gradients: a tolerance relative to each parameter's largest
        return sorted(n for n, g in got.items()
                      if (g - want[n]).abs().max() > 1e-4 * max(1.0, float(want[n].abs().max())))

    def fresh():
        m = UNet2DModel(**config)
        m.load_state_dict(reference_model.state_dict())
        return m

    assert disagree(_per_sample(fresh(), x, t, eps, **privacy.PER_SAMPLE_MODE)) == []
    hooks = _per_sample(fresh(), x, t, eps)  # Opacus's default: the finding this test keeps
    assert disagree(hooks) == ["mid_block.resnets.1.conv1.weight", "mid_block.resnets.1.conv2.weight"]
    assert all(hooks[n].abs().max() == 0 and want[n].norm() > 1 for n in disagree(hooks))
    # the reference itself: torch.func's per-example gradient of one example is autograd's
    single = fresh()
    ((single(x[1:2], t[1:2]).sample - eps[1:2]) ** 2).sum().backward()
    assert disagree({n: torch.stack([want[n][0], p.grad, *want[n][2:]]) for n, p in single.named_parameters()}) == []
