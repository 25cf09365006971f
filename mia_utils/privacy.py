"""Differential privacy, audited: DP-SGD for the book's UNets and empirical lower bounds on ε
from a membership attack (chapter 10's engine).

A mechanism M is (ε, δ)-DP when for neighbouring training sets D, D' and every event S,
P[M(D) ∈ S] ≤ e^ε P[M(D') ∈ S] + δ. A membership test at a threshold is such an event: its true-
and false-positive rates satisfy TPR ≤ e^ε FPR + δ and (1 − FPR) ≤ e^ε (1 − TPR) + δ, so any
measured pair bounds ε from below (Jagielski et al. 2020; Nasr et al. 2021):

    ε ≥ max{ log((TPR − δ) / FPR),  log((1 − FPR − δ) / (1 − TPR)) }.

Counts make TPR and FPR estimates, so the bound uses the Clopper–Pearson lower end of TPR and the
upper end of FPR (``epsilon_from_counts``), at a threshold chosen on data disjoint from the counts
(``epsilon_from_scores``: on calibration scores). Each interval is two-sided at ``level``, so each
end holds with probability (1 + level) / 2 and both at once with probability ≥ ``level``.

Auditing in one training run (Steinke, Nasr & Jagielski, NeurIPS 2023): m canaries, each included
in training independently with probability 1/2; the auditor guesses "in" or "out" on its r most
confident canaries and abstains on the rest. Under ε-DP the number of correct guesses V among r is
stochastically dominated by Binomial(r, e^ε / (1 + e^ε)); observing v correct, every ε with
P[Binomial(r, e^ε / (1 + e^ε)) ≥ v] < β is rejected at confidence 1 − β, and ``epsilon_one_run``
returns the largest rejected ε (the pure-ε form, δ = 0, as PAPERS.md states it).

DP-SGD (``train_dp``; Abadi et al. 2016, with DPDM's noise multiplicity): Poisson-sampled batches
(rate q), each example's loss averaged over K draws of (t, ε) *before* its gradient is clipped to
norm C, Gaussian noise N(0, σ²C²) added to the sum, the sum divided by the expected batch size qN.
Opacus's ``DPOptimizer`` clips, noises and steps; its accountant gives ε at δ. The per-example
gradients come from ``torch.func`` (``example_gradients``), not from Opacus's ``GradSampleModule``:
its per-layer samplers see the B·K rows of a K-draw batch as B·K examples and would clip each draw
on its own, which is not noise multiplicity.

Library note: Opacus 1.6.0's ``GradSampleModule`` in its default hooks mode returns all-zero
per-sample gradients for the weights of ``mid_block.resnets.1.conv1`` and ``.conv2`` of the book's
UNet2DModel (widths 32, 64) whenever the mid-block attention is present (biases agree; without the
attention every layer agrees). The cause: diffusers' attention returns its output as a
channels-last view (a transpose and a reshape), the second ResNet's GroupNorm and SiLU keep that
layout, and Opacus's conv sampler (``tensor_utils.unfold2d``) builds its patches with
``as_strided`` from H and W strides it assumes contiguous, so it reads the wrong memory (a
contiguous copy of the same activation gives the right gradient). With ``force_functorch=True`` it
agrees with ``torch.func`` on every parameter. Measured on 2026-12-07 (batch 64 of 8×8 digits, one
thread, forward and backward with per-sample gradients; ``benchmarks/bench_privacy.py``): hooks
0.16–0.18 s, functorch 0.23–0.24 s, plain autograd 0.05 s per step; ``example_gradients`` with K = 2
draws 0.24 s. ``tests/test_privacy.py`` checks both modes against ``per_sample_gradients`` on every
parameter, the cause on one conv, and a DP step against a loop by hand.
"""


from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .metrics import clopper_pearson
from .models import DiffusionModel
from .noise import content_hashes, seeded_generator


def epsilon_from_counts(true_positives: int, n_members: int, false_positives: int, n_nonmembers: int,
                        delta: float = 0.0, level: float = 0.95) -> float:
    """The ε lower bound of one threshold (module docstring) from its counts: TPR's Clopper–Pearson
    lower end and FPR's upper end, both sides of the DP inequality; 0 when neither is positive."""
    if not 0 <= delta < 1:
        raise ValueError(f"delta={delta!r}: 0 <= delta < 1.")
    tpr_lo, _ = clopper_pearson(true_positives, n_members, level)
    _, fpr_hi = clopper_pearson(false_positives, n_nonmembers, level)
    bounds = [0.0]
    if tpr_lo - delta > 0:  # TPR <= e^ε FPR + δ, with TPR at its lower end and FPR at its upper end
        bounds.append(math.log((tpr_lo - delta) / fpr_hi))
    if 1 - fpr_hi - delta > 0:  # 1 − FPR <= e^ε (1 − TPR) + δ, likewise
        bounds.append(math.log((1 - fpr_hi - delta) / (1 - tpr_lo)))
    return max(bounds)


def epsilon_from_scores(cal_members, cal_nonmembers, eval_members, eval_nonmembers, delta: float = 0.0,
                        level: float = 0.95) -> dict:
    """The ε lower bound of an attack (higher score = member): the threshold whose bound is largest
    on the calibration scores, applied to the evaluation scores, whose counts give the bound with
    Clopper–Pearson intervals (the threshold never sees them). Returns {"epsilon", "threshold", "tp",
    "fp", "n_members", "n_nonmembers", "calibration_epsilon"} (the last: the bound on the calibration
    counts, biased upwards by the choice; for choosing among attacks, never to report)."""
    cm, cn = np.asarray(cal_members, float), np.asarray(cal_nonmembers, float)
    best, tau = -1.0, np.inf
    for t in np.unique(np.r_[cm, cn]):  # "member" when score >= t: the calibration bound, maximised
        bound = epsilon_from_counts(int((cm >= t).sum()), len(cm), int((cn >= t).sum()), len(cn), delta, level)
        if bound > best:
            best, tau = bound, float(t)
    em, en = np.asarray(eval_members, float), np.asarray(eval_nonmembers, float)
    tp, fp = int((em >= tau).sum()), int((en >= tau).sum())
    return {"epsilon": epsilon_from_counts(tp, len(em), fp, len(en), delta, level), "threshold": tau, "tp": tp,
            "fp": fp, "n_members": len(em), "n_nonmembers": len(en), "calibration_epsilon": best}


def _tail(r: int, v: int, eps: float) -> float:
    """P[Binomial(r, e^ε / (1 + e^ε)) ≥ v]."""
    from scipy.stats import binom

    return float(binom.sf(v - 1, r, 1.0 / (1.0 + math.exp(-eps))))


def epsilon_one_run(guesses: int, correct: int, beta: float = 0.05, eps_max: float = 50.0) -> float:
    """Steinke et al.'s lower bound on ε from one training run (module docstring): ``correct`` right
    guesses among ``guesses`` made; the largest ε that ε-DP rules out at confidence 1 − ``beta``
    (0 when even ε = 0 is not ruled out)."""
    from scipy.optimize import brentq

    if not 0 <= correct <= guesses or guesses < 1 or not 0 < beta < 1:
        raise ValueError(f"epsilon_one_run needs 0 <= correct <= guesses, guesses >= 1 and 0 < beta < 1 (got "
                         f"{correct}, {guesses}, {beta}).")
    if _tail(guesses, correct, 0.0) >= beta:
        return 0.0
    if _tail(guesses, correct, eps_max) < beta:
        return eps_max
    return float(brentq(lambda e: _tail(guesses, correct, e) - beta, 0.0, eps_max, xtol=1e-10))


def canary_draw(images: torch.Tensor, seed: int = 0) -> np.ndarray:
    """Whether each canary goes into the training run: an independent fair coin per image, seeded by
    (``seed``, the image's content) so that a canary's fate depends on nothing else (the one-run
    audit's S_i ~ Bernoulli(1/2))."""
    return np.array([bool(torch.rand(1, generator=seeded_generator(int(seed), "canary", h)) < 0.5)
                     for h in content_hashes(images)], dtype=bool)


def one_run_guesses(scores, included, guesses: int) -> tuple[int, int]:
    """Steinke et al.'s guessing rule on m canaries: "in" for the ``guesses // 2`` highest scores,
    "out" for the ``guesses - guesses // 2`` lowest, abstain on the rest (ties broken by position,
    which the scores never see). Returns (guesses made, correct guesses) for ``epsilon_one_run``."""
    s, inc = np.asarray(scores, float), np.asarray(included, bool)
    if len(s) != len(inc) or not 1 <= guesses <= len(s):
        raise ValueError(f"one_run_guesses needs one flag per score and 1 <= guesses <= {len(s)} (got {guesses}).")
    order = np.argsort(-s, kind="stable")
    k_in = guesses // 2
    said_in, said_out = order[:k_in], order[len(s) - (guesses - k_in):]
    return guesses, int(inc[said_in].sum() + (~inc[said_out]).sum())


def per_sample_gradients(model: torch.nn.Module, loss, *batch) -> dict[str, torch.Tensor]:
    """Each example's gradient of ``loss(model_output_fn, *example)`` for every parameter, by
    ``torch.func`` (vmap over the batch of grad): the reference that Opacus's per-sample gradients
    are checked against. ``loss(call, *example)`` gets ``call(*inputs)`` = the model on a batch of
    one built from the example's own tensors and returns a scalar."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def one(p, *example):
        return loss(lambda *inputs: functional_call(model, p, tuple(i[None] for i in inputs)), *example)

    return vmap(grad(one), in_dims=(None, *([0] * len(batch))))(params, *batch)


@dataclass
class DPConfig:
    """DP-SGD's knobs (module docstring). ``noise_multiplier`` σ, or None to take the σ that
    Opacus's accountant gives for ``target_epsilon`` at ``delta`` over ``steps``."""

    steps: int = 1000
    batch_size: int = 64             # expected batch size: the Poisson rate is batch_size / N
    lr: float = 1e-3
    max_grad_norm: float = 1.0       # C: each example's gradient is clipped to it
    noise_multiplier: float | None = None
    target_epsilon: float | None = 10.0
    delta: float | None = None       # None: 1 / (10 N), below 1 / N as DP requires
    multiplicity: int = 4            # K (t, ε) draws per example, averaged before clipping
    accountant: str = "prv"
    seed: int = 0
    log_every: int = 50


def example_gradients(unet: torch.nn.Module, model: DiffusionModel, x0: torch.Tensor, t: torch.Tensor,
                      eps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each example's gradient of its ε-loss averaged over its K draws, for every trainable
    parameter: ``x0`` [B, C, H, W], ``t`` [B, K], ``eps`` [B, K, C, H, W]; example i's loss is
    the mean over its K draws and pixels of (ε − ε̂(√ᾱ_t x0 + √(1 − ᾱ_t) ε, t))²."""
    from torch.func import functional_call, grad, vmap

    alpha_bar = model.alpha_bar.to(x0.device, x0.dtype)
    params = {k: v.detach() for k, v in unet.named_parameters() if v.requires_grad}
    frozen = {k: v.detach() for k, v in unet.named_parameters() if not v.requires_grad}

    def one(p, xi, ti, ei):  # one example: its K draws as one batch of K
        a = alpha_bar[ti].view(-1, 1, 1, 1)
        x_t = a.sqrt() * xi[None] + (1 - a).sqrt() * ei
        return ((functional_call(unet, {**frozen, **p}, (x_t, ti)).sample - ei) ** 2).mean()

    with warnings.catch_warnings():  # vmap over SDPA falls back to a loop on the CPU (timed in the DP recipes)
        warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented")
        return vmap(grad(one), in_dims=(None, 0, 0, 0))(params, x0, t, eps)


def train_dp(model: DiffusionModel, images: torch.Tensor, config: DPConfig | None = None,
             progress: bool = False) -> dict:
    """Train ``model.unet`` in place with DP-SGD (module docstring) on ``images`` [N, C, H, W] in
    [-1, 1]. Returns {"epsilon", "delta", "noise_multiplier", "sample_rate", "log", "config",
    "seconds_per_step"}: the accountant's ε after the run, the loss every ``log_every`` steps."""
    from opacus.accountants import create_accountant
    from opacus.accountants.utils import get_noise_multiplier
    from opacus.optimizers import DPOptimizer
    from tqdm.auto import tqdm

    config = config or DPConfig()
    model.check_images(images)
    n = len(images)
    q = config.batch_size / n
    if not 0 < q <= 1:
        raise ValueError(f"batch_size={config.batch_size} must lie in 1..{n} (the Poisson rate is batch_size / N).")
    delta = config.delta if config.delta is not None else 1 / (10 * n)
    if not 0 < delta < 1 / n:
        raise ValueError(f"delta={delta} must lie below 1/N = {1 / n:.3g}: a larger δ allows leaking an example.")
    sigma = config.noise_multiplier
    if sigma is None:
        if config.target_epsilon is None:
            raise ValueError("Give noise_multiplier, or target_epsilon for the accountant to choose it.")
        with warnings.catch_warnings():  # the PRV accountant's RDP bracket for its domain; the ε is PRV's
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            sigma = get_noise_multiplier(target_epsilon=config.target_epsilon, target_delta=delta, sample_rate=q,
                                         steps=config.steps, accountant=config.accountant)
    unet, device = model.unet, model.device
    gen = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    names = [k for k, p in unet.named_parameters() if p.requires_grad]
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = DPOptimizer(torch.optim.Adam(params, lr=config.lr), noise_multiplier=sigma,
                      max_grad_norm=config.max_grad_norm, expected_batch_size=config.batch_size,
                      loss_reduction="mean", generator=noise_gen)
    accountant = create_accountant(config.accountant)
    data = images.to(device, torch.float32)
    log, running, t0 = [], [], time.perf_counter()
    T, K = model.num_train_timesteps, config.multiplicity
    unet.train()
    for step in tqdm(range(1, config.steps + 1), desc="DP-SGD", disable=not progress, mininterval=2):
        picked = torch.rand(n, generator=gen) < q  # Poisson sampling: each example in with probability q
        x0 = data[picked.to(device)]
        t = torch.randint(T, (len(x0), K), generator=gen).to(device)
        eps = torch.randn((len(x0), K, *x0.shape[1:]), generator=gen).to(device)
        opt.zero_grad(set_to_none=True)
        if len(x0):
            grads = example_gradients(unet, model, x0, t, eps)
            for name, p in zip(names, params):
                p.grad_sample = grads[name]
        else:  # an empty Poisson batch: the step is noise alone, as the analysis assumes
            for p in params:
                p.grad_sample = torch.zeros((0, *p.shape), device=device)
        opt.step()
        accountant.step(noise_multiplier=sigma, sample_rate=q)
        if len(x0):  # the training loss of the batch's first draws (before the step), for the log
            with torch.no_grad():
                a = model.alpha_bar.to(device, x0.dtype)[t[:, 0]].view(-1, 1, 1, 1)
                pred = model.forward(a.sqrt() * x0 + (1 - a).sqrt() * eps[:, 0], t[:, 0])
                running.append(float(((pred - eps[:, 0]) ** 2).mean()))
        if step % config.log_every == 0 or step == config.steps:
            log.append({"step": step, "loss": float(np.mean(running)) if running else float("nan"),
                        "seconds": round(time.perf_counter() - t0, 2)})
            running = []
    unet.eval()
    for p in params:
        p.grad_sample = None
    # σ = 0 (the same clipping, no noise: the ε = ∞ control) is no privacy; the accountant cannot say so
    epsilon = float(accountant.get_epsilon(delta)) if sigma > 0 else math.inf
    return {"epsilon": epsilon, "delta": delta, "noise_multiplier": float(sigma),
            "sample_rate": q, "log": log, "config": asdict(config),
            "seconds_per_step": (time.perf_counter() - t0) / config.steps}
