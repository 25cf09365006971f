"""``python -m mia_utils.zoo``: train (or find) the zoo's models, list them, print a folder.

    python -m mia_utils.zoo build digits-ddpm   # train (or find) a model, with a progress bar
    python -m mia_utils.zoo list                # recipes and whether they are cached

The cache lives in ``$MIA_ZOO_DIR`` (default ``~/.cache/mia-book/zoo``).
"""

from __future__ import annotations

import argparse
import time

from .cache import build, build_all, folder_of, is_cached, path_of
from .recipes import RECIPES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mia_utils.zoo", description=__doc__.split("\n")[0].strip("`"))
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train the named victims (all when none is named) unless cached")
    b.add_argument("names", nargs="*")
    b.add_argument("--force", action="store_true", help="retrain even when cached")
    b.add_argument("--device", default="auto")
    b.add_argument("--jobs", type=int, default=1, help="models trained side by side, one thread each (default 1)")
    sub.add_parser("list", help="the recipes and their cache state")
    p = sub.add_parser("path", help="print a victim's folder (training it if needed)")
    p.add_argument("name")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        if args.force:
            for name in args.names or list(RECIPES):
                build(name, force=True, device=args.device)
        t0 = time.perf_counter()
        for name, folder in build_all(args.names or None, jobs=args.jobs, device=args.device).items():
            print(f"{name}: {folder}")
        print(f"zoo ready in {time.perf_counter() - t0:.0f} s")
    elif args.cmd == "list":
        for name, r in RECIPES.items():
            state = "cached" if is_cached(r) else "not built"
            print(f"{name:16s} {state:10s} {folder_of(r)}\n    {r.description}")
    else:
        print(path_of(args.name))


if __name__ == "__main__":
    main()
