"""Benchmark: the optimal denoiser at CIFAR size on 2 CPU cores (prints figures, asserts nothing).

    python benchmarks/bench_kde.py [--queries 1000] [--train 50000] [--dim 3072]

Goal (issue 3): 1,000 queries against 50,000 training vectors of dimension 3,072 in <= 30 s
and <= 2 GB peak memory. Random data: the cost does not depend on the values.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from mia_utils import kde


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=3072)
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--query-batch", type=int, default=256)
    parser.add_argument("--t", type=int, default=100)
    parser.add_argument("--scaling-queries", type=int, default=200, help="queries per scaling point (0: skip)")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    # in place, so that the baseline is the inputs themselves, not their temporaries
    train = torch.rand(args.train, args.dim, generator=g).mul_(2).sub_(1)
    queries = torch.rand(args.queries, args.dim, generator=g).mul_(2).sub_(1)
    base = peak_rss_mb()
    t0 = time.perf_counter()
    out = kde.optimal_denoiser(train, queries, args.t, chunk_size=args.chunk_size, query_batch=args.query_batch)
    seconds = time.perf_counter() - t0
    print(f"optimal denoiser: {args.queries} queries x {args.train} training vectors x dim {args.dim}, "
          f"t={args.t}, {torch.get_num_threads()} threads")
    print(f"  time                {seconds:8.1f} s   (goal <= 30 s)")
    print(f"  peak RSS            {peak_rss_mb():8.0f} MB  (goal <= 2048 MB; inputs alone {base:.0f} MB)")
    print(f"  throughput          {args.queries / seconds:8.1f} queries/s")
    print(f"  median n_eff        {out.n_eff.median().item():8.2f}")
    if args.scaling_queries:
        # the cost is linear in (queries x training vectors): time a few training-set sizes
        print(f"\nscaling: {args.scaling_queries} queries, dim {args.dim}")
        print(f"  {'training vectors':>16s} {'seconds':>8s} {'ns per (query, vector)':>24s}")
        q = queries[: args.scaling_queries]
        for n in sorted({n for n in (5_000, 10_000, 25_000) if n < args.train} | {args.train}):
            t0 = time.perf_counter()
            kde.optimal_denoiser(train[:n], q, args.t, chunk_size=args.chunk_size, query_batch=args.query_batch)
            sec = time.perf_counter() - t0
            print(f"  {n:16,d} {sec:8.2f} {1e9 * sec / (len(q) * n):24.1f}")


if __name__ == "__main__":
    main()
