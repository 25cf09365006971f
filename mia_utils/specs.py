"""Specs: what a chapter or the command line names, resolved to folders and tensors.

A model spec is ``zoo:NAME`` (a model of the zoo, trained on first use) or a local folder; an
image spec is ``zoo:NAME/members`` or ``zoo:NAME/nonmembers`` (the split a zoo model was trained
with) or a folder of images. This is the one module that reads the ``zoo:`` prefix: the
loaders below it (``models``, ``latent``, ``data``) take folders and tensors only, and the zoo
above them never sees a spec.

    model = specs.load_model("zoo:digits-ddpm")          # or a folder
    sets = specs.load_membership_sets("zoo:digits-ddpm/members", "/data/nonmembers", model=model)
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import data, datasets, latent, models, sampling, zoo
from .data import CutPart, MembershipSets
from .errors import DataError
from .images import folder_images
from .io import read_json
from .models import DiffusionModel
from .pipelines import SUPPORTED, load_pipeline

PREFIX = "zoo:"


def is_zoo(spec) -> bool:
    """True for a ``zoo:`` spec."""
    return isinstance(spec, str) and spec.startswith(PREFIX)


def zoo_name(spec: str) -> str:
    """The zoo model a ``zoo:NAME``, ``zoo:NAME@STEP`` or ``zoo:NAME/part`` spec names (checked
    against the zoo)."""
    if not is_zoo(spec):
        raise ValueError(f"{spec!r} is not a zoo: spec.")
    name = spec[len(PREFIX):].partition("/")[0].partition("@")[0]
    zoo.get_recipe(name)  # a clear error, listing the zoo's names, for a name it does not have
    return name


def snapshot_step(spec) -> int | None:
    """The training step a ``zoo:NAME@STEP`` spec names (a snapshot of the zoo model); None otherwise."""
    if not is_zoo(spec) or "@" not in spec.partition("/")[0]:
        return None
    step = spec.partition("/")[0].partition("@")[2]
    if not step.isdigit():
        raise ValueError(f"{spec!r}: the step after @ must be a whole number (zoo:digits-ddpm@1000).")
    return int(step)


def folder(spec) -> Path:
    """The folder of a model spec: a zoo model's cache folder (trained first if needed), the
    folder of one of its snapshots (``zoo:NAME@STEP``), or the folder."""
    if not is_zoo(spec):
        return Path(spec)
    step, name = snapshot_step(spec), zoo_name(spec)
    if step is None:
        return zoo.path_of(name)
    known = zoo.snapshots(name)
    if step not in known:
        raise ValueError(f"{spec!r}: {name} has snapshots at steps {', '.join(map(str, known))}, not {step}.")
    return known[step]


def display(spec) -> str:
    """How a report names a spec: the zoo spec itself, or the folder's absolute path."""
    return spec if is_zoo(spec) else str(Path(spec).resolve())


def recipe(spec):
    """The zoo recipe of a ``zoo:`` spec (data set, split, training budget); None for a folder."""
    return zoo.get_recipe(zoo_name(spec)) if is_zoo(spec) else None


def load_model(spec, device: str | torch.device = "auto", batch_size: int = 256, dtype: str = "fp32") -> DiffusionModel:
    """``models.load_model`` on the spec's folder."""
    return models.load_model(folder(spec), device=device, batch_size=batch_size, dtype=dtype)


def load_ldm(spec, device: str | torch.device = "auto", batch_size: int = 256):
    """``latent.load_ldm`` on the spec's folder: (latent DiffusionModel, LatentCodec)."""
    return latent.load_ldm(folder(spec), device=device, batch_size=batch_size)


def latent_label(spec) -> str:
    """How a table names a latent model: ``β = 0.01`` (its VAE's β) for a zoo latent model, the
    folder's name otherwise."""
    if is_zoo(spec):
        return f"β = {zoo.get_recipe(recipe(spec).vae).train.beta:g}"
    return str(spec).rstrip("/").split("/")[-1]


def load_target(spec, lora=None, device: str | torch.device = "auto", batch_size: int = 256, dtype: str = "fp32"):
    """``pipelines.load_pipeline`` on the spec's folder; a zoo LoRA model is its base's pipeline
    with the zoo folder as the adapter (``lora``: an adapter folder for any other spec)."""

    adapter_recipe = recipe(spec)
    if getattr(adapter_recipe, "lora_rank", None) is not None:
        if lora is not None:
            raise ValueError(f"{spec} is a LoRA adapter already; give its base as the checkpoint to add another.")
        return load_pipeline(zoo.path_of(adapter_recipe.init), lora=folder(spec), device=device,
                             batch_size=batch_size, dtype=dtype)
    return load_pipeline(folder(spec), lora=None if lora is None else folder(lora), device=device,
                         batch_size=batch_size, dtype=dtype)


def kind_of(spec) -> str:
    """"pixel", "latent" or "text-to-image": what a model spec holds, read from its folder's
    files (nothing loaded; a zoo model is trained first if needed)."""

    if is_zoo(spec):  # from the recipe: nothing trained to answer
        r = recipe(spec)
        if isinstance(r, zoo.recipes.TextToImageRecipe):
            return "text-to-image"
        return "latent" if isinstance(r, zoo.VAERecipe) or getattr(r, "vae", None) else "pixel"
    root = folder(spec)
    if (root / "model_index.json").is_file():
        name = read_json(root / "model_index.json", "model_index.json").get("_class_name")
        if not isinstance(name, str) or name not in SUPPORTED:

            load_pipeline(root)  # the one error that names the supported pipelines
        return SUPPORTED[name]
    return "latent" if (root / "codec.json").is_file() else "pixel"


def _images(spec, label: str):
    """A folder spec as it is, or a zoo split part as its (calibration, evaluation) tensors."""
    if not is_zoo(spec):
        return spec
    name = zoo_name(spec)
    part = spec[len(PREFIX):].partition("/")[2]
    if part != label:
        raise DataError(f"{label}={spec!r}: write zoo:{name}/{label}.")
    split = zoo.split_of(name)
    dataset = datasets.load_dataset(split.dataset)
    parts = (f"{label}_cal", f"{label}_eval")
    return CutPart(*(split.images(p, dataset) for p in parts), captions=tuple(split.captions(p) for p in parts))


def load_membership_sets(members, nonmembers, model: DiffusionModel | None = None, **kwargs) -> MembershipSets:
    """``data.load_membership_sets`` with zoo split specs resolved (a zoo split keeps its own
    calibration and evaluation parts; folders are cut by ``calibration_fraction``)."""
    sets = data.load_membership_sets(_images(members, "members"), _images(nonmembers, "nonmembers"),
                                     model=model, **kwargs)
    sets.source = {"members": str(members), "nonmembers": str(nonmembers)}
    return sets


def training_log(spec) -> list[dict] | None:
    """The training log (step, loss, seconds) of a model spec; None when its folder has none."""
    import json

    f = folder(spec) / "train_log.json"
    return json.loads(f.read_text())["log"] if f.is_file() else None


def snapshots(spec) -> dict[int, Path]:
    """Training step -> folder of each snapshot of a zoo model; {} for a folder (no snapshots known)."""
    return zoo.snapshots(zoo_name(spec)) if is_zoo(spec) else {}


def generated(spec, n: int, sampler: str = "ddim", steps: int | None = None, seed: int = 0,
              device: str = "auto", progress: bool = True, model: DiffusionModel | None = None) -> torch.Tensor:
    """n images the model ``spec`` generates: cached in the zoo for a zoo model, sampled now
    (by ``model`` when given, else the spec's model) for a folder."""
    if is_zoo(spec) and snapshot_step(spec) is None:
        return zoo.generated(zoo_name(spec), n, sampler=sampler, steps=steps, seed=seed, device=device,
                             progress=progress)
    model = model if model is not None else load_model(spec, device=device)
    return sampling.sample(model, n, sampler, steps, torch.Generator().manual_seed(seed), progress)


def generator_images(spec, n: int, shape: tuple[int, int, int] | None = None, seed: int = 0,
                     progress: bool = True) -> torch.Tensor:
    """Images from another generator, for attribution: ``zoo:NAME`` (a diffusion model sampled by
    DDIM, 50 steps, or a β-VAE from its prior; cached) or a folder of images it made.
    The first ``n`` are returned; with ``shape`` they must match a model's [C, H, W]."""
    if is_zoo(spec):
        images = zoo.generated(zoo_name(spec), n, sampler="ddim", seed=seed, progress=progress)
    else:
        images = folder_images(spec, shape, resize=False)
    if shape is not None and tuple(images.shape[1:]) != tuple(shape):
        raise DataError(f"Generator {spec!r} makes images of shape {tuple(images.shape[1:])}, the model takes "
                        f"{tuple(shape)}: give a generator (or a folder of its images) of that shape.")
    if len(images) < n:
        raise DataError(f"Generator {spec!r} gave {len(images)} images; {n} are needed.")
    return images[:n]
