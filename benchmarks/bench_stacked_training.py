"""Benchmark: training K small UNets at once in one process (``torch.func``) against one at a time
(prints figures, asserts nothing).

    python benchmarks/bench_stacked_training.py [--k 4 8] [--batch 32] [--steps 10]

Issue 26 (reference models) needs many tiny models: the question is whether stacking them with
``torch.func.stack_module_state`` + ``vmap`` over one optimiser step (each model its own batch)
beats training them one after the other, each on one thread as the zoo does. Both run on one
intra-op thread (``zoo.recipes.TRAIN_THREADS``). Printed: seconds per optimiser step, per model,
and the speed-up of the stacked step (> 1: stacking is faster). On the 2026-12-02 machine the
stacked step was slower (speed-up 0.70-0.83 over three runs, K = 4 and 8, 16x16 and 8x8, batch 32): the zoo
keeps one-thread jobs side by side.
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import UNet2DModel
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from mia_utils.models import small_unet_config
from mia_utils.zoo.recipes import TRAIN_THREADS

CONFIGS = {
    "fashion 16x16 (16, 32, 64)": small_unet_config(sample_size=16, block_out_channels=(16, 32, 64)),
    "digits 8x8 (32, 64)": small_unet_config(sample_size=8),
}


def _batch(config: dict, batch: int, *lead: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shape = (*lead, batch, config["in_channels"], config["sample_size"], config["sample_size"])
    return torch.randn(shape), torch.randint(1000, (*lead, batch)), torch.randn(shape)


def single_step_seconds(config: dict, batch: int, steps: int) -> float:
    """Seconds per AdamW step of one UNet on the ε-prediction loss."""
    unet = UNet2DModel(**config)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    x, t, eps = _batch(config, batch)

    def step() -> None:
        loss = (unet(x, t).sample - eps).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def stacked_step_seconds(config: dict, batch: int, k: int, steps: int) -> float:
    """Seconds per AdamW step of K UNets stacked (``vmap`` over their parameters and batches)."""
    params, buffers = stack_module_state([UNet2DModel(**config) for _ in range(k)])
    base = UNet2DModel(**config).to("meta")  # the architecture only; the weights come stacked

    def loss(p, b, x, t, eps):
        return (functional_call(base, (p, b), (x, t)).sample - eps).pow(2).mean()

    grads_of = vmap(grad_and_value(loss))
    params = {name: p.detach() for name, p in params.items()}
    opt = torch.optim.AdamW(list(params.values()), lr=1e-3)
    x, t, eps = _batch(config, batch, k)

    def step() -> None:
        grads, _ = grads_of(params, buffers, x, t, eps)
        for name, p in params.items():
            p.grad = grads[name]
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(TRAIN_THREADS)
    for name, config in CONFIGS.items():
        single = single_step_seconds(config, args.batch, args.steps)
        print(f"{name}: one model {single:.4f} s per step (batch {args.batch}, {torch.get_num_threads()} thread)")
        for k in args.k:
            stacked = stacked_step_seconds(config, args.batch, k, args.steps)
            print(f"  stacked K={k}: {stacked:.4f} s per step, {stacked / k:.4f} s per model, "
                  f"speed-up {single / (stacked / k):.2f}")


if __name__ == "__main__":
    main()
