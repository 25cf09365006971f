"""The zoo's cache: each recipe trained once into ``$MIA_ZOO_DIR/<name>-<key>/``.

A folder is an ordinary diffusers checkpoint (``unet/``, ``scheduler/``) plus ``split.json``
(the manifest), ``train_log.json``, ``zoo.json`` and ``snapshots/`` (a β-VAE: ``vae/`` +
``codec.json``). It is built in a temporary folder and renamed when complete, so an interrupted
build never looks cached.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DModel

from ..data import Split
from ..latent import LatentCodec, latent_scale, train_vae
from ..models import DiffusionModel, default_scheduler, load_model
from ..train import train_ddpm
from .recipes import Recipe, VAERecipe, get_recipe


def zoo_dir() -> Path:
    """The cache folder: ``$MIA_ZOO_DIR`` or ``~/.cache/mia-book/zoo``."""
    return Path(os.environ.get("MIA_ZOO_DIR") or Path.home() / ".cache" / "mia-book" / "zoo")


def folder_of(recipe: Recipe | VAERecipe) -> Path:
    return zoo_dir() / f"{recipe.name}-{recipe.key()}"


def is_cached(recipe: Recipe | VAERecipe) -> bool:
    return (folder_of(recipe) / "DONE").is_file()


def _cached(final: Path, force: bool, make) -> Path:
    """Build into a temporary folder with ``make(tmp)``, then rename it to ``final`` (so an
    interrupted build never looks cached); return ``final`` at once when it is cached."""
    if (final / "DONE").is_file() and not force:
        return final
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    make(tmp)
    (tmp / "DONE").write_text("")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def _write_info(folder: Path, recipe: Recipe | VAERecipe, parameters: int, seconds: float, **extra) -> None:
    """A zoo model's zoo.json: its recipe, parameter count and training time."""
    info = {"name": recipe.name, "key": recipe.key(), "description": recipe.description,
            "recipe": {**asdict(recipe), "train": recipe.train.to_dict()}, "parameters": parameters,
            "train_seconds": round(seconds, 1), "torch": torch.__version__, **extra}
    (folder / "zoo.json").write_text(json.dumps(info, indent=1))


def build(recipe: Recipe | str, force: bool = False, progress: bool = True, device: str = "auto") -> Path:
    """Train a victim into its cache folder (or return the folder when it is cached)."""
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if isinstance(recipe, VAERecipe):
        return build_vae(recipe, force=force, progress=progress)

    def make(tmp: Path) -> None:
        split = recipe.make_split()
        split.save(tmp / "split.json")
        torch.manual_seed(recipe.train.seed)  # the UNet's initial weights
        if recipe.init is not None:  # fine-tuning: start from another zoo model's weights
            model = load_model(path_of(recipe.init), device=device)
            if model.unet.config.sample_size != recipe.unet["sample_size"]:
                raise ValueError(f"{recipe.name}: the UNet of {recipe.init} differs from the recipe's.")
        else:
            # a latent model's samples are latents, not images: no clipping to [-1, 1]
            model = DiffusionModel(UNet2DModel(**recipe.unet), default_scheduler(clip_sample=recipe.vae is None),
                                   device=device)
        images = split.images(recipe.part)
        if recipe.vae is not None:  # latent diffusion: train on the scaled posterior means, keep the VAE beside
            first_stage = codec(recipe.vae)
            images = first_stage.encode(images)
            first_stage.save(tmp)
        t0 = time.perf_counter()
        train_ddpm(model, images, recipe.train, out_dir=tmp, progress=progress)
        model.save(tmp)
        _write_info(tmp, recipe, model.num_parameters, time.perf_counter() - t0, device=str(model.device))

    return _cached(folder_of(recipe), force, make)


def build_vae(recipe: VAERecipe | str, force: bool = False, progress: bool = True) -> Path:
    """Train a β-VAE of the zoo into its cache folder (a ``LatentCodec`` folder + split.json)."""
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe

    def make(tmp: Path) -> None:
        split = recipe.make_split()
        split.save(tmp / "split.json")
        images = split.images(recipe.part)
        torch.manual_seed(recipe.train.seed)
        vae = AutoencoderKL(**recipe.vae)
        t0 = time.perf_counter()
        log = train_vae(vae, images, recipe.train, progress=progress)
        LatentCodec(vae, latent_scale(vae, images)).save(tmp)
        (tmp / "train_log.json").write_text(json.dumps({"config": recipe.train.to_dict(), "log": log}, indent=1))
        _write_info(tmp, recipe, sum(p.numel() for p in vae.parameters()), time.perf_counter() - t0)

    return _cached(folder_of(recipe), force, make)


def codec(name: str, device: str = "cpu"):
    """A zoo β-VAE as a ``latent.LatentCodec`` (trained first when it is not cached)."""
    return LatentCodec.load(path_of(name), device=device)


def path_of(name: str) -> Path:
    """The cached folder of a zoo victim, training it first when it is not cached."""
    return build(get_recipe(name))


def split_of(name: str) -> Split:
    """The member / non-member / public split a zoo victim was trained with."""
    return Split.load(path_of(name) / "split.json")


def info(name: str) -> dict:
    """The victim's zoo.json: recipe, parameter count, training seconds."""
    return json.loads((path_of(name) / "zoo.json").read_text())


def snapshots(name: str) -> dict[int, Path]:
    """Training step -> folder of each snapshot of a zoo victim (the final model included)."""
    recipe = get_recipe(name)
    root = path_of(name)
    out = {int(p.name.split("_")[1]): p for p in sorted((root / "snapshots").glob("step_*"))}
    out[recipe.train.steps] = root
    return dict(sorted(out.items()))
