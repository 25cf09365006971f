"""Metrics against brute-force computations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import mia_utils as mu
from mia_utils import metrics


def brute_auc(m, n):
    # P(member score > non-member score) + ½ P(tie), by comparing every pair
    total = sum((a > b) + 0.5 * (a == b) for a in m for b in n)
    return total / (len(m) * len(n))


def brute_roc_points(m, n):
    # every threshold sweep point (call member when score >= τ), τ from +inf down
    pts = [(0.0, 0.0)]
    for tau in sorted(set(np.r_[m, n]), reverse=True):
        pts.append((np.mean(n >= tau), np.mean(m >= tau)))
    return pts


def brute_tpr_at(m, n, target):
    # upper envelope at each FPR, joined by straight lines
    pts = brute_roc_points(m, n)
    best = {}
    for f, t in pts:
        best[f] = max(best.get(f, 0.0), t)
    fs = sorted(best)
    for f0, f1 in itertools.pairwise(fs):
        if f0 <= target <= f1:
            w = (target - f0) / (f1 - f0)
            return best[f0] + w * (best[f1] - best[f0])
    return best[fs[-1]]


def brute_asr(m, n):
    return max((t + 1 - f) / 2 for f, t in brute_roc_points(m, n))


@pytest.fixture(params=[0, 1, 2])
def scores(request):
    rng = np.random.default_rng(request.param)
    m = np.round(rng.normal(0.8, 1, 150), 1)  # rounding makes ties
    n = np.round(rng.normal(0.0, 1, 230), 1)
    return m, n


def test_auc_matches_pairwise_count(scores):
    assert metrics.auc(*scores) == pytest.approx(brute_auc(*scores), abs=1e-12)


@pytest.mark.parametrize("target", [0.001, 0.01, 0.05, 0.1, 0.3])
def test_tpr_at_fpr_matches_threshold_sweep(scores, target):
    assert metrics.tpr_at_fpr(*scores, fpr=target) == pytest.approx(brute_tpr_at(*scores, target), abs=1e-12)


def test_asr_matches_threshold_sweep(scores):
    assert metrics.asr(*scores) == pytest.approx(brute_asr(*scores), abs=1e-12)


def test_perfect_and_reversed_separation():
    m, n = np.arange(10, 20), np.arange(10)
    assert metrics.point_metrics(m, n) == {"auc": 1.0, "tpr_at_1pct_fpr": 1.0, "tpr_at_0_1pct_fpr": 1.0, "asr": 1.0}
    assert metrics.auc(n, m) == 0.0


def test_bootstrap_ci_brackets_estimate_and_shrinks():
    rng = np.random.default_rng(0)
    small = metrics.bootstrap_ci(rng.normal(1, 1, 50), rng.normal(0, 1, 50), n_boot=300)
    m, n = rng.normal(1, 1, 2000), rng.normal(0, 1, 2000)
    big = metrics.bootstrap_ci(m, n, n_boot=300)
    lo, hi = big["auc"]
    assert lo <= metrics.auc(m, n) <= hi
    assert (hi - lo) < (small["auc"][1] - small["auc"][0]) / 3
    true_auc = 0.7602  # Φ(1/√2) for two unit normals one apart
    assert lo - 0.01 <= true_auc <= hi + 0.01


def test_evaluate_row_format():
    row = metrics.evaluate([3, 2, 1.5], [0, 1, 2.5], n_boot=20, queries_per_image=1, seconds=0.1)
    for key in ("auc", "auc_ci", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci", "tpr_at_0_1pct_fpr", "asr", "asr_ci"):
        assert key in row
    assert row["queries_per_image"] == 1 and row["n_members"] == 3


def test_threshold_at_fpr_is_the_smallest_allowed():
    rng = np.random.default_rng(3)
    non = rng.normal(size=500)
    for target in (0.0, 0.01, 0.05, 0.2):
        tau = metrics.threshold_at_fpr(non, target)
        assert np.mean(non > tau) <= target
        lower = np.max(non[non < tau]) if np.any(non < tau) else -np.inf
        assert np.mean(non > lower) > target  # one step lower would break the target


def test_calibrated_applies_calibration_threshold_unchanged():
    rng = np.random.default_rng(4)
    cal_m, cal_n = rng.normal(2, 1, 300), rng.normal(0, 1, 300)
    ev_m, ev_n = rng.normal(2, 1, 300), rng.normal(0, 1, 300)
    out = metrics.calibrated(cal_m, cal_n, ev_m, ev_n, fpr=0.05)
    assert out["threshold"] == metrics.threshold_at_fpr(cal_n, 0.05)
    assert out["fpr"] == np.mean(ev_n > out["threshold"])
    assert out["tpr"] == np.mean(ev_m > out["threshold"])


def test_bad_scores_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        metrics.auc([np.nan, 1], [0, 1])
    with pytest.raises(ValueError, match="at least one"):
        metrics.auc([], [0, 1])


def test_honest_and_oracle_choose_on_their_own_splits():
    rng = np.random.default_rng(5)
    # setting "a" looks best on calibration, "b" is best on evaluation
    cal_m = {"a": rng.normal(2, 1, 100), "b": rng.normal(0.5, 1, 100)}
    cal_n = {"a": rng.normal(0, 1, 100), "b": rng.normal(0, 1, 100)}
    ev_m = {"a": rng.normal(1, 1, 100), "b": rng.normal(3, 1, 100)}
    ev_n = {"a": rng.normal(0, 1, 100), "b": rng.normal(0, 1, 100)}
    out = metrics.honest_and_oracle(members_cal=cal_m, nonmembers_cal=cal_n, members_eval=ev_m,
                                    nonmembers_eval=ev_n, n_boot=10, queries_per_image=1)
    assert out["honest"]["setting"] == "a" and out["oracle"]["setting"] == "b"
    assert out["honest"]["auc"] == metrics.auc(ev_m["a"], ev_n["a"])
    assert out["oracle"]["auc"] > out["honest"]["auc"]
    assert out["honest"]["queries_per_image"] == 1


def test_choose_direction():
    assert metrics.choose_direction([3, 4], [1, 2]) == 1
    assert metrics.choose_direction([1, 2], [3, 4]) == -1


def test_calibrated_accuracy_uses_the_calibration_threshold():
    rng = np.random.default_rng(6)
    cm, cn = rng.normal(1, 1, 200), rng.normal(0, 1, 200)
    em, en = rng.normal(1, 1, 200), rng.normal(0, 1, 200)
    out = metrics.calibrated_accuracy(cm, cn, em, en)
    tau = out["threshold"]
    assert out["balanced_accuracy"] == pytest.approx((np.mean(em >= tau) + np.mean(en < tau)) / 2)
    assert out["balanced_accuracy"] <= metrics.asr(em, en) + 1e-12  # ASR picks its threshold on eval
    assert 0.55 < out["balanced_accuracy"] < 0.8


def test_tpr_conventions_by_brute_force(scores):
    m, n = scores
    got = metrics.tpr_at_fpr_conventions(m, n, 0.05)
    pts = brute_roc_points(m, n)
    assert got["interpolated"] == pytest.approx(brute_tpr_at(m, n, 0.05), abs=1e-12)
    assert got["best_at_most"] == pytest.approx(max(t for f, t in pts if f <= 0.05))
    assert got["last_below"] <= got["best_at_most"]
    assert min(got.values()) >= 0 and max(got.values()) <= 1


def test_format_ci():
    row = {"auc": 0.97, "auc_ci": [0.9531, 0.9842], "tpr": 0.542, "tpr_ci": [0.401, 0.777], "asr": 0.9}
    assert metrics.format_ci(row, "auc") == "0.970 [0.953, 0.984]"
    assert metrics.format_ci(row, "tpr", pct=True) == "54.2 [40.1, 77.7]"
    assert metrics.format_ci(row, "asr") == "0.900" and metrics.format_ci(row, "missing") == ""


@pytest.mark.parametrize("n, fpr, ok", [(99, 0.01, False), (100, 0.01, True), (171, 0.001, False),
                                         (999, 0.001, False), (1000, 0.001, True), (1024, 0.001, True)])
def test_resolvable_needs_one_false_positive(n, fpr, ok):
    # brute force: the smallest FPR n non-members can realise above zero is 1/n
    assert metrics.resolvable(n, fpr) is ok
    assert ok == (1 / n <= fpr + 1e-15)


def test_format_ci_refuses_an_unresolvable_tpr():
    rng = np.random.default_rng(0)
    row = metrics.evaluate(rng.normal(1, 1, 171), rng.normal(0, 1, 171), n_boot=50)
    assert metrics.format_ci(row, "tpr_at_0_1pct_fpr", pct=True) == "— (n=171 < 1/FPR)"
    # at 1 % the 171 non-members resolve it: a number with its interval
    assert metrics.format_ci(row, "tpr_at_1pct_fpr", pct=True)[0].isdigit()
    assert metrics.format_ci(row, "auc")[0].isdigit()
    big = metrics.evaluate(rng.normal(1, 1, 1000), rng.normal(0, 1, 1000), n_boot=50)
    assert metrics.format_ci(big, "tpr_at_0_1pct_fpr", pct=True)[0].isdigit()
    # the book's tables use the same rule
    assert mu.tables.table({"x": row}).loc[0, mu.tables.COLUMNS["tpr01"]] == "— (n=171 < 1/FPR)"
    # and every table states n per side, evaluated (the summary's too: the same function)
    assert mu.tables.table({"x": big}).loc[0, mu.tables.COLUMNS["n"]] == "1000/1000"
    assert mu.tables.COLUMNS["n"] in mu.tables.stacked(mu.tables.table({"x": big})).parts[0].columns  # beside the TPRs


def test_directional_chooses_sign_and_setting_on_calibration():
    rng = np.random.default_rng(0)
    pos = {1: rng.normal(1, 1, 50), 2: rng.normal(-3, 1, 50)}  # at 2 the positives score LOWER, and further apart
    neg = {1: rng.normal(0, 1, 50), 2: rng.normal(0, 1, 50)}
    pos_e = {1: rng.normal(1, 1, 50), 2: rng.normal(-3, 1, 50)}
    neg_e = {1: rng.normal(0, 1, 50), 2: rng.normal(0, 1, 50)}
    out = metrics.directional(pos, neg, pos_e, neg_e)
    assert out["chosen"] == 2 and out["rows"][2]["sign"] == -1 and out["rows"][1]["sign"] == 1
    assert out["rows"][2]["auc"] == pytest.approx(1 - out["rows"][2]["raw_auc"])
    assert out["rows"][2]["auc"] > 0.95


def test_the_vectorised_bootstrap_is_the_loop_of_point_metrics():
    """bootstrap_ci computes all resamples at once; the loop it replaced (one point_metrics call
    per resample, the same draws) gives the same intervals, ties and small sets included."""
    from mia_utils import metrics

    rng = np.random.default_rng(3)
    for decimals, (n_m, n_n) in [(0, (5, 9)), (1, (33, 133)), (6, (2, 2)), (2, (40, 7))]:
        m = np.round(rng.normal(0.7, 1, n_m), decimals)
        n = np.round(rng.normal(0.0, 1, n_n), decimals)
        loop_rng = np.random.default_rng(11)
        draws = {}
        for _ in range(300):
            stats = metrics.point_metrics(m[loop_rng.integers(n_m, size=n_m)], n[loop_rng.integers(n_n, size=n_n)])
            for k, v in stats.items():
                draws.setdefault(k, []).append(v)
        expected = {k: (np.percentile(v, 2.5), np.percentile(v, 97.5)) for k, v in draws.items()}
        got = metrics.bootstrap_ci(m, n, n_boot=300, seed=11)
        assert set(got) == set(expected)
        for k in expected:
            np.testing.assert_allclose(got[k], expected[k], rtol=0, atol=1e-12)


def test_clopper_pearson_is_scipys_exact_binomial_interval():
    from scipy.stats import binomtest

    for k, n in [(0, 1024), (3, 1024), (512, 1024), (1024, 1024), (7, 20)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        np.testing.assert_allclose(metrics.clopper_pearson(k, n), (ci.low, ci.high), rtol=1e-9, atol=1e-12)
    assert metrics.clopper_pearson(0, 1024)[1] == pytest.approx(1 - 0.025 ** (1 / 1024))  # the closed form at 0
    row = metrics.with_exact_intervals({"tpr": 0.25, "fpr": 0.0}, n_members=8, n_nonmembers=1024)
    assert row["tpr_ci"] == metrics.clopper_pearson(2, 8) and row["fpr_ci"][0] == 0.0
    with pytest.raises(ValueError, match="successes <= n"):
        metrics.clopper_pearson(5, 4)
