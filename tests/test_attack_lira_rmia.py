"""LiRA and RMIA against independent computations: a loop over examples with scipy's normal
distribution for LiRA's Gaussian fits, RMIA's pairwise count written out for each (x, z), the
signal against the loss attack's own statistic, and the reference manifests by content."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

import mia_utils as mu
from mia_utils.attacks import lira, rmia
from mia_utils.errors import CheckpointError

from .conftest import tiny_references


@pytest.fixture
def signals():
    """Signals of 5 images under a target and 6 references (each image IN for 3 of them)."""
    rng = np.random.default_rng(3)
    inside = np.array([[1, 0, 1, 0, 1], [0, 1, 0, 1, 0]] * 3, bool)
    refs = rng.normal(size=(6, 5, 2)) + inside[:, :, None] * 0.7
    target = rng.normal(size=(5, 2)) + 0.3
    return target, refs, inside


def _lira_by_hand(target, refs, inside, online, global_variance):
    """The Gaussian fits example by example with scipy.stats.norm: a per-example σ with ddof 0 (as
    the paper's code), the pooled σ with one degree of freedom per example's mean."""
    n, t = target.shape
    out = []
    pooled = {}
    for side, mask in (("in", inside), ("out", ~inside)):
        res = [[refs[r, i, k] - refs[mask[:, i], i, k].mean() for r in range(len(refs)) if mask[r, i]]
               for i in range(n) for k in range(t)]
        pooled[side] = [np.sqrt(sum(sum(v ** 2 for v in res[i * t + k]) for i in range(n))
                                / sum(len(res[i * t + k]) - 1 for i in range(n))) for k in range(t)]
    for i in range(n):
        total = 0.0
        for k in range(t):
            out_vals = refs[~inside[:, i], i, k]
            in_vals = refs[inside[:, i], i, k]
            sd_out = pooled["out"][k] if global_variance else out_vals.std()
            if not online:
                total += stats.norm.logcdf(target[i, k], loc=out_vals.mean(), scale=sd_out)
                continue
            sd_in = pooled["in"][k] if global_variance else in_vals.std()
            total += (stats.norm.logpdf(target[i, k], loc=in_vals.mean(), scale=sd_in)
                      - stats.norm.logpdf(target[i, k], loc=out_vals.mean(), scale=sd_out))
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("online", [True, False], ids=["online", "offline"])
@pytest.mark.parametrize("global_variance", [True, False], ids=["global", "per-example"])
def test_lira_matches_scipy_example_by_example(signals, online, global_variance):
    target, refs, inside = signals
    sigma = lira.pooled_sigma(refs, inside) if global_variance else None
    np.testing.assert_allclose(lira.from_signals(target, refs, inside, online, sigma=sigma),
                               _lira_by_hand(target, refs, inside, online, global_variance), rtol=1e-10)


def test_lira_ranks_a_member_like_signal_above_an_outsider(signals):
    _, refs, inside = signals
    mu_in = np.array([[refs[inside[:, i], i, k].mean() for k in range(2)] for i in range(5)])
    mu_out = np.array([[refs[~inside[:, i], i, k].mean() for k in range(2)] for i in range(5)])
    at_in, at_out = lira.from_signals(mu_in, refs, inside), lira.from_signals(mu_out, refs, inside)
    # Λ(μ_in) − Λ(μ_out) = Σ_t ½ d²/σ_in² + ½ d²/σ_out² > 0 for d = μ_in − μ_out
    assert (at_in > at_out).all()


def test_lira_refuses_images_no_reference_fits(signals):
    target, refs, inside = signals
    with pytest.raises(ValueError, match="OUT of fewer than 1 reference"):
        lira.from_signals(target, refs, np.ones_like(inside), sigma=lira.pooled_sigma(refs, inside))
    with pytest.raises(ValueError, match="fewer than 2 reference"):  # a per-image σ of one model
        lira.from_signals(target, refs[:2], inside[:2])


def _rmia_by_hand(p_x, p_x_refs, inside, p_z, p_z_refs, online, a, gamma):
    """Zarifzadeh et al.'s Eq. for each x: the fraction of z with LR(x, z) >= γ, pair by pair."""
    def prior(p_refs, ins):
        if online:
            return float(np.mean(p_refs))
        outs = [p for p, i in zip(p_refs, ins) if not i]
        return 0.5 * ((1 + a) * np.mean(outs) + (1 - a))

    scores = []
    for i in range(len(p_x)):
        px = p_x[i] / prior(p_x_refs[:, i], inside[:, i])
        hits = sum(px / (p_z[j] / prior(p_z_refs[:, j], [False] * len(p_z_refs))) >= gamma for j in range(len(p_z)))
        scores.append(hits / len(p_z))
    return np.array(scores)


@pytest.mark.parametrize("online,a,gamma", [(True, 0.5, 1.0), (False, 0.5, 1.0), (False, 0.2, 1.3), (True, 0.5, 0.8)])
def test_rmia_matches_the_pairwise_count_by_hand(online, a, gamma):
    rng = np.random.default_rng(5)
    r, n, m = 4, 6, 9
    inside = np.array([[1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1]] * 2, bool)
    p_x, p_x_refs = rng.uniform(0.2, 1, n), rng.uniform(0.2, 1, (r, n))
    p_z, p_z_refs = rng.uniform(0.2, 1, m), rng.uniform(0.2, 1, (r, m))
    got = rmia.from_likelihoods(p_x, p_x_refs, inside, p_z, p_z_refs, online=online, a=a, gamma=gamma)
    np.testing.assert_array_equal(got, _rmia_by_hand(p_x, p_x_refs, inside, p_z, p_z_refs, online, a, gamma))


def test_rmia_offline_marginal_is_the_papers_linear_approximation():
    p_refs = np.array([[0.4, 0.9], [0.6, 0.1]])
    inside = np.array([[True, False], [False, False]])
    # image 0: OUT of reference 1 only (0.6); image 1: OUT of both (mean 0.5)
    np.testing.assert_allclose(rmia.marginal(p_refs, inside, online=False, a=0.3),
                               [0.5 * (1.3 * 0.6 + 0.7), 0.5 * (1.3 * 0.5 + 0.7)])
    # a = 1: p(x) = p_OUT(x), the IN models assumed to add nothing
    np.testing.assert_allclose(rmia.marginal(p_refs, inside, online=False, a=1.0), [0.6, 0.5])


def test_the_signal_is_the_loss_attacks_statistic_per_pixel(tiny_model, digits):
    x = digits[:5]
    got = mu.attacks._reference.loss_signals(tiny_model, x, ts=(10, 40), n_noise=3, seed=2)
    for k, t in enumerate((10, 40)):
        np.testing.assert_allclose(got[:, k], -mu.attacks.loss.score(tiny_model, x, t=t, n_noise=3, seed=2) / 64,
                                   rtol=1e-12)


def test_lira_and_rmia_score_from_the_signals_of_every_model(tiny_model, digits):
    refs, x, z = tiny_references(digits), digits[:6], digits[100:110]
    signal = mu.attacks._reference.loss_signals
    s = {m: signal(m, x, (10, 40), 2, 1) for m in [tiny_model, *refs.models]}
    inside = refs.membership(x)
    ref_s = -np.log(np.stack([s[m] for m in refs.models]))
    by_hand = lira.from_signals(-np.log(s[tiny_model]), ref_s, inside, online=False)
    np.testing.assert_allclose(lira.score(tiny_model, x, references=refs, ts=(10, 40), n_noise=2, seed=1,
                                          online=False), by_hand, rtol=1e-12)
    # a global σ pooled over other images of the population (digits[20:40]), not over the scored ones
    v = digits[20:40]
    pooled = lira.pooled_sigma(-np.log(np.stack([signal(m, v, (10, 40), 2, 1) for m in refs.models])),
                               refs.membership(v))
    np.testing.assert_allclose(lira.score(tiny_model, x, references=refs, ts=(10, 40), n_noise=2, seed=1,
                                          variance_images=v),
                               lira.from_signals(-np.log(s[tiny_model]), ref_s, inside, sigma=pooled), rtol=1e-12)
    sz = {m: signal(m, z, (10, 40), 2, 1) for m in [tiny_model, *refs.models]}
    like = {m: np.exp(-v.mean(1)) for m, v in s.items()}
    like_z = {m: np.exp(-v.mean(1)) for m, v in sz.items()}
    expected = _rmia_by_hand(like[tiny_model], np.stack([like[m] for m in refs.models]), inside, like_z[tiny_model],
                             np.stack([like_z[m] for m in refs.models]), True, 0.5, 1.0)
    np.testing.assert_array_equal(rmia.score(tiny_model, x, references=refs, population=z, ts=(10, 40), n_noise=2,
                                             seed=1), expected)


def test_reference_attacks_refuse_missing_or_wrong_inputs(tiny_model, digits):
    refs = tiny_references(digits)
    with pytest.raises(ValueError, match="pass references="):
        lira.score(tiny_model, digits[:3])
    with pytest.raises(ValueError, match="population="):
        rmia.score(tiny_model, digits[:3], references=refs)
    with pytest.raises(ValueError, match="z must be OUT of all"):
        rmia.score(tiny_model, digits[:3], references=refs, population=digits[30:35])
    with pytest.raises(ValueError, match="of fewer than 2 reference"):  # image 200 lies outside every reference's half
        lira.score(tiny_model, digits[198:201], references=refs)


def test_reference_folders_round_trip_their_members_by_content(tmp_path, tiny_model, digits):
    for r, half in enumerate((digits[:10], digits[10:20])):
        folder = tmp_path / f"ref{r}"
        tiny_model.save(folder)
        mu.references.write_members(folder, half)
    (tmp_path / "notes").mkdir()  # a sub-folder without a manifest is not a reference
    refs = mu.references.ReferenceModels.from_folder(tmp_path, device="cpu")
    assert refs.names == ["ref0", "ref1"] and len(refs) == 2
    # membership by content: the same images in another order give the same answer per image
    perm = [15, 3, 12, 7]
    assert refs.membership(digits[perm]).tolist() == [[False, True, False, True], [True, False, True, False]]
    assert refs.first(1).names == ["ref0"]
    (tmp_path / "ref1" / "members.json").write_text(json.dumps({"sha256": ["abc"]}))
    with pytest.raises(CheckpointError, match="SHA-256"):
        mu.references.ReferenceModels.from_folder(tmp_path)
    with pytest.raises(CheckpointError, match="holds no reference model"):
        mu.references.ReferenceModels.from_folder(tmp_path / "notes")
    with pytest.raises(CheckpointError, match="has no members.json"):
        mu.references.ReferenceModels.load([tmp_path / "notes"])


def test_reference_halves_come_in_complementary_pairs_over_the_population():
    split = mu.data.make_split("digits", n_members=100, n_nonmembers=100, seed=7)
    population = set(split.index("members") + split.index("nonmembers"))
    halves = [set(split.reference_half(r)) for r in range(6)]
    for j in range(3):
        a, b = halves[2 * j], halves[2 * j + 1]
        assert len(a) == len(b) == 100 and not a & b and a | b == population
    assert halves[0] != halves[2]  # each pair its own draw
    assert [set(split.reference_half(r)) for r in range(2)] == halves[:2]  # independent of how many exist
