"""Membership metrics, one convention each, with bootstrap confidence intervals.

Scores follow the attack contract (higher = member). Conventions:

* AUC: area under scikit-learn's ROC curve (ties count one half).
* TPR at a target FPR: **linearly interpolated** on scikit-learn's full ROC curve
  (``roc_curve(..., drop_intermediate=False)``) at exactly the target FPR: at each FPR value
  the highest TPR is kept (the top of a vertical step), and consecutive points are joined
  by straight lines. Published code also uses the closest grid point,
  the last ROC point below the target, or the best TPR with FPR <= target; ours lies between
  these and does not jump as the number of non-members changes.
  Below one false positive (n × FPR < 1: ``resolvable``) the value is an interpolation
  between FPR 0 and the first false positive; ``format_ci`` (every table) shows "—" instead.
* ASR: the best balanced accuracy over all thresholds, max_τ (TPR(τ) + 1 − FPR(τ)) / 2.
* Confidence intervals: percentile bootstrap (members and non-members resampled separately).
* Calibrated evaluation: a threshold chosen on calibration scores for a target FPR, then
  applied unchanged to the evaluation scores (achieved FPR and TPR): the honest protocol.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

FPR_TARGETS = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0_1pct_fpr": 0.001}


def _labels_scores(members, nonmembers) -> tuple[np.ndarray, np.ndarray]:
    members = np.asarray(members, dtype=np.float64).ravel()
    nonmembers = np.asarray(nonmembers, dtype=np.float64).ravel()
    if len(members) == 0 or len(nonmembers) == 0:
        raise ValueError("Both members and non-members need at least one score.")
    if not (np.isfinite(members).all() and np.isfinite(nonmembers).all()):
        raise ValueError("Scores contain NaN or inf: check the attack's inputs.")
    y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    return y, np.r_[members, nonmembers]


def roc(members, nonmembers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): scikit-learn's full ROC curve, members as positives."""
    y, s = _labels_scores(members, nonmembers)
    return roc_curve(y, s, drop_intermediate=False)


def _upper_envelope(fpr: np.ndarray, tpr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique FPR values, increasing, each with the highest TPR reached at it."""
    uf, inv = np.unique(fpr, return_inverse=True)
    ut = np.zeros(len(uf))
    np.maximum.at(ut, inv, tpr)
    return uf, ut


def auc(members, nonmembers) -> float:
    y, s = _labels_scores(members, nonmembers)
    return float(roc_auc_score(y, s))


def auc_p_value(members, nonmembers) -> float:
    """The label-permutation p-value of an AUC: the chance that randomly relabelling the same
    scores as members / non-members gives an AUC at least as large. AUC = U / (m n) with U the
    Mann-Whitney statistic, so this is the one-sided Mann-Whitney test (scipy: exact for small
    samples without ties, else the normal approximation with a tie correction)."""
    from scipy.stats import mannwhitneyu

    y, s = _labels_scores(members, nonmembers)
    return float(mannwhitneyu(s[y == 1], s[y == 0], alternative="greater", method="auto").pvalue)


def check_fpr(fpr: float) -> float:
    """``fpr`` as a float, or a ValueError when it is not a rate in [0, 1]."""
    if not 0 <= fpr <= 1:
        raise ValueError(f"fpr={fpr} must lie in [0, 1] (a rate, not a percentage).")
    return float(fpr)


def finite(scores, what: str = "scores") -> np.ndarray:
    """``scores`` as a flat float64 array, or a ValueError naming ``what`` when one is NaN or inf."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not np.isfinite(s).all():
        raise ValueError(f"The {what} contain NaN or inf: check the attack's inputs.")
    return s


def tpr_at_fpr(members, nonmembers, fpr: float = 0.01) -> float:
    """TPR at exactly ``fpr``, interpolated linearly on the ROC curve (module docstring)."""
    check_fpr(fpr)
    f, t = _upper_envelope(*roc(members, nonmembers)[:2])
    return float(np.interp(fpr, f, t))


def asr(members, nonmembers) -> float:
    """Best balanced accuracy over thresholds: max (TPR + 1 − FPR) / 2."""
    f, t, _ = roc(members, nonmembers)
    return float(np.max((t + 1 - f) / 2))


def point_metrics(members, nonmembers) -> dict[str, float]:
    """AUC, TPR at 1 % and 0.1 % FPR, ASR."""
    f, t, _ = roc(members, nonmembers)
    # the trapezoidal area under this same curve equals roc_auc_score (ties count ½); one
    # ROC per call keeps the bootstrap at half the cost
    out = {"auc": float(np.trapezoid(t, f))}
    ef, et = _upper_envelope(f, t)
    for name, target in FPR_TARGETS.items():
        out[name] = float(np.interp(target, ef, et))
    out["asr"] = float(np.max((t + 1 - f) / 2))
    return out


def bootstrap_ci(members, nonmembers, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every point metric (members, non-members resampled apart)."""
    m, n = finite(members), finite(nonmembers)
    if len(m) < 2 or len(n) < 2:
        raise ValueError(f"A bootstrap interval needs at least 2 members and 2 non-members; got {len(m)} and "
                         f"{len(n)} (every resample of one image is that image: the interval would be a point).")
    rng = np.random.default_rng(seed)
    # the resamples as counts of each original score (drawn in the order a loop of point_metrics
    # calls would draw them: the same resamples)
    counts_m, counts_n = np.empty((n_boot, len(m))), np.empty((n_boot, len(n)))
    for b in range(n_boot):
        counts_m[b] = np.bincount(rng.integers(len(m), size=len(m)), minlength=len(m))
        counts_n[b] = np.bincount(rng.integers(len(n), size=len(n)), minlength=len(n))
    draws: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_boot, 200):  # bounded memory: 200 resamples x (thresholds) at a time
        for k, v in _resampled_metrics(m, n, counts_m[start:start + 200], counts_n[start:start + 200]).items():
            draws.setdefault(k, []).append(v)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {k: (float(np.percentile(np.concatenate(v), lo)), float(np.percentile(np.concatenate(v), hi)))
            for k, v in draws.items()}


def _resampled_metrics(m: np.ndarray, n: np.ndarray, counts_m: np.ndarray, counts_n: np.ndarray) -> dict:
    """``point_metrics`` of B resamples at once, each given as counts of the original scores [B, M], [B, N].

    A resample's ROC, evaluated at every distinct original score τ (descending) after (0, 0):
    TPR(τ) = Σ_i c_i [m_i ≥ τ] / M, FPR(τ) = Σ_j c_j [n_j ≥ τ] / N. Thresholds absent from the
    resample repeat a neighbour's point (zero area, same envelope, same maximum), so AUC
    (trapezoid), TPR at each FPR target (interpolated on the upper envelope) and ASR equal
    ``point_metrics`` on the resample (tested against it); one matrix product instead of B
    scikit-learn curves (~40x faster at 1,000 resamples; written here because no library
    bootstraps these metrics from counts).
    """
    taus = np.unique(np.r_[m, n])[::-1]
    tpr = counts_m @ (m[:, None] >= taus[None, :]) / len(m)
    fpr = counts_n @ (n[:, None] >= taus[None, :]) / len(n)
    zeros = np.zeros((len(tpr), 1))
    tpr, fpr = np.hstack([zeros, tpr]), np.hstack([zeros, fpr])
    out = {"auc": np.trapezoid(tpr, fpr, axis=1)}
    rows = np.arange(len(tpr))
    last = fpr.shape[1] - 1
    for name, target in FPR_TARGETS.items():
        lo = (fpr <= target).sum(1) - 1  # the last point at or left of the target (FPR is non-decreasing)
        hi = np.minimum(lo + 1, last)
        f_lo, t_lo, f_hi = fpr[rows, lo], tpr[rows, lo], fpr[rows, hi]
        t_hi = tpr[rows, (fpr <= f_hi[:, None]).sum(1) - 1]  # the envelope: the highest TPR at that FPR
        with np.errstate(invalid="ignore", divide="ignore"):
            value = t_lo + (t_hi - t_lo) / (f_hi - f_lo) * (target - f_lo)
        out[name] = np.where((lo == last) | (f_lo == target), t_lo, value)
    out["asr"] = np.max((tpr + 1 - fpr) / 2, axis=1)
    return out


def evaluate(members, nonmembers, n_boot: int = 1000, seed: int = 0, **extra) -> dict:
    """Every metric with its 95 % CI (``<name>_ci``) plus ``extra`` entries (queries, seconds).

    The dictionary is the row format of every chapter's metrics.json.
    """
    out: dict = point_metrics(members, nonmembers)
    out["auc_p"] = auc_p_value(members, nonmembers)
    if n_boot:
        for k, ci in bootstrap_ci(members, nonmembers, n_boot=n_boot, seed=seed).items():
            out[f"{k}_ci"] = list(ci)
    out["n_members"] = int(np.size(members))
    out["n_nonmembers"] = int(np.size(nonmembers))
    out.update(extra)
    return out


def resolvable(n_nonmembers: int, fpr: float) -> bool:
    """Whether ``n_nonmembers`` can measure a TPR at ``fpr``: at least one false positive fits
    (n · FPR >= 1). Below that, the TPR "at" the FPR is read off the ROC between FPR 0 and the
    first false positive: an interpolation, not a measurement."""
    return n_nonmembers * check_fpr(fpr) >= 1


def format_ci(row: dict, key: str, pct: bool = False) -> str:
    """"0.970 [0.953, 0.984]" (or, with ``pct``, "54.2 [40.1, 77.7]" in percent) for a row of
    ``evaluate``; the value alone when the row has no interval, "" when it lacks the key.

    A TPR at an FPR target (``FPR_TARGETS``) that the row's non-members cannot resolve
    (``resolvable``) is "— (n=171 < 1/FPR)": no number, and the reason."""
    if key not in row:
        return ""
    n = row.get("n_nonmembers")
    if key in FPR_TARGETS and n is not None and not resolvable(n, FPR_TARGETS[key]):
        return f"— (n={n} < 1/FPR)"
    scale, digits = (100, 1) if pct else (1, 3)
    text = f"{row[key] * scale:.{digits}f}"
    ci = row.get(f"{key}_ci")
    return f"{text} [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]" if ci else text


def threshold_at_fpr(nonmember_scores, fpr: float = 0.01) -> float:
    """The smallest threshold τ with (share of non-members scoring > τ) <= ``fpr``.

    Calling "member" when score > τ then has a false-positive rate of at most ``fpr`` on
    these (calibration) non-members.
    """
    check_fpr(fpr)
    s = np.sort(finite(nonmember_scores, "calibration non-member scores"))
    if len(s) == 0:
        raise ValueError("No calibration non-member scores: a threshold needs at least one.")
    k = int(np.floor(fpr * len(s)))  # at most k non-members may lie above τ
    return float(s[len(s) - 1 - k]) if k < len(s) else float(-np.inf)


def calibrated(cal_members, cal_nonmembers, eval_members, eval_nonmembers, fpr: float = 0.01) -> dict:
    """Threshold from calibration non-members at ``fpr``, applied to the evaluation split.

    Returns the threshold, the target and the achieved FPR and TPR on the evaluation scores.
    ``cal_members`` is accepted for symmetry (and a check of direction): only non-members set τ.
    """
    tau = threshold_at_fpr(cal_nonmembers, fpr)
    em, en = finite(eval_members, "evaluation scores"), finite(eval_nonmembers, "evaluation scores")
    finite(cal_members, "calibration member scores")
    return {"threshold": tau, "target_fpr": fpr, "fpr": float(np.mean(en > tau)), "tpr": float(np.mean(em > tau)),
            "cal_tpr": float(np.mean(np.asarray(cal_members) > tau))}


def clopper_pearson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper–Pearson) interval of a binomial proportion ``successes`` / ``n``: the
    interval of a TPR or an FPR at a threshold fixed beforehand (set on calibration), where each
    evaluated image is one Bernoulli draw. Unlike the bootstrap it stays honest at 0 and 1: at
    0 false positives of 1,024 the FPR's upper end is 0.36 %, not 0."""
    from scipy.stats import beta

    if not 0 <= successes <= n or n < 1:
        raise ValueError(f"clopper_pearson needs 0 <= successes <= n and n >= 1 (got {successes}, {n}).")
    alpha = 1 - level
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    high = 1.0 if successes == n else float(beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return low, high


def with_exact_intervals(calibration: dict, n_members: int, n_nonmembers: int, level: float = 0.95) -> dict:
    """A ``calibrated`` row with the Clopper–Pearson intervals of its evaluation TPR and FPR
    (``tpr_ci``, ``fpr_ci``), the threshold being fixed on calibration."""
    return {**calibration,
            "tpr_ci": clopper_pearson(round(calibration["tpr"] * n_members), n_members, level),
            "fpr_ci": clopper_pearson(round(calibration["fpr"] * n_nonmembers), n_nonmembers, level)}


# ---------------------------------------------------------------------- the honest protocol
def honest_and_oracle(members_cal: dict, nonmembers_cal: dict, members_eval: dict, nonmembers_eval: dict,
                      n_boot: int = 1000, seed: int = 0, **extra) -> dict:
    """Choose a setting (a time step, say) on calibration, report it on evaluation.

    Each split maps a setting to scores (``harness.evaluate`` builds exactly these four). ``honest`` is the setting with the
    best calibration AUC, evaluated on the evaluation split; ``oracle`` is the setting with the
    best *evaluation* AUC (what several papers report), shown for comparison only.
    Returns {"honest": row, "oracle": row}, each row from ``evaluate`` plus its ``setting``.
    """
    cal_auc = {k: auc(members_cal[k], nonmembers_cal[k]) for k in members_cal}
    eval_auc = {k: auc(members_eval[k], nonmembers_eval[k]) for k in members_eval}
    chosen, best = max(cal_auc, key=cal_auc.get), max(eval_auc, key=eval_auc.get)
    out = {}
    for label, k in (("honest", chosen), ("oracle", best)):
        row = evaluate(members_eval[k], nonmembers_eval[k], n_boot=n_boot, seed=seed, **extra)
        row["setting"] = k
        out[label] = row
    out["honest"]["calibrated_at_1pct_fpr"] = calibrated(members_cal[chosen], nonmembers_cal[chosen],
                                                         members_eval[chosen], nonmembers_eval[chosen])
    return out


def choose_direction(cal_positives, cal_negatives) -> int:
    """+1 if positives score higher on calibration data, else −1 (multiply scores by it).

    For tests whose direction is not known in advance (members vs generated images: the sign
    flips with t and resolution), the direction is a fitted parameter, chosen on calibration.
    """
    return 1 if auc(cal_positives, cal_negatives) >= 0.5 else -1


def directional(pos_cal: dict, neg_cal: dict, pos_eval: dict, neg_eval: dict) -> dict:
    """A two-sided test made honest: for each setting (a time step, say), the direction is chosen
    on calibration (``choose_direction``), then the setting with the best calibration AUC.

    Each argument maps a setting to scores. Returns {"rows": {setting: {"sign", "cal_auc", "auc",
    "raw_auc"}}, "chosen": setting}: ``auc`` is the evaluation AUC in the calibrated direction,
    ``raw_auc`` the evaluation AUC had positives been assumed to score higher.
    """
    rows = {}
    for k in pos_cal:
        sign = choose_direction(pos_cal[k], neg_cal[k])
        rows[k] = {"sign": sign, "cal_auc": auc(sign * np.asarray(pos_cal[k]), sign * np.asarray(neg_cal[k])),
                   "auc": auc(sign * np.asarray(pos_eval[k]), sign * np.asarray(neg_eval[k])),
                   "raw_auc": auc(pos_eval[k], neg_eval[k])}
    return {"rows": rows, "chosen": max(rows, key=lambda k: rows[k]["cal_auc"])}


def calibrated_accuracy(members_cal, nonmembers_cal, members_eval, nonmembers_eval) -> dict:
    """Balanced accuracy at the threshold that is best on *calibration*, applied to evaluation.

    The honest counterpart of ASR (whose threshold is the best on the evaluation scores).
    """
    mc, nc = np.asarray(members_cal, float), np.asarray(nonmembers_cal, float)
    candidates = np.unique(np.r_[mc, nc])
    bal = [(np.mean(mc >= tau) + np.mean(nc < tau)) / 2 for tau in candidates]
    tau = float(candidates[int(np.argmax(bal))])
    me, ne = np.asarray(members_eval, float), np.asarray(nonmembers_eval, float)
    return {"threshold": tau, "balanced_accuracy": float((np.mean(me >= tau) + np.mean(ne < tau)) / 2)}


def tpr_at_fpr_conventions(members, nonmembers, fpr: float = 0.01) -> dict[str, float]:
    """TPR at a target FPR under the conventions found in published code, beside ours.

    * ``interpolated`` (ours): linear interpolation on the ROC's upper envelope;
    * ``closest_point``: the ROC point whose FPR is closest to the target;
    * ``last_below``: the last ROC point (in threshold order) with FPR below the target;
    * ``best_at_most``: the highest TPR among points with FPR <= target.
    """
    f, t, _ = roc(members, nonmembers)
    below = np.flatnonzero(f < fpr)
    at_most = t[f <= fpr]
    return {
        "interpolated": tpr_at_fpr(members, nonmembers, fpr),
        "closest_point": float(t[int(np.argmin(np.abs(f - fpr)))]),
        "last_below": float(t[below[-1]]) if len(below) else 0.0,
        "best_at_most": float(at_most.max()) if len(at_most) else 0.0,
    }
