"""Every registered attack held to one contract, and the chapters' harness on its own.

The contract: one finite float64 score per image; reordering the images reorders the scores;
the batch size does not change them (both up to float32 kernel round-off, which a batch's
size and make-up can change: rtol 1e-3, seen up to 1.6e-4 for PIA's 4th powers); a rerun is
bit-identical; the counted queries (every
model queried, the noise probe's base included) equal the registry's declared cost. The
per-attack files keep their tests against independent computations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mia_utils as mu
from mia_utils.attacks import ATTACKS

from .conftest import tiny_references, tiny_unet
from .test_golden import TINY_LOG

# cheap settings for each attack (its defaults with fewer steps where it has steps)
HYPER = {
    "loss": {"t": 30, "n_noise": 3, "seed": 4},
    "sima": {"t": 5, "p": 4, "noisy": True, "seed": 2},
    "pia": {"t": 20},
    "pian": {"t": 20},
    "secmi": {"t_sec": 20, "k": 5},
    "noise_probe": {"noise": "semantic", "inversion_steps": 4, "generation_steps": 3},
    "pfami": {"ts": (20, 40), "strengths": (0.1, 0.2), "seed": 1},
    "rediffuse": {"t": 40, "n": 2, "steps": 4, "seed": 3},
    "lira": {"ts": (10, 40), "n_noise": 2, "seed": 1},  # each image's own σ (a global one: test_attack_lira_rmia)
    "rmia": {"ts": (10, 40), "n_noise": 2, "seed": 1},
}


RTOL = 1e-3  # float32 kernels round differently with a batch's size and make-up


@pytest.fixture
def base_model():
    return mu.DiffusionModel(tiny_unet(seed=3), mu.models.default_scheduler(), device="cpu", batch_size=16)


@pytest.fixture
def others(base_model, digits):
    """The other models and images an attack may need (``Attack.needs``): a base, four
    reference models holding halves of digits[:40], population samples outside them."""
    return {"base": base_model, "references": tiny_references(digits), "population": digits[100:110]}


def _hyper(name, others, **extra):
    return {**HYPER[name], **{k: v for k, v in others.items() if k in ATTACKS[name].needs}, **extra}


def _call(name, model, images, others, **extra):
    return ATTACKS[name](model, images, **_hyper(name, others, **extra))


def test_every_attack_is_held_to_the_contract():
    # the text-conditional attacks keep the same contract in test_text2img (they need a bound model)
    unconditional = {n for n, a in ATTACKS.items() if "captions" not in a.needs}
    assert set(HYPER) == unconditional, "a registered attack has no contract settings here"
    assert set(ATTACKS) - unconditional == {"clid", "wen"}


@pytest.mark.parametrize("name", sorted(HYPER))
def test_contract(name, tiny_model, others, digits):
    x = digits[:7]
    s = _call(name, tiny_model, x, others)
    assert isinstance(s, np.ndarray) and s.dtype == np.float64 and s.shape == (7,)
    assert np.isfinite(s).all()
    # a rerun is bit-identical
    np.testing.assert_array_equal(s, _call(name, tiny_model, x, others))
    # reordering the images reorders the scores (every random draw belongs to the image)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    np.testing.assert_allclose(_call(name, tiny_model, x[perm], others), s[perm.numpy()], rtol=RTOL)
    # a score does not depend on the other images scored with it
    np.testing.assert_allclose(_call(name, tiny_model, x[2:4], others), s[2:4], rtol=RTOL)


@pytest.mark.parametrize("name", sorted(HYPER))
def test_contract_batch_size_and_cost(name, tiny_model, others, digits):
    x = digits[:7]
    models = [tiny_model, others["base"], *others["references"].models]
    for m in models:
        m.reset_queries()
    a = _call(name, tiny_model, x, others)
    counted = sum(m.reset_queries() for m in models)
    # every model counted: the base, each reference, RMIA's population samples once per call
    assert counted == ATTACKS[name].queries(7, **_hyper(name, others))
    for m in models:
        m.batch_size = 3
    np.testing.assert_allclose(_call(name, tiny_model, x, others), a, rtol=RTOL)


FEATURE_HYPER = {  # the feature attacks of the registry, at cheap settings
    "trajectory": {"ts": (10, 40, 70), "kinds": ("loss", "grad_x"), "seed": 2},
    "gsa": {"ts": (20, 50), "mode": "gsa2", "seed": 1},
}


def test_every_feature_attack_is_held_to_the_contract():
    assert set(FEATURE_HYPER) == set(mu.attacks.FEATURE_ATTACKS)
    assert set(mu.attacks.REGISTRY) == set(ATTACKS) | set(mu.attacks.FEATURE_ATTACKS)


def _close(got, want):
    """Features equal up to round-off; a log gradient norm below TINY_LOG (a gradient that is zero
    up to rounding, test_golden) only has to stay tiny."""
    sound = want > TINY_LOG
    np.testing.assert_allclose(got[sound], want[sound], rtol=RTOL, atol=1e-6)
    assert (got[~sound] < TINY_LOG / 2).all()


@pytest.mark.parametrize("name", sorted(FEATURE_HYPER))
def test_feature_contract(name, tiny_model, digits):
    """The same contract on a feature vector: finite, one row per image, a rerun identical, an
    image's row independent of the others and of their order, the counted queries declared."""
    attack, hyper, x = mu.attacks.get(name), FEATURE_HYPER[name], digits[:7]
    tiny_model.reset_queries()
    f, names = attack(tiny_model, x, **hyper)
    assert tiny_model.reset_queries() == 7 * attack.queries_per_image(**hyper)
    assert f.shape == (7, len(names)) and np.isfinite(f).all() and len(set(names)) == len(names)
    np.testing.assert_array_equal(attack(tiny_model, x, **hyper)[0], f)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    _close(attack(tiny_model, x[perm], **hyper)[0], f[perm.numpy()])
    _close(attack(tiny_model, x[2:4], **hyper)[0], f[2:4])
    tiny_model.batch_size = 3
    _close(attack(tiny_model, x, **hyper)[0], f)
    assert attack.backward_per_image(**hyper) == len(hyper["ts"])  # one gradient per t (grad_x; GSA2)
    with pytest.raises(ValueError, match="gives features, not scores"):
        mu.harness.evaluate(name, tiny_model, _sets(digits), n_boot=0)


def test_every_attack_cites_its_paper():
    bib = (Path(mu.__file__).parents[1] / "book" / "references.bib").read_text()
    missing = [a.name for a in mu.attacks.REGISTRY.values() if f"{{{a.paper}," not in bib]
    assert not missing, f"attacks whose paper key is not in book/references.bib: {missing}"


def test_registry_names_access_and_rejects_unknown_parameters(tiny_model, digits):
    assert {a.access for a in ATTACKS.values()} <= set(mu.attacks.ACCESS)
    with pytest.raises(ValueError, match="no parameter 'q'.*its parameters are"):
        ATTACKS["sima"](tiny_model, digits[:2], q=3)
    with pytest.raises(ValueError, match="No attack 'simma'; the attacks are loss, sima"):
        mu.attacks.get("simma")
    assert ATTACKS["secmi"].queries_per_image(t_sec=100, k=10) == 11
    assert ATTACKS["noise_probe"].queries_per_image(noise="random", generation_steps=7) == 7


# ---------------------------------------------------------------------- the harness
def _sets(digits):
    return mu.data.MembershipSets(digits[:6], digits[6:14], digits[14:20], digits[20:28])


def test_evaluate_chooses_on_calibration_and_measures_cost(tiny_model, digits):
    sets = _sets(digits)
    res = mu.harness.evaluate("loss", tiny_model, sets, [10, 40], n_boot=50, boot_seed=0, n_noise=2, seed=1)
    # the same numbers computed by hand: scores per part and t, choice by calibration AUC
    by_hand = {part: {t: mu.attacks.loss.score(tiny_model, x, t=t, n_noise=2, seed=1) for t in (10, 40)}
               for part, x in sets.parts().items()}
    for part in by_hand:
        for t in (10, 40):
            np.testing.assert_array_equal(res["scores"][part][t], by_hand[part][t])
    cal_auc = {t: mu.metrics.auc(by_hand["members_cal"][t], by_hand["nonmembers_cal"][t]) for t in (10, 40)}
    chosen = max(cal_auc, key=cal_auc.get)
    assert res["honest"]["setting"] == chosen
    assert res["honest"]["auc"] == pytest.approx(mu.metrics.auc(by_hand["members_eval"][chosen],
                                                                by_hand["nonmembers_eval"][chosen]))
    assert res["honest"]["queries_per_image"] == 2 and res["honest"]["seconds"] > 0
    assert res["honest"]["access"] == "gray box" and "calibrated_at_1pct_fpr" in res["honest"]
    np.testing.assert_array_equal(mu.harness.chosen_scores(res, "members_eval"), by_hand["members_eval"][chosen])


def test_evaluate_secmi_nn_matches_the_recipe_by_hand(tiny_model, digits):
    """Error maps at the setting, the network trained on calibration maps (epoch on a held-out
    calibration part), scored on the evaluation split: the same AUC computed step by step."""
    sets = _sets(digits)
    res = mu.studies.secmi_pia.evaluate_secmi_nn(tiny_model, sets, {"t_sec": 20, "k": 10}, epochs=3, seed=0, n_boot=20)
    secmi = mu.attacks.secmi
    maps = {part: secmi.round_trip(tiny_model, x, t_sec=20, k=10) for part, x in sets.parts().items()}
    net, hist = secmi.fit_nn(maps["members_cal"], maps["nonmembers_cal"], epochs=3, seed=0,
                             monitor=(maps["members_eval"], maps["nonmembers_eval"]))
    auc = mu.metrics.auc(secmi.nn_score(net, maps["members_eval"]), secmi.nn_score(net, maps["nonmembers_eval"]))
    assert res["honest"]["auc"] == pytest.approx(auc)
    assert res["honest"]["queries_per_image"] == 20 // 10 + 1 and res["honest"]["access"] == "gray box"
    assert res["honest"]["setting"] == f"t_sec=20, k=10, epoch {hist['chosen_epoch']}"
    assert res["oracle"]["auc"] == pytest.approx(max(hist["monitor_auc"]))


def test_evaluate_refuses_a_wrong_declared_cost(tiny_model, digits):
    lying = mu.attacks.Attack("lying", "lying", mu.attacks.sima.score, "gray box", lambda h: 2, "rao2025sima")
    with pytest.raises(RuntimeError, match="declares 2 queries per image but made 1"):
        mu.harness.evaluate(lying, tiny_model, _sets(digits), n_boot=0)


def test_evaluate_counts_the_base_model(tiny_model, base_model, digits):
    res = mu.harness.evaluate("noise_probe", tiny_model, _sets(digits), n_boot=0, base=base_model,
                              inversion_steps=3, generation_steps=2)
    assert res["honest"]["queries_per_image"] == 5


def test_evaluate_counts_the_references_and_what_a_call_pays_once(tiny_model, others, digits):
    sets, refs, z = _sets(digits), others["references"], others["population"]
    res = mu.harness.evaluate("rmia", tiny_model, sets, n_boot=0, references=refs, population=z, ts=(10,), n_noise=1)
    # 5 models x 1 query per image, and the 10 population samples on each model once per part's call
    assert res["honest"]["queries_per_image"] == pytest.approx(5 + 4 * 5 * 10 / 28)
    res = mu.harness.evaluate("lira", tiny_model, sets, n_boot=0, references=refs, variance_images=digits[28:40],
                              ts=(10, 20), n_noise=1)
    assert res["honest"]["queries_per_image"] == pytest.approx(10 + 4 * 4 * 2 * 12 / 28)  # 4 references' σ pool
    assert mu.attacks.get("lira").queries(3, references=refs, ts=(10,), n_noise=2) == 3 * 5 * 2


def test_table_puts_numbers_first_and_names_access(tiny_model, digits):
    res = mu.harness.evaluate("sima", tiny_model, _sets(digits), [1, 2], n_boot=20)
    table = mu.tables.table({"SimA": res}, oracle=True, extra={"images/s": "images_per_second"})
    cols = list(table.columns)
    assert cols[:4] == ["attack", "AUC [95 % CI]", "p", "TPR@1%FPR (%)"]
    p = mu.metrics.auc_p_value(mu.harness.chosen_scores(res, "members_eval"),
                               mu.harness.chosen_scores(res, "nonmembers_eval"))
    assert table.loc[0, "p"] == f"{p:.1g}"
    assert table.loc[0, "access"] == "gray box" and table.loc[0, "queries"] == "1"
    assert table.loc[0, "AUC [95 % CI]"] == mu.metrics.format_ci(res["honest"], "auc")
    assert "oracle: setting, AUC" in cols and "images/s" in cols
    assert "backward passes" not in cols  # forward-only rows: no empty column
    with_grad = mu.tables.table({"SimA": res, "GSA": {**res["honest"], "backward_per_image": 4}})
    assert list(with_grad["backward passes"]) == ["", "4"]
    # rows as metrics.json stores them make the same table
    same = mu.tables.table(mu.tables.metrics_rows({"SimA": res}))
    assert same.loc[0, "AUC [95 % CI]"] == table.loc[0, "AUC [95 % CI]"]


def test_stacked_shows_the_numbers_then_how_they_were_obtained(tiny_model, digits):
    res = mu.harness.evaluate("sima", tiny_model, _sets(digits), [1, 2], n_boot=20)
    table = mu.tables.table({"SimA": res, "loss": res}, oracle=True, group="chapter")
    numbers, rest = mu.tables.stacked(table).parts
    assert list(numbers.columns) == ["chapter", "attack", "AUC [95 % CI]", "p", "TPR@1%FPR (%)", "TPR@0.1%FPR (%)",
                                     "n members / non-members"]
    assert list(rest.columns[:2]) == ["chapter", "attack"] and "access" in rest and "oracle: setting, AUC" in rest
    # every column once (the lead twice), every row in both, in the table's order
    assert set(numbers.columns) | set(rest.columns) == set(table.columns)
    assert len(numbers.columns) + len(rest.columns) == len(table.columns) + 2
    assert list(numbers["attack"]) == list(rest["attack"]) == ["SimA", "loss"]
    html = mu.tables.stacked(table)._repr_html_()
    assert html.count("<table") == 2 and html.index("AUC [95 % CI]") < html.index("access")
    # a row without an oracle (a probe trained on calibration) shows an empty cell, not NaN
    mixed = mu.tables.table({"SimA": res, "GSA": res["honest"]}, oracle=True)
    assert list(mixed["oracle: setting, AUC"])[1] == ""
    # a table without the key or without one of the two kinds of column stays whole
    assert len(mu.tables.stacked(table[["attack", "AUC [95 % CI]"]]).parts) == 1
    assert len(mu.tables.stacked(table.drop(columns="attack")).parts) == 1


@pytest.mark.parametrize("noise", ["random", "closed_form"])
def test_noise_probe_seeded_noises_belong_to_the_image(noise, tiny_model, digits):
    x, perm = digits[:5], torch.tensor([4, 2, 0, 3, 1])
    s = mu.attacks.noise_probe.score(tiny_model, x, noise=noise, generation_steps=2, seed=3)
    np.testing.assert_allclose(mu.attacks.noise_probe.score(tiny_model, x[perm], noise=noise, generation_steps=2,
                                                            seed=3), s[perm.numpy()], rtol=RTOL)


def test_content_hashes_of_a_batch_equal_each_image_alone(digits):
    x = digits[:5]
    assert mu.noise.content_hashes(x) == [mu.noise.content_hash(img) for img in x]
    assert len(set(mu.noise.content_hashes(torch.cat([x, x[:1]])))) == 5  # same content, same hash


def test_measure_counts_every_model_once_and_checks_the_declaration(tiny_model, base_model, digits):
    x = digits[:4]
    with mu.harness.measure([tiny_model, base_model, tiny_model, None], len(x), declared=2, what="two") as cost:
        tiny_model.eps(x, 5), base_model.eps(x, 5)
    assert cost["queries_per_image"] == 2 and cost["seconds"] > 0 and cost["images_per_second"] > 0
    assert tiny_model.queries == base_model.queries == 0  # the counters are left at zero
    with pytest.raises(RuntimeError, match="two declares 3 queries per image but made 1"):
        with mu.harness.measure([tiny_model], len(x), declared=3, what="two"):
            tiny_model.eps(x, 5)


def test_report_is_the_evaluation_row_with_thresholds_set_on_calibration(tiny_model, digits):
    sets = _sets(digits)
    s = {part: mu.attacks.sima.score(tiny_model, x, t=3) for part, x in sets.parts().items()}
    row = mu.harness.report(s, n_boot=30, seed=2, setting="t=3", calibrate=(0.01, 0.15), access="gray box")
    by_hand = mu.metrics.evaluate(s["members_eval"], s["nonmembers_eval"], n_boot=30, seed=2)
    assert row["auc"] == by_hand["auc"] and row["auc_ci"] == by_hand["auc_ci"] and row["setting"] == "t=3"
    for key, fpr in (("calibrated_at_1pct_fpr", 0.01), ("calibrated_at_15pct_fpr", 0.15)):
        assert row[key] == mu.metrics.calibrated(s["members_cal"], s["nonmembers_cal"], s["members_eval"],
                                                 s["nonmembers_eval"], fpr=fpr)
