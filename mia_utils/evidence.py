"""From scores to evidence: set-level membership tests, label-permutation nulls, provenance checks.

An AUC answers a researcher's question ("how well do scores separate members from
non-members?"). A rights-holder asks another: "I own these k images; was my collection used to
train this model, and how sure can you be?" Set-level (dataset) inference answers it with a
p-value (Maini et al., ICLR 2021, for classifiers; Dubiński et al., CVPR 2025, CDI, for
diffusion models): pool the evidence of many images, each of which alone is weak.

The test (``set_test``). Given member-likeness scores s(x) (any attack of the book, higher =
more member-like) on a **suspect** set S of k images and a **reference** set R of k' images
known not to be in training and drawn from the same distribution,

    H0: s(S) and s(R) are draws from one distribution   against
    H1: s(S) is stochastically larger (the suspect images look more member-like),

the one-sided Mann-Whitney U test: U = #{(x, y) ∈ S × R : s(x) > s(y)} + ½ #{ties}. Its
p-value is the label-permutation null of U (which images are called "suspect"), exact for
small sets without ties, its normal approximation with a tie correction otherwise (scipy's
``mannwhitneyu``). The effect size is U / (k k'): the probability that a suspect image outscores
a reference image (0.5 under H0; the set's AUC).

Assumptions (what a reader must check before calling p evidence): under H0 the k + k' images
are exchangeable, i.e. the reference images are what the suspect images would be had they not
been used: same source, same preprocessing, same time of collection (a reference set of
another distribution makes the test detect the shift, not training; the audit's model-blind
check below measures that); every score is computed the same way on every image (the book's
attacks seed each image's noise from its content, so this holds); images are distinct (no
image in both sets). The test says nothing about *which* suspect images were used.

Several attacks are combined (``combined_scores``) by averaging each image's percentile rank
within the pooled S ∪ R under each attack: a function of the pooled set that does not look at
the labels, so the permutation null (and the test's validity) is untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

from . import metrics
from .data import near_duplicates
from .images import image_hashes
from .probes import membership, pixels


def set_test(suspect, reference) -> dict:
    """One-sided Mann-Whitney U test that the suspect set's scores exceed the reference set's.

    Returns {"p_value", "effect" (U / (k k'), the probability that a suspect image outscores a
    reference image, ties half), "k", "k_reference"}. No model query: it reads scores.
    """
    s, r = _scores(suspect, "suspect"), _scores(reference, "reference")
    return {"p_value": metrics.auc_p_value(s, r), "effect": metrics.auc(s, r), "k": len(s), "k_reference": len(r)}


def combined_scores(suspect: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Several attacks' scores ({attack: scores}, one entry per attack, same keys on both sides)
    combined into one per image: the mean over attacks of its percentile rank in the pooled
    suspect + reference scores. Label-blind, so ``set_test`` stays valid on the result."""
    if set(suspect) != set(reference) or not suspect:
        raise ValueError(f"Give the same attacks on both sides; got {sorted(suspect)} and {sorted(reference)}.")
    s, r = _as_dict(suspect), _as_dict(reference)
    k, _ = _size(s), _size(r)
    ranks = [rankdata(np.concatenate([s[name], r[name]])) / (k + len(r[name])) for name in s]
    mean = np.mean(ranks, axis=0)
    return mean[:k], mean[k:]


def k_curve(members, nonmembers, ks: Sequence[int], n_reference: int, n_draws: int = 200,
            seed: int = 0) -> dict:
    """How the set test's p-value falls with the suspect set's size k, and a false-positive check.

    For each k and each of ``n_draws`` draws: a reference set of ``n_reference`` non-members and,
    disjoint from it, a null suspect set of k other non-members; a member suspect set of k
    members. ``members`` / ``nonmembers`` are one attack's scores ({attack: scores} for several,
    combined by ``combined_scores``). Returns {"ks", "member": p [len(ks), n_draws], "null": p
    [len(ks), n_draws]}. Every draw is seeded by (seed, k, draw), so curves of several attacks on
    the same images use the same draws.
    """
    m_all, n_all = _as_dict(members), _as_dict(nonmembers)
    n_m, n_n = _size(m_all), _size(n_all)
    if max(ks) > n_m or n_reference + max(ks) > n_n:
        raise ValueError(f"k up to {max(ks)} with {n_reference} reference images needs {max(ks)} members and "
                         f"{n_reference + max(ks)} non-members; there are {n_m} and {n_n}.")
    out = {"ks": list(ks), "member": np.empty((len(ks), n_draws)), "null": np.empty((len(ks), n_draws))}
    for i, k in enumerate(ks):
        for d in range(n_draws):
            rng = np.random.default_rng([seed, k, d])
            perm = rng.permutation(n_n)
            ref, null = perm[:n_reference], perm[n_reference:n_reference + k]
            mem = rng.choice(n_m, k, replace=False)
            for key, idx, pool in (("member", mem, m_all), ("null", null, n_all)):
                s, r = combined_scores({a: v[idx] for a, v in pool.items()}, {a: v[ref] for a, v in n_all.items()})
                out[key][i, d] = set_test(s, r)["p_value"]
    return out


def k_needed(p_values: np.ndarray, ks: Sequence[int], alpha: float = 0.01) -> int | None:
    """The smallest k whose median p-value over draws is below ``alpha`` (None: no k reaches it)."""
    for k, p in zip(ks, np.median(p_values, axis=1)):
        if p < alpha:
            return int(k)
    return None


def _as_dict(scores) -> dict[str, np.ndarray]:
    if isinstance(scores, Mapping):
        return {k: _scores(v, k) for k, v in scores.items()}
    return {"scores": _scores(scores, "scores")}


def _size(scores: dict[str, np.ndarray]) -> int:
    sizes = {len(v) for v in scores.values()}
    if len(sizes) != 1:
        raise ValueError(f"Every attack must score the same images; got sizes {sorted(sizes)}.")
    return sizes.pop()


def _scores(x, label: str) -> np.ndarray:
    x = metrics.finite(x, f"{label} scores")
    if len(x) < 1:
        raise ValueError(f"The {label} set is empty: a set test needs at least one score on each side.")
    return x


def provenance(sets, seed: int = 0, n_boot: int = 1000) -> dict:
    """The two checks to read before any attack's number (the audit prints them first).

    1. The model-blind baseline: a linear probe on the pixels alone, fit on the calibration
       parts, members against non-members on the evaluation parts. If images alone separate the
       two sets, every attack's AUC may measure that difference (a distribution shift), not
       membership: ``warning`` says so when its 95 % CI lies above 0.5 and its AUC above 0.6.
    2. Overlap across the splits: members that are also non-members, exactly (content hash) or
       as a near-copy (``data.near_duplicates``: re-encoded, slightly resized).

    Returns {"model-blind": a metrics row, "exact overlaps": n, "near-copies": n, "warning": str}.
    """
    blind = membership(pixels(sets.members_cal), pixels(sets.nonmembers_cal), pixels(sets.members_eval),
                       pixels(sets.nonmembers_eval), seed=seed, n_boot=n_boot, queries_per_image=0,
                       access="no model")
    members, nonmembers = sets.members(), sets.nonmembers()
    exact = len(set(image_hashes(members)) & set(image_hashes(nonmembers)))
    near = len(near_duplicates(members, nonmembers))
    warning = ""
    if blind["auc"] > 0.6 and blind.get("auc_ci", [0.5])[0] > 0.5:
        warning = (f"images alone separate members from non-members (model-blind AUC {blind['auc']:.3f}): "
                   "attack AUCs may measure this difference between the sets, not membership")
    return {"model-blind": blind, "exact overlaps": exact, "near-copies": near, "warning": warning}


def quantile_thresholds(nonmember_scores, nonmember_features, fpr: float = 0.05, n_components: int = 8,
                        seed: int = 0):
    """Per-image thresholds learnt from non-members only (Tang et al., ICML 2024).

    A global threshold τ treats every image alike, though some images score high whether or not
    they were trained on (simple, smooth images are easy to denoise). Quantile regression learns
    τ(x), the (1 − fpr)-quantile of a non-member's score *given what the image looks like*, from
    known non-members only: member if s(x) > τ(x). The image is described by its first
    ``n_components`` principal components (fitted on the same non-members; the paper uses a
    ResNet on the image, which needs far more non-members than our calibration parts hold);
    the regression is linear (scikit-learn's ``QuantileRegressor``, the pinball loss, no
    penalty). Returns a function: features [N, D] -> thresholds [N]. No model query.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import QuantileRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not 0 < fpr < 1:
        raise ValueError(f"fpr={fpr}: a rate in (0, 1).")
    y = _scores(nonmember_scores, "non-member")
    x = np.asarray(nonmember_features, dtype=np.float64).reshape(len(y), -1)
    k = max(1, min(n_components, x.shape[1], len(y) - 2))
    model = make_pipeline(StandardScaler(), PCA(k, random_state=seed),
                          QuantileRegressor(quantile=1 - fpr, alpha=0.0, solver="highs"))
    model.fit(x, y)
    return lambda features: model.predict(np.asarray(features, dtype=np.float64).reshape(len(features), -1))


def threshold_comparison(cal_nonmembers: tuple, eval_members: tuple, eval_nonmembers: tuple, fpr: float = 0.05,
                         n_components: int = 8, seed: int = 0) -> dict:
    """One global threshold against per-image (quantile-regression) thresholds, both learnt on
    the calibration non-members at the target ``fpr`` and applied to the evaluation split.
    Each argument is (scores, features). Returns {"global": {"fpr", "tpr"}, "per-image":
    {"fpr", "tpr", "auc"}} with the FPR and TPR each realises on evaluation and the AUC of the
    margin s(x) − τ(x) (the global threshold's AUC is the score's own)."""
    s_cal = _scores(cal_nonmembers[0], "calibration non-member")
    tau = metrics.threshold_at_fpr(s_cal, fpr)
    per_image = quantile_thresholds(s_cal, cal_nonmembers[1], fpr, n_components, seed)
    (s_m, f_m), (s_n, f_n) = eval_members, eval_nonmembers
    s_m, s_n = _scores(s_m, "member"), _scores(s_n, "non-member")
    margin_m, margin_n = s_m - per_image(f_m), s_n - per_image(f_n)
    return {"global": {"fpr": float(np.mean(s_n > tau)), "tpr": float(np.mean(s_m > tau)), "auc": metrics.auc(s_m, s_n)},
            "per-image": {"fpr": float(np.mean(margin_n > 0)), "tpr": float(np.mean(margin_m > 0)),
                          "auc": metrics.auc(margin_m, margin_n)}}
