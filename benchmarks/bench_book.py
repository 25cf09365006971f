"""Benchmark: the wall time of each chapter, of the whole book and of training the zoo (prints figures).

    python benchmarks/bench_book.py [--timings _build/timings.json]

Reads the times ``make book`` measured (``mia_utils.nbrun.run_book`` writes each notebook's
wall time and the build's to ``_build/timings.json``) and each cached zoo model's training time
(its ``zoo.json``), so the book is not run twice to time it. Run ``make book`` first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mia_utils as mu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timings", default=str(mu.nbrun.ROOT / "_build" / "timings.json"))
    args = parser.parse_args()
    path = Path(args.timings)
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: run `make book` first.")
    times = json.loads(path.read_text())
    print(f"{'notebook / step':28s} {'seconds':>8s}")
    for name, sec in times.items():
        print(f"{name:28s} {sec:8.1f}")
    print(f"{'whole book (run + build)':28s} {sum(times.values()):8.1f}  = {sum(times.values()) / 60:.1f} min")
    from mia_utils.zoo.cache import estimated_seconds

    print(f"\n{'zoo model (cached)':28s} {'training s':>10s} {'estimate s':>10s}")
    total = 0.0
    for name, recipe in mu.zoo.RECIPES.items():
        estimate = estimated_seconds(name)
        if mu.zoo.is_cached(recipe):
            sec = json.loads((mu.zoo.folder_of(recipe) / "zoo.json").read_text()).get("train_seconds", float("nan"))
            total += sec
            print(f"{name:28s} {sec:10.1f} {estimate:10.0f}")
        else:
            print(f"{name:28s} {'not built':>10s} {estimate:10.0f}")
    print(f"{'all cached models':28s} {total:10.1f}  = {total / 60:.1f} min (each timed as it was trained, "
          "possibly beside other work)")


if __name__ == "__main__":
    main()
