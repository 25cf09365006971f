"""Differential privacy, audited: empirical lower bounds on ε from a membership attack, and the
per-sample gradients DP-SGD clips (chapter 10's engine, in progress).

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

Library note: Opacus 1.6.0's ``GradSampleModule`` in its default hooks mode returns all-zero
per-sample gradients for the weights of ``mid_block.resnets.1.conv1`` and ``.conv2`` of the book's
UNet2DModel (widths 32, 64) whenever the mid-block attention is present (biases agree; without
the attention every layer agrees); ``force_functorch=True`` agrees with ``torch.func`` on every
parameter. Cost measured on 2026-12-07 (batch 64 of 8×8 digits, one thread, forward + backward
with per-sample gradients): hooks 0.18 s, functorch 0.23 s, plain autograd 0.05 s per step. ``PER_SAMPLE_MODE`` is the mode DP-SGD here uses; ``tests/test_privacy.py`` checks
both modes against ``per_sample_gradients`` on every parameter.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .metrics import clopper_pearson

# Opacus's grad-sample mode for our UNets: the hooks mode is wrong for two layers (module docstring)
PER_SAMPLE_MODE = {"force_functorch": True}


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
    "fp", "n_members", "n_nonmembers"}."""
    cm, cn = np.asarray(cal_members, float), np.asarray(cal_nonmembers, float)
    best, tau = -1.0, np.inf
    for t in np.unique(np.r_[cm, cn]):  # "member" when score >= t: the calibration bound, maximised
        bound = epsilon_from_counts(int((cm >= t).sum()), len(cm), int((cn >= t).sum()), len(cn), delta, level)
        if bound > best:
            best, tau = bound, float(t)
    em, en = np.asarray(eval_members, float), np.asarray(eval_nonmembers, float)
    tp, fp = int((em >= tau).sum()), int((en >= tau).sum())
    return {"epsilon": epsilon_from_counts(tp, len(em), fp, len(en), delta, level), "threshold": tau, "tp": tp,
            "fp": fp, "n_members": len(em), "n_nonmembers": len(en)}


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
