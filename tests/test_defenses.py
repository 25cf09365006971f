"""studies.defenses (chapter 10): the ε bounds' choices, their ceilings in closed form, the
held-out loss by hand, and the tables' cells."""

from __future__ import annotations

import math

import numpy as np
import torch

from mia_utils import noise, privacy
from mia_utils.data import MembershipSets
from mia_utils.studies import defenses as study

PARTS = ("members_cal", "nonmembers_cal", "members_eval", "nonmembers_eval")


def _result(rng, shift_cal: float, shift_eval: float, n: int = 200) -> dict:
    """A fake attack result whose members' scores sit ``shift`` above the non-members'."""
    shifts = {"members_cal": shift_cal, "members_eval": shift_eval, "nonmembers_cal": 0.0, "nonmembers_eval": 0.0}
    return {"scores": {p: rng.normal(size=n) + shifts[p] for p in PARTS}, "honest": {}}


def test_the_strongest_attack_is_chosen_on_calibration_and_bounded_on_evaluation():
    """The attack whose calibration bound is largest is chosen, even when another one does better
    on the evaluation split; the bound reported is epsilon_from_scores' on that attack alone."""
    rng = np.random.default_rng(0)
    results = {"good on calibration": _result(rng, 3.0, 0.5), "good on evaluation": _result(rng, 0.5, 3.0)}
    out = study.epsilon_lower(results)
    assert out["attack"] == "good on calibration"
    want = privacy.epsilon_from_scores(*(results["good on calibration"]["scores"][p] for p in PARTS))
    assert out["epsilon"] == want["epsilon"] and (out["tp"], out["fp"]) == (want["tp"], want["fp"])
    assert out["calibration"]["good on calibration"] > out["calibration"]["good on evaluation"]


def test_the_ceilings_are_a_perfect_attacks_bounds_in_closed_form():
    """ROC: every member above the threshold, no non-member: log(TPR_lo / FPR_hi) with the
    Clopper–Pearson ends in closed form ((α/2)^(1/n) and 1 − (α/2)^(1/m), α = 5 %). One run: r correct
    guesses of r have probability p^r under ε-DP, p = e^ε / (1 + e^ε), so the bound solves
    p^r = β."""
    n, m, r, beta = 171, 171, 64, 0.05
    top = study.ceilings(n, m, r, beta=beta)
    tpr_lo, fpr_hi = 0.025 ** (1 / n), 1 - 0.025 ** (1 / m)
    assert math.isclose(top["roc"], max(math.log(tpr_lo / fpr_hi), math.log((1 - fpr_hi) / (1 - tpr_lo))),
                        rel_tol=1e-6)
    p = beta ** (1 / r)
    assert math.isclose(top["one run"], math.log(p / (1 - p)), rel_tol=1e-6)


def test_the_held_out_loss_matches_a_loop_by_hand(tiny_model, digits):
    x = digits[:12]
    ts = (50, 450)
    want = []
    for t in ts:  # the loss attack's noise: each image's own generator, salt "loss"
        for i in range(len(x)):
            eps = noise.image_noise(x[i:i + 1], 0, "loss")
            x_t = tiny_model.q_sample(x[i:i + 1], torch.tensor([t]), eps)
            want.append(float((tiny_model.eps(x_t, t) - eps).pow(2).mean()))
    assert math.isclose(study.held_out_loss(tiny_model, x, ts=ts), float(np.mean(want)), rel_tol=1e-5)


def test_a_duplicated_member_is_counted_once(digits):
    members = torch.cat([digits[:20], digits[3:4]])
    sets = MembershipSets(members[:10], members[10:], digits[100:110], digits[110:120])
    assert study.member_duplicates(sets) == 1
    assert study.member_duplicates(MembershipSets(digits[:10], digits[10:20], digits[20:30], digits[30:40])) == 0


def test_the_epsilon_rows_cells():
    roc = {"epsilon": 0.5, "attack": "SimA", "tp": 30, "fp": 4, "n_members": 171, "n_nonmembers": 171}
    run = {"epsilon": 0.25, "correct": 40, "guesses": 64}
    row = study.epsilon_row({"epsilon": 2.0, "delta": 1e-4, "source": "claimed"}, roc, run)
    assert (row["ε claimed"], row["ratio (ROC)"], row["ratio (one run)"]) == ("2.00", "0.25", "0.12")
    assert row["TP / FP at its threshold"] == "30/171 · 4/171" and row["correct / guesses"] == "40/64"
    none = study.epsilon_row({"epsilon": math.inf, "delta": None, "source": "accountant (PRV)"}, roc, None)
    assert (none["ε claimed"], none["δ"], none["ratio (ROC)"], none["ε_lower, one run"]) == ("∞", "—", "—", "—")
    assert study.claim("/some/folder") == {"epsilon": None, "delta": None, "source": "no claim"}
    assert study.claim("/some/folder", 3, 1e-5)["epsilon"] == 3.0


def test_models_are_listed_unclaimed_first_then_from_the_weakest_claim():
    claims = {"a": {"epsilon": 10.0}, "b": {"epsilon": None}, "c": {"epsilon": math.inf}, "d": {"epsilon": 1.0},
              "e": {"epsilon": None}}
    assert list(study.ordered({n: n for n in "abcde"}, claims)) == ["b", "e", "c", "a", "d"]
