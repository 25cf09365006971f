"""Small classifiers on features: the linear probes of "Tracing the Roots", and the model-blind baseline.

A probe is scikit-learn's ``StandardScaler`` followed by an L2-regularised logistic
regression whose strength is chosen by cross-validation **on the development split only**
(the paper trains a linear layer with AdamW for 100 epochs; a logistic regression is the same
model, fitted to its optimum instead of for a fixed number of epochs). It is trained on a small
labelled development split and evaluated on a disjoint evaluation split with ``metrics``.

The model-blind baseline is the same probe on the raw pixels: no model access at all. When it
scores well above chance, the evaluation data differ by more than membership (a distribution
shift), and a membership attack's AUC on them measures that shift too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from . import metrics
from .features import group_features


def fit(x_dev: np.ndarray, y_dev: np.ndarray, seed: int = 0, cv: int = 5) -> Pipeline:
    """Standardise, then a logistic regression (binary or multinomial) with C chosen by
    ``cv``-fold cross-validation on the development data (10 values from 1e-4 to 1e4)."""
    y_dev = np.asarray(y_dev)
    folds = int(min(cv, np.bincount(np.unique(y_dev, return_inverse=True)[1]).min()))
    if folds < 2:
        raise ValueError("Each class needs at least 2 development examples to fit a probe.")
    clf = LogisticRegressionCV(Cs=10, cv=folds, max_iter=5000, random_state=seed, scoring="neg_log_loss",
                               l1_ratios=(0.0,), use_legacy_attributes=False)
    return make_pipeline(StandardScaler(), clf).fit(np.asarray(x_dev, dtype=np.float64), y_dev)


def pixels(images: torch.Tensor) -> np.ndarray:
    """The model-blind representation: each image's raw pixels as one row."""
    return images.detach().cpu().double().flatten(1).numpy()


def binary_scores(probe: Pipeline, x: np.ndarray, positive=1) -> np.ndarray:
    """The probe's log-odds for the ``positive`` class (higher = positive)."""
    s = probe.decision_function(np.asarray(x, dtype=np.float64))
    if s.ndim == 1:
        return s if probe.classes_[1] == positive else -s
    proba = probe.predict_proba(np.asarray(x, dtype=np.float64))
    k = list(probe.classes_).index(positive)
    p = np.clip(proba[:, k], 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def membership(x_dev_members, x_dev_nonmembers, x_eval_members, x_eval_nonmembers,
               seed: int = 0, n_boot: int = 1000, **extra) -> dict:
    """Fit a member-vs-non-member probe on development features, evaluate it (a row of
    ``metrics.evaluate``: AUC, TPR at 1 % / 0.1 % FPR, ASR, with CIs), and carry the threshold
    transfer: the FPR and TPR on evaluation of the threshold set at 1 % FPR on the development
    non-members' scores (in-sample for the probe, so the transfer shows its optimism too)."""
    x = np.concatenate([x_dev_members, x_dev_nonmembers])
    y = np.r_[np.ones(len(x_dev_members), int), np.zeros(len(x_dev_nonmembers), int)]
    probe = fit(x, y, seed=seed)
    s_m, s_n = binary_scores(probe, x_eval_members), binary_scores(probe, x_eval_nonmembers)
    row = metrics.evaluate(s_m, s_n, n_boot=n_boot, seed=seed, n_dev=len(x), **extra)
    row["calibrated_at_1pct_fpr"] = metrics.calibrated(binary_scores(probe, x_dev_members),
                                                       binary_scores(probe, x_dev_nonmembers), s_m, s_n)
    return row


def multiclass(x_dev: np.ndarray, y_dev: Sequence, x_eval: np.ndarray, y_eval: Sequence,
               seed: int = 0, n_boot: int = 1000, level: float = 0.95, **extra) -> dict:
    """Fit a multi-class probe (origin or model attribution) and evaluate it.

    Returns (row, probe). The row holds balanced accuracy with a percentile-bootstrap CI (resampling within each class),
    per-class recall (the diagonal of the row-normalised confusion matrix), the confusion
    matrix itself (rows true, columns predicted, in ``classes`` order) and the chance level.
    """
    probe = fit(x_dev, np.asarray(y_dev), seed=seed)
    y_eval = np.asarray(y_eval)
    pred = probe.predict(np.asarray(x_eval, dtype=np.float64))
    classes = list(probe.classes_)
    cm = confusion_matrix(y_eval, pred, labels=classes)
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y_eval == c) for c in classes]
    draws = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(ix, len(ix)) for ix in by_class if len(ix)])
        draws.append(balanced_accuracy_score(y_eval[idx], pred[idx]))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    recall = cm.diagonal() / np.maximum(cm.sum(1), 1)
    out = {"balanced_accuracy": float(balanced_accuracy_score(y_eval, pred)),
           "balanced_accuracy_ci": [float(np.percentile(draws, lo)), float(np.percentile(draws, hi))] if n_boot else None,
           "chance": 1 / len(classes), "classes": [str(c) for c in classes],
           "recall": {str(c): float(r) for c, r in zip(classes, recall, strict=True)},
           "confusion": cm.tolist(), "n_dev": len(y_dev), "n_eval": len(y_eval)}
    out.update(extra)
    return out, probe


def read_recalls(probe_row: dict, blind_row: dict, pair: Sequence[str] = ()) -> dict:
    """What a reader compares in two ``multiclass`` rows of the same classes (a probe and its
    model-blind baseline): the class the blind probe recalls best, the class whose recall the
    probe raises most (with both recalls) and, for a ``pair`` of classes (a, b), the probe's
    confusions between them: images of a called b, of b called a, and how many of a there are
    (all None when either class is missing)."""
    recall, base = probe_row["recall"], blind_row["recall"]
    top = max(base, key=base.get)
    gain = max(recall, key=lambda c: recall[c] - base[c])
    out = {"blind_top": top, "blind_top_recall": base[top], "gain_class": gain,
           "gain_from": base[gain], "gain_to": recall[gain], "a_as_b": None, "b_as_a": None, "n_a": None}
    if len(pair) == 2 and all(c in probe_row["classes"] for c in pair):
        i, j = (probe_row["classes"].index(c) for c in pair)
        cm = probe_row["confusion"]
        out.update(a_as_b=cm[i][j], b_as_a=cm[j][i], n_a=sum(cm[i]))
    return out


# ---------------------------------------------------------------------- groups of images
def dev_eval(sets, n_dev: int) -> dict:
    """The two groups of a ``MembershipSets`` as (development, evaluation) pairs: the first
    ``n_dev`` calibration images of each side for fitting probes, the evaluation parts whole."""
    return {"members": (sets.members_cal[:n_dev], sets.members_eval),
            "external": (sets.nonmembers_cal[:n_dev], sets.nonmembers_eval)}


# The names of the rows the probes write, for a chapter to refer to them (never by their text)
BLIND = "model-blind (pixels)"               # the multi-class probe on raw pixels
BLIND_PROBE = "model-blind probe (pixels)"   # the member-vs-non-member probe on raw pixels
UNIFORM = "uniform over [0, T)"              # ``Groups.allocation``: the budget spread over [0, T)


def probe_name(feature_set: str) -> str:
    """The row of ``Groups.membership``'s probe on a feature set: ``probe L_t + ∇x``."""
    return f"probe {feature_set}"


def window_name(start: int, window: int) -> str:
    """The row of ``Groups.allocation``'s probe on the window [start, start + window)."""
    return f"[{start}, {start + window})"


def best_window(rows: dict) -> str:
    """The window row (``window_name``) of ``Groups.allocation``'s rows with the highest AUC."""
    return max((k for k in rows if k not in (UNIFORM, BLIND_PROBE)), key=lambda k: rows[k]["auc"])


def access(kinds) -> str:
    """The access level a feature set needs: gradients through the model are white box, ε̂ alone gray box."""
    return "white box" if set(kinds) & {"grad_x", "grad_theta"} else "gray box"


class Groups:
    """Named image groups, each a (development, evaluation) pair, with their trajectory features
    (``features.group_features``): the matrices the probes are fitted and evaluated on.

    ``feature_sets`` maps a name to (kinds, time steps, forward queries and backward passes per
    image): the rows of every table the probes fill.
    """

    def __init__(self, images: dict, feats: dict, feature_sets: dict):
        self.images, self.feats, self.feature_sets = images, feats, feature_sets

    def matrix(self, names: Sequence[str], kinds, at=None, part: int = 1, labels: dict | None = None):
        """Features (part 0: development, 1: evaluation) of some groups, stacked, and their labels
        (each group's name, or ``labels[name]``)."""
        xs = [self.feats[n][part].matrix(kinds, ts=at) for n in names]
        return np.concatenate(xs), self._labels(names, xs, labels)

    def pixels(self, names: Sequence[str], part: int = 1, labels: dict | None = None):
        """The model-blind counterpart of ``matrix``: raw pixels."""
        xs = [pixels(self.images[n][part]) for n in names]
        return np.concatenate(xs), self._labels(names, xs, labels)

    @staticmethod
    def _labels(names, xs, labels):
        return np.concatenate([np.full(len(x), (labels or {}).get(n, n)) for x, n in zip(xs, names)])

    def _usable(self, names, kinds) -> bool:
        return all(set(kinds) <= set(self.feats[n][0].values) for n in names)

    def multiclass(self, names: Sequence[str], labels: dict | None = None, which: Sequence[str] | None = None,
                   seed: int = 0, n_boot: int = 1000) -> tuple[dict, dict]:
        """A multi-class probe per feature set (``which``: those names only) and the model-blind
        probe, each trained on development and evaluated on evaluation images: (rows, probes)."""
        rows, fitted = {}, {}
        for name, (kinds, at, fq, bq) in self.feature_sets.items():
            if (which is None or name in which) and self._usable(names, kinds):
                xd, yd = self.matrix(names, kinds, at, 0, labels)
                xe, ye = self.matrix(names, kinds, at, 1, labels)
                rows[name], fitted[name] = multiclass(xd, yd, xe, ye, seed=seed, n_boot=n_boot, queries_per_image=fq,
                                                      backward_per_image=bq, access=access(kinds))
        rows[BLIND], fitted[BLIND] = multiclass(*self.pixels(names, 0, labels), *self.pixels(names, 1, labels),
                                                seed=seed, n_boot=n_boot, queries_per_image=0, backward_per_image=0,
                                                access="no model")
        return rows, fitted

    def membership(self, members: str, nonmembers: str, seed: int = 0, n_boot: int = 1000) -> dict:
        """A member-vs-non-member probe per feature set both groups have, and the model-blind probe."""
        pair, rows = (members, nonmembers), {}
        for name, (kinds, at, fq, bq) in self.feature_sets.items():
            if self._usable(pair, kinds):
                x = [self.feats[g][p].matrix(kinds, ts=at) for p in (0, 1) for g in pair]
                rows[probe_name(name)] = membership(*x, seed=seed, n_boot=n_boot, queries_per_image=fq,
                                                   backward_per_image=bq, access=access(kinds))
        x = [pixels(self.images[g][p]) for p in (0, 1) for g in pair]
        rows[BLIND_PROBE] = membership(*x, seed=seed, n_boot=n_boot, queries_per_image=0, backward_per_image=0,
                                       access="no model")
        return rows

    def loss_threshold(self, ts: Sequence[int], members: str = "members", external: str = "external",
                       flag: Sequence[str] = (), seed: int = 0, n_boot: int = 1000) -> dict:
        """The loss attack (score −L_t, no new query) as an auditor would run it: t chosen on the
        development parts of ``members`` against ``external``, a threshold at 1 % development FPR,
        and the share of each group of ``flag`` (evaluation parts) that it calls "member", and the
        share whose loss lies below the members' median.

        Returns ``attack`` (``metrics.honest_and_oracle``), ``t``, ``flagged``, ``below_median``
        and ``scores`` ({group: (development, evaluation) {t: −L_t}}).
        """
        scores = {name: tuple({t: -f.values["loss"][:, i] for i, t in enumerate(ts)} for f in pair)
                  for name, pair in self.feats.items()}
        attack = metrics.honest_and_oracle(scores[members][0], scores[external][0], scores[members][1],
                                           scores[external][1], n_boot=n_boot, seed=seed, queries_per_image=1)
        t = attack["honest"]["setting"]
        threshold = attack["honest"]["calibrated_at_1pct_fpr"]["threshold"]
        median = np.median(scores[members][1][t])
        groups = [members, external, *flag]
        return {"attack": attack, "t": t, "scores": scores,
                "flagged": {g: float(np.mean(scores[g][1][t] > threshold)) for g in groups},
                "below_median": {g: float(np.mean(scores[g][1][t] > median)) for g in flag}}

    def allocation(self, ts: Sequence[int], window: int, T: int, members: str = "members",
                   external: str = "external", seed: int = 0, n_boot: int = 1000) -> dict:
        """Where to spend a budget of forward queries: an L_t probe on the time steps of each window
        [a, a + window) of [0, T), every window cut to the budget of the smallest, against the same
        budget spread uniformly over [0, T); plus the model-blind row. {row name: metrics row}."""
        windows = {window_name(a, window): [t for t in ts if a <= t < a + window] for a in range(0, T, window)}
        budget = min(len(at) for at in windows.values())
        if budget == 0:
            raise ValueError(f"A window of {window} steps holds none of the time steps {list(ts)[:5]}…")
        chosen = {name: at[:budget] for name, at in windows.items()}
        chosen[UNIFORM] = list(ts)[:: max(1, len(ts) // budget)][:budget]
        rows = {}
        for name, at in chosen.items():
            x = [self.feats[g][p].matrix(["loss"], ts=at) for p in (0, 1) for g in (members, external)]
            rows[name] = membership(*x, seed=seed, n_boot=n_boot, queries_per_image=len(at), access="gray box")
        x = [pixels(self.images[g][p]) for p in (0, 1) for g in (members, external)]
        rows[BLIND_PROBE] = membership(*x, seed=seed, n_boot=n_boot, queries_per_image=0, access="no model")
        return rows


def shift_study(model, sets, elsewhere: torch.Tensor, ts: Sequence[int], window: int, n_dev: int = 32,
                seed: int = 0, n_boot: int = 1000) -> tuple[dict, dict]:
    """Chapter 04's allocation and distribution-shift questions on another victim, with L_t alone
    (forward queries only): its members, its non-members and a set ``elsewhere`` collected
    differently, each cut into ``n_dev`` development images and an evaluation part of the
    members' size (so the three weigh alike). Returns (``Groups.allocation`` rows,
    {"same source": membership rows, "collected elsewhere": membership rows})."""

    n_ev = len(sets.members_eval)
    groups = {"members": (sets.members_cal[:n_dev], sets.members_eval),
              "external": (sets.nonmembers_cal[:n_dev], sets.nonmembers_eval[:n_ev]),
              "elsewhere": (elsewhere[:n_dev], elsewhere[n_dev:n_dev + n_ev])}
    feats, _ = group_features(model, groups, ts, kinds=("loss",), seed=seed)
    bank = Groups(groups, feats, {"L_t": (["loss"], list(ts), len(ts), 0)})
    allocation = bank.allocation(ts, window, model.num_train_timesteps, seed=seed, n_boot=n_boot)
    shift = {"same source": bank.membership("members", "external", seed=seed, n_boot=n_boot),
             "collected elsewhere": bank.membership("members", "elsewhere", seed=seed, n_boot=n_boot)}
    return allocation, shift
