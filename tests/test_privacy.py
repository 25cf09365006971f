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
    hooks mode two layers come back all zero, which would train them on noise alone (why: the next
    test)."""
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

    assert disagree(_per_sample(fresh(), x, t, eps, force_functorch=True)) == []
    hooks = _per_sample(fresh(), x, t, eps)  # Opacus's default: the finding this test keeps
    assert disagree(hooks) == ["mid_block.resnets.1.conv1.weight", "mid_block.resnets.1.conv2.weight"]
    assert all(hooks[n].abs().max() == 0 and want[n].norm() > 1 for n in disagree(hooks))
    # the reference itself: torch.func's per-example gradient of one example is autograd's
    single = fresh()
    ((single(x[1:2], t[1:2]).sample - eps[1:2]) ** 2).sum().backward()
    assert disagree({n: torch.stack([want[n][0], p.grad, *want[n][2:]]) for n, p in single.named_parameters()}) == []


def test_why_opacus_hooks_mode_zeroes_two_layers_a_channels_last_activation():
    """The cause of the finding above. diffusers' attention hands its output back as a
    channels-last view ([B, C, H, W] with strides (C·H·W, 1, W·C, C): a transpose, then a reshape),
    and the mid-block's second ResNet's GroupNorm and SiLU keep that layout, so its conv1 and
    conv2 see channels-last inputs. Opacus 1.6.0's conv sampler (``tensor_utils.unfold2d``) builds
    its patches with ``as_strided`` from H and W strides it assumes contiguous: on a channels-last
    input it reads the wrong memory. Checked against ``torch.func`` per-example gradients of the
    same conv: a contiguous copy of the input agrees, the channels-last input does not."""
    from opacus.grad_sample.conv import compute_conv_grad_sample

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 6, 3, padding=1)
    x = torch.randn(3, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    backprops = torch.randn(3, 6, 4, 4)
    assert not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)

    def loss(call, xi, bi):  # its gradient wrt the weight is the conv's per-example weight gradient
        return (call(xi) * bi[None]).sum()

    want = privacy.per_sample_gradients(conv, loss, x.contiguous(), backprops)["weight"]
    good = compute_conv_grad_sample(conv, [x.contiguous()], backprops)[conv.weight]
    bad = compute_conv_grad_sample(conv, [x], backprops)[conv.weight]
    assert torch.allclose(good, want, atol=1e-4)
    assert not torch.allclose(bad, want, atol=1e-2)


def test_each_examples_gradient_averages_its_k_draws_before_clipping(tiny_model):
    """example_gradients against autograd, one example and its K draws at a time (noise
    multiplicity: the gradient of the K-draw mean loss); then Opacus's DPOptimizer, without noise,
    against the clipped sum over the expected batch size computed by hand."""
    from opacus.optimizers import DPOptimizer

    torch.manual_seed(0)
    unet = tiny_model.unet
    x0 = torch.rand(3, 1, 8, 8) * 2 - 1
    t = torch.tensor([[5, 300], [40, 900], [120, 600]])
    eps = torch.randn(3, 2, 1, 8, 8)
    got = privacy.example_gradients(unet, tiny_model, x0, t, eps)
    by_hand = []
    for i in range(3):
        unet.zero_grad()
        a = tiny_model.alpha_bar.float()[t[i]].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0[i:i + 1] + (1 - a).sqrt() * eps[i]
        ((unet(x_t, t[i]).sample - eps[i]) ** 2).mean().backward()
        by_hand.append({n: p.grad.clone() for n, p in unet.named_parameters()})
    for n, g in got.items():
        torch.testing.assert_close(g, torch.stack([h[n] for h in by_hand]), rtol=1e-4, atol=1e-6)
    clip, expected = 0.05, 4
    norms = torch.stack([torch.sqrt(sum((h[n] ** 2).sum() for n in got)) for h in by_hand])
    assert (norms > clip).all()  # every example is clipped here
    params = [p for _, p in unet.named_parameters()]
    opt = DPOptimizer(torch.optim.SGD(params, lr=1.0), noise_multiplier=0.0, max_grad_norm=clip,
                      expected_batch_size=expected, loss_reduction="mean")
    for n, p in unet.named_parameters():
        p.grad_sample = got[n]
    before = {n: p.detach().clone() for n, p in unet.named_parameters()}
    opt.step()
    for n, p in unet.named_parameters():
        want = sum(h[n] * min(1.0, clip / float(norms[i])) for i, h in enumerate(by_hand)) / expected
        torch.testing.assert_close(before[n] - p.detach(), want, rtol=1e-4, atol=1e-7)


def test_train_dp_reaches_its_target_epsilon_and_reruns_bit_for_bit(tiny_model, digits):
    """A short DP-SGD run: the accountant's ε after it is at most the target (and near it: the
    noise multiplier was chosen for it), the weights moved, and the same seed gives the same
    weights."""
    import copy

    config = privacy.DPConfig(steps=6, batch_size=8, lr=1e-3, target_epsilon=8.0, multiplicity=2, log_every=3)
    runs = []
    for _ in range(2):
        model = copy.deepcopy(tiny_model)
        out = privacy.train_dp(model, digits[:40], config)
        runs.append((model, out))
    (m1, out), (m2, _) = runs
    assert 7.0 < out["epsilon"] <= 8.0 + 1e-6 and out["delta"] == 1 / 400 and out["noise_multiplier"] > 0
    assert [e["step"] for e in out["log"]] == [3, 6]
    moved = any(not torch.equal(a, b) for a, b in zip(m1.unet.parameters(), tiny_model.unet.parameters()))
    assert moved and all(torch.equal(a, b) for a, b in zip(m1.unet.parameters(), m2.unet.parameters()))
    with pytest.raises(ValueError, match="must lie below 1/N"):
        privacy.train_dp(copy.deepcopy(tiny_model), digits[:40], privacy.DPConfig(steps=1, batch_size=8, delta=0.1))


def test_no_noise_is_no_privacy_and_the_accountant_is_not_asked(tiny_model, digits):
    """σ = 0 (chapter 10's ε = ∞ control: the same clipping, no noise) reports ε = ∞ instead of
    the PRV accountant's overflow."""
    import copy

    out = privacy.train_dp(copy.deepcopy(tiny_model), digits[:40],
                           privacy.DPConfig(steps=2, batch_size=8, noise_multiplier=0.0, target_epsilon=None))
    assert math.isinf(out["epsilon"]) and out["noise_multiplier"] == 0.0


def test_the_one_run_guesses_match_a_loop_by_hand():
    rng = np.random.default_rng(3)
    for _ in range(20):
        m = int(rng.integers(4, 60))
        scores, included = rng.normal(size=m), rng.random(m) < 0.5
        r = int(rng.integers(1, m + 1))
        ranked = sorted(range(m), key=lambda i: -scores[i])  # distinct scores: no ties
        want = sum(included[i] for i in ranked[: r // 2]) + sum(not included[i] for i in ranked[m - (r - r // 2):])
        assert privacy.one_run_guesses(scores, included, r) == (r, want)
    # a perfect attack: every guess right, and the bound is the one of r correct guesses out of r
    scores = np.r_[np.ones(10), np.zeros(10)]
    assert privacy.one_run_guesses(scores, scores > 0, 8) == (8, 8)
    with pytest.raises(ValueError, match="one flag per score"):
        privacy.one_run_guesses(scores, scores[:5] > 0, 4)


def test_each_canarys_coin_depends_on_its_content_alone(digits):
    """Independent fair coins: the same canary gets the same coin in any order and company, about
    half of them come up, and another seed gives other coins."""
    x = digits[:400]
    coins = privacy.canary_draw(x, seed=0)
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(1))
    assert np.array_equal(privacy.canary_draw(x[perm], seed=0), coins[perm.numpy()])
    assert np.array_equal(privacy.canary_draw(x[:7], seed=0), coins[:7])
    assert abs(coins.mean() - 0.5) < 0.08  # 400 fair coins: 4 standard deviations
    assert not np.array_equal(privacy.canary_draw(x, seed=1), coins)


def test_the_roc_bound_reports_its_calibration_choice():
    """The threshold is the one whose bound is largest on calibration; the reported bound comes
    from the evaluation counts at it (checked by hand with epsilon_from_counts)."""
    cal_m, cal_n = np.r_[np.full(90, 2.0), np.zeros(10)], np.r_[np.full(5, 2.0), np.zeros(95)]
    ev_m, ev_n = np.r_[np.full(80, 2.0), np.zeros(20)], np.r_[np.full(10, 2.0), np.zeros(90)]
    out = privacy.epsilon_from_scores(cal_m, cal_n, ev_m, ev_n)
    assert out["threshold"] == 2.0 and (out["tp"], out["fp"]) == (80, 10)
    assert out["epsilon"] == privacy.epsilon_from_counts(80, 100, 10, 100)
    assert out["calibration_epsilon"] == privacy.epsilon_from_counts(90, 100, 5, 100)
