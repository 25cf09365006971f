"""Bad inputs through the Python API: each a one-sentence error naming the fix, never a NaN,
a silently rounded value or a traceback from deep inside (issue 13's list, item 8 and the rest)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mia_utils as mu
from mia_utils.models import CheckpointError

from .conftest import tiny_unet


@pytest.mark.parametrize("bad, message", [
    (lambda x: x.clone().index_fill_(0, torch.tensor([1]), float("nan")), "NaN or inf"),
    (lambda x: (x + 1) * 127.5, r"span \[0, 255\].*x / 127.5 - 1"),
    (lambda x: ((x + 1) * 127.5).to(torch.uint8), r"torch.uint8: scale 8-bit pixels"),
    (lambda x: x[:0], "non-empty"),
    (lambda x: x[0], "non-empty"),
])
def test_bad_images_are_refused(bad, message, tiny_model, digits):
    for attack in ("sima", "loss", "pia", "secmi"):
        with pytest.raises(ValueError, match=message):
            mu.attacks.ATTACKS[attack](tiny_model, bad(digits[:4]))


@pytest.mark.parametrize("attack, hyper, message", [
    ("sima", {"t": 2.7}, r"t=2.7: a time step is a whole number"),
    ("sima", {"t": -1}, r"t=-1 lies outside \[0, 999\]"),
    ("loss", {"t": 1000}, r"t=1000 lies outside"),
    ("pia", {"t": 1000}, r"t=1000 lies outside"),
    ("loss", {"n_noise": 0}, r"n_noise=0: give a whole number >= 1"),
    ("sima", {"p": 0}, r"p=0: give a number > 0"),
    ("sima", {"p": -2}, r"p=-2: give a number > 0"),
    ("pia", {"p": 0}, r"p=0"),
    ("secmi", {"k": 0}, r"k=0: give a whole number >= 1"),
    ("secmi", {"t_sec": 1000}, r"t_sec=1000 lies outside"),
    ("secmi", {"t_sec": 25, "k": 10}, "k dividing t_sec"),
    ("sima", {"batch_size": 0}, r"batch_size=0"),
    ("loss", {"batch_size": -1}, r"batch_size=-1"),
])
def test_bad_hyper_parameters_are_refused(attack, hyper, message, tiny_model, digits):
    with pytest.raises(ValueError, match=message):
        mu.attacks.ATTACKS[attack](tiny_model, digits[:3], **hyper)
    assert tiny_model.queries == 0  # refused before any query


def test_numpy_integer_time_steps_are_fine(tiny_model, digits):
    a = mu.attacks.sima.score(tiny_model, digits[:3], t=np.int64(7))
    np.testing.assert_array_equal(a, mu.attacks.sima.score(tiny_model, digits[:3], t=7))


def test_kde_refuses_bad_time_steps_and_data():
    x = torch.zeros(2, 1, 4, 4)
    for t in (-1, 1000, 2.5):
        with pytest.raises(ValueError, match="lies outside"):
            mu.kde.optimal_denoiser(x, x, t=t)
    with pytest.raises(ValueError, match="training set is empty"):
        mu.kde.optimal_denoiser(x[:0], x, t=3)
    with pytest.raises(ValueError, match=r"ᾱ must lie in \(0, 1\]"):
        mu.kde.optimal_denoiser(x, x, alpha_bar=-0.5)


def test_metrics_refuse_what_they_cannot_measure():
    with pytest.raises(ValueError, match=r"fpr=1.5 must lie in \[0, 1\]"):
        mu.metrics.tpr_at_fpr([1, 2], [0, 1], fpr=1.5)
    with pytest.raises(ValueError, match=r"fpr=-0.1 must lie in \[0, 1\]"):
        mu.metrics.threshold_at_fpr([0, 1], fpr=-0.1)
    with pytest.raises(ValueError, match="NaN or inf"):
        mu.metrics.threshold_at_fpr([0, float("nan")], fpr=0.1)
    with pytest.raises(ValueError, match="NaN or inf"):
        mu.metrics.calibrated([1.0], [float("nan"), 0.0], [1.0], [0.0])
    with pytest.raises(ValueError, match="at least 2 members and 2 non-members"):
        mu.metrics.bootstrap_ci([1.0], [0.0, 0.5])


# ---------------------------------------------------------------------- checkpoints
@pytest.fixture
def ckpt(tmp_path, tiny_model):
    tiny_model.save(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_a_config_that_is_not_an_object_names_the_file(ckpt):
    (ckpt / "unet" / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"config.json' holds a JSON list"):
        mu.models.load_model(ckpt)
    (ckpt / "unet" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config.json' is not valid JSON"):
        mu.models.load_model(ckpt)


def test_weights_of_the_wrong_shape_are_one_line(ckpt, tmp_path):
    other = mu.DiffusionModel(tiny_unet(channels=1, size=8).__class__(**mu.models.small_unet_config(
        block_out_channels=(16, 32))), device="cpu")
    other.save(tmp_path / "other")
    (ckpt / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(
        (tmp_path / "other" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"do not fit the config, e.g. .* is \[16"):
        mu.models.load_model(ckpt)


def test_missing_weights_are_refused_not_initialised(ckpt):
    from safetensors.torch import load_file, save_file

    f = ckpt / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(f)
    state.pop(sorted(state)[0])
    save_file(state, f)
    with pytest.raises(CheckpointError, match=r"lacks 1 weight tensor\(s\) the config needs"):
        mu.models.load_model(ckpt)


def test_a_truncated_safetensors_file_is_one_line(ckpt):
    f = ckpt / "unet" / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        mu.models.load_model(ckpt)


def test_nan_weights_and_wrong_output_channels_fail_at_load(ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    f = ckpt / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(f)
    state["conv_out.bias"] = torch.full_like(state["conv_out.bias"], float("nan"))
    save_file(state, f)
    with pytest.raises(CheckpointError, match="hold NaN or inf"):
        mu.models.load_model(ckpt)
    config = mu.models.small_unet_config(block_out_channels=(8, 16))
    config["out_channels"] = 2
    from diffusers import UNet2DModel

    mu.DiffusionModel(UNet2DModel(**config), device="cpu").save(tmp_path / "two")
    with pytest.raises(CheckpointError, match=r"maps images \(1, 8, 8\) to \(2, 8, 8\)"):
        mu.models.load_model(tmp_path / "two")


def test_pickles_are_refused_with_a_trust_warning(ckpt):
    f = ckpt / "unet" / "diffusion_pytorch_model.safetensors"
    f.rename(ckpt / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="Only if you trust the file"):
        mu.models.load_model(ckpt)


def test_scheduler_json_errors_name_the_file(ckpt):
    (ckpt / "scheduler" / "scheduler_config.json").write_text(json.dumps(["x"]))
    with pytest.raises(CheckpointError, match="scheduler_config.json' holds a JSON list"):
        mu.models.load_model(ckpt)


def test_unknown_zoo_names_and_devices(tmp_path):
    with pytest.raises(mu.zoo.ZooError, match="No zoo model 'nonexistent'; the zoo has digits-"):
        mu.load_model("zoo:nonexistent")
    with pytest.raises(CheckpointError, match="is a file, not a folder"):
        (tmp_path / "f").write_text("")
        mu.load_model(tmp_path / "f")


def test_odd_pipeline_folders_are_one_sentence(tmp_path):
    """A list as model_index.json's _class_name ("unhashable type: 'list'" before) and --lora naming
    a file ("does not exist" before) name what is wrong."""
    folder = tmp_path / "pipe"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": ["evil", "EvilPipeline"]}')
    with pytest.raises(mu.errors.CheckpointError, match=r"holds a \['evil', 'EvilPipeline'\], which we do not audit"):
        mu.specs.kind_of(str(folder))
    adapter = tmp_path / "pytorch_lora_weights.safetensors"
    adapter.write_bytes(b"x")
    with pytest.raises(mu.errors.CheckpointError, match="is a file: name the adapter's folder"):
        mu.pipelines._load_lora(None, adapter)


def test_a_text_encoder_with_a_hostile_header_is_one_sentence(tiny_sd, tmp_path):
    """A safetensors header claiming 90 MB in the text encoder raised safetensors' own error
    uncaught (the UNet's was caught): every component's is one sentence now."""
    import shutil
    import struct

    folder = tmp_path / "sd"
    shutil.copytree(tiny_sd["folder"], folder)
    weights = next((folder / "text_encoder").glob("*.safetensors"))
    weights.write_bytes(struct.pack("<Q", 90_000_000) + b"{}")
    with pytest.raises(mu.errors.CheckpointError, match="diffusers cannot load .* as a StableDiffusionPipeline"):
        mu.pipelines.load_pipeline(folder, device="cpu")
