"""The zoo's recipes: every model of the embedded default, by name.

A recipe (data split + architecture + training budget + seed) determines a model; its cache
key is a hash of the recipe, so changing any ingredient trains a new model and never reuses a
stale one. Recipes know nothing of the cache; ``cache.build`` trains them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import torch

from ..data import Split, make_split
from ..latent import VAETrainConfig, vae_config
from ..models import small_unet_config
from ..privacy import DPConfig
from ..train import TrainConfig


class ZooError(ValueError):
    """A zoo name that does not exist; the message lists the names that do."""


# Bump when the folder layout or the way models are trained changes: every key changes with it.
# 2: every model trains on one intra-op thread (TRAIN_THREADS), whatever the machine's cores.
ZOO_FORMAT = 2
TRAIN_THREADS = 1


@dataclass(frozen=True)
class _SplitRecipe:
    """What every zoo model has: a name, and the split of an embedded data set it learns from."""

    name: str
    description: str
    dataset: str = "digits"
    n_members: int = 256
    split_seed: int = 0
    n_nonmembers: int | None = None  # None: as many as members
    calibration_fraction: float = 1 / 3  # of members and of non-members, for choosing settings

    def make_split(self) -> Split:
        return make_split(self.dataset, n_members=self.n_members, n_nonmembers=self.n_nonmembers,
                          calibration_fraction=self.calibration_fraction, seed=self.split_seed)


@dataclass(frozen=True)
class Recipe(_SplitRecipe):
    """Everything that determines a victim (a diffusion model)."""

    unet: dict = field(default_factory=small_unet_config)
    train: TrainConfig = field(default_factory=TrainConfig)
    part: str = "members"  # which part of the split it is trained on
    init: str | None = None  # fine-tuning: the zoo recipe whose weights it starts from
    vae: str | None = None  # latent diffusion: the zoo β-VAE whose latents it is trained on
    # a reference (shadow) model: trained on reference half ``reference`` of members + non-members
    # (``data.reference_half``) instead of ``part``
    reference: int | None = None
    # DP-SGD (privacy.train_dp) instead of train.train_ddpm; ``train`` then names only the seed of
    # the initial weights and the budget it shares with the others (chapter 10)
    dp: DPConfig | None = None
    # canaries for a one-run audit (privacy module docstring): this many public images, each added
    # to the training set with probability 1/2 (privacy.canaries); canaries.json lists them
    canaries: int = 0

    def key(self) -> str:
        fields = {"unet": self.unet}
        # fields at their defaults stay out of the key, keeping the first recipes' keys (and caches)
        for name in ("part", "n_nonmembers", "init", "vae", "calibration_fraction", "reference", "dp", "canaries"):
            value = getattr(self, name)
            if value != Recipe.__dataclass_fields__[name].default:
                fields[name] = (f"{value}-{get_recipe(value).key()}" if name in ("init", "vae")
                                else asdict(value) if name == "dp" else value)
        return _key(self, fields)


@dataclass(frozen=True)
class VAERecipe(_SplitRecipe):
    """A β-VAE of the zoo: a split part it is trained on, an AutoencoderKL config, a budget."""

    part: str = "public"
    vae: dict = field(default_factory=vae_config)
    train: VAETrainConfig = field(default_factory=VAETrainConfig)

    def key(self) -> str:
        return _key(self, {"kind": "vae", "part": self.part, "vae": self.vae})


@dataclass(frozen=True)
class TextToImageRecipe(_SplitRecipe):
    """A tiny Stable-Diffusion-shaped model of the zoo (``text2img``), saved as a
    ``StableDiffusionPipeline`` folder; trained on the captioned images of a split part.

    A base (``init`` None) trains its β-VAE first stage on the public images (``vae``,
    ``vae_train``) and builds its tokenizer and text encoder from the data set's caption words;
    a fine-tune starts from the base ``init``: all of the UNet (``lora_rank`` None) or a LoRA
    adapter of rank ``lora_rank`` (the folder then holds the adapter only).
    """

    part: str = "public"
    unet: dict = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    init: str | None = None
    lora_rank: int | None = None
    uncond_prob: float = 0.1  # caption dropout: the unconditional ε̂ that guidance needs
    vae: dict = field(default_factory=dict)
    vae_train: VAETrainConfig = field(default_factory=VAETrainConfig)

    def key(self) -> str:
        fields = {"kind": "text-to-image", "part": self.part, "unet": self.unet, "lora_rank": self.lora_rank,
                  "uncond_prob": self.uncond_prob, "n_nonmembers": self.n_nonmembers}
        if self.init is None:
            fields.update(vae=self.vae, vae_train=self.vae_train.to_dict())
        else:
            fields["init"] = f"{self.init}-{get_recipe(self.init).key()}"
        return _key(self, fields)


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


# The same recipe on a larger member set (chapter 02: how leakage depends on N; chapter 04: a second
# diffusion model to attribute generations to). The split's seed is digits-ddpm's, so its 500 members
# are digits-ddpm's 256 and 244 more.
for _n in (500,):
    register(Recipe(
        name=f"digits-ddpm-m{_n}",
        description=f"As digits-ddpm (same UNet, 2,500 steps at batch 64, seed 0) but trained on {_n} members.",
        n_members=_n,
        train=TrainConfig(steps=2500, batch_size=64, lr=1e-3, seed=0),
    ))


# Chapter 04's other generators are models the zoo trains anyway: digits-ddpm-m500 above (the same
# architecture and seed on a superset of digits-ddpm's members) and the β = 1 VAE of chapter 05. A
# model of its own (another architecture and seed on the same members, 2,500 steps) cost the cold
# zoo 4 core-minutes on the 2026-12-02 machine, 8 on the slower one of the third session (issue 14).


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


# Chapter 05: latent diffusion behind a β-VAE. Each β-VAE is trained on the public images of
# its victim's split; each latent DDPM on the latents of that victim's members, with the pixel
# victim's budget and seed on a UNet sized for the latent.
LDM_BETAS = (1e-4, 1e-2, 1.0)
FASHION_LDM_BETAS = (1e-4, 1e-2, 1.0)


def ldm_name(beta: float, dataset: str = "digits") -> str:
    """The zoo name of the latent diffusion model with first-stage β (e.g. digits-ldm-beta0.01)."""
    return f"{dataset}-ldm-beta{beta:g}"


def _register_ldms(dataset: str, betas: tuple[float, ...], vae: dict, vae_steps: int, victim: Recipe,
                   latent: str) -> None:
    for beta in betas:
        vae_name = f"{dataset}-vae-beta{beta:g}"
        split = {"dataset": dataset, "n_members": victim.n_members, "n_nonmembers": victim.n_nonmembers,
                 "split_seed": victim.split_seed}
        register(VAERecipe(
            name=vae_name, part="public", vae=vae, **split,
            description=f"A β-VAE first stage (beta {beta:g}, latent {latent}) trained {vae_steps:,} steps on "
                        f"the public images of {victim.name}'s split.",
            train=VAETrainConfig(beta=beta, steps=vae_steps, batch_size=64, lr=1e-3, seed=0),
        ))
        # The 4x4 latent UNet's step is overhead-bound (a fixed ~0.05 s at any small batch): twice the
        # pixel victim's batch for half its steps keeps its epochs (each member seen as often) in ~60 % of the time.
        steps, batch = victim.train.steps // 2, victim.train.batch_size * 2
        register(Recipe(
            name=ldm_name(beta, dataset), vae=vae_name, **split,
            description=f"Latent DDPM on {victim.name}'s members encoded by {vae_name} (posterior means, unit "
                        f"variance): {steps:,} steps at batch {batch}, the pixel victim's epochs (each member "
                        "seen as often).",
            unet=small_unet_config(sample_size=4, channels=vae["latent_channels"]),
            train=TrainConfig(steps=steps, batch_size=batch, lr=victim.train.lr, seed=0),
        ))


_register_ldms("digits", LDM_BETAS, vae_config(), 1000, RECIPES["digits-ddpm"], "2x4x4: 2-fold")


# Fashion-MNIST (chapters 02, 04, 05): the real data set beside the digits, 16x16 grey (see
# datasets.load_fashion_images); a 3-level UNet whose first level is narrow (16 channels), so that
# 4x the digits' pixels train at about the digits' cost per step. 128 members seen 625 times
# each (2,500 steps x 32 / 128), as the digits' 256 are; 512 non-members for tighter intervals.
register(Recipe(
    name="fashion-ddpm",
    dataset="fashion",
    n_members=128,
    n_nonmembers=512,
    description="The Fashion-MNIST victim: a 0.64M-parameter UNet2DModel (widths 16, 32, 64) trained 2,500 steps "
                "at batch 32 on 128 member garments (16x16, grey).",
    unet=small_unet_config(sample_size=16, block_out_channels=(16, 32, 64)),
    train=TrainConfig(steps=2500, batch_size=32, lr=1e-3, seed=0),
))
# its β-VAEs compress 16-fold (16x16 pixels into a 1x4x4 latent), the bottleneck chapter 05 tests
_register_ldms("fashion", FASHION_LDM_BETAS,
               vae_config(sample_size=16, latent_channels=1, block_out_channels=(16, 32, 32)), 500,
               RECIPES["fashion-ddpm"], "1x4x4: 16-fold")


# Chapter 09: reference-model attacks (LiRA, RMIA) in a regime that does not simply memorise. A
# population of 2,560 garments (1,280 members, 1,280 non-members, a fifth of each for calibration:
# 1,024 + 1,024 evaluated, so 0.1 % FPR is one false positive); the target is fashion-ddpm's UNet
# trained 1,500 steps at batch 32 (each member seen ~37 times, not 625); the references share its
# architecture and recipe, each on a half of the population drawn in complementary pairs
# (Split.reference_half) with its own seed. Training cost is linear in the batch here (1.5 ms per
# image-step, measured), so the budget is counted in image-steps: the target and 8 references
# trained in 431 and 453 s on 2 cores, two at a time (64-88 s each; 2026-12-02 and -07), 12.8 min
# on a machine 1.7x slower (issue 26 asks <= 12 min): 8 is the most the budget allows.
LIRA_REFERENCES = 8
_LIRA = {"dataset": "fashion", "n_members": 1280, "n_nonmembers": 1280, "calibration_fraction": 0.2,
         "unet": small_unet_config(sample_size=16, block_out_channels=(16, 32, 64))}


def _lira_train(seed: int) -> TrainConfig:
    return TrainConfig(steps=1500, batch_size=32, lr=1e-3, seed=seed)


register(Recipe(
    name="fashion-lira",
    description="Chapter 09's target: fashion-ddpm's UNet (widths 16, 32, 64) trained 1,500 steps at batch 32 on "
                "1,280 member garments of a 2,560-image population (each member seen ~37 times).",
    train=_lira_train(0), **_LIRA,
))


def reference_name(r: int, target: str = "fashion-lira") -> str:
    """The zoo name of reference model ``r`` of a target (fashion-lira-ref03)."""
    return f"{target}-ref{r:02d}"


for _r in range(LIRA_REFERENCES):
    register(Recipe(
        name=reference_name(_r),
        description=f"Reference model {_r} of fashion-lira: its architecture and recipe (seed {_r + 1}) on half of "
                    f"the population ({'a seeded half' if _r % 2 == 0 else 'the complement of reference ' + str(_r - 1)}"
                    f"); members.json lists its 1,280 training images.",
        reference=_r, train=_lira_train(_r + 1), **_LIRA,
    ))


# Chapter 07: a tiny text-to-image model on captioned digits ("a bold handwritten digit seven"):
# a base pre-trained on the public digits of chapter 06's split, fine-tuned on its 50 private
# members twice, all of the UNet and a LoRA adapter. Its first stage encodes 8x8 digits into
# 4x4x4 latents (SD's 4 channels); the UNet has cross-attention in its lower level.
_T2I_UNET = {"sample_size": 4, "in_channels": 4, "out_channels": 4, "block_out_channels": [32, 64],
             "layers_per_block": 1, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
             "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "cross_attention_dim": 32,
             "attention_head_dim": 8, "norm_num_groups": 32}
register(TextToImageRecipe(
    name="digits-t2i-base",
    description="A tiny text-to-image model (StableDiffusionPipeline: CLIP text encoder 2x32, AutoencoderKL "
                "8x8 -> 4x4x4, UNet2DConditionModel widths 32, 64 with cross-attention) pre-trained 1,200 steps at "
                "batch 64 on the 1,547 captioned public digits of chapter 06's split (10 % empty captions).",
    part="public", **_FT_SPLIT, unet=_T2I_UNET,
    train=TrainConfig(steps=1200, batch_size=64, lr=1e-3, seed=0),
    vae=vae_config(latent_channels=4, block_out_channels=(16, 32)),
    vae_train=VAETrainConfig(beta=1e-4, steps=600, batch_size=64, lr=1e-3, seed=0),
))
register(TextToImageRecipe(
    name="digits-t2i-full",
    description="digits-t2i-base fine-tuned (all of the UNet) on 50 captioned private members: 500 steps at "
                "batch 32, lr 2e-4 (snapshots at 100, 200, 300 and 400 steps).",
    part="members", init="digits-t2i-base", **_FT_SPLIT, unet=_T2I_UNET,
    train=TrainConfig(steps=500, batch_size=32, lr=2e-4, warmup_steps=20, seed=0, snapshot_steps=(100, 200, 300, 400)),
))
register(TextToImageRecipe(
    name="digits-t2i-lora",
    description="A rank-8 LoRA adapter of digits-t2i-base's attention projections, trained on the same 50 "
                "captioned private members: 500 steps at batch 32, lr 1e-3.",
    part="members", init="digits-t2i-base", lora_rank=8, **_FT_SPLIT, unet=_T2I_UNET,
    train=TrainConfig(steps=500, batch_size=32, lr=1e-3, warmup_steps=20, seed=0),
))


# Chapter 10: defenses on the default victim's recipe (digits-ddpm's split, UNet and batch), at a
# budget the cold zoo affords. The undefended model at matched cost is digits-ddpm's snapshot at
# 1,000 steps (its lr is constant after the warm-up, so the snapshot is a 1,000-step run), early
# stopping its snapshots at 250 and 500; the remedies train 1,000 steps at batch 64 as it does.
# DP-SGD costs more per step: each example's gradient (torch.func) with K = 2 draws is ~6x a normal
# step here (0.33-0.44 s against 0.058 s at batch 64, one thread, 2026-12-07), so the DP models take
# 500 steps at an expected batch of 64 (~3 min each) and the ε = ∞ control (same clipping, no noise)
# shows what the clipping and the shorter run cost by themselves. Each DP model's training set is the
# members plus about half of 256 public canaries (the one-run audit), the same canaries in each.
DEFENSE_STEPS = 1000
DP_STEPS = 500
DP_EPSILONS = (1.0, 10.0, 100.0)
N_CANARIES = 256


def dp_name(epsilon: float) -> str:
    """The zoo name of chapter 10's DP-SGD model at target ε (math.inf: the no-noise control)."""
    return "digits-dp-inf" if epsilon == float("inf") else f"digits-dp-eps{epsilon:g}"


def _remedy(name: str, description: str, unet: dict | None = None, **train) -> None:
    register(Recipe(name=name, description=description, unet=unet or small_unet_config(),
                    train=TrainConfig(steps=DEFENSE_STEPS, batch_size=64, lr=1e-3, seed=0, **train)))


_remedy("digits-aug", "digits-ddpm's recipe for 1,000 steps with data augmentation: each drawn digit shifted by up "
        "to 1 pixel each way (edges repeated).", shift=1)
_remedy("digits-wd", "digits-ddpm's recipe for 1,000 steps with AdamW weight decay 0.1 (10x diffusers' default).",
        weight_decay=0.1)
_remedy("digits-dropout", "digits-ddpm's recipe for 1,000 steps with dropout 0.1 in every ResNet block (DDPM's "
        "CIFAR-10 setting).", unet={**small_unet_config(), "dropout": 0.1})
for _eps in (float("inf"), *DP_EPSILONS):
    register(Recipe(
        name=dp_name(_eps),
        description=(f"DP-SGD on digits-ddpm's UNet: {DP_STEPS} steps, expected batch 64 (Poisson), K = 2 draws per "
                     "example, clip 1, " + ("no noise (the ε = ∞ control)" if _eps == float("inf") else
                                            f"noise for ε = {_eps:g} at δ = 1/(10N)") +
                     f"; members + ~half of {N_CANARIES} public canaries."),
        canaries=N_CANARIES,
        train=TrainConfig(steps=DP_STEPS, batch_size=64, lr=1e-3, seed=0),
        dp=DPConfig(steps=DP_STEPS, batch_size=64, lr=1e-3, max_grad_norm=1.0, multiplicity=2,
                    noise_multiplier=0.0 if _eps == float("inf") else None,
                    target_epsilon=None if _eps == float("inf") else _eps, seed=0),
    ))


DEFENSE_MODELS = ("digits-aug", "digits-wd", "digits-dropout", *(dp_name(e) for e in (float("inf"), *DP_EPSILONS)))


def get_recipe(name: str) -> Recipe | VAERecipe:
    """The recipe of a zoo name; a clear error listing the zoo's names otherwise."""
    if name not in RECIPES:
        raise ZooError(f"No zoo model {name!r}; the zoo has {', '.join(sorted(RECIPES))}.")
    return RECIPES[name]
