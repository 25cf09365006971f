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
    log = mu.zoo.training_log("zoo:test-tiny")
    assert [e["step"] for e in log] == [4, 8, 12]
    split = mu.zoo.split_of("test-tiny")
    assert len(split.images("members")) == 40
    sets = mu.load_membership_sets("zoo:test-tiny/members", "zoo:test-tiny/nonmembers", model=model, n_eval=10)
    assert len(sets.members_eval) == 10 and len(sets.nonmembers_cal) == round(40 / 3)


def test_zoo_is_deterministic_for_a_seed(tiny_recipe):
    first = _weights(mu.zoo.build(tiny_recipe, progress=False))
    second = _weights(mu.zoo.build(tiny_recipe, progress=False, force=True))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_recipe_key_changes_with_any_ingredient(tiny_recipe):
    other = Recipe(name="test-tiny", description="x", n_members=40, unet=tiny_recipe.unet,
                   train=TrainConfig(steps=13, batch_size=16, seed=5, log_every=4, snapshot_steps=(4, 8)))
    assert other.key() != tiny_recipe.key()


def test_unknown_zoo_names_are_refused(tiny_recipe):
    with pytest.raises(KeyError, match="No zoo victim"):
        mu.load_model("zoo:nope")
    with pytest.raises(mu.DataError, match="zoo:test-tiny/members"):
        mu.load_membership_sets("zoo:test-tiny/nonmembers", "zoo:test-tiny/nonmembers")
