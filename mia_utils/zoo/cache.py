"""The zoo's cache: each recipe trained once into ``$MIA_ZOO_DIR/<name>-<key>/``.

A folder is an ordinary diffusers checkpoint (``unet/``, ``scheduler/``) plus ``split.json``
(the manifest), ``train_log.json``, ``zoo.json`` and ``snapshots/`` (a β-VAE: ``vae/`` +
``codec.json``). It is built in a temporary folder and renamed when complete, so an interrupted
build never looks cached.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DModel

from ..data import Split
from ..datasets import dataset_captions, load_dataset
from ..latent import LatentCodec, latent_scale, train_vae
from ..models import DiffusionModel, default_scheduler, load_model
from ..noise import content_hashes
from ..pipelines import load_pipeline
from ..privacy import canary_draw, train_dp
from ..references import write_members
from ..text2img import ConditionalDiffusionModel, TextEncoder, add_lora, save_lora, tiny_pipeline
from ..train import train_ddpm
from .recipes import RECIPES, TRAIN_THREADS, Recipe, TextToImageRecipe, VAERecipe, get_recipe


def zoo_dir() -> Path:
    """The cache folder: ``$MIA_ZOO_DIR`` or ``~/.cache/mia-book/zoo``."""
    return Path(os.environ.get("MIA_ZOO_DIR") or Path.home() / ".cache" / "mia-book" / "zoo")


def folder_of(recipe: Recipe | VAERecipe) -> Path:
    return zoo_dir() / f"{recipe.name}-{recipe.key()}"


def is_cached(recipe: Recipe | VAERecipe) -> bool:
    return (folder_of(recipe) / "DONE").is_file()


@contextlib.contextmanager
def _training_threads():
    """Every zoo model trains on ONE intra-op thread (``recipes.TRAIN_THREADS``): the thread count
    changes the order of float sums, so a model trained on 2 threads differs from one trained on 1
    in the 4th decimal; fixed, a recipe gives the same weights whether ``build_all`` trains one
    model at a time or two side by side (two 1-thread trainings on 2 cores run 1.3x faster than
    one 2-thread training of the 8x8 models, measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cached(final: Path, force: bool, make) -> Path:
    """Build into a temporary folder with ``make(tmp)``, then rename it to ``final`` (so an
    interrupted build never looks cached); return ``final`` at once when it is cached."""
    if (final / "DONE").is_file() and not force:
        return final
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with _training_threads():
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
    if isinstance(recipe, TextToImageRecipe):
        return build_text_to_image(recipe, force=force, progress=progress, device=device)

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
        if recipe.reference is None:
            images = split.images(recipe.part)
        else:  # a reference model: its half of the population, named by content in members.json
            images = load_dataset(split.dataset)[split.reference_half(recipe.reference)]
            write_members(tmp, images)
        if recipe.vae is not None:  # latent diffusion: train on the scaled posterior means, keep the VAE beside
            first_stage = codec(recipe.vae)
            images = first_stage.encode(images)
            first_stage.save(tmp)
        if recipe.canaries:  # the one-run audit's canaries: public images, each in with probability 1/2
            images = torch.cat([images, _canaries(tmp, split, recipe)])
        t0 = time.perf_counter()
        extra = {}
        if recipe.dp is None:
            train_ddpm(model, images, recipe.train, out_dir=tmp, progress=progress)
        else:
            run = train_dp(model, images, recipe.dp, progress=progress)
            (tmp / "train_log.json").write_text(json.dumps({"config": run.pop("config"), "log": run.pop("log")},
                                                           indent=1))
            # ε = ∞ (no noise) as null: zoo.json stays strict JSON
            extra["dp"] = {**run, "epsilon": None if math.isinf(run["epsilon"]) else run["epsilon"],
                           "n_train": len(images)}
        model.save(tmp)
        _write_info(tmp, recipe, model.num_parameters, time.perf_counter() - t0, device=str(model.device), **extra)

    return _cached(folder_of(recipe), force, make)


def _canaries(folder: Path, split: Split, recipe: Recipe) -> torch.Tensor:
    """Draw ``recipe.canaries`` public images of the split (a seeded choice), flip each one's coin
    (``privacy.canary_draw``), write ``canaries.json`` (data set indices, SHA-256, included) and
    return the included ones."""
    public = split.index("public")
    rng = np.random.default_rng([int(split.seed), 0xCA4A])
    indices = sorted(public[i] for i in rng.permutation(len(public))[: recipe.canaries])
    images = load_dataset(split.dataset)[indices]
    included = canary_draw(images, recipe.train.seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "canaries.json").write_text(json.dumps({"dataset": split.dataset, "indices": indices,
                                                      "sha256": content_hashes(images),
                                                      "included": included.tolist()}, indent=1))
    return images[torch.from_numpy(included)]


def canaries(name: str) -> tuple[torch.Tensor, np.ndarray]:
    """A zoo model's canaries and whether each was in its training run ((images, included))."""
    blob = json.loads((path_of(name) / "canaries.json").read_text())
    return load_dataset(blob["dataset"])[blob["indices"]], np.array(blob["included"], dtype=bool)


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


def build_text_to_image(recipe: TextToImageRecipe | str, force: bool = False, progress: bool = True,
                        device: str = "auto") -> Path:
    """Train a text-to-image model of the zoo: a StableDiffusionPipeline folder (a base or a full
    fine-tune) or a LoRA adapter folder (``pytorch_lora_weights.safetensors``), + split.json."""

    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe

    def make(tmp: Path) -> None:
        split = recipe.make_split()
        split.save(tmp / "split.json")
        t0 = time.perf_counter()
        extra = {}
        if recipe.init is None:  # the base: its first stage, tokenizer and text encoder first
            public = split.images("public")
            torch.manual_seed(recipe.vae_train.seed)
            vae = AutoencoderKL(**recipe.vae)
            vae_log = train_vae(vae, public, recipe.vae_train, progress=progress)
            vae.register_to_config(scaling_factor=latent_scale(vae, public))
            extra["vae_log"] = vae_log
            words = {w for caption in dataset_captions(recipe.dataset) for w in caption.split()}
            pipeline = tiny_pipeline(words, vae, recipe.unet, tmp, seed=recipe.train.seed)
            pipeline.to(device if device != "auto" else "cpu")
            model = ConditionalDiffusionModel(pipeline.unet, default_scheduler(clip_sample=False),
                                              TextEncoder(pipeline), device=device)
            first_stage = LatentCodec(vae, vae.config.scaling_factor, device=model.device)
        else:
            target = load_pipeline(path_of(recipe.init), device=device)
            pipeline, model, first_stage = target.pipeline, target.model, target.codec
        if recipe.lora_rank is not None:
            add_lora(pipeline.unet, rank=recipe.lora_rank, seed=recipe.train.seed)
        latents = first_stage.encode(split.images(recipe.part))
        condition = model.text(split.captions(recipe.part))
        train_ddpm(model, latents, recipe.train, out_dir=tmp, progress=progress, condition=condition,
                   uncond_prob=recipe.uncond_prob)
        if recipe.lora_rank is not None:
            save_lora(pipeline.unet, tmp)
        else:
            pipeline.save_pretrained(tmp, safe_serialization=True)
        trainable = sum(p.numel() for p in pipeline.unet.parameters() if p.requires_grad)
        _write_info(tmp, recipe, trainable, time.perf_counter() - t0, device=str(model.device), **extra)

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


def dependencies(name: str) -> list[str]:
    """The zoo models a recipe needs built first: its initial weights, its first stage."""
    recipe = get_recipe(name)
    if isinstance(recipe, VAERecipe):  # its .vae is an AutoencoderKL config, not a zoo name
        return []
    if isinstance(recipe, TextToImageRecipe):  # its .vae too; it depends on its base only
        return [recipe.init] if recipe.init is not None else []
    return [d for d in (recipe.init, recipe.vae) if d is not None]


def missing(names: list[str] | None = None) -> list[str]:
    """The named models (all when None) and what they depend on that is not cached, dependencies first."""
    out: list[str] = []

    def visit(name: str) -> None:
        for dep in dependencies(name):
            visit(dep)
        if name not in out and not is_cached(get_recipe(name)):
            out.append(name)

    for name in names or list(RECIPES):
        visit(name)
    return out


def _build_one(name: str, zoo: str, device: str, recipes: dict) -> tuple[str, str, float]:
    # a spawned worker: the parent's cache folder and recipes (those registered at run time too)
    os.environ["MIA_ZOO_DIR"] = zoo
    RECIPES.update(recipes)
    t0 = time.perf_counter()
    folder = build(name, progress=False, device=device)
    return name, str(folder), time.perf_counter() - t0


def build_all(names: list[str] | None = None, jobs: int = 2, device: str = "auto", report=print) -> dict[str, Path]:
    """Train every named model (all when None) that is not cached, ``jobs`` at a time.

    Each model trains in a process of its own on one thread; a model starts when the models it
    depends on are cached; the longest trainings start first. The weights are those of
    ``build`` one at a time (same thread count, same seeds). Returns name -> folder.
    """
    todo = missing(names)
    if todo:
        minutes = sum(estimated_seconds(n) for n in todo) / 60 / max(1, min(jobs, len(todo)))
        report(f"zoo: training {len(todo)} model(s) ({', '.join(todo)}), about {minutes:.0f} min with {jobs} "
               f"job(s) on a 2-core machine; cached afterwards in {zoo_dir()}")
    if jobs <= 1 or len(todo) <= 1:
        for name in todo:
            t0 = time.perf_counter()
            build(name, device=device)
            report(f"zoo: {name} trained in {time.perf_counter() - t0:.0f} s")
    else:
        pending, running = list(todo), {}
        # spawn, not fork: a forked copy of a process that has run torch can deadlock in its thread pools
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            while pending or running:
                ready = [n for n in pending if all(is_cached(get_recipe(d)) for d in dependencies(n))]
                for name in sorted(ready, key=estimated_seconds, reverse=True)[: jobs - len(running)]:
                    pending.remove(name)
                    running[pool.submit(_build_one, name, str(zoo_dir()), device, dict(RECIPES))] = name
                if not running:
                    raise RuntimeError(f"zoo: cannot order {pending}: a dependency is neither cached nor pending")
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    name, _, seconds = future.result()  # a failed training raises here, naming itself
                    del running[future]
                    report(f"zoo: {name} trained in {seconds:.0f} s")
    return {n: folder_of(get_recipe(n)) for n in (names or list(RECIPES))}


def estimated_seconds(name: str) -> float:
    """A rough training time on one thread of the 2-core CI machine, for the announcement and the
    longest-first order only: optimiser steps x (a fixed cost + a cost per pixel of the batch),
    both fitted to the zoo trainings of a cold run, two side by side (2026-12-02: within 15 % for the
    pixel UNets and the β-VAEs; the same recipes have run up to 1.7x slower on a busier machine).
    ``python benchmarks/bench_book.py`` prints the measured times beside these."""
    recipe = get_recipe(name)
    if isinstance(recipe, TextToImageRecipe):
        # the base's VAE about 0.05 s a step; the conditional UNet on 4x4x4 latents 0.10 s a step at
        # batch 64, 0.065 at batch 32 (a LoRA step 15 % less: no weight gradients)
        first = recipe.vae_train.steps * 0.05 if recipe.init is None else 0.0
        step = (0.03 + 0.0011 * recipe.train.batch_size) * (1 if recipe.lora_rank is None else 0.85)
        return first + recipe.train.steps * step
    if getattr(recipe, "dp", None) is not None:
        # measured (2026-12-07): a DP-SGD step of the 8x8 digits UNet, expected batch 64, K = 2 draws
        # per example, 0.33-0.44 s on one thread beside another training; about linear in B·K
        return recipe.dp.steps * (0.05 + 0.0028 * recipe.dp.batch_size * recipe.dp.multiplicity)
    config = recipe.vae if isinstance(recipe, VAERecipe) else recipe.unet
    work = recipe.train.batch_size * config["sample_size"] ** 2 * config["in_channels"] * config["block_out_channels"][0]
    attention = 1.3 if any("Attn" in b for b in config["down_block_types"]) else 1.0
    # measured: the 8x8 digits UNet at batch 64, 0.098 s a step; the 16x16 Fashion UNet at batch 32,
    # 0.086 s; the digits β-VAE 0.10 s: about 0.035 s + 4.5e-7 s per (image x pixel x first width)
    return recipe.train.steps * (0.035 + 4.5e-7 * work) * attention
