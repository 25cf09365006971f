"""Benchmark: each attack's throughput against a bare UNet forward pass (prints figures only).

    python benchmarks/bench_attacks.py [--checkpoint zoo:digits-ddpm] [--n 2048] [--batch-size 256]

For every attack: queries per image (counted by the wrapper), images per second, and the
ratio to a bare ``unet(x, t)`` loop at the same batch size (issue 4's goal for SimA: >= 0.9).
Each figure is the median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import mia_utils as mu


def timed_pair(fn, reference, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fn`` and of ``reference``, run alternately so that both see the same
    machine state (two cores shared with whatever else runs make back-to-back timings drift)."""
    fn(), reference()  # warm-up
    a, b = [], []
    for _ in range(repeats):
        for f, runs in ((fn, a), (reference, b)):
            t0 = time.perf_counter()
            f()
            runs.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="zoo:digits-ddpm")
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    model = mu.load_model(args.checkpoint, device=args.device, batch_size=args.batch_size)
    data = mu.datasets.load_digits_images() if model.sample_shape == (1, 8, 8) else None
    x = (data.repeat(args.n // len(data) + 1, 1, 1, 1)[: args.n] if data is not None
         else torch.rand(args.n, *model.sample_shape) * 2 - 1)
    t = 50

    def bare():
        with torch.no_grad():
            for i in range(0, args.n, args.batch_size):
                xb = x[i:i + args.batch_size].to(model.device)
                model.unet(xb, torch.full((len(xb),), t, device=model.device)).sample.cpu()

    attacks = {
        "SimA (p=4)": lambda: mu.attacks.sima.score(model, x, t=t, p=4),
        "noisy ε-norm": lambda: mu.attacks.sima.score(model, x, t=t, p=2, noisy=True),
        "loss (K=1)": lambda: mu.attacks.loss.score(model, x, t=t, n_noise=1),
        "loss (K=4)": lambda: mu.attacks.loss.score(model, x, t=t, n_noise=4),
        "PIA": lambda: mu.attacks.pia.score(model, x, t=200),
        "PIAN": lambda: mu.attacks.pia.score_pian(model, x, t=200),
        "SecMI (100, 10)": lambda: mu.attacks.secmi.score(model, x, t_sec=100, k=10),
    }
    print(f"{model}; {args.n} images, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"{'':16s} {'queries/image':>14s} {'images/s':>10s} {'bare UNet img/s':>16s} {'ratio':>7s}")
    for name, fn in attacks.items():
        model.reset_queries()
        fn()
        q = model.reset_queries() / args.n
        sec, base = timed_pair(fn, bare, args.repeats)
        # a K-query attack is compared per query: ratio = (bare time × K) / attack time
        print(f"{name:16s} {q:14.0f} {args.n / sec:10.0f} {args.n / base:16.0f} {base * q / sec:7.2f}")


if __name__ == "__main__":
    main()
