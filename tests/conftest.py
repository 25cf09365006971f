"""Shared fixtures: tiny models and image folders, so the suite runs in minutes on 2 cores."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel

import mia_utils as mu
from mia_utils.models import DiffusionModel, default_scheduler
from mia_utils.train import TrainConfig, train_ddpm
from mia_utils.zoo import small_unet_config

# make test runs three pytest-xdist workers on the 2 cores (kernel start-ups leave a core idle;
# measured: 4.2 min against 5.1 with two): each worker, and every kernel a notebook test starts
# from it, takes one intra-op thread, so the workers do not fight over the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def tiny_unet(seed: int = 0, channels: int = 1, size: int = 8) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(**small_unet_config(sample_size=size, channels=channels, block_out_channels=(8, 16)))


def zero_eps_model() -> DiffusionModel:
    """A model whose UNet predicts ε̂ ≡ 0 (its output layer is zero): every DDIM step then
    rescales x by √(ᾱ_to/ᾱ_from), a closed form for the samplers' tests."""
    unet = tiny_unet()
    torch.nn.init.zeros_(unet.conv_out.weight)
    torch.nn.init.zeros_(unet.conv_out.bias)
    return DiffusionModel(unet, default_scheduler(), device="cpu")


def tiny_references(digits: torch.Tensor, n_pairs: int = 2, population: int = 40) -> mu.references.ReferenceModels:
    """Random tiny UNets as reference models, in complementary pairs over ``digits[:population]``:
    every one of those images is IN for exactly ``n_pairs`` of the 2 x ``n_pairs`` references."""
    gen = torch.Generator().manual_seed(11)
    models, members = [], []
    for _ in range(n_pairs):
        pick = torch.zeros(population, dtype=torch.bool)
        pick[torch.randperm(population, generator=gen)[: population // 2]] = True
        for side in (pick, ~pick):
            models.append(DiffusionModel(tiny_unet(seed=20 + len(models)), default_scheduler(), device="cpu",
                                         batch_size=16))
            members.append(frozenset(mu.images.image_hashes(digits[:population][side])))
    return mu.references.ReferenceModels(models, members, [f"ref{r}" for r in range(len(models))])


def make_reference_folders(folders: dict, root: Path) -> dict:
    """An auditor's reference models for a folder checkpoint: four random UNets of its shape in
    complementary pairs over its members + non-members, each with members.json; and RMIA's
    population samples z, the non-members mirrored (images none of them was trained on)."""
    model = mu.load_model(folders["checkpoint"], device="cpu")
    c, h, _ = model.sample_shape
    population = torch.cat([mu.images.load_image_folder(folders[k]) for k in ("members", "nonmembers")])
    gen = torch.Generator().manual_seed(3)
    for j in range(2):
        pick = torch.zeros(len(population), dtype=torch.bool)
        pick[torch.randperm(len(population), generator=gen)[: len(population) // 2]] = True
        for r, side in ((2 * j, pick), (2 * j + 1, ~pick)):
            folder = root / "refs" / f"ref{r}"
            DiffusionModel(tiny_unet(seed=30 + r, channels=c, size=h), default_scheduler()).save(folder)
            mu.references.write_members(folder, population[side])
    z = mu.images.save_image_folder(mu.images.load_image_folder(folders["nonmembers"]).flip(-1)[:8], root / "z")
    return {"references": str(root / "refs"), "population": str(z)}


@pytest.fixture
def tiny_model() -> DiffusionModel:
    """A random 8x8 grey UNet on the CPU (untrained)."""
    return DiffusionModel(tiny_unet(), default_scheduler(), device="cpu", batch_size=16)


@pytest.fixture(scope="session")
def digits() -> torch.Tensor:
    return mu.datasets.load_digits_images()


@pytest.fixture(scope="session", params=[(1, 8), (3, 16)], ids=["grey8", "rgb16"])
def tiny_checkpoint(request, tmp_path_factory, digits):
    """A briefly trained tiny victim saved as a diffusers folder, with PNG member/non-member folders.

    This is an auditor's setting (a checkpoint and two image folders, not the zoo), in two
    shapes: grey 8x8 and RGB 16x16 (the digits upsampled and coloured), so that no chapter
    may assume one channel or 8x8 images.
    """
    channels, size = request.param
    root = tmp_path_factory.mktemp(f"tiny{channels}x{size}")
    images = digits[:48]
    if (channels, size) != (1, 8):
        images = torch.nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False)
        tint = torch.tensor([1.0, 0.6, 0.2]).view(1, 3, 1, 1)
        images = ((images + 1) * tint - 1).clamp(-1, 1)  # coloured: each channel differs
    model = DiffusionModel(tiny_unet(channels=channels, size=size), default_scheduler(), device="cpu")
    members, nonmembers = images[:24], images[24:48]
    train_ddpm(model, members, TrainConfig(steps=30, batch_size=24, seed=0, log_every=10),
               out_dir=root / "ckpt", progress=False)
    model.save(root / "ckpt")
    mu.images.save_image_folder(members, root / "members")
    mu.images.save_image_folder(nonmembers, root / "nonmembers")
    return {"checkpoint": root / "ckpt", "members": root / "members", "nonmembers": root / "nonmembers"}


def shared_folder(tmp_path_factory, name: str, make) -> Path:
    """A folder ``make(folder)`` fills once per test session, however many xdist workers ask:
    the first trains, the others wait on a lock and load (each worker would otherwise repeat a
    training of up to 40 s). Without xdist, a folder of this session's own."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    root = tmp_path_factory.getbasetemp().parent  # this session's, shared by its workers
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "done").is_file():
            make(folder)
            (folder / "done").touch()
    return folder


@pytest.fixture(scope="session")
def memorised(digits, tmp_path_factory):
    """A tiny model trained hard on 8 digits: (model, members, non-members). Do not train it further."""
    members, nonmembers = digits[:8], digits[8:40]

    def make(folder):
        model = DiffusionModel(tiny_unet(), default_scheduler(), device="cpu", batch_size=64)
        train_ddpm(model, members, TrainConfig(steps=400, batch_size=8, lr=3e-3, seed=0), progress=False)
        model.save(folder)

    folder = shared_folder(tmp_path_factory, "memorised", make)
    return mu.load_model(folder, device="cpu", batch_size=64), members, nonmembers


@pytest.fixture(scope="session")
def tiny_ldm(tiny_checkpoint, tmp_path_factory):
    """A tiny latent diffusion folder (unet/, scheduler/, vae/, codec.json) for the checkpoint's
    image shape: a β-VAE and a latent UNet, each trained a few steps on the members."""
    from diffusers import AutoencoderKL

    from mia_utils.latent import (
        LatentCodec,
        VAETrainConfig,
        latent_scale,
        train_vae,
        vae_config,
    )

    members = mu.load_image_folder(tiny_checkpoint["members"])
    c, size = members.shape[1], members.shape[-1]
    root = tmp_path_factory.mktemp(f"ldm{c}x{size}")
    torch.manual_seed(0)
    vae = AutoencoderKL(**vae_config(sample_size=size, channels=c, latent_channels=2, block_out_channels=(8, 16)))
    train_vae(vae, members, VAETrainConfig(beta=0.1, steps=10, batch_size=8), progress=False)
    codec = LatentCodec(vae, latent_scale(vae, members))
    codec.save(root)
    lc, lh, _ = codec.latent_shape
    torch.manual_seed(0)
    unet = UNet2DModel(**small_unet_config(sample_size=lh, channels=lc, block_out_channels=(8, 16)))
    model = DiffusionModel(unet, default_scheduler(clip_sample=False), device="cpu")  # latents are not clipped
    train_ddpm(model, codec.encode(members), TrainConfig(steps=10, batch_size=8, log_every=5), progress=False)
    model.save(root)
    return root


SD_WORDS = "a thin bold handwritten digit seven one".split()


def sd_pipeline(folder: Path, seed: int = 0, width: int = 64):
    """A tiny StableDiffusionPipeline from diffusers' and transformers' own classes (only the
    tokenizer from ``text2img.build_tokenizer``): VAE 1x8x8 -> 4x4x4, SD's scaled-linear betas."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from mia_utils import text2img
    from mia_utils.latent import vae_config

    tokenizer = text2img.build_tokenizer(SD_WORDS, folder / "tok")
    torch.manual_seed(seed)
    text = CLIPTextModel(CLIPTextConfig(**text2img.text_encoder_config(
        len(tokenizer), 32, max_length=tokenizer.model_max_length, eos_token_id=tokenizer.eos_token_id)))
    vae = AutoencoderKL(**vae_config(8, 1, 4, (16, 32)), scaling_factor=0.7)
    unet = UNet2DConditionModel(**text2img.conditional_unet_config(4, 4, 32, (32, width)))
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
                              clip_sample=False)
    return StableDiffusionPipeline(vae=vae, text_encoder=text.eval(), tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def caption_folder(images, folder: Path, captions) -> Path:
    """PNG images with a metadata.jsonl (Hugging Face's imagefolder convention)."""
    import json

    mu.images.save_image_folder(images, folder)
    files = sorted(p.name for p in folder.glob("*.png"))
    lines = [json.dumps({"file_name": f, "text": c}) for f, c in zip(files, captions)]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory, digits):
    """An SD folder written by diffusers' save_pretrained, a LoRA adapter for it (saved with
    save_lora_weights), one for a UNet of another width, and captioned member / non-member folders."""
    from mia_utils import text2img

    def make(root):
        pipe = sd_pipeline(root)
        pipe.save_pretrained(root / "sd", safe_serialization=True)
        text2img.add_lora(pipe.unet, rank=4, seed=1)
        with torch.no_grad():  # a non-trivial adapter (B starts at zero)
            for name, p in pipe.unet.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
        text2img.save_lora(pipe.unet, root / "lora")
        other = sd_pipeline(root / "other", width=96)
        text2img.add_lora(other.unet, rank=4)
        text2img.save_lora(other.unet, root / "lora-other")
        words = ["one", "seven"]
        caps = [f"a {'thin' if i % 2 else 'bold'} handwritten digit {words[i % 2]}" for i in range(40)]
        caption_folder(digits[:20], root / "members", caps[:20])
        caption_folder(digits[20:40], root / "nonmembers", caps[20:])

    root = shared_folder(tmp_path_factory, "tiny_sd", make)
    return {"root": root, "folder": root / "sd", "lora": root / "lora", "lora_other": root / "lora-other",
            "members": root / "members", "nonmembers": root / "nonmembers"}
