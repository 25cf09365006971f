"""The DiffusionModel wrapper and checkpoint loading, against diffusers directly."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

import mia_utils as mu
from mia_utils.models import CheckpointError, DiffusionModel, default_scheduler


def test_alpha_bar_is_the_ddpm_schedule(tiny_model):
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert torch.allclose(tiny_model.alpha_bar, torch.cumprod(1 - betas, 0), atol=1e-6)


def test_eps_matches_unet_batched_and_counts_queries(tiny_model, digits):
    x, t = digits[:37], torch.randint(0, 1000, (37,))
    out = tiny_model.eps(x, t, batch_size=10)
    with torch.no_grad():
        direct = torch.cat([tiny_model.unet(x[i:i + 1], t[i:i + 1]).sample for i in range(37)])
    assert out.shape == x.shape
    assert torch.allclose(out, direct, atol=1e-5)
    assert tiny_model.queries == 37
    tiny_model.eps(x[:5], 10)
    assert tiny_model.reset_queries() == 42 and tiny_model.queries == 0


def test_eps_refuses_wrong_shapes_and_times(tiny_model):
    with pytest.raises(CheckpointError, match="model takes"):
        tiny_model.eps(torch.zeros(2, 3, 8, 8), 0)
    with pytest.raises(ValueError, match="t must lie"):
        tiny_model.eps(torch.zeros(2, 1, 8, 8), 1000)


def test_device_auto_and_cuda_without_gpu(tiny_model):
    assert str(mu.models.resolve_device("auto")) == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(CheckpointError, match="no CUDA GPU"):
            DiffusionModel(tiny_model.unet, device="cuda")


def test_save_and_load_both_layouts(tmp_path, tiny_model, digits):
    tiny_model.save(tmp_path / "pipe")
    loaded = mu.load_model(tmp_path / "pipe", device="cpu")
    x = digits[:4]
    assert torch.allclose(loaded.eps(x, 7), tiny_model.eps(x, 7), atol=1e-6)
    # a bare UNet folder with the scheduler config beside the weights
    tiny_model.unet.save_pretrained(tmp_path / "bare")
    tiny_model.scheduler.save_pretrained(tmp_path / "bare")
    assert torch.allclose(mu.load_model(tmp_path / "bare", device="cpu").eps(x, 7), tiny_model.eps(x, 7), atol=1e-6)
    # no scheduler config at all: the DDPM default, with a warning
    tiny_model.unet.save_pretrained(tmp_path / "nosched")
    with pytest.warns(UserWarning, match="No scheduler config"):
        m = mu.load_model(tmp_path / "nosched", device="cpu")
    assert torch.allclose(m.alpha_bar, tiny_model.alpha_bar)


def test_checkpoint_errors(tmp_path, tiny_model):
    with pytest.raises(CheckpointError, match="does not exist"):
        mu.load_model(tmp_path / "missing")
    (tmp_path / "noconfig").mkdir()
    with pytest.raises(CheckpointError, match="no model config"):
        mu.load_model(tmp_path / "noconfig")
    tiny_model.unet.save_pretrained(tmp_path / "pickle", safe_serialization=False)
    with pytest.raises(CheckpointError, match="pickled weights"):
        mu.load_model(tmp_path / "pickle")
    tiny_model.save(tmp_path / "vpred")
    cfg = json.loads((tmp_path / "vpred/scheduler/scheduler_config.json").read_text())
    cfg["prediction_type"] = "score"  # v_prediction and sample are converted (test_families.py)
    (tmp_path / "vpred/scheduler/scheduler_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="predicts 'score'"):
        mu.load_model(tmp_path / "vpred")


# The configuration of the public DDPM CIFAR-10 32x32 checkpoint (Ho et al.), random weights.
CIFAR10_DDPM_CONFIG = {
    "sample_size": 32, "in_channels": 3, "out_channels": 3, "layers_per_block": 2,
    "block_out_channels": (128, 256, 256, 256),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "dropout": 0.1, "attention_head_dim": None, "norm_eps": 1e-6, "resnet_time_scale_shift": "default",
    "time_embedding_type": "positional", "flip_sin_to_cos": False, "freq_shift": 1,
}


def test_cifar10_ddpm_configuration_loads_and_scores_rgb(tmp_path, digits):
    torch.manual_seed(0)
    unet = UNet2DModel(**CIFAR10_DDPM_CONFIG)
    unet.save_pretrained(tmp_path / "cifar" / "unet")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").save_pretrained(tmp_path / "cifar" / "scheduler")
    model = mu.load_model(tmp_path / "cifar", device="cpu", batch_size=4)
    assert model.sample_shape == (3, 32, 32) and model.num_parameters > 35e6
    mu.images.save_image_folder(digits[:6], tmp_path / "grey")
    rgb = mu.load_image_folder(tmp_path / "grey", size=32, channels=3)
    scores = mu.attacks.loss.score(model, rgb, t=50)
    assert scores.shape == (6,) and (scores < 0).all()
    assert model.queries == 6


def test_default_scheduler_is_epsilon_linear():
    s = default_scheduler()
    assert s.config.beta_schedule == "linear" and s.config.prediction_type == "epsilon"
    assert s.config.num_train_timesteps == 1000
