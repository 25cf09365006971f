"""The DDPM training loop shared by the zoo: ε-prediction loss, a step budget, snapshots.

L(θ) = E_{x_0, t, ε} ‖ε − ε̂_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖²  (Ho et al. 2020, eq. 14),
t uniform on {0, …, T−1}. Budgets are counted in optimiser steps, never seconds, so a run is
the same on any machine; every draw (batches, t, ε) comes from one seeded generator.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .models import DiffusionModel


@dataclass(frozen=True)
class TrainConfig:
    """How a victim is trained. ``snapshot_steps``: steps at which a copy is saved."""

    steps: int = 2500
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    ema_decay: float | None = None  # None: no EMA (the raw weights memorise fastest)
    seed: int = 0
    log_every: int = 25
    snapshot_steps: tuple[int, ...] = field(default_factory=tuple)
    # data augmentation (a remedy against memorisation, chapter 10): each drawn image shifted by up
    # to this many pixels in each direction, its edge pixels repeated (0: none)
    shift: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["snapshot_steps"] = list(self.snapshot_steps)
        if not self.shift:  # off by default and out of the dict: the zoo's keys from before it stay
            del d["shift"]
        return d


def shifted(x0: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Each image of ``x0`` [B, C, H, W] translated by (dy, dx), both uniform on {−shift, …, shift}
    and drawn from ``gen``; the pixels that enter are copies of the nearest edge pixel (no wrap
    around, no black border where the background is not black)."""
    if shift <= 0:
        return x0
    b, _, h, w = x0.shape
    padded = F.pad(x0, (shift, shift, shift, shift), mode="replicate")
    dy, dx = torch.randint(2 * shift + 1, (2, b), generator=gen).tolist()
    return torch.stack([padded[i, :, y:y + h, x:x + w] for i, (y, x) in enumerate(zip(dy, dx))])


def train_ddpm(model: DiffusionModel, images: torch.Tensor, config: TrainConfig = TrainConfig(),
               out_dir: str | Path | None = None, progress: bool = True,
               condition: torch.Tensor | None = None, uncond_prob: float = 0.0) -> list[dict]:
    """Train ``model.unet`` in place on ``images`` [N, C, H, W] in [-1, 1] (or latents).

    A text-conditional model trains on ``condition`` [N, L, D] (row i: the text encoder's
    hidden states of image i's caption), each replaced by the empty prompt's with probability
    ``uncond_prob`` (caption dropout: the unconditional ε̂ that classifier-free guidance needs).
    Only parameters with ``requires_grad`` train (a LoRA adapter, when one is attached).
    Returns the training log: one entry per ``log_every`` steps with the mean loss over them.
    With ``out_dir``, snapshots go to ``out_dir/snapshots/step_XXXXXX`` (diffusers folders) and
    the log to ``out_dir/train_log.json``. Training does not count as attack queries.
    """
    model.check_images(images)
    model.check_condition(condition, len(images))
    if model.prediction_type != "epsilon":
        raise ValueError(f"train_ddpm trains ε-prediction models; this one predicts {model.prediction_type!r}.")
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    unet, device = model.unet, model.device
    data = images.to(device, torch.float32)
    cond = None if condition is None else condition.to(device, torch.float32)
    blank = None if condition is None else model.blank_condition(1).to(device)
    T = model.num_train_timesteps
    opt = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=config.lr,
                            weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps)))
    ema = None
    if config.ema_decay is not None:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(unet.parameters(), decay=config.ema_decay)

    log, running, t0 = [], [], time.perf_counter()
    unet.train()
    bar = tqdm(range(1, config.steps + 1), desc="training", disable=not progress, mininterval=2)
    for step in bar:
        # 1. a batch of x_0, time steps t ~ U{0..T-1}, noise ε ~ N(0, I)
        idx = torch.randint(len(data), (config.batch_size,), generator=gen)
        x0 = data[idx.to(device)]
        if config.shift:  # augmentation draws only when asked: the models trained before it stay the same
            x0 = shifted(x0, config.shift, gen)
        t = torch.randint(T, (config.batch_size,), generator=gen).to(device)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        # 2. x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
        x_t = model.q_sample(x0, t, eps)
        c = None
        if cond is not None:  # the captions' states, each dropped to the empty prompt's with uncond_prob
            c = cond[idx.to(device)]
            drop = (torch.rand(config.batch_size, generator=gen) < uncond_prob).to(device)
            c = torch.where(drop[:, None, None], blank, c)
        # 3. ‖ε − ε̂(x_t, t, c)‖², one gradient step
        loss = F.mse_loss(model.forward(x_t, t, c), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            ema.step(unet.parameters())
        running.append(loss.item())
        if step % config.log_every == 0 or step == config.steps:
            entry = {"step": step, "loss": sum(running) / len(running),
                     "seconds": round(time.perf_counter() - t0, 2)}
            log.append(entry)
            running = []
            bar.set_postfix(loss=f"{entry['loss']:.4f}")
        if out_dir is not None and step in config.snapshot_steps:
            _save_snapshot(model, ema, Path(out_dir) / "snapshots" / f"step_{step:06d}")
    if ema is not None:
        ema.copy_to(unet.parameters())
    unet.eval()
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "train_log.json").write_text(json.dumps({"config": config.to_dict(), "log": log}, indent=1))
    return log


def _save_snapshot(model: DiffusionModel, ema, path: Path) -> None:
    if ema is None:
        model.save(path)
        return
    ema.store(model.unet.parameters())
    ema.copy_to(model.unet.parameters())
    model.save(path)
    ema.restore(model.unet.parameters())
