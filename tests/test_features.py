"""Trajectory features against a direct autograd computation; the probes and the blind baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mia_utils as mu
from mia_utils.features import FeatureSet, noise_at, trajectory_features


def direct(model, images, ts, seed):
    """One image and one t at a time, with plain autograd: the reference."""
    unet = model.unet
    out = {"loss": np.zeros((len(images), len(ts))), "grad_x": np.zeros((len(images), len(ts))),
           "grad_theta": np.zeros((len(images), len(ts)))}
    for j, t in enumerate(ts):
        ab = float(model.alpha_bar[t])
        for i in range(len(images)):
            x0 = images[i:i + 1].clone().requires_grad_(True)
            eps = noise_at(t, images[i:i + 1], seed)  # the image's own ε_t
            x_t = ab ** 0.5 * x0 + (1 - ab) ** 0.5 * eps
            unet.zero_grad()
            loss = (unet(x_t, torch.tensor([t])).sample - eps).pow(2).sum()
            loss.backward()
            out["loss"][i, j] = loss.item()
            out["grad_x"][i, j] = x0.grad.pow(2).sum().item()
            out["grad_theta"][i, j] = sum(p.grad.pow(2).sum().item() for p in unet.parameters())
    unet.zero_grad(set_to_none=True)
    return out


def test_features_match_direct_autograd(tiny_model, digits):
    images, ts = digits[:5], [0, 37, 500, 999]
    feats = trajectory_features(tiny_model, images, ts, kinds=("loss", "grad_x", "grad_theta"), seed=3,
                                batch_size=8, theta_chunk=3, progress=False)
    ref = direct(tiny_model, images, ts, seed=3)
    for kind in ("loss", "grad_x", "grad_theta"):
        np.testing.assert_allclose(feats.values[kind], ref[kind], rtol=2e-4, err_msg=kind)


def test_features_do_not_depend_on_batching_or_other_time_steps(tiny_model, digits):
    images = digits[:7]
    a = trajectory_features(tiny_model, images, [10, 200, 600], seed=1, batch_size=4, progress=False)
    b = trajectory_features(tiny_model, images, [600, 10], seed=1, batch_size=64, progress=False)
    np.testing.assert_allclose(a.values["loss"][:, [2, 0]], b.values["loss"], rtol=1e-5)
    np.testing.assert_allclose(a.values["grad_x"][:, [2, 0]], b.values["grad_x"], rtol=1e-4)


def test_queries_are_counted(tiny_model, digits):
    images, ts = digits[:6], mu.features.stride(250)
    tiny_model.reset_queries()
    f = trajectory_features(tiny_model, images, ts, kinds=("loss",), batch_size=5, progress=False)
    assert f.forward == 6 * 4 == tiny_model.queries and f.backward == 0
    g = trajectory_features(tiny_model, images, ts, kinds=("loss", "grad_x", "grad_theta"), progress=False)
    assert g.forward == 2 * 24 and g.backward == 2 * 24  # one forward each for ε̂ and the per-sample path


def test_feature_matrix_and_concat():
    f = FeatureSet([0, 10, 20], {"loss": np.arange(1, 7.0).reshape(2, 3), "grad_x": np.ones((2, 3))})
    assert f.matrix(["loss"], ts=[20, 0], log=False).tolist() == [[3, 1], [6, 4]]
    assert f.matrix().shape == (2, 6) and np.allclose(f.matrix(["grad_x"]), 0)
    both = FeatureSet.concat([f, f.subset([1])])
    assert len(both) == 3 and both.values["loss"][2].tolist() == [4, 5, 6]
    with pytest.raises(ValueError):
        FeatureSet.concat([f, FeatureSet([0], {"loss": np.ones((1, 1))})])


def test_bad_kinds_are_refused(tiny_model, digits):
    with pytest.raises(ValueError, match="kinds"):
        trajectory_features(tiny_model, digits[:2], [0], kinds=("norm",), progress=False)


def test_blind_baseline_at_chance_without_shift_and_high_with_it(digits):
    """Members and non-members from one distribution: raw pixels say nothing. The same
    non-members one pixel to the right: the model-blind probe separates them."""
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(digits)))
    m, n = digits[perm[:600]], digits[perm[600:1200]]
    px = mu.probes.pixels
    plain = mu.probes.membership(px(m[:100]), px(n[:100]), px(m[100:]), px(n[100:]), n_boot=200)
    assert plain["auc_ci"][0] < 0.5 < plain["auc_ci"][1] and abs(plain["auc"] - 0.5) < 0.06
    s = mu.datasets.distribution_shift(n, "shift")
    shifted = mu.probes.membership(px(m[:100]), px(s[:100]), px(m[100:]), px(s[100:]), n_boot=0)
    assert shifted["auc"] > 0.9
    # the threshold transfer: 1 % FPR on the development non-members' probe scores, applied to evaluation
    probe = mu.probes.fit(np.concatenate([px(m[:100]), px(s[:100])]), np.r_[np.ones(100), np.zeros(100)])
    by_hand = mu.metrics.calibrated(*(mu.probes.binary_scores(probe, px(x)) for x in (m[:100], s[:100], m[100:], s[100:])))
    assert shifted["calibrated_at_1pct_fpr"] == pytest.approx(by_hand)


def test_multiclass_probe_recovers_separable_classes():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [4, 0], [0, 4]])
    y = np.repeat(["a", "b", "c"], 60)
    x = centres[np.searchsorted(["a", "b", "c"], y)] + rng.normal(size=(180, 2))
    dev = np.r_[0:10, 60:70, 120:130]
    ev = np.setdiff1d(np.arange(180), dev)
    row, probe = mu.probes.multiclass(x[dev], y[dev], x[ev], y[ev], n_boot=100)
    assert row["balanced_accuracy"] > 0.9 and row["chance"] == pytest.approx(1 / 3)
    assert row["balanced_accuracy_ci"][0] <= row["balanced_accuracy"] <= row["balanced_accuracy_ci"][1]
    assert np.sum(row["confusion"]) == len(ev) and set(row["recall"]) == {"a", "b", "c"}
    scores = mu.probes.binary_scores(probe, x[ev], positive="b")
    assert mu.metrics.auc(scores[y[ev] == "b"], scores[y[ev] != "b"]) > 0.95


def test_read_recalls_against_predictions_counted_by_hand():
    """The reading of chapter 04's attribution table, checked against labels and predictions
    counted in a loop (not the confusion matrix the function reads)."""
    classes = ["a", "b", "c"]
    truth = ["a"] * 10 + ["b"] * 8 + ["c"] * 6
    probe_pred = ["a"] * 7 + ["b"] * 3 + ["b"] * 6 + ["a"] * 2 + ["c"] * 6
    blind_pred = ["a"] * 9 + ["c"] + ["b"] * 2 + ["c"] * 6 + ["c"] * 4 + ["a"] * 2

    def row(pred):
        cm = [[sum(t == ci and p == cj for t, p in zip(truth, pred)) for cj in classes] for ci in classes]
        recall = {c: sum(t == c and p == c for t, p in zip(truth, pred)) / truth.count(c) for c in classes}
        return {"classes": classes, "confusion": cm, "recall": recall}

    out = mu.probes.read_recalls(row(probe_pred), row(blind_pred), pair=("a", "b"))
    # blind recalls: a 0.9, b 0.25, c 0.67; the probe's: a 0.7, b 0.75, c 1.0 -> b gains most (+0.5)
    assert out["blind_top"] == "a" and out["blind_top_recall"] == pytest.approx(0.9)
    assert out["gain_class"] == "b" and (out["gain_from"], out["gain_to"]) == pytest.approx((0.25, 0.75))
    assert (out["a_as_b"], out["b_as_a"], out["n_a"]) == (3, 2, 10)
    assert mu.probes.read_recalls(row(probe_pred), row(blind_pred), pair=("a", "z"))["a_as_b"] is None


@pytest.mark.parametrize("kind", mu.datasets.SHIFTS)
def test_distribution_shifts_keep_shape_and_range(digits, kind):
    x = digits[:10]
    s = mu.datasets.distribution_shift(x, kind)
    assert s.shape == x.shape and s.min() >= -1 and s.max() <= 1 and not torch.equal(s, x)
    rgb = mu.datasets.distribution_shift(x.repeat(1, 3, 2, 2), kind)
    assert rgb.shape == (10, 3, 16, 16)


def test_one_pixel_shift_is_exact(digits):
    x = digits[:3]
    s = mu.datasets.distribution_shift(x, "shift")
    assert torch.equal(s[..., 1:], x[..., :-1])


def test_near_copies_found_by_brute_force(digits):
    train = digits[:50]
    samples = torch.cat([train[[3, 7]] + 0.01, digits[100:110]])
    out = mu.extraction.near_copies(samples, train)
    assert out["is_copy"][:2].all() and out["neighbour"][:2].tolist() == [3, 7]
    d = torch.cdist(samples.flatten(1).double(), train.flatten(1).double()).sort(1).values
    np.testing.assert_allclose(out["ratio"], (d[:, 0] / d[:, 1]).numpy())
    assert out["is_copy"].tolist() == (out["ratio"] < 1 / 3).tolist()


def test_groups_fit_the_probes_of_chapter_04(tiny_model, digits):
    """group_features + probes.Groups give the same rows as fitting the probes by hand."""
    groups = {"members": (digits[:12], digits[12:24]), "external": (digits[24:36], digits[36:48]),
              "other": (digits[48:60], digits[60:72])}
    ts, theta_ts = [0, 100, 500], [100]
    feats, cost = mu.features.group_features(tiny_model, groups, ts, theta_ts=theta_ts, theta_groups=["members"],
                                             seed=2, progress=False)
    assert cost["images"] == 72 and cost["per_image"]["forward"] == pytest.approx((72 * 3 + 24) / 72)
    assert np.isnan(feats["members"][0].values["grad_theta"][:, 0]).all()
    direct = trajectory_features(tiny_model, digits[12:24], ts, seed=2, progress=False)
    np.testing.assert_allclose(feats["members"][1].values["loss"], direct.values["loss"], rtol=1e-5)
    sets = {"L_t": (["loss"], ts, 3, 0), "L_t + ∇θ": (["loss", "grad_theta"], theta_ts, 2, 1)}
    bank = mu.probes.Groups(groups, feats, sets)
    rows = bank.membership("members", "external", n_boot=0)
    assert set(rows) == {"probe L_t", "model-blind probe (pixels)"}  # ∇θ only where both groups have it
    by_hand = mu.probes.membership(*[feats[g][p].matrix(["loss"]) for p in (0, 1) for g in ("members", "external")],
                                   n_boot=0)
    assert rows["probe L_t"]["auc"] == by_hand["auc"] and rows["probe L_t"]["access"] == "gray box"
    multi, fitted = bank.multiclass(["members", "external", "other"], labels={"other": "external"}, n_boot=0)
    assert set(multi) == {"L_t", mu.probes.BLIND} and multi["L_t"]["classes"] == ["external", "members"]


def test_feature_noise_is_shared_by_every_image_and_independent_of_position(tiny_model, digits):
    e = noise_at(37, digits[:4], seed=5)
    assert all(torch.equal(e[0], e[i]) for i in range(4))  # common random numbers
    assert torch.equal(noise_at(37, digits[10:12], seed=5)[0], e[0])  # not the images' positions
    assert not torch.equal(noise_at(38, digits[:1], seed=5)[0], e[0])
    a = trajectory_features(tiny_model, digits[:6], [5, 50], seed=5, progress=False)
    b = trajectory_features(tiny_model, digits[:6][torch.tensor([5, 4, 3, 2, 1, 0])], [50, 5], seed=5, progress=False)
    np.testing.assert_allclose(a.values["loss"][::-1, ::-1], b.values["loss"], rtol=1e-4)
