"""The zoo's recipes: every model of the embedded default, by name.

A recipe (data split + architecture + training budget + seed) determines a model; its cache
key is a hash of the recipe, so changing any ingredient trains a new model and never reuses a
stale one. Recipes know nothing of the cache; ``cache.build`` trains them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch

from ..data import Split, make_split
from ..latent import VAETrainConfig, vae_config
from ..models import small_unet_config
from ..train import TrainConfig


class ZooError(ValueError):
    """A zoo name that does not exist; the message lists the names that do."""


ZOO_FORMAT = 1  # bump when the folder layout changes: every key changes with it


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


def get_recipe(name: str) -> Recipe | VAERecipe:
    """The recipe of a zoo name; a clear error listing the zoo's names otherwise."""
    if name not in RECIPES:
        raise ZooError(f"No zoo model {name!r}; the zoo has {', '.join(sorted(RECIPES))}.")
    return RECIPES[name]
