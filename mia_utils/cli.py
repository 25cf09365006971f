"""``mia-book``: audit a diffusion checkpoint with the book's chapters, in one command.

    mia-book audit --checkpoint DIR --members DIR --nonmembers DIR \\
        [--chapters 02,03] [--device cuda] [--n-eval N] [--out DIR] [-p NAME VALUE ...]

The inputs are validated before anything runs (the checkpoint loads, the images match the
model's size and channels, no image is both a member and a non-member, enough images for
``--n-eval``). Then each chosen chapter is executed with papermill on that checkpoint and
data, and the report is written to ``--out``: the executed notebooks, every chapter's
``metrics.json``, and ``summary.html`` (one table of every attack) with ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import nbrun
from .data import DataError, load_membership_sets
from .models import CheckpointError, load_model


def validate(checkpoint: str, members: str, nonmembers: str, device: str = "auto",
             n_eval: int | None = None) -> str:
    """Load the checkpoint and both image sets once; return a one-line description.

    Raises ``CheckpointError`` or ``DataError`` with a message that names the fix.
    """
    model = load_model(checkpoint, device=device)
    sets = load_membership_sets(members, nonmembers, model=model, n_eval=n_eval)
    return f"{model}; {sets}"


# Chapters whose defaults name zoo models trained on the embedded digits: on an auditor's own
# checkpoint they need inputs only the auditor has, or they are skipped with a note.
NEEDS = {
    "05_latent": ("latent_models", ("your latent models: -p latent_models '[\"DIR\"]' (folders with unet/, "
                                    "scheduler/, vae/, codec.json) trained on these members")),
    "06_noise_probe": ("base", "the pre-trained model your checkpoint was fine-tuned from: -p base DIR"),
}
# ... or they run with a default that does not point into the zoo (chapter 04: no other generators)
USER_DEFAULTS = {"04_trajectories": {"generators": {}}}


def plan(sources: list[Path], checkpoint: str, parameters: dict) -> tuple[list[Path], dict[str, str]]:
    """The chapters to run on ``checkpoint`` and the ones skipped, each with what it needs."""
    if str(checkpoint).startswith("zoo:"):
        return sources, {}
    run, skipped = [], {}
    for src in sources:
        need = NEEDS.get(src.stem)
        if need is not None and need[0] not in parameters:
            skipped[src.stem] = need[1]
        else:
            run.append(src)
    return run, skipped


def audit(checkpoint: str, members: str, nonmembers: str, out: str | Path = "audit",
          chapters: list[str] | None = None, device: str = "auto", n_eval: int | None = None,
          batch_size: int = 256, seed: int = 0, parameters: dict | None = None) -> Path:
    """Run the chosen chapters (default: every chapter) on a checkpoint; write the report to ``out``."""
    out = Path(out).resolve()
    sources = [p for p in nbrun.chapters() if chapters is None or p.name[:2] in chapters]
    if not sources:
        raise ValueError(f"No chapter matches {chapters}; the book has {[p.name[:2] for p in nbrun.chapters()]}.")
    print(f"[audit] {validate(checkpoint, members, nonmembers, device, n_eval)}", flush=True)
    sources, skipped = plan(sources, checkpoint, parameters or {})
    for stem, need in skipped.items():
        print(f"[audit] {stem} skipped: it needs {need}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    common = {"checkpoint": str(Path(checkpoint).resolve()) if not str(checkpoint).startswith("zoo:") else checkpoint,
              "members": _abs(members), "nonmembers": _abs(nonmembers), "device": device,
              "n_eval": n_eval, "batch_size": batch_size, "seed": seed, **(parameters or {})}
    times = {}
    for src in sources:
        t0 = time.perf_counter()
        print(f"[audit] {src.stem} ...", flush=True)
        defaults = USER_DEFAULTS.get(src.stem, {}) if not str(checkpoint).startswith("zoo:") else {}
        params = {**defaults, **common, "out_dir": str(out / "results" / src.stem)}
        nbrun.run_notebook(src, out / f"{src.stem}.ipynb", parameters=params, cwd=out)
        times[src.stem] = round(time.perf_counter() - t0, 1)
        print(f"[audit] {src.stem}: {times[src.stem]} s", flush=True)
    table = nbrun.summary_table(out / "results")
    (out / "summary.json").write_text(json.dumps({"checkpoint": str(checkpoint), "members": str(members),
                                                  "nonmembers": str(nonmembers), "seconds": times,
                                                  "skipped": skipped,
                                                  "rows": table.to_dict(orient="records")}, indent=1))
    (out / "summary.html").write_text(_html(table, checkpoint, members, nonmembers, times, skipped))
    print(f"[audit] report: {out / 'summary.html'}", flush=True)
    return out


def _abs(spec: str) -> str:
    return spec if str(spec).startswith("zoo:") else str(Path(spec).resolve())


def _html(table, checkpoint, members, nonmembers, times, skipped=None) -> str:
    from html import escape

    rows = table.to_html(index=False, border=0, classes="summary", escape=True) if len(table) else "<p>No metrics.</p>"
    chapters = "".join(f"<li>{escape(k)}.ipynb ({v} s)</li>" for k, v in times.items())
    chapters += "".join(f"<li>{escape(k)}: skipped, it needs {escape(v)}</li>" for k, v in (skipped or {}).items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Membership audit: {escape(str(checkpoint))}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:80em}} table{{border-collapse:collapse}}
td,th{{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}}</style></head>
<body><h1>Membership audit</h1>
<p>Checkpoint <code>{escape(str(checkpoint))}</code>; members <code>{escape(str(members))}</code>;
non-members <code>{escape(str(nonmembers))}</code>.</p>
<p>Every number is honest: hyper-parameters and thresholds were chosen on a calibration part of the
given members and non-members and reported on the rest, with 95 % bootstrap intervals in brackets.</p>
{rows}
<h2>Executed chapters</h2><ul>{chapters}</ul>
</body></html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mia-book", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("audit", help="run the book's chapters on your checkpoint and images")
    a.add_argument("--checkpoint", required=True, help="a local diffusers folder (or a zoo: name)")
    a.add_argument("--members", required=True, help="folder of member images (PNG/JPEG)")
    a.add_argument("--nonmembers", required=True, help="folder of non-member images (PNG/JPEG)")
    a.add_argument("--chapters", help="comma-separated chapter numbers, e.g. 02,03 (default: all)")
    a.add_argument("--device", default="auto", help='"auto", "cpu" or "cuda"')
    a.add_argument("--n-eval", type=int, default=None, help="evaluation images per side (default: all)")
    a.add_argument("--batch-size", type=int, default=256)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", default="audit", help="report folder (default: ./audit)")
    a.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="any other chapter parameter, e.g. -p n_boot 200")
    args = parser.parse_args(argv)
    try:
        audit(args.checkpoint, args.members, args.nonmembers, out=args.out,
              chapters=args.chapters.split(",") if args.chapters else None, device=args.device,
              n_eval=args.n_eval, batch_size=args.batch_size, seed=args.seed,
              parameters=nbrun._parse_params(args.parameter))
    except (CheckpointError, DataError, ValueError) as err:
        print(f"mia-book: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
