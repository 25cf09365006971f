"""Trajectory features (Floros, Moosavi-Dezfooli & Dragotti, NeurIPS 2025, "Tracing the Roots").

An image is described by how the model treats it along the whole diffusion process. For each
time step t of a chosen set, with a seeded noise ε_t (fresh per t):

    x_t      = √ᾱ_t x_0 + √(1 − ᾱ_t) ε_t
    L_t      = ‖ε̂_θ(x_t, t) − ε_t‖²                 ("loss")
    G^x_t    = ‖∇_{x_0} L_t‖²                        ("grad_x", the gradient w.r.t. the image)
    G^θ_t    = ‖∇_θ L_t‖²  (one scalar over all parameters, per image)   ("grad_theta")

Cost per image and time step: ``loss`` 1 forward query; ``grad_x`` adds 1 backward pass
through the input (it shares the forward); ``grad_theta`` 1 forward + 1 per-sample backward
through the parameters (``torch.func.vmap``: the slowest, ~10x a forward). Forward queries go
through the model's counter; backward passes are counted in ``FeatureSet.backward``.

ε_t is one noise per t shared by every image (common random numbers: ``noise_at``), seeded by
(seed, t) alone, so a feature depends on neither device, batch size, the image's position, the
other images nor which other time steps are asked for.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .models import DiffusionModel
from .noise import seeded_generator

KINDS = ("loss", "grad_x", "grad_theta")


@dataclass
class FeatureSet:
    """Features of N images at time steps ``ts``: ``values[kind]`` is an [N, len(ts)] array."""

    ts: list[int]
    values: dict[str, np.ndarray]
    forward: int = 0            # forward queries (images x time steps), counted by the model
    backward: int = 0           # backward passes (input or parameter gradients)
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.values.values())))

    def matrix(self, kinds: Sequence[str] | None = None, ts: Iterable[int] | None = None,
               log: bool = True) -> np.ndarray:
        """[N, F]: the chosen kinds at the chosen time steps side by side (default: all of both).

        ``log`` takes log(·) of each value first: losses and squared gradient norms are positive
        and heavy-tailed over t (they span orders of magnitude from t = 0 to T), and a linear
        probe on standardised logs sees relative, not absolute, differences.
        """
        kinds = list(self.values) if kinds is None else list(kinds)
        cols = list(range(len(self.ts))) if ts is None else [self.ts.index(int(t)) for t in ts]
        blocks = [self.values[k][:, cols] for k in kinds]
        x = np.concatenate(blocks, axis=1)
        return np.log(np.maximum(x, 1e-12)) if log else x

    def subset(self, index) -> FeatureSet:
        """The features of some images (a slice, a boolean mask or indices)."""
        return FeatureSet(self.ts, {k: v[index] for k, v in self.values.items()}, meta=dict(self.meta))

    @staticmethod
    def concat(parts: Sequence[FeatureSet]) -> FeatureSet:
        """Stack the images of several FeatureSets computed at the same time steps."""
        ts = parts[0].ts
        if any(p.ts != ts for p in parts):
            raise ValueError("FeatureSets at different time steps cannot be stacked.")
        kinds = list(parts[0].values)
        return FeatureSet(ts, {k: np.concatenate([p.values[k] for p in parts]) for k in kinds},
                          forward=sum(p.forward for p in parts), backward=sum(p.backward for p in parts),
                          seconds=sum(p.seconds for p in parts))


def noise_at(t: int, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """ε_t at time step t: ONE seeded noise shared by every image ([N, C, H, W], CPU), drawn from
    a generator seeded by (seed, t) alone. Common random numbers: two images are compared under
    the same noise, so a feature's difference is the images', not the noises' (with 32
    development images per class, independent noises per image cost chapter 04's origin probe
    0.67 → 0.50 balanced accuracy, measured). It depends on neither the image's position, the
    chunking, nor which other time steps are asked."""
    gen = seeded_generator("features", int(seed), int(t))
    return torch.randn(tuple(images.shape[1:]), generator=gen).expand(len(images), *images.shape[1:]).contiguous()


def stride(step: int, start: int = 0, stop: int = 1000) -> list[int]:
    """Time steps start, start + step, ... below stop (a uniform stride over a window)."""
    return list(range(start, stop, step))


def _pairs(n: int, ts: Sequence[int], batch_size: int):
    """Chunks of (time-step positions, image slice) holding about ``batch_size`` pairs each:
    with small images one forward pass carries several time steps (batching over t)."""
    nb = min(n, batch_size)
    tb = max(1, batch_size // max(nb, 1))
    for i in range(0, n, nb):
        for j in range(0, len(ts), tb):
            yield list(range(j, min(j + tb, len(ts)))), slice(i, min(i + nb, n))


def trajectory_features(model: DiffusionModel, images: torch.Tensor, ts: Iterable[int],
                        kinds: Sequence[str] = ("loss", "grad_x"), seed: int = 0,
                        batch_size: int | None = None, theta_chunk: int = 32,
                        progress: bool = True, desc: str = "features") -> FeatureSet:
    """L_t, ‖∇_x L_t‖² and/or ‖∇_θ L_t‖² of every image at every t in ``ts``.

    ``images`` [N, C, H, W] in [-1, 1]; ``kinds`` a subset of ``KINDS``. Images and time steps
    are batched together (about ``batch_size`` (image, t) pairs per pass). Cost per image and
    t: one forward query, plus one backward pass for each gradient kind asked.
    """
    kinds = list(kinds)
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}; got {kinds}.")
    ts = [int(t) for t in ts]
    if not ts:
        raise ValueError("No time steps given.")
    model.check_images(images)
    n, device = len(images), model.device
    bs = batch_size or model.batch_size
    x0_all = images.float()
    out = {k: np.zeros((n, len(ts))) for k in kinds}
    q0, backward, t_start = model.queries, 0, time.perf_counter()
    need_x, need_theta = "grad_x" in kinds, "grad_theta" in kinds
    chunks = list(_pairs(n, ts, bs))
    for cols, rows in tqdm(chunks, desc=desc, disable=not progress, mininterval=2):
        x0 = x0_all[rows]
        m = len(x0)
        # ε_t shared by every image (independent of the chunking); drawn per chunk rather than
        # kept for every t (that would hold len(ts) x N images)
        eps = torch.cat([noise_at(ts[c], x0, seed) for c in cols])
        tt = torch.tensor([ts[c] for c in cols]).repeat_interleave(m)
        x0_rep = x0.repeat(len(cols), 1, 1, 1).to(device).requires_grad_(need_x)
        eps_d = eps.to(device)
        # x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε_t, kept differentiable in x_0 for ∇_x
        x_t = model.q_sample(x0_rep, tt, eps_d)
        if "loss" in kinds or need_x:
            eps_hat = model.eps(x_t, tt, batch_size=len(x_t), grad=need_x)
            per = (eps_hat - eps_d).pow(2).flatten(1).sum(1)  # L_t per (image, t)
            if need_x:
                # one backward for the whole chunk: images are independent (GroupNorm, no
                # batch statistics), so the gradient of the sum holds each image's own gradient
                (gx,) = torch.autograd.grad(per.sum(), x0_rep)
                gx2 = gx.pow(2).flatten(1).sum(1)
                backward += len(x_t)
            if "loss" in kinds:
                out["loss"][rows, cols[0]:cols[-1] + 1] = per.detach().double().cpu().view(len(cols), m).T.numpy()
            if need_x:
                out["grad_x"][rows, cols[0]:cols[-1] + 1] = gx2.double().cpu().view(len(cols), m).T.numpy()
        if need_theta:
            g2 = model.per_sample_param_grad_sq(x_t.detach(), tt, eps_d, theta_chunk)
            out["grad_theta"][rows, cols[0]:cols[-1] + 1] = g2.double().cpu().view(len(cols), m).T.numpy()
            backward += len(x_t)
    return FeatureSet(ts, out, forward=model.queries - q0, backward=backward,
                      seconds=time.perf_counter() - t_start, meta={"seed": seed, "kinds": kinds})


def group_features(model: DiffusionModel, groups: dict[str, tuple[torch.Tensor, torch.Tensor]], ts: Sequence[int],
                   kinds: Sequence[str] = ("loss", "grad_x"), theta_ts: Sequence[int] = (),
                   theta_groups: Sequence[str] = (), seed: int = 0,
                   progress: bool = True) -> tuple[dict[str, tuple[FeatureSet, FeatureSet]], dict]:
    """Features of named image groups, each a (development, evaluation) pair of image sets.

    ``kinds`` at every t of ``ts``; for the groups in ``theta_groups`` also ``grad_theta`` at the
    steps ``theta_ts`` (a subset of ``ts``; NaN at the others: the parameter gradient is the
    costly kind). Returns {group: (development FeatureSet, evaluation FeatureSet)} and the cost:
    forward queries, backward passes and seconds in all, images, and per image on average.
    """
    ts = [int(t) for t in ts]
    feats, cost = {}, {"forward": 0, "backward": 0, "seconds": 0.0, "images": 0}
    for name, (dev, ev) in groups.items():
        images = torch.cat([dev, ev])
        f = trajectory_features(model, images, ts, kinds=kinds, seed=seed, desc=name, progress=progress)
        if name in theta_groups and theta_ts:
            g = trajectory_features(model, images, theta_ts, kinds=("grad_theta",), seed=seed, desc=f"{name} ∇θ",
                                    progress=progress)
            f.values["grad_theta"] = np.full((len(images), len(ts)), np.nan)
            f.values["grad_theta"][:, [ts.index(int(t)) for t in theta_ts]] = g.values["grad_theta"]
            f.forward, f.backward, f.seconds = f.forward + g.forward, f.backward + g.backward, f.seconds + g.seconds
        feats[name] = (f.subset(slice(0, len(dev))), f.subset(slice(len(dev), None)))
        for k in ("forward", "backward", "seconds"):
            cost[k] += getattr(f, k)
        cost["images"] += len(images)
    cost["per_image"] = {k: cost[k] / max(cost["images"], 1) for k in ("forward", "backward")}
    return feats, cost
