"""Shared fixtures: tiny models and image folders, so the suite runs in minutes on 2 cores."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel

import mia_utils as mu
from mia_utils.models import DiffusionModel, default_scheduler
from mia_utils.train import TrainConfig, train_ddpm
from mia_utils.zoo import small_unet_config


def tiny_unet(seed: int = 0, channels: int = 1, size: int = 8) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(**small_unet_config(sample_size=size, channels=channels, block_out_channels=(8, 16)))


@pytest.fixture
def tiny_model() -> DiffusionModel:
    """A random 8x8 grey UNet on the CPU (untrained)."""
    return DiffusionModel(tiny_unet(), default_scheduler(), device="cpu", batch_size=16)


@pytest.fixture(scope="session")
def digits() -> torch.Tensor:
    return mu.data.load_digits_images()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, digits):
    """A briefly trained tiny victim saved as a diffusers folder, with PNG member/non-member folders.

    This is an auditor's setting (a checkpoint and two image folders, not the zoo).
    """
    root = tmp_path_factory.mktemp("tiny")
    model = DiffusionModel(tiny_unet(), default_scheduler(), device="cpu")
    members, nonmembers = digits[:24], digits[24:48]
    train_ddpm(model, members, TrainConfig(steps=30, batch_size=24, seed=0, log_every=10),
               out_dir=root / "ckpt", progress=False)
    model.save(root / "ckpt")
    mu.data.save_image_folder(members, root / "members")
    mu.data.save_image_folder(nonmembers, root / "nonmembers")
    return {"checkpoint": root / "ckpt", "members": root / "members", "nonmembers": root / "nonmembers"}


@pytest.fixture(scope="session")
def memorised(digits):
    """A tiny model trained hard on 8 digits: (model, members, non-members). Do not train it further."""
    model = DiffusionModel(tiny_unet(), default_scheduler(), device="cpu", batch_size=64)
    members, nonmembers = digits[:8], digits[8:40]
    train_ddpm(model, members, TrainConfig(steps=400, batch_size=8, lr=3e-3, seed=0), progress=False)
    return model, members, nonmembers
