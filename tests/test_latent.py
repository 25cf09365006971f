"""The β-VAE first stage and latent models: round trips, deterministic encoding, the KL formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DModel

import mia_utils as mu
from mia_utils.latent import (
    LatentCodec,
    VAETrainConfig,
    kl_per_image,
    latent_scale,
    train_vae,
    vae_config,
)
from mia_utils.models import CheckpointError


@pytest.fixture(scope="module")
def trained_codec(digits):
    torch.manual_seed(0)
    vae = AutoencoderKL(**vae_config(block_out_channels=(8, 16)))
    log = train_vae(vae, digits[:200], VAETrainConfig(beta=1e-3, steps=150, batch_size=32, lr=3e-3), progress=False)
    return LatentCodec(vae, latent_scale(vae, digits[:200])), log


def test_kl_matches_the_closed_form(digits):
    vae = AutoencoderKL(**vae_config(block_out_channels=(8, 16)))
    post = vae.encode(digits[:4]).latent_dist
    mean, var = post.mean.double(), post.var.double()
    expected = 0.5 * (mean ** 2 + var - 1 - var.log()).flatten(1).sum(1)
    torch.testing.assert_close(kl_per_image(post).double(), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(kl_per_image(post), post.kl(), rtol=1e-4, atol=1e-4)  # diffusers agrees


def test_training_lowers_reconstruction_error(trained_codec, digits):
    codec, log = trained_codec
    assert log[-1]["reconstruction"] < 0.5 * log[0]["reconstruction"]
    x = digits[300:340]
    rec = codec.decode(codec.encode(x))
    # a trained autoencoder beats the best constant image (the data mean) by a wide margin
    baseline = (x - x.mean(0, keepdim=True)).pow(2).sum((1, 2, 3)).mean()
    assert (rec - x).pow(2).sum((1, 2, 3)).mean() < 0.5 * baseline


def test_posterior_mean_encoding_is_deterministic_and_sampling_is_seeded(trained_codec, digits):
    codec, _ = trained_codec
    x = digits[:10]
    torch.testing.assert_close(codec.encode(x), codec.encode(x))
    a = codec.encode(x, "sample", seed=1)
    b = codec.encode(x.flip(0), "sample", seed=1).flip(0)  # each image's draw follows its content, not its position
    c = codec.encode(x, "sample", seed=2)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="mode"):
        codec.encode(x, "mode")


def test_latents_are_scaled_to_unit_variance(trained_codec, digits):
    codec, _ = trained_codec
    z = codec.encode(digits[:200])
    assert z.std().item() == pytest.approx(1.0, rel=1e-4)
    assert codec.latent_shape == tuple(z.shape[1:]) == (2, 4, 4)


def test_codec_and_ldm_round_trip_through_a_folder(trained_codec, digits, tmp_path):
    codec, _ = trained_codec
    codec.encoder_queries = codec.decoder_queries = 0
    x = digits[:6]
    z = codec.encode(x)
    assert codec.encoder_queries == 6
    codec.save(tmp_path)
    again = LatentCodec.load(tmp_path)
    torch.testing.assert_close(again.encode(x), z)
    torch.testing.assert_close(again.decode(z), codec.decode(z))
    assert again.scale == codec.scale
    with pytest.raises(CheckpointError, match="unet"):
        mu.latent.load_ldm(tmp_path, device="cpu")  # a first stage without its diffusion model
    torch.manual_seed(0)
    unet = UNet2DModel(**mu.zoo.small_unet_config(sample_size=4, channels=2, block_out_channels=(8, 16)))
    model = mu.DiffusionModel(unet, device="cpu")
    model.input_range = None  # a latent model: its inputs are latents
    model.save(tmp_path)
    ldm, ldm_codec = mu.latent.load_ldm(tmp_path, device="cpu")
    assert ldm.sample_shape == ldm_codec.latent_shape
    np.testing.assert_allclose(mu.attacks.sima.score(ldm, z), mu.attacks.sima.score(model, z), rtol=1e-5)


def test_prior_samples_are_seeded_images(trained_codec):
    codec, _ = trained_codec
    a = codec.sample(5, torch.Generator().manual_seed(0))
    b = codec.sample(5, torch.Generator().manual_seed(0))
    assert a.shape == (5, 1, 8, 8) and torch.equal(a, b) and a.abs().max() <= 1


def test_precision_and_recall_against_a_brute_force_loop(digits):
    real, samples, k = digits[1100:1160], digits[1000:1030], 3

    def covered(points, centres):
        out = []
        for p in points:
            inside = False
            for c in centres:
                others = sorted(float((c - o).pow(2).sum().sqrt()) for o in centres)
                inside |= float((p - c).pow(2).sum().sqrt()) <= others[k]  # others[0] is c itself
            out.append(inside)
        return float(np.mean(out))

    got = mu.quality.precision_recall(samples, real, k=k)
    assert got == pytest.approx({"precision": covered(samples, real), "recall": covered(real, samples)})


def test_precision_and_recall_see_noise_and_collapse(digits):
    real = digits[1100:1400]
    good = mu.quality.precision_recall(digits[1000:1100], real)
    noise = mu.quality.precision_recall(torch.rand(100, 1, 8, 8) * 2 - 1, real)
    collapsed = mu.quality.precision_recall(digits[1000:1001].repeat(100, 1, 1, 1) + 0.01 * torch.randn(100, 1, 8, 8), real)
    assert good["precision"] > 0.5 and noise["precision"] < 0.05
    assert good["recall"] > 3 * collapsed["recall"]
