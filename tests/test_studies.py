"""The chapters' studies in the package (chapters 02, 04, 05), each against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import mia_utils as mu
from mia_utils.features import FeatureSet

TS = [0, 100, 200, 300, 400, 500]


def _groups(seed: int = 0, n_dev: int = 12, n_ev: int = 30):
    """Synthetic L_t features: members lower at small t only; a group "low" lower everywhere."""
    rng = np.random.default_rng(seed)
    shift = {"members": np.array([-0.8, -0.6, -0.3, 0, 0, 0]), "external": np.zeros(6), "low": np.full(6, -2.0)}
    feats, images = {}, {}
    for name, d in shift.items():
        pair = []
        for n in (n_dev, n_ev):
            pair.append(FeatureSet(TS, {"loss": np.exp(d + rng.normal(0, 0.5, (n, 6)))}))
        feats[name] = tuple(pair)
        images[name] = (torch.rand(n_dev, 1, 4, 4) * 2 - 1, torch.rand(n_ev, 1, 4, 4) * 2 - 1)
    return mu.probes.Groups(images, feats, {"L_t": (["loss"], TS, len(TS), 0)})


def test_loss_threshold_chooses_t_on_development_and_flags_at_its_threshold():
    bank = _groups()
    out = bank.loss_threshold(TS, flag=("low",), n_boot=0)
    dev = {t: roc_auc_score(np.r_[np.ones(12), np.zeros(12)],
                            -np.r_[bank.feats["members"][0].values["loss"][:, i],
                                   bank.feats["external"][0].values["loss"][:, i]]) for i, t in enumerate(TS)}
    assert out["t"] == max(dev, key=dev.get)  # brute force over t on the development parts
    i = TS.index(out["t"])
    # the threshold lets through at most 1 % of development external images
    threshold = out["attack"]["honest"]["calibrated_at_1pct_fpr"]["threshold"]
    assert np.mean(-bank.feats["external"][0].values["loss"][:, i] > threshold) <= 0.01
    for g in ("members", "external", "low"):
        expected = np.mean(-bank.feats[g][1].values["loss"][:, i] > threshold)
        assert out["flagged"][g] == pytest.approx(expected)
    assert out["flagged"]["low"] > out["flagged"]["members"]  # lower loss everywhere: flagged more
    median = np.median(bank.feats["members"][1].values["loss"][:, i])
    assert out["below_median"]["low"] == pytest.approx(np.mean(bank.feats["low"][1].values["loss"][:, i] < median))


def test_allocation_cuts_every_window_to_one_budget():
    bank = _groups()
    rows = bank.allocation(TS, window=200, T=600, n_boot=0)
    assert list(rows) == ["[0, 200)", "[200, 400)", "[400, 600)", "uniform over [0, T)", "model-blind probe (pixels)"]
    assert {rows[k]["queries_per_image"] for k in list(rows)[:4]} == {2}
    assert rows["[0, 200)"]["auc"] > rows["[400, 600)"]["auc"]  # the signal sits at small t here
    assert rows["model-blind probe (pixels)"]["queries_per_image"] == 0
    with pytest.raises(ValueError, match="holds none"):
        bank.allocation(TS, window=50, T=600)


def test_screen_keeps_the_top_fraction_and_measures_closeness():
    rng = torch.Generator().manual_seed(0)
    train = torch.rand(20, 1, 4, 4, generator=rng)
    copies = train[:5] + 0.001 * torch.randn(5, 1, 4, 4, generator=rng)  # near-copies of 5 training images
    pool = torch.cat([copies, torch.rand(15, 1, 4, 4, generator=rng)])
    score = np.r_[np.full(5, 10.0), np.zeros(15)] + np.linspace(0, 0.1, 20)
    out = mu.extraction.screen(pool, score, train, torch.rand(10, 1, 4, 4, generator=rng), keep_fraction=0.25)
    assert out["kept"].sum() == 5 and out["kept"][:5].all()
    assert out["table"]["kept by the probe"]["near-copies (%)"] == 100.0
    d1 = torch.cdist(pool.flatten(1).double(), train.flatten(1).double()).min(1).values.numpy()
    np.testing.assert_allclose(out["copies"]["d1"], d1, rtol=1e-9)
    assert out["p_value"] < 0.01
    with pytest.raises(ValueError, match="keep_fraction"):
        mu.extraction.screen(pool, score, train, train, keep_fraction=1.0)


def test_class_sample_draws_only_the_classes_asked_and_excludes_hashes():
    labels = mu.datasets.dataset_labels("digits")
    x = mu.datasets.class_sample("digits", [3, 7], 50, seed=1)
    data = mu.datasets.load_digits_images()
    index = {h: i for i, h in enumerate(mu.images.image_hashes(data))}
    drawn = [index[h] for h in mu.images.image_hashes(x)]
    assert set(labels[drawn]) <= {3, 7} and len(set(drawn)) == 50
    banned = mu.images.image_hashes(x[:10])
    y = mu.datasets.class_sample("digits", [3, 7], 50, seed=1, exclude=banned)
    assert not set(banned) & set(mu.images.image_hashes(y))
    assert torch.equal(x, mu.datasets.class_sample("digits", [3, 7], 50, seed=1))  # seeded
    with pytest.raises(mu.DataError, match="has"):
        mu.datasets.class_sample("digits", [3], 1000)


def test_latent_study_scores_the_encoded_parts_and_counts_encoder_passes(tiny_model, digits):
    """The latent rows equal the harness on latents encoded by hand; the sampled latent is the
    content-seeded draw; every row reports one encoder pass per image."""
    from diffusers import AutoencoderKL

    from mia_utils.latent import LatentCodec, vae_config
    from mia_utils.models import DiffusionModel, default_scheduler
    from tests.conftest import tiny_unet

    torch.manual_seed(0)
    codec = LatentCodec(AutoencoderKL(**vae_config(block_out_channels=(8, 16))), scale=1.3)
    latent_model = DiffusionModel(tiny_unet(channels=2, size=4), default_scheduler(clip_sample=False), device="cpu")
    latent_model.input_range = None
    x = digits[:40]
    sets = mu.data.MembershipSets(members_cal=x[:10], members_eval=x[10:20], nonmembers_cal=x[20:30],
                                  nonmembers_eval=x[30:40])
    attacks = {"SimA": ("sima", [10, 50], {"p": 4})}
    out = mu.studies.latent.latent_study(tiny_model, {"β = 1": (latent_model, codec)}, sets, attacks, n_boot=0,
                                  sampled=["SimA"])
    assert list(out) == ["pixel DDPM", "β = 1", "β = 1, sampled latent"]
    by_hand = mu.data.MembershipSets(**{k: codec.encode(v) for k, v in sets.parts().items()})
    expected = mu.harness.evaluate("sima", latent_model, by_hand, [10, 50], n_boot=0, p=4)["honest"]
    assert out["β = 1"]["SimA"]["auc"] == expected["auc"] and out["β = 1"]["SimA"]["encoder_passes"] == 1.0
    # a sampled latent is the same for an image whatever the batch it is encoded in
    alone = codec.encode(x[3:4], mode="sample", seed=0)
    assert torch.allclose(codec.encode(x[:8], mode="sample", seed=0)[3:4], alone, atol=1e-6)
    assert not torch.allclose(alone, codec.encode(x[3:4]))


def test_latent_quality_rows_are_the_measures_they_name(digits):
    from diffusers import AutoencoderKL

    from mia_utils.latent import LatentCodec, vae_config
    from mia_utils.models import DiffusionModel, default_scheduler
    from tests.conftest import tiny_unet

    torch.manual_seed(0)
    codec = LatentCodec(AutoencoderKL(**vae_config(block_out_channels=(8, 16))))
    latent_model = DiffusionModel(tiny_unet(channels=2, size=4), default_scheduler(clip_sample=False), device="cpu")
    held_out, real, pixel_samples = digits[:30], digits[30:60], digits[60:90]
    rows, samples = mu.quality.latent_quality(pixel_samples, {"β": (latent_model, codec)}, held_out, real, n=6,
                                              ddim_steps=2)
    assert rows["pixel DDPM"]["precision"] == mu.quality.precision_recall(pixel_samples, held_out)["precision"]
    assert rows["real images (calibration non-members)"]["recall"] == mu.quality.precision_recall(real, held_out)["recall"]
    error = ((codec.decode(codec.encode(held_out)) - held_out) ** 2).sum((1, 2, 3)).mean()
    assert rows["β"]["reconstruction MSE"] == pytest.approx(float(error))
    assert samples["β"].shape == (6, 1, 8, 8)


def test_shift_study_cuts_groups_to_the_members_size_and_uses_forward_queries_only(tiny_model, digits):
    sets = mu.data.MembershipSets(members_cal=digits[:10], members_eval=digits[10:20], nonmembers_cal=digits[20:30],
                                  nonmembers_eval=digits[30:60])
    elsewhere = mu.datasets.distribution_shift(digits[60:80], "shift")
    tiny_model.reset_queries()
    alloc, shift = mu.probes.shift_study(tiny_model, sets, elsewhere, [0, 250, 500, 750], window=500, n_dev=4,
                                         n_boot=0)
    assert tiny_model.queries == 3 * (4 + 10) * 4  # three groups of 4 + 10 images, 4 time steps, L_t only
    assert list(shift) == ["same source", "collected elsewhere"]
    assert shift["collected elsewhere"]["probe L_t"]["n_nonmembers"] == 10
    assert alloc["uniform over [0, T)"]["queries_per_image"] == 2


def test_noise_probe_study_and_sweeps_are_the_probe_called_directly(tiny_model, digits):
    from mia_utils.attacks import noise_probe

    torch.manual_seed(1)
    base = mu.models.DiffusionModel(mu.models.UNet2DModel(**mu.zoo.small_unet_config(8, 1, (8, 16))), device="cpu")
    sets = mu.data.MembershipSets(digits[:4], digits[4:10], digits[10:14], digits[14:20])
    variants = {"sem": ("semantic", "mse"), "sem ssim": ("semantic", "ssim"), "rnd": ("random", "mse")}
    kw = {"inversion_steps": 4, "generation_steps": 3}
    study = mu.studies.noise_probe.noise_probe_study(tiny_model, base, sets, variants, seed=2, n_boot=20, **kw)
    for name, (noise, metric) in variants.items():
        for part, x in sets.parts().items():  # each variant's scores: the attack on that part alone
            direct = noise_probe.score(tiny_model, x, base=base, noise=noise, metric=metric, seed=2, **kw)
            np.testing.assert_allclose(study["scores"][name][part], direct, rtol=1e-6)
        row = study["rows"][name]
        assert row["queries_per_image"] == (7 if noise == "semantic" else 3)
        assert row["auc"] == pytest.approx(roc_auc_score(np.r_[np.ones(6), np.zeros(6)],
                                                         np.r_[study["scores"][name]["members_eval"],
                                                               study["scores"][name]["nonmembers_eval"]]))
    other = mu.models.DiffusionModel(mu.models.UNet2DModel(**mu.zoo.small_unet_config(8, 1, (8, 16))), device="cpu")
    sweeps = mu.studies.noise_probe.noise_probe_sweeps(study, tiny_model, base, sets, {1: other, 2: None}, [500, 999], "sem",
                                           "rnd", seed=2, n_boot=20, **kw)
    ev = {"members_eval": sets.members_eval, "nonmembers_eval": sets.nonmembers_eval}
    for step, model in ((1, other), (2, tiny_model)):  # the snapshot, and the target itself (reused)
        for noise in ("semantic", "random"):
            s = {k: noise_probe.score(model, x, base=base, noise=noise, seed=2, **kw) for k, x in ev.items()}
            assert sweeps["length"][(step, noise)]["auc"] == pytest.approx(
                mu.metrics.auc(s["members_eval"], s["nonmembers_eval"]))
    for t_start in (500, 999):
        s = {k: noise_probe.score(tiny_model, x, base=base, t_start=t_start, seed=2, **kw) for k, x in ev.items()}
        assert sweeps["depth"][t_start]["auc"] == pytest.approx(mu.metrics.auc(s["members_eval"], s["nonmembers_eval"]))


def test_the_reference_study_scores_as_the_registry_does(tiny_model, digits):
    """One set of signals, every variant and k from it: the same scores as lira.score (its global σ
    pooled over the calibration images) and rmia.score on the same references and population."""
    from .conftest import tiny_references

    refs, z = tiny_references(digits), digits[100:110]
    sets = mu.data.MembershipSets(digits[:6], digits[6:14], digits[14:20], digits[20:28])
    study = mu.studies.references
    sig = study.compute_signals(tiny_model, refs, sets, z, ts=(10, 40), n_noise=2, seed=1)
    assert sig.cost["queries_per_image"] == 5 * 2 * 2
    cal = torch.cat([sets.members_cal, sets.nonmembers_cal])
    for online in (True, False):
        got = study.scores(sig, "LiRA online" if online else "LiRA offline")
        want = mu.attacks.lira.score(tiny_model, sets.members_eval, references=refs, ts=(10, 40), n_noise=2, seed=1,
                                     online=online, variance_images=cal)
        # float32 kernels round differently with a batch's make-up (the study scores all parts at once)
        np.testing.assert_allclose(got["members_eval"], want, rtol=1e-4)
        got = study.scores(sig, "RMIA online" if online else "RMIA offline", k=2)
        want = mu.attacks.rmia.score(tiny_model, sets.nonmembers_eval, references=refs.first(2), population=z,
                                     ts=(10, 40), n_noise=2, seed=1, online=online)
        np.testing.assert_allclose(got["nonmembers_eval"], want, atol=1 / len(z) + 1e-12)  # a z level at most
    rows = study.curve(sig, ks=(1, 2, 4), n_boot=0)
    # one reference: only online RMIA runs (each image is IN or OUT of it, never both); one pair:
    # offline RMIA too, but not LiRA, whose σ over one model per side would be 0
    assert set(rows) == {("loss", 0), ("RMIA online", 1), ("RMIA online", 2), ("RMIA offline", 2)} | {
        (v, 4) for v in study.VARIANTS}
    with pytest.raises(ValueError, match="fewer than 2 reference"):
        study.scores(sig, "LiRA offline", k=2)
    with pytest.raises(ValueError, match="OUT of at least one"):
        study.scores(sig, "RMIA offline", k=1)
    at = rows[("LiRA online", 4)]["calibrated_at_0.1pct_fpr"]
    assert at["tpr_ci"][0] <= at["tpr"] <= at["tpr_ci"][1] and rows[("LiRA online", 4)]["references"] == 4
    # what one image costs with k references: the target's and each reference's K · len(ts) queries
    assert [rows[(v, k)]["queries_per_image"] for v, k in (("loss", 0), ("RMIA online", 1), ("LiRA offline", 4))] == [
        4, 8, 20]
    # the chapter's views of the rows: each variant at its most references, in the curve's order
    best = study.headline(rows)
    assert list(best) == ["loss", *study.VARIANTS] and {r["references"] for v, r in best.items() if v != "loss"} == {4}
    assert study.label("loss", 0) == "loss (global threshold)" and study.label("RMIA online", 1) == "RMIA online, k = 1"
    table = study.threshold_table({"x": best["LiRA online"]})
    assert list(table.columns) == ["1 % on cal.: FPR (%)", "1 % on cal.: TPR (%)", "0.1 % on cal.: FPR (%)",
                                   "0.1 % on cal.: TPR (%)"]
    target, others, inside = study.evaluation_view(sig)
    assert target.shape == (16,) and others.shape == inside.shape == (4, 16)
    np.testing.assert_array_equal(target[:8], -np.log(sig.target["members_eval"][:, 0]))
    picks = study.examples(np.array([0.1, 0.9, 0.5]), np.array([3.0, 1.0, 2.0, 0.0]))
    assert picks == {"the member LiRA is surest of": 1, "a typical member": 2, "a typical non-member": 3 + 2}


def test_compare_intervals_reads_overlap_not_point_estimates():
    compare = mu.studies.references.compare_intervals
    assert compare({"auc_ci": (0.55, 0.60)}, {"auc_ci": (0.50, 0.56)}) == "overlaps"
    assert compare({"auc_ci": (0.57, 0.60)}, {"auc_ci": (0.50, 0.56)}) == "lies above"
    assert compare({"auc_ci": (0.40, 0.49)}, {"auc_ci": (0.50, 0.56)}) == "lies below"


@pytest.mark.parametrize("tiny_checkpoint", [(1, 8)], indirect=True, ids=["grey8"])
def test_reference_inputs_from_folders_and_the_zoo_rule(tiny_checkpoint, tmp_path):
    """Chapter 09's inputs from an auditor's folders: the reference folders with their members and
    the population folder (all of it for n_population=None, else its first n); 'zoo' needs a zoo
    target that has references."""
    from .conftest import make_reference_folders

    folders = {k: str(v) for k, v in tiny_checkpoint.items()}
    made = make_reference_folders(folders, tmp_path)
    model = mu.load_model(folders["checkpoint"], device="cpu")
    refs, z = mu.studies.references.inputs(folders["checkpoint"], made["references"], made["population"], model,
                                           n_population=None, device="cpu")
    assert refs.names == ["ref0", "ref1", "ref2", "ref3"] and len(z) == 8
    population = torch.cat([mu.images.load_image_folder(folders[k]) for k in ("members", "nonmembers")])
    inside = refs.membership(population)
    assert (inside[0] ^ inside[1]).all() and (inside.sum(0) == 2).all() and not refs.membership(z).any()
    _, z3 = mu.studies.references.inputs(folders["checkpoint"], made["references"], made["population"], model,
                                         n_population=3, device="cpu")
    assert torch.equal(z3, z[:3])
    with pytest.raises(ValueError, match="need a zoo: target"):
        mu.studies.references.inputs(folders["checkpoint"], "zoo", made["population"], model)
    with pytest.raises(ValueError, match="no reference models of digits-ddpm"):
        mu.studies.references.inputs("zoo:digits-ddpm", "zoo", made["population"], model)
