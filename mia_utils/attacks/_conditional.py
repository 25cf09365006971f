"""What the text-conditional attacks share: a bound model checked, and paired ε̂ with and
without the caption on the same seeded noisy latents."""

from __future__ import annotations

import torch

from .. import checks
from ..noise import draw, generators
from ..text2img import Conditioned


def bound(model):
    """``model`` if it is a text-conditional model bound to captions (``model.bind(captions)``)."""

    if not isinstance(model, Conditioned):
        raise TypeError("This attack compares ε̂ with and without the caption: give a text-conditional model bound "
                        "to the images' captions (target.bind(captions)).")
    if model.guidance != 1.0:
        raise ValueError(f"Bind the captions at guidance 1 (the plain conditional ε̂), not {model.guidance:g}.")
    return model


def ts_of(model, ts) -> list[int]:
    ts = [ts] if isinstance(ts, int) else list(ts)
    if not ts:
        raise ValueError("ts is empty: give at least one time step.")
    return [model.check_t(t, "ts") for t in ts]


def paired_eps(model, x0: torch.Tensor, ts: list[int], n_noise: int, seed: int, salt: str, batch_size):
    """For each (t, k): (ε, ε̂(x_t, t, c), ε̂(x_t, t, ∅)) with x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε and
    ε the next draw of the image's own generator (seeded by ``seed``, ``salt``, its content).
    Cost: 2 queries per image per (t, k)."""
    n_noise = checks.positive_int("n_noise", n_noise)
    batch_size = checks.batch_size(batch_size)
    gens = generators(x0, seed, salt=salt)
    for t in ts:
        for _ in range(n_noise):
            eps = draw(gens, tuple(x0.shape[1:]))
            x_t = model.q_sample(x0, t, eps)
            yield (eps.double(), model.eps(x_t, t, batch_size=batch_size).cpu().double(),
                   model.eps(x_t, t, batch_size=batch_size, null=True).cpu().double())
