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
from diffusers import UNet2DModel

from .data import Split, make_split
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
class Recipe:
    """Everything that determines a victim."""

    name: str
    description: str
    dataset: str = "digits"
    n_members: int = 256
    split_seed: int = 0
    unet: dict = field(default_factory=small_unet_config)
    train: TrainConfig = field(default_factory=TrainConfig)

    def key(self) -> str:
        blob = json.dumps({"format": ZOO_FORMAT, "dataset": self.dataset, "n_members": self.n_members,
                           "split_seed": self.split_seed, "unet": self.unet, "train": self.train.to_dict(),
                           "torch": torch.__version__.split("+")[0]}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def make_split(self) -> Split:
        return make_split(self.dataset, n_members=self.n_members, seed=self.split_seed)


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
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


def zoo_dir() -> Path:
    """The cache folder: ``$MIA_ZOO_DIR`` or ``~/.cache/mia-book/zoo``."""
    return Path(os.environ.get("MIA_ZOO_DIR") or Path.home() / ".cache" / "mia-book" / "zoo")


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"No zoo victim {name!r}; the zoo has {sorted(RECIPES)}.")
    return RECIPES[name]


def folder_of(recipe: Recipe) -> Path:
    return zoo_dir() / f"{recipe.name}-{recipe.key()}"


def is_cached(recipe: Recipe) -> bool:
    return (folder_of(recipe) / "DONE").is_file()


def build(recipe: Recipe | str, force: bool = False, progress: bool = True, device: str = "auto") -> Path:
    """Train a victim into its cache folder (or return the folder when it is cached)."""
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    final = folder_of(recipe)
    if is_cached(recipe) and not force:
        return final
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    split = recipe.make_split()
    split.save(tmp / "split.json")
    torch.manual_seed(recipe.train.seed)  # the UNet's initial weights
    model = DiffusionModel(UNet2DModel(**recipe.unet), default_scheduler(), device=device)
    members = split.images("members")
    t0 = time.perf_counter()
    train_ddpm(model, members, recipe.train, out_dir=tmp, progress=progress)
    model.save(tmp)
    info = {"name": recipe.name, "key": recipe.key(), "description": recipe.description,
            "recipe": {**asdict(recipe), "train": recipe.train.to_dict()},
            "parameters": model.num_parameters, "train_seconds": round(time.perf_counter() - t0, 1),
            "torch": torch.__version__, "device": str(model.device)}
    (tmp / "zoo.json").write_text(json.dumps(info, indent=1))
    (tmp / "DONE").write_text("")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


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
