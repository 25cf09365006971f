"""Training lowers the loss; the zoo caches, reproduces and loads its victims."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mia_utils as mu
from mia_utils.train import TrainConfig, train_ddpm
from mia_utils.zoo import Recipe, small_unet_config


def test_short_training_lowers_the_loss(tiny_model, digits):
    log = train_ddpm(tiny_model, digits[:64], TrainConfig(steps=200, batch_size=32, lr=2e-3, log_every=25),
                     progress=False)
    assert [e["step"] for e in log] == list(range(25, 201, 25))
    assert np.mean([e["loss"] for e in log[-2:]]) < 0.7 * log[0]["loss"]
    assert tiny_model.queries == 0  # training is not an attack query


@pytest.fixture
def tiny_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("MIA_ZOO_DIR", str(tmp_path / "zoo"))
    recipe = Recipe(name="test-tiny", description="a test victim", n_members=40,
                    unet=small_unet_config(block_out_channels=(8, 16)),
                    train=TrainConfig(steps=12, batch_size=16, seed=5, log_every=4, snapshot_steps=(4, 8)))
    mu.zoo.register(recipe)
    yield recipe
    mu.zoo.RECIPES.pop(recipe.name)


def _weights(folder):
    return mu.load_model(folder, device="cpu").unet.state_dict()


def test_zoo_builds_caches_and_loads(tiny_recipe):
    folder = mu.zoo.build(tiny_recipe, progress=False)
    assert folder.name == f"test-tiny-{tiny_recipe.key()}"
    assert (folder / "DONE").exists() and (folder / "unet" / "diffusion_pytorch_model.safetensors").exists()
    stamp = (folder / "DONE").stat().st_mtime_ns
    assert mu.zoo.path_of("test-tiny") == folder and (folder / "DONE").stat().st_mtime_ns == stamp  # cached
    assert sorted(mu.zoo.snapshots("test-tiny")) == [4, 8, 12]
    model = mu.load_model("zoo:test-tiny", device="cpu")
    assert model.sample_shape == (1, 8, 8)
    log = mu.specs.training_log("zoo:test-tiny")
    assert [e["step"] for e in log] == [4, 8, 12]
    split = mu.zoo.split_of("test-tiny")
    assert len(split.images("members")) == 40
    sets = mu.load_membership_sets("zoo:test-tiny/members", "zoo:test-tiny/nonmembers", model=model, n_eval=10)
    assert len(sets.members_eval) == 10 and len(sets.nonmembers_cal) == round(40 / 3)


def test_a_reference_recipe_trains_on_its_half_and_lists_it(tiny_recipe):
    ref = Recipe(**{**tiny_recipe.__dict__, "name": "test-tiny-ref01", "reference": 1})
    mu.zoo.register(ref)
    try:
        assert ref.key() != tiny_recipe.key()
        folder = mu.zoo.build(ref, progress=False)
        split = mu.zoo.split_of("test-tiny-ref01")
        half = mu.datasets.load_dataset(split.dataset)[split.reference_half(1)]
        assert mu.references.read_members(folder) == frozenset(mu.images.image_hashes(half))
        refs = mu.references.ReferenceModels.load([folder], device="cpu")
        inside = refs.membership(torch.cat([split.images("members"), split.images("nonmembers")]))
        assert inside.sum() == 40  # half of the 40 + 40 population, members and non-members alike
    finally:
        mu.zoo.RECIPES.pop(ref.name)


def test_zoo_is_deterministic_for_a_seed(tiny_recipe):
    first = _weights(mu.zoo.build(tiny_recipe, progress=False))
    second = _weights(mu.zoo.build(tiny_recipe, progress=False, force=True))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_recipe_key_changes_with_any_ingredient(tiny_recipe):
    other = Recipe(name="test-tiny", description="x", n_members=40, unet=tiny_recipe.unet,
                   train=TrainConfig(steps=13, batch_size=16, seed=5, log_every=4, snapshot_steps=(4, 8)))
    assert other.key() != tiny_recipe.key()


def test_unknown_zoo_names_are_refused(tiny_recipe):
    with pytest.raises(mu.zoo.ZooError, match="No zoo model 'nope'; the zoo has .*test-tiny"):
        mu.load_model("zoo:nope")
    with pytest.raises(mu.DataError, match="zoo:test-tiny/members"):
        mu.load_membership_sets("zoo:test-tiny/nonmembers", "zoo:test-tiny/nonmembers")


def test_fine_tuned_vae_and_latent_recipes_build_and_share_generated_sets(tiny_recipe, tmp_path):
    """The recipe kinds of chapters 04-06, tiny: a fine-tune starts from its base's weights, a
    β-VAE and a latent DDPM on its latents build into loadable folders, generated sets are cached."""
    from mia_utils.latent import VAETrainConfig, vae_config
    from mia_utils.zoo import VAERecipe

    tiny_unet = small_unet_config(block_out_channels=(8, 16))
    recipes = [
        Recipe(name="test-ft", description="fine-tune", n_members=40, init="test-tiny", unet=tiny_unet,
               train=TrainConfig(steps=0, batch_size=16, log_every=4)),
        VAERecipe(name="test-vae", description="vae", n_members=40, vae=vae_config(block_out_channels=(8, 16)),
                  train=VAETrainConfig(steps=4, batch_size=16)),
        Recipe(name="test-ldm", description="ldm", n_members=40, vae="test-vae",
               unet=small_unet_config(sample_size=4, channels=2, block_out_channels=(8, 16)),
               train=TrainConfig(steps=4, batch_size=16, log_every=2)),
    ]
    for r in recipes:
        mu.zoo.register(r)
    try:
        # 0 fine-tuning steps: the fine-tune is its base, weight for weight
        base, ft = _weights(mu.zoo.path_of("test-tiny")), _weights(mu.zoo.path_of("test-ft"))
        assert all(torch.equal(base[k], ft[k]) for k in base)
        assert recipes[0].key() != Recipe(**{**recipes[0].__dict__, "init": None}).key()
        model, codec = mu.specs.load_ldm("zoo:test-ldm", device="cpu")
        assert model.sample_shape == codec.latent_shape == (2, 4, 4)
        assert model.scheduler.config.clip_sample is False  # latents are not clipped to [-1, 1]
        assert mu.zoo.codec("test-vae").scale == codec.scale
        first = mu.specs.generated("zoo:test-tiny", 5, sampler="ddim", steps=3, progress=False)
        files = list((mu.zoo.path_of("test-tiny") / "generated").iterdir())
        assert len(files) == 1 and torch.equal(first, mu.zoo.generated("test-tiny", 5, sampler="ddim", steps=3))
        assert mu.specs.generator_images("zoo:test-vae", 3, shape=(1, 8, 8)).shape == (3, 1, 8, 8)
        mu.images.save_image_folder(first, tmp_path / "gen")
        assert mu.specs.generator_images(str(tmp_path / "gen"), 4, shape=(1, 8, 8)).shape == (4, 1, 8, 8)
        with pytest.raises(mu.DataError, match="channel"):
            mu.specs.generator_images(str(tmp_path / "gen"), 4, shape=(3, 16, 16))
        with pytest.raises(mu.DataError, match="shape"):
            mu.specs.generator_images("zoo:test-vae", 3, shape=(3, 8, 8))
        with pytest.raises(mu.DataError, match="6 are needed"):
            mu.specs.generator_images(str(tmp_path / "gen"), 6)
    finally:
        for r in recipes:
            mu.zoo.RECIPES.pop(r.name)


def test_the_layers_import_only_downwards():
    """data, models, latent, train, noise and the attacks know nothing of the zoo or the specs."""
    import ast
    from pathlib import Path

    root = Path(mu.__file__).parent
    low = ["data.py", "models.py", "latent.py", "train.py", "noise.py", "sampling.py", "kde.py", "metrics.py",
           "features.py", "probes.py", "extraction.py", "quality.py"]
    low += [f"attacks/{p.name}" for p in (root / "attacks").glob("*.py")]
    for name in low:
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
                assert not any(n in ("zoo", "specs", "harness", "nbrun", "cli") or n.startswith(("zoo.", "specs"))
                               for n in names), f"{name} imports {names} (upwards)"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value != "zoo:" and not node.value.startswith("zoo:digits"), f"{name} parses a zoo: spec"


def test_specs_resolve_zoo_names_and_folders(tiny_recipe, tmp_path):
    assert mu.specs.is_zoo("zoo:test-tiny") and not mu.specs.is_zoo(str(tmp_path))
    assert mu.specs.zoo_name("zoo:test-tiny/members") == "test-tiny"
    assert mu.specs.folder("zoo:test-tiny") == mu.zoo.path_of("test-tiny")
    assert mu.specs.folder(str(tmp_path)) == tmp_path and mu.specs.snapshots(str(tmp_path)) == {}
    assert mu.specs.training_log(str(tmp_path)) is None


def test_parallel_build_gives_the_weights_of_a_sequential_build(tiny_recipe, tmp_path, monkeypatch):
    """build_all with 2 jobs (spawned processes, one thread each) trains a model after the model it
    depends on, and gives tensor for tensor the weights of build one at a time."""
    from mia_utils.zoo.cache import build_all, dependencies, missing

    other = Recipe(name="test-tiny2", description="another", n_members=40, unet=tiny_recipe.unet,
                   train=TrainConfig(steps=6, batch_size=16, seed=1, log_every=3))
    ft = Recipe(name="test-ft2", description="fine-tune", n_members=40, init="test-tiny", unet=tiny_recipe.unet,
                train=TrainConfig(steps=3, batch_size=16, log_every=1))
    names = ["test-tiny", "test-tiny2", "test-ft2"]
    for r in (other, ft):
        mu.zoo.register(r)
    try:
        assert dependencies("test-ft2") == ["test-tiny"]
        assert missing(["test-ft2"]) == ["test-tiny", "test-ft2"]  # dependencies first
        sequential = {n: _weights(mu.zoo.build(n, progress=False)) for n in names}
        monkeypatch.setenv("MIA_ZOO_DIR", str(tmp_path / "zoo2"))
        lines = []
        folders = build_all(["test-ft2", "test-tiny2"], jobs=2, report=lines.append)
        assert lines[0].startswith("zoo: training 3 model(s)") and len(lines) == 4
        assert all(str(f).startswith(str(tmp_path / "zoo2")) for f in folders.values())
        for name in names:
            parallel = _weights(mu.zoo.path_of(name))
            assert all(torch.equal(sequential[name][k], parallel[k]) for k in parallel), name
    finally:
        for r in (other, ft):
            mu.zoo.RECIPES.pop(r.name)


def test_training_uses_one_thread_whatever_the_caller_set(tiny_recipe):
    from mia_utils.zoo.recipes import TRAIN_THREADS

    before = torch.get_num_threads()
    seen = []
    original = mu.zoo.cache.train_ddpm

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    mu.zoo.cache.train_ddpm = spy
    try:
        mu.zoo.build(tiny_recipe, progress=False)
    finally:
        mu.zoo.cache.train_ddpm = original
    assert seen == [TRAIN_THREADS] and torch.get_num_threads() == before


def test_every_zoo_recipe_has_a_time_estimate_and_known_dependencies():
    from mia_utils.zoo.cache import dependencies, estimated_seconds

    for name in mu.zoo.RECIPES:
        assert estimated_seconds(name) > 0
        assert all(d in mu.zoo.RECIPES for d in dependencies(name))


def test_evaluate_victims_runs_the_harness_on_each_zoo_victim_with_its_own_split(tiny_recipe):
    out = mu.studies.sima.evaluate_victims(["zoo:test-tiny"], "sima", [10, 50], device="cpu", n_boot=0, p=4)
    model = mu.load_model("zoo:test-tiny", device="cpu")
    sets = mu.load_membership_sets("zoo:test-tiny/members", "zoo:test-tiny/nonmembers", model=model)
    expected = mu.harness.evaluate("sima", model, sets, [10, 50], n_boot=0, p=4)
    assert out["zoo:test-tiny"]["honest"]["auc"] == expected["honest"]["auc"]
    assert out["zoo:test-tiny"]["victim"] == {"dataset": "digits", "shape": (1, 8, 8), "members": 40}


def test_class_shift_study_draws_elsewhere_from_the_classes_and_never_a_member(tiny_recipe, monkeypatch):
    """studies.trajectories.class_shift_study hands probes.shift_study non-members of the asked classes only,
    none of them a member of the victim, n_dev + (members' evaluation size) of them."""
    mu.zoo.build(tiny_recipe, progress=False)
    seen = {}

    def spy(model, sets, elsewhere, ts, window, n_dev, seed, n_boot):
        seen.update(sets=sets, elsewhere=elsewhere, n_dev=n_dev)
        return {}, {}

    monkeypatch.setattr(mu.probes, "shift_study", spy)
    mu.studies.trajectories.class_shift_study("zoo:test-tiny", "digits", [3, 7], [0, 500], window=500, n_dev=4, device="cpu",
                                 n_boot=0)
    sets, elsewhere = seen["sets"], seen["elsewhere"]
    assert len(elsewhere) == 4 + len(sets.members_eval)
    members = set(mu.images.image_hashes(torch.cat([sets.members_cal, sets.members_eval])))
    assert not members & set(mu.images.image_hashes(elsewhere))
    by_hash = dict(zip(mu.images.image_hashes(mu.datasets.load_dataset("digits")), mu.datasets.dataset_labels("digits")))
    assert {int(by_hash[h]) for h in mu.images.image_hashes(elsewhere)} <= {3, 7}


def test_a_generated_set_asked_twice_at_once_is_sampled_once(tiny_recipe, monkeypatch):
    """Chapters run side by side ask the zoo for the same set: the second waits for the first's."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    mu.zoo.build(tiny_recipe, progress=False)
    calls, real = [], mu.sampling.sample

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(mu.sampling, "sample", slow)
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: mu.zoo.generated("test-tiny", 4, steps=2, device="cpu", progress=False),
                                 range(2))
    assert len(calls) == 1 and torch.equal(first, second)


def test_shift_augmentation_matches_a_loop_by_hand_and_stays_out_of_old_keys():
    from mia_utils.train import shifted

    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    out = shifted(x, 1, torch.Generator().manual_seed(0))
    dy, dx = torch.randint(3, (2, 2), generator=torch.Generator().manual_seed(0)).tolist()
    for i in range(2):  # by hand: the pixel (r, c) of the output is the input's (r + dy − 1, c + dx − 1), clamped
        for r in range(4):
            for c in range(4):
                assert out[i, 0, r, c] == x[i, 0, min(3, max(0, r + dy[i] - 1)), min(3, max(0, c + dx[i] - 1))]
    assert torch.equal(shifted(x, 0, torch.Generator()), x)
    # off by default and absent from the dict the zoo's keys hash: models trained before it keep their keys
    assert "shift" not in TrainConfig().to_dict() and TrainConfig(shift=1).to_dict()["shift"] == 1


def test_a_dp_recipe_trains_with_canaries_and_records_its_epsilon(tiny_recipe):
    from mia_utils.privacy import DPConfig

    dp = Recipe(**{**tiny_recipe.__dict__, "name": "test-tiny-dp", "canaries": 12,
                   "dp": DPConfig(steps=3, batch_size=8, target_epsilon=20.0, multiplicity=2, log_every=1)})
    mu.zoo.register(dp)
    try:
        other = Recipe(**{**dp.__dict__, "dp": DPConfig(steps=3, batch_size=8, target_epsilon=5.0, multiplicity=2)})
        assert len({tiny_recipe.key(), dp.key(), other.key()}) == 3  # the DP config is in the key
        folder = mu.zoo.build(dp, progress=False)
        info = mu.zoo.info("test-tiny-dp")["dp"]
        images, included = mu.zoo.canaries("test-tiny-dp")
        split = mu.zoo.split_of("test-tiny-dp")
        public = mu.datasets.load_dataset(split.dataset)[split.index("public")]
        assert len(images) == 12 and all(any(torch.equal(c, p) for p in public) for c in images)
        assert np.array_equal(included, mu.privacy.canary_draw(images, dp.train.seed))
        assert info["n_train"] == 40 + included.sum() and 0 < info["epsilon"] <= 20.0 + 1e-6
        assert (folder / "canaries.json").is_file() and mu.specs.snapshot_step("zoo:test-tiny-dp") is None
    finally:
        mu.zoo.RECIPES.pop("test-tiny-dp")


def test_a_snapshot_spec_names_a_snapshot_folder(tiny_recipe):
    mu.zoo.build(tiny_recipe, progress=False)
    assert mu.specs.snapshot_step("zoo:test-tiny@8/members") == 8
    assert mu.specs.folder("zoo:test-tiny@8") == mu.zoo.snapshots("test-tiny")[8]
    assert mu.specs.folder("zoo:test-tiny@12") == mu.zoo.path_of("test-tiny")
    assert mu.specs.zoo_name("zoo:test-tiny@4/nonmembers") == "test-tiny"
    with pytest.raises(ValueError, match="snapshots at steps 4, 8, 12, not 5"):
        mu.specs.folder("zoo:test-tiny@5")
    with pytest.raises(ValueError, match="whole number"):
        mu.specs.folder("zoo:test-tiny@last")
