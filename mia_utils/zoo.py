"""The victim zoo: named, cached, reproducible victims of the embedded default.

A victim is a recipe (data split + UNet architecture + training budget + seed). Its cache
folder is keyed by a hash of the recipe, so changing any ingredient trains a new victim and
never reuses a stale one. Each folder is an ordinary diffusers checkpoint (``unet/``,
``scheduler/``) plus ``split.json`` (the manifest), ``train_log.json`` and ``snapshots/``:
anything that loads a diffusers folder loads a zoo victim.

    python -m mia_utils.zoo build digits-ddpm   # train (or find) a victim, with a progress bar
    python -m mia_utils.zoo list                # recipes and whether they are cached

The cache lives in ``$MIA_ZOO_DIR`` (default ``~/.cache/mia-book/zoo``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DModel

from .data import Split, make_split
from .latent import VAETrainConfig, vae_config
from .models import DiffusionModel, default_scheduler
from .train import TrainConfig, train_ddpm

ZOO_FORMAT = 1  # bump when the folder layout changes: every key changes with it


def small_unet_config(sample_size: int = 8, channels: int = 1,
                      block_out_channels: tuple[int, ...] = (32, 64), layers_per_block: int = 1,
                      attention: bool = False) -> dict:
    """A UNet2DModel config for small images: one down/up block per width, optional attention."""
    n = len(block_out_channels)
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return {
        "sample_size": sample_size, "in_channels": channels, "out_channels": channels,
        "block_out_channels": list(block_out_channels), "layers_per_block": layers_per_block,
        "down_block_types": down, "up_block_types": up,
        "norm_num_groups": min(32, block_out_channels[0]),
    }


@dataclass(frozen=True)
class _SplitRecipe:
    """What every zoo model has: a name, and the split of an embedded data set it learns from."""

    name: str
    description: str
    dataset: str = "digits"
    n_members: int = 256
    split_seed: int = 0
    n_nonmembers: int | None = None  # None: as many as members

    def make_split(self) -> Split:
        return make_split(self.dataset, n_members=self.n_members, n_nonmembers=self.n_nonmembers,
                          seed=self.split_seed)


@dataclass(frozen=True)
class Recipe(_SplitRecipe):
    """Everything that determines a victim (a diffusion model)."""

    unet: dict = field(default_factory=small_unet_config)
    train: TrainConfig = field(default_factory=TrainConfig)
    part: str = "members"  # which part of the split it is trained on
    init: str | None = None  # fine-tuning: the zoo recipe whose weights it starts from
    vae: str | None = None  # latent diffusion: the zoo β-VAE whose latents it is trained on

    def key(self) -> str:
        fields = {"unet": self.unet}
        # fields at their defaults stay out of the key, keeping the first recipes' keys (and caches)
        for name in ("part", "n_nonmembers", "init", "vae"):
            value = getattr(self, name)
            if value != Recipe.__dataclass_fields__[name].default:
                fields[name] = value if name in ("part", "n_nonmembers") else f"{value}-{get_recipe(value).key()}"
        return _key(self, fields)


@dataclass(frozen=True)
class VAERecipe(_SplitRecipe):
    """A β-VAE of the zoo: a split part it is trained on, an AutoencoderKL config, a budget."""

    part: str = "public"
    vae: dict = field(default_factory=vae_config)
    train: VAETrainConfig = field(default_factory=VAETrainConfig)

    def key(self) -> str:
        return _key(self, {"kind": "vae", "part": self.part, "vae": self.vae})


def _key(recipe, fields: dict) -> str:
    blob = json.dumps({"format": ZOO_FORMAT, "dataset": recipe.dataset, "n_members": recipe.n_members,
                       "split_seed": recipe.split_seed, "train": recipe.train.to_dict(),
                       "torch": torch.__version__.split("+")[0], **fields}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


RECIPES: dict[str, Recipe | VAERecipe] = {}


def register(recipe: Recipe | VAERecipe) -> Recipe | VAERecipe:
    RECIPES[recipe.name] = recipe
    return recipe


register(Recipe(
    name="digits-ddpm",
    description="The embedded default victim: a 0.65M-parameter UNet2DModel (widths 32, 64, no attention) "
                "trained 2,500 steps at batch 64 on 256 member digits (8x8, grey).",
    train=TrainConfig(steps=2500, batch_size=64, lr=1e-3, seed=0,
                      snapshot_steps=(250, 500, 1000, 1500, 2000)),
))


# The same recipe on other member-set sizes (chapter 02: how leakage depends on N).
for _n in (100, 500):
    register(Recipe(
        name=f"digits-ddpm-m{_n}",
        description=f"As digits-ddpm (same UNet, 2,500 steps at batch 64, seed 0) but trained on {_n} members.",
        n_members=_n,
        train=TrainConfig(steps=2500, batch_size=64, lr=1e-3, seed=0),
    ))


# Chapter 04's other generators, trained on the same 256 members as digits-ddpm: another
# diffusion model (another seed and architecture) and a non-diffusion one (a VAE).
register(Recipe(
    name="digits-ddpm-b",
    description="A second diffusion model on digits-ddpm's members: another architecture (self-attention "
                "in the lowest down and up blocks) and another seed (1); 2,500 steps at batch 64.",
    unet=small_unet_config(attention=True),
    train=TrainConfig(steps=2500, batch_size=64, lr=1e-3, seed=1),
))
register(VAERecipe(
    name="digits-vae",
    description="A non-diffusion generator: a VAE (AutoencoderKL, beta 1, latent 2x4x4) trained on "
                "digits-ddpm's 256 members for 1,500 steps; samples decode z ~ N(0, I).",
    part="members",
    train=VAETrainConfig(beta=1.0, steps=1500, batch_size=64, lr=1e-3, seed=0),
))


# Chapter 06: a base model pre-trained on public digits, fine-tuned on a small private set.
# Both use one split: 50 private members, 200 non-members, the remaining 1,547 digits public.
_FT_SPLIT = {"n_members": 50, "n_nonmembers": 200, "split_seed": 1}
register(Recipe(
    name="digits-base",
    description="The pre-trained base of chapter 06: digits-ddpm's UNet trained 2,500 steps at batch 64 on the "
                "1,547 public digits of a 50-member split (seed 1); it never sees the private members.",
    part="public", **_FT_SPLIT,
    train=TrainConfig(steps=2500, batch_size=64, lr=1e-3, seed=0),
))
register(Recipe(
    name="digits-ft",
    description="digits-base fine-tuned on 50 private members: 500 steps at batch 32, lr 2e-4 "
                "(snapshots at 100, 200, 300 and 400 steps).",
    init="digits-base", **_FT_SPLIT,
    train=TrainConfig(steps=500, batch_size=32, lr=2e-4, warmup_steps=20, seed=0,
                      snapshot_steps=(100, 200, 300, 400)),
))


# Chapter 05: latent diffusion behind a β-VAE. Each β-VAE is trained on the public digits of
# digits-ddpm's split; each latent DDPM on the latents of digits-ddpm's 256 members, with the
# pixel victim's budget (2,500 steps at batch 64, seed 0) on a UNet sized for the 2x4x4 latent.
LDM_BETAS = (1e-4, 1e-2, 1e-1, 1.0)


def ldm_name(beta: float) -> str:
    """The zoo name of the latent diffusion model with first-stage β (e.g. digits-ldm-beta0.01)."""
    return f"digits-ldm-beta{beta:g}"


for _beta in LDM_BETAS:
    register(VAERecipe(
        name=f"digits-vae-beta{_beta:g}",
        description=f"A β-VAE first stage (beta {_beta:g}, latent 2x4x4) trained 1,000 steps on the public digits.",
        part="public",
        train=VAETrainConfig(beta=_beta, steps=1000, batch_size=64, lr=1e-3, seed=0),
    ))
    register(Recipe(
        name=ldm_name(_beta),
        description=f"Latent DDPM on digits-ddpm's members encoded by digits-vae-beta{_beta:g} (posterior "
                    "means, unit variance): 2,500 steps at batch 64 like the pixel victim.",
        vae=f"digits-vae-beta{_beta:g}",
        unet=small_unet_config(sample_size=4, channels=2),
        train=TrainConfig(steps=2500, batch_size=64, lr=1e-3, seed=0),
    ))


def zoo_dir() -> Path:
    """The cache folder: ``$MIA_ZOO_DIR`` or ``~/.cache/mia-book/zoo``."""
    return Path(os.environ.get("MIA_ZOO_DIR") or Path.home() / ".cache" / "mia-book" / "zoo")


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"No zoo victim {name!r}; the zoo has {sorted(RECIPES)}.")
    return RECIPES[name]


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
            from .models import load_model

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
    from .latent import LatentCodec, latent_scale, train_vae

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
    from .latent import LatentCodec

    return LatentCodec.load(path_of(name), device=device)


def generated(source: str, n: int, sampler: str = "ddim", steps: int | None = None, seed: int = 0,
              device: str = "auto", progress: bool = True) -> torch.Tensor:
    """n images generated by a zoo model: a diffusion victim by ``sampler`` ("ddpm": ancestral,
    ``steps`` default T; "ddim": ``steps`` default 50), or a β-VAE from its prior.

    Cached beside the model (``generated/*.safetensors``), so chapters share one synthetic set.
    """
    from safetensors.torch import load_file, save_file

    name = source.removeprefix("zoo:")
    recipe = get_recipe(name)
    sampler = "prior" if isinstance(recipe, VAERecipe) else sampler
    if sampler not in ("ddpm", "ddim", "prior"):
        raise ValueError(f"sampler must be 'ddpm' or 'ddim', not {sampler!r}.")
    f = path_of(name) / "generated" / f"{sampler}-n{n}-steps{steps}-seed{seed}.safetensors"
    if f.is_file():
        return load_file(f)["images"]
    gen = torch.Generator().manual_seed(seed)
    if sampler == "prior":
        images = codec(name).sample(n, generator=gen)
    else:
        from . import sampling
        from .models import load_model

        model = load_model(path_of(name), device=device)
        if sampler == "ddpm":
            images = sampling.ddpm_sample(model, n, generator=gen, num_inference_steps=steps, progress=progress)
        else:
            images = sampling.ddim_sample(model, n, num_inference_steps=steps or 50, generator=gen,
                                          progress=progress)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(f".tmp{os.getpid()}")
    save_file({"images": images.contiguous().cpu()}, tmp)
    tmp.rename(f)
    return images


def generated_images(spec: str, n: int, shape: tuple[int, int, int] | None = None, seed: int = 0,
                     progress: bool = True) -> torch.Tensor:
    """Images from another generator, for attribution: ``zoo:NAME`` (a diffusion model sampled by
    DDIM, 50 steps, or a β-VAE sampled from its prior; cached) or a folder of images it made.
    The first ``n`` are returned; with ``shape`` they must match a model's [C, H, W]."""
    from .data import DataError, _folder_images

    if spec.startswith("zoo:"):
        images = generated(spec, n, sampler="ddim", seed=seed, progress=progress)
    else:
        images = _folder_images(spec, shape, resize=False)
    if shape is not None and tuple(images.shape[1:]) != tuple(shape):
        raise DataError(f"Generator {spec!r} makes images of shape {tuple(images.shape[1:])}, the model takes "
                        f"{tuple(shape)}: give a generator (or a folder of its images) of that shape.")
    if len(images) < n:
        raise DataError(f"Generator {spec!r} gave {len(images)} images; {n} are needed.")
    return images[:n]


def path_of(name: str) -> Path:
    """The cached folder of a zoo victim, training it first when it is not cached."""
    return build(get_recipe(name))


def split_of(name: str) -> Split:
    """The member / non-member / public split a zoo victim was trained with."""
    return Split.load(path_of(name) / "split.json")


def info(name: str) -> dict:
    """The victim's zoo.json: recipe, parameter count, training seconds."""
    return json.loads((path_of(name) / "zoo.json").read_text())


def training_log(source: str | Path) -> list[dict] | None:
    """The training log (step, loss, seconds) of a ``zoo:`` victim or a folder; None if it has none."""
    source = str(source)
    folder = path_of(source[4:]) if source.startswith("zoo:") else Path(source)
    f = folder / "train_log.json"
    return json.loads(f.read_text())["log"] if f.is_file() else None


def snapshots(name: str) -> dict[int, Path]:
    """Training step -> folder of each snapshot of a zoo victim (the final model included)."""
    recipe = get_recipe(name)
    root = path_of(name)
    out = {int(p.name.split("_")[1]): p for p in sorted((root / "snapshots").glob("step_*"))}
    out[recipe.train.steps] = root
    return dict(sorted(out.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mia_utils.zoo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train the named victims (all when none is named) unless cached")
    b.add_argument("names", nargs="*")
    b.add_argument("--force", action="store_true", help="retrain even when cached")
    b.add_argument("--device", default="auto")
    sub.add_parser("list", help="the recipes and their cache state")
    p = sub.add_parser("path", help="print a victim's folder (training it if needed)")
    p.add_argument("name")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        for name in args.names or list(RECIPES):
            t0 = time.perf_counter()
            folder = build(name, force=args.force, device=args.device)
            print(f"{name}: {folder} ({time.perf_counter() - t0:.1f} s)")
    elif args.cmd == "list":
        for name, r in RECIPES.items():
            state = "cached" if is_cached(r) else "not built"
            print(f"{name:16s} {state:10s} {folder_of(r)}\n    {r.description}")
    else:
        print(path_of(args.name))


if __name__ == "__main__":
    main()
