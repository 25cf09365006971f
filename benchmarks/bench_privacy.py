"""Benchmark: what a DP-SGD step costs on the book's UNet (prints figures, asserts nothing).

    python benchmarks/bench_privacy.py [--batch 64] [--steps 5] [--threads 1]

Seconds per step of the default victim's UNet2DModel (widths 32, 64, mid-block attention) on 8x8
images: plain autograd (a normal training step), Opacus's GradSampleModule per-sample gradients
in its hooks mode (wrong for two layers of this UNet: tests/test_privacy.py) and with
force_functorch, and ``privacy.example_gradients`` (torch.func, the per-example gradients
``train_dp`` uses) with K = 1, 2 and 4 draws per example. Chapter 10's zoo budget rests on the
last: its DP models take 500 steps at K = 2.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from diffusers import UNet2DModel

from mia_utils.models import DiffusionModel, default_scheduler, small_unet_config
from mia_utils.privacy import example_gradients


def seconds(fn, steps: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (the zoo trains on 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = DiffusionModel(UNet2DModel(**small_unet_config()), default_scheduler(), device="cpu")
    unet, b = model.unet, args.batch
    x0, t = torch.randn(b, 1, 8, 8), torch.randint(1000, (b,))
    eps = torch.randn_like(x0)
    x_t = model.q_sample(x0, t, eps)

    def plain():
        unet.zero_grad()
        ((unet(x_t, t).sample - eps) ** 2).mean().backward()

    rows = {"plain autograd (no per-example gradients)": seconds(plain, args.steps)}
    from opacus import GradSampleModule

    for mode, functorch in (("hooks", False), ("force_functorch", True)):
        gsm = GradSampleModule(UNet2DModel(**small_unet_config()), loss_reduction="sum", force_functorch=functorch)

        def opacus_step(gsm=gsm):
            gsm.zero_grad()
            for p in gsm.parameters():
                p.grad_sample = None
            ((gsm(x_t, t).sample - eps) ** 2).sum().backward()

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows[f"Opacus GradSampleModule, {mode}"] = seconds(opacus_step, args.steps)
    for k in (1, 2, 4):
        tk, ek = torch.randint(1000, (b, k)), torch.randn(b, k, 1, 8, 8)
        rows[f"privacy.example_gradients (torch.func), K = {k}"] = seconds(
            lambda tk=tk, ek=ek: example_gradients(unet, model, x0, tk, ek), args.steps)
    base = rows["plain autograd (no per-example gradients)"]
    print(f"batch {b}, {args.threads} thread(s), {args.steps} steps each, forward + backward:")
    for name, s in rows.items():
        print(f"  {name:<52} {s:6.3f} s/step  ({s / base:4.1f}x plain)")


if __name__ == "__main__":
    main()
