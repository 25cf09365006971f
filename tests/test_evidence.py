"""Set-level tests, label-permutation p-values and their calibration, each against a brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import rankdata

import mia_utils as mu
from mia_utils import evidence


def _perm_p_enumerated(s, r):
    """Every relabelling of the pooled scores: the share whose U is at least the observed one."""
    pooled, k = np.r_[s, r], len(s)

    def u(idx):
        a = pooled[list(idx)]
        b = np.delete(pooled, list(idx))
        return (a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()

    observed = u(range(k))
    us = [u(idx) for idx in itertools.combinations(range(len(pooled)), k)]
    return np.mean(np.array(us) >= observed - 1e-12)


def test_auc_p_value_is_the_exact_permutation_p_on_small_sets():
    rng = np.random.default_rng(0)
    s, r = rng.normal(0.8, 1, 5), rng.normal(0, 1, 6)
    assert mu.metrics.auc_p_value(s, r) == pytest.approx(_perm_p_enumerated(s, r), abs=1e-12)


def test_auc_p_value_with_ties_matches_monte_carlo_relabelling():
    rng = np.random.default_rng(1)
    s, r = np.round(rng.normal(0.5, 1, 40), 1), np.round(rng.normal(0, 1, 60), 1)  # rounding makes ties
    pooled, k, n = np.r_[s, r], len(s), len(r)
    ranks = rankdata(pooled)  # AUC of a labelling = (rank sum of its "members" - k(k+1)/2) / (k n)
    perms = np.argsort(rng.random((20000, len(pooled))), axis=1)[:, :k]
    aucs = (ranks[perms].sum(1) - k * (k + 1) / 2) / (k * n)
    mc = np.mean(aucs >= mu.metrics.auc(s, r) - 1e-12)
    assert mu.metrics.auc_p_value(s, r) == pytest.approx(mc, abs=0.01)
    assert "auc_p" in mu.metrics.evaluate(s, r, n_boot=0)


def test_set_test_effect_is_the_pairwise_win_rate():
    s, r = np.array([3.0, 1.0, 2.0, 2.0]), np.array([2.0, 0.0, 1.0])
    wins = sum((a > b) + 0.5 * (a == b) for a in s for b in r)
    out = evidence.set_test(s, r)
    assert out["effect"] == pytest.approx(wins / 12) and out["k"] == 4 and out["k_reference"] == 3


def test_set_test_is_calibrated_under_the_null_and_powerful_under_a_shift():
    rng = np.random.default_rng(2)
    null = np.array([evidence.set_test(rng.normal(size=10), rng.normal(size=30))["p_value"] for _ in range(2000)])
    rate = np.mean(null < 0.05)
    assert abs(rate - 0.05) < 3 * np.sqrt(0.05 * 0.95 / 2000) + 0.005, rate  # uniform p: 5 % below 0.05
    assert np.mean(null < 0.5) == pytest.approx(0.5, abs=0.04)
    assert evidence.set_test(rng.normal(1.5, 1, 20), rng.normal(size=30))["p_value"] < 1e-4


def test_combined_scores_average_pooled_percentile_ranks_and_ignore_labels():
    rng = np.random.default_rng(3)
    sus = {"a": rng.normal(size=5), "b": rng.normal(size=5)}
    ref = {"a": rng.normal(size=7), "b": rng.normal(size=7)}
    cs, cr = evidence.combined_scores(sus, ref)
    for i in range(5):  # by hand: each image's share of pooled scores at or below its own, averaged
        by_hand = np.mean([np.mean(np.r_[sus[a], ref[a]] <= sus[a][i]) for a in "ab"])
        assert cs[i] == pytest.approx(by_hand)
    # one attack: ranks only, so the test's p-value is that of the raw scores
    one_s, one_r = evidence.combined_scores({"a": sus["a"]}, {"a": ref["a"]})
    assert evidence.set_test(one_s, one_r)["p_value"] == pytest.approx(evidence.set_test(sus["a"], ref["a"])["p_value"])
    # label-blind: the pooled images' combined scores do not depend on which side they are called
    swapped_s, swapped_r = evidence.combined_scores(
        {a: np.r_[sus[a][1:], ref[a][:1]] for a in "ab"}, {a: np.r_[sus[a][:1], ref[a][1:]] for a in "ab"})
    assert sorted(np.r_[cs, cr]) == pytest.approx(sorted(np.r_[swapped_s, swapped_r]))


def test_k_curve_null_is_uniform_members_reach_significance_and_draws_are_seeded():
    rng = np.random.default_rng(4)
    members, nonmembers = rng.normal(1.0, 1, 120), rng.normal(0, 1, 200)
    curve = evidence.k_curve(members, nonmembers, ks=[2, 10, 40], n_reference=60, n_draws=150, seed=0)
    assert curve["member"].shape == curve["null"].shape == (3, 150)
    assert np.all(np.diff(np.median(curve["member"], axis=1)) < 0)  # more images, smaller p
    assert abs(np.mean(curve["null"][1:] < 0.05) - 0.05) < 0.03
    assert evidence.k_needed(curve["member"], curve["ks"]) == 40 or evidence.k_needed(curve["member"], curve["ks"]) == 10
    again = evidence.k_curve({"x": members}, {"x": nonmembers}, ks=[2, 10, 40], n_reference=60, n_draws=150, seed=0)
    np.testing.assert_array_equal(again["member"], curve["member"])  # a dict of one attack: the same draws


def test_k_needed_reads_the_median_and_says_none_when_never_reached():
    p = np.array([[0.5, 0.2, 0.3], [0.02, 0.001, 0.005], [1e-4, 1e-5, 1e-3]])
    assert evidence.k_needed(p, [5, 10, 20]) == 10
    assert evidence.k_needed(p, [5, 10, 20], alpha=1e-6) is None


@pytest.mark.parametrize("bad, match", [
    (lambda: evidence.set_test([], [1.0]), "suspect set is empty"),
    (lambda: evidence.set_test([np.nan], [1.0]), "NaN"),
    (lambda: evidence.combined_scores({"a": [1.0]}, {"b": [1.0]}), "same attacks"),
    (lambda: evidence.combined_scores({"a": [1.0], "b": [1.0, 2.0]}, {"a": [1.0], "b": [1.0]}), "same images"),
    (lambda: evidence.k_curve(np.ones(5), np.ones(10), ks=[6], n_reference=3), "needs 6 members"),
])
def test_bad_inputs_say_what_to_fix(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_quantile_thresholds_cover_the_training_non_members_at_the_target_rate():
    """The pinball loss's minimiser leaves a share fpr of its training points above it, up to
    (parameters + 1) / n: the defining property of a quantile regression."""
    rng = np.random.default_rng(5)
    f = rng.normal(size=(400, 6))
    y = 2 * f[:, 0] + rng.normal(0, 0.3, 400)
    tau = evidence.quantile_thresholds(y, f, fpr=0.1, n_components=3)
    assert abs(np.mean(y > tau(f)) - 0.1) <= (3 + 1) / 400 + 1e-9


def test_per_image_thresholds_beat_a_global_one_when_images_differ_in_difficulty():
    rng = np.random.default_rng(6)

    def part(n, shift):
        f = rng.normal(size=(n, 4))
        return 2 * f[:, 0] + shift + rng.normal(0, 0.3, n), f

    out = evidence.threshold_comparison(part(2000, 0.0), part(1000, 0.8), part(1000, 0.0), fpr=0.05, n_components=4)
    assert abs(out["per-image"]["fpr"] - 0.05) < 0.025 and abs(out["global"]["fpr"] - 0.05) < 0.025
    assert out["per-image"]["tpr"] > out["global"]["tpr"] + 0.3 and out["per-image"]["auc"] > out["global"]["auc"]
    # features that say nothing: the per-image threshold is the global one, near enough
    noise = evidence.threshold_comparison((rng.normal(size=2000), rng.normal(size=(2000, 4))),
                                          (rng.normal(1, 1, 1000), rng.normal(size=(1000, 4))),
                                          (rng.normal(size=1000), rng.normal(size=(1000, 4))), fpr=0.05)
    assert abs(noise["per-image"]["tpr"] - noise["global"]["tpr"]) < 0.05
