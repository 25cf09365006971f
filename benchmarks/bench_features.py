"""Benchmark: the cost of trajectory features (chapter 04). Prints figures; no pass/fail.

    python benchmarks/bench_features.py [--images 600] [--stride 1] [--kinds loss,grad_x]

Issue 6's goal: L_t + ∇x over all 1,000 time steps for 600 images on 2 cores in <= 10 min
(``--stride 1``, the default). CI runs a stride of 20 (50 time steps) to keep its budget and
prints the measured seconds together with the full-trajectory figure they imply, labelled as
such. Also times the parameter gradient (per-sample, ``torch.func.vmap``) on a few steps.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

import mia_utils as mu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="zoo:digits-ddpm")
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--kinds", default="loss,grad_x")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--theta-steps", type=int, default=5, help="time steps for the ∇θ timing (0: skip)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    model = mu.load_model(args.checkpoint, device=args.device, batch_size=args.batch_size)
    digits = model.sample_shape == (1, 8, 8)
    data = mu.datasets.load_digits_images() if digits else torch.rand(2048, *model.sample_shape) * 2 - 1
    x = data[: args.images]
    ts = mu.features.stride(args.stride, stop=model.num_train_timesteps)
    kinds = args.kinds.split(",")
    t0 = time.perf_counter()
    f = mu.features.trajectory_features(model, x, ts, kinds=kinds, progress=False)
    sec = time.perf_counter() - t0
    pairs = len(x) * len(ts)
    full = sec * model.num_train_timesteps / len(ts)
    print(f"trajectory features ({'+'.join(kinds)}), {len(x)} images x {len(ts)} time steps, "
          f"{torch.get_num_threads()} threads, device {model.device}")
    print(f"  measured: {sec:.1f} s = {pairs / sec:,.0f} (image, t) pairs/s; forward {f.forward:,}, backward {f.backward:,}")
    if len(ts) < model.num_train_timesteps:
        print(f"  all {model.num_train_timesteps} steps at this rate (extrapolated, not measured): {full:.0f} s "
              f"= {full / 60:.1f} min (goal <= 10 min)")
    else:
        print(f"  all {model.num_train_timesteps} steps: {sec / 60:.1f} min (goal <= 10 min)")
    if args.theta_steps:
        tts = mu.features.stride(model.num_train_timesteps // args.theta_steps, stop=model.num_train_timesteps)
        t0 = time.perf_counter()
        mu.features.trajectory_features(model, x, tts, kinds=("grad_theta",), progress=False)
        s2 = time.perf_counter() - t0
        print(f"  ∇θ (per-sample, vmap): {len(x)} images x {len(tts)} steps in {s2:.1f} s = "
              f"{len(x) * len(tts) / s2:,.0f} pairs/s")
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
