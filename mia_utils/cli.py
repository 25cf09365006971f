"""``mia-book``: audit a diffusion checkpoint with the book's chapters, or score images at scale.

    mia-book audit --checkpoint DIR [--lora DIR] --members DIR --nonmembers DIR \\
        [--chapters 02,03] [--suspect DIR] [--device cuda] [--n-eval N] [--resize] [--out DIR [--overwrite]]
        [-p NAME VALUE ...]
    mia-book score --checkpoint DIR --attack sima [-p t 50 ...] --images DIR [--members DIR --nonmembers DIR]
        --out scores.parquet [--dtype bf16] [--num-processes N] [--overwrite]

``score`` writes raw per-image scores (``mia_utils.scoring``); under ``accelerate launch -m
mia_utils score ...`` (or with ``--num-processes N``) the images are sharded over processes.

The inputs are validated before anything runs (the checkpoint loads with every weight, one ε̂
query is finite, the model has the chapters' time steps, the images match the model's size and
channels, no image is a member and a non-member, exactly or as a near-copy, enough images for
``--n-eval``, every ``-p`` is a chosen chapter's parameter of the right type, a ``--suspect``
folder fits the model and shares no image with the non-members); each failure is one sentence
and exit code 2. Two checks are printed before any attack runs: the model-blind baseline (can
pixels alone tell members from non-members?) and the overlap across the splits. Then each
chosen chapter is executed with papermill on that checkpoint and data, and the report is
written to ``--out``: the executed notebooks, every chapter's ``metrics.json``, and
``summary.html`` (the two checks, then one table of every attack) with ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import data, evidence, nbrun, scoring, specs
from .checks import positive_int
from .errors import CheckpointError, DataError
from .images import folder_images
from .io import write_text_atomic
from .models import PRECISIONS, check_device
from .zoo import ZooError

# parameters the audit sets itself from its own options: -p may not override them
OWN = ("checkpoint", "members", "nonmembers", "device", "n_eval", "batch_size", "seed", "out_dir", "resize", "suspect",
       "lora")
def validate(checkpoint: str, members: str, nonmembers: str, device: str = "auto",
             n_eval: int | None = None, resize: bool = False, max_t: int | None = None,
             suspect: str | None = None, lora: str | None = None) -> tuple[str, dict]:
    """Load the checkpoint (its weights checked and one ε̂ query run; a pipeline folder with its
    LoRA) and both image sets once; with ``max_t``, check that the model has that many time
    steps; with ``suspect``, that its images fit the model and share none with the non-members
    (the set test's reference). Return a one-line description and the provenance checks
    (``evidence.provenance``; for a text-to-image model, where the captions come from).

    Raises ``CheckpointError`` or ``DataError`` with a message that names the fix.
    """
    target = specs.load_target(checkpoint, lora=lora, device=check_device(device))
    model = target.model
    sets = specs.load_membership_sets(members, nonmembers, model=target, n_eval=n_eval, resize=resize)
    if max_t is not None and max_t >= model.num_train_timesteps:
        raise CheckpointError(f"The chosen chapters query time steps up to {max_t} but the model has only "
                              f"T = {model.num_train_timesteps}: give smaller ones with -p (see each chapter's "
                              "parameters), or choose other chapters.")
    description = f"{target.kind} model: {model}{'' if lora is None else f' with the LoRA {lora}'}; {sets}"
    if suspect is not None:
        images = folder_images(suspect, target.image_shape, resize=resize)
        data.check_no_leakage(suspect=images, nonmembers=sets.nonmembers())
        description += f"; {len(images)} suspect images"
    checks = evidence.provenance(sets, n_boot=200)
    if target.conditional:
        checks["captions"] = ("from metadata.jsonl (or the zoo split)" if sets.captions is not None else
                              "none: every image gets the empty prompt (no metadata.jsonl in the folders)")
    return description, checks


def time_steps(parameters: dict) -> list[int]:
    """The time steps a chapter's parameters name (ts, *_ts, t_*, t, secmi_grid's t_sec ...)."""
    import re

    out: list[int] = []

    def ints(value):
        if isinstance(value, bool):
            return
        if isinstance(value, int):
            out.append(value)
        elif isinstance(value, list | tuple):
            for v in value:
                ints(v)

    for name, value in parameters.items():
        if re.search(r"(^|_)ts$|^t_|_t$|^t$|grid$|_t_sec$", name):
            ints(value)
    return out


# Chapters whose defaults name zoo models trained on the embedded digits: on an auditor's own
# checkpoint they need inputs only the auditor has, or they are skipped with a note.
NEEDS = {
    "05_latent": ("latent_models", ("your latent models: -p latent_models '[\"DIR\"]' (folders with unet/, "
                                    "scheduler/, vae/, codec.json) trained on these members")),
    "06_noise_probe": ("base", "the pre-trained model your checkpoint was fine-tuned from: -p base DIR"),
}
# ... or they run with a default that does not point into the zoo (chapter 04: no other generators;
# chapters 04 and 05: no Fashion-MNIST replication, which is about the zoo's victims; chapter 07:
# no second target, and the noise probe inverts with the checkpoint itself under a --lora, else
# it needs -p base)
USER_DEFAULTS = {"04_trajectories": {"generators": {}, "replication": None}, "05_latent": {"replication": None},
                 "07_text_to_image": {"second": None, "base": None}}
# The kind of model each chapter audits (chapter 07: text-to-image pipelines; the others: pixel UNets)
TEXT_TO_IMAGE = ("07_text_to_image",)


def plan(sources: list[Path], checkpoint: str, parameters: dict, kind: str = "pixel") -> tuple[list[Path], dict[str, str]]:
    """The chapters to run on ``checkpoint`` (a model of ``kind``) and the ones skipped, each with what it needs."""
    run, skipped = [], {}
    for src in sources:
        if (src.stem in TEXT_TO_IMAGE) != (kind == "text-to-image"):
            skipped[src.stem] = ("a text-to-image pipeline (a StableDiffusionPipeline folder, with --lora DIR for "
                                 "an adapter)" if src.stem in TEXT_TO_IMAGE else
                                 f"a pixel-space UNet2DModel checkpoint (this one is a {kind} model)")
            continue
        need = NEEDS.get(src.stem)
        if need is not None and need[0] not in parameters and not specs.is_zoo(checkpoint):
            skipped[src.stem] = need[1]
        else:
            run.append(src)
    return run, skipped


def choose_chapters(chapters: list[str] | None) -> list[Path]:
    """The chapter sources for ``--chapters`` numbers (all for None); an unknown or empty number is an error."""
    every = {p.name[:2]: p for p in nbrun.chapters()}
    if chapters is None:
        return list(every.values())
    wanted = [c.strip() for c in chapters]
    if not wanted or any(not c for c in wanted):
        raise ValueError(f"--chapters {','.join(chapters)!r} names no chapter; the book has {', '.join(every)}.")
    unknown = [c for c in wanted if c not in every]
    if unknown:
        raise ValueError(f"--chapters: no chapter {', '.join(unknown)}; the book has {', '.join(every)}.")
    return [every[c] for c in sorted(set(wanted))]


def check_parameters(sources: list[Path], parameters: dict) -> None:
    """-p names must be parameters of a chosen chapter, not one the audit sets itself, and of the
    default's type (a number for a number, a list for a list ...)."""
    own = sorted(set(parameters) & set(OWN))
    if own:
        raise ValueError(f"-p {own[0]} is set by the audit's own option (--{own[0].replace('_', '-')}); "
                         "use that option, so that the validated inputs are the ones the chapters run on.")
    declared: dict[str, object] = {}
    for src in sources:
        for k, v in nbrun.parameters_of(src).items():
            declared.setdefault(k, v)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        valid = ", ".join(sorted(set(declared) - set(OWN)))
        raise ValueError(f"-p {unknown[0]}: no chosen chapter has this parameter; theirs are {valid}.")
    for k, v in parameters.items():
        default = declared[k]
        kinds = (int, float) if isinstance(default, int | float) and not isinstance(default, bool) else type(default)
        if default is not None and v is not None and not isinstance(v, kinds):
            raise ValueError(f"-p {k} {json.dumps(v)}: expected a {type(default).__name__} like the default "
                             f"{json.dumps(default)}.")


def prepare_out(out: Path, overwrite: bool) -> None:
    """A report folder that holds nothing of an earlier run: refused when it does, unless ``overwrite``
    (which removes the earlier report first, so that no old number can mix into the new one)."""
    import shutil

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file: name a folder for the report.")
    earlier = [p for p in ("summary.json", "summary.html", "results") if (out / p).exists()]
    if earlier:
        if not overwrite:
            raise ValueError(f"--out {str(out)!r} holds an earlier report ({', '.join(earlier)}): choose another "
                             "folder, or pass --overwrite to replace it.")
        for p in earlier:
            shutil.rmtree(out / p) if (out / p).is_dir() else (out / p).unlink()
        for nb in out.glob("*.ipynb"):
            nb.unlink()
    out.mkdir(parents=True, exist_ok=True)


def audit(checkpoint: str, members: str, nonmembers: str, out: str | Path = "audit",
          chapters: list[str] | None = None, device: str = "auto", n_eval: int | None = None,
          batch_size: int = 256, seed: int = 0, parameters: dict | None = None, resize: bool = False,
          overwrite: bool = False, suspect: str | None = None, lora: str | None = None) -> Path:
    """Run the chosen chapters (default: every chapter) on a checkpoint; write the report to ``out``.

    Everything is checked before anything runs; the summary is written last, atomically, so an
    interrupted audit leaves no summary that looks complete.
    """
    out = Path(out).resolve()
    parameters = parameters or {}
    positive_int("--batch-size", batch_size)
    sources = choose_chapters(chapters)
    check_parameters(sources, parameters)
    kind = specs.kind_of(checkpoint)
    sources, skipped = plan(sources, checkpoint, parameters, kind)
    if lora is not None and kind != "text-to-image":
        raise CheckpointError(f"--lora applies to a text-to-image pipeline; {checkpoint} is a {kind} model.")
    declared = {}
    for src in sources:
        declared.update({k: v for k, v in nbrun.parameters_of(src).items() if k not in declared})
    if suspect is not None and "suspect" not in declared:
        raise ValueError("--suspect is tested by chapter 08 (from scores to evidence): add 08 to --chapters.")
    max_t = max(time_steps({**declared, **parameters}), default=None)
    description, checks = validate(checkpoint, members, nonmembers, device, n_eval, resize, max_t, suspect, lora)
    print(f"[audit] {description}", flush=True)
    for line in _provenance_lines(checks):  # before any attack: what could make every AUC meaningless
        print(f"[audit] {line}", flush=True)
    prepare_out(out, overwrite)
    for stem, need in skipped.items():
        print(f"[audit] {stem} skipped: it needs {need}", flush=True)
    common = {"checkpoint": specs.display(checkpoint), "members": specs.display(members),
              "nonmembers": specs.display(nonmembers), "device": device, "n_eval": n_eval,
              "batch_size": batch_size, "seed": seed, "resize": resize, "suspect": suspect,
              "lora": None if lora is None else specs.display(lora), **parameters}
    times = {}
    for src in sources:
        t0 = time.perf_counter()
        print(f"[audit] {src.stem} ...", flush=True)
        own = nbrun.parameters_of(src)
        defaults = USER_DEFAULTS.get(src.stem, {}) if not specs.is_zoo(checkpoint) else {}
        params = {k: v for k, v in {**defaults, **common}.items() if k in own}
        params["out_dir"] = str(out / "results" / src.stem)
        nbrun.run_notebook(src, out / f"{src.stem}.ipynb", parameters=params, cwd=out)
        times[src.stem] = round(time.perf_counter() - t0, 1)
        print(f"[audit] {src.stem}: {times[src.stem]} s", flush=True)
    table = nbrun.summary_table(out / "results")
    write_text_atomic(out / "summary.html", _html(table, checkpoint, members, nonmembers, times, skipped,
                                              _provenance_lines(checks)))
    write_text_atomic(out / "summary.json", json.dumps({"checkpoint": str(checkpoint), "members": str(members),
                                                    "nonmembers": str(nonmembers), "suspect": suspect,
                                                    "seconds": times, "skipped": skipped,
                                                    "provenance": _provenance_lines(checks),
                                                    "rows": table.to_dict(orient="records")}, indent=1))
    print(f"[audit] report: {out / 'summary.html'}", flush=True)
    return out


def _provenance_lines(checks: dict) -> list[str]:
    blind = checks["model-blind"]
    lines = [f"model-blind baseline (pixels alone, members vs non-members): AUC {blind['auc']:.3f} "
             f"[{blind['auc_ci'][0]:.3f}, {blind['auc_ci'][1]:.3f}]",
             f"overlap across the splits: {checks['exact overlaps']} identical images, "
             f"{checks['near-copies']} near-copies"]
    if checks.get("captions"):
        lines.append(f"captions: {checks['captions']}")
    if checks["warning"]:
        lines.append(f"WARNING: {checks['warning']}")
    return lines


def _html(table, checkpoint, members, nonmembers, times, skipped=None, checks=()) -> str:
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
<h2>Before any attack</h2><ul>{"".join(f"<li>{escape(line)}</li>" for line in checks)}</ul>
<h2>Attacks</h2>
{rows}
<h2>Executed chapters</h2><ul>{chapters}</ul>
</body></html>
"""


def _positive(text: str) -> int:
    value = int(text) if text.strip().lstrip("+-").isdigit() else text
    return positive_int("value", value, argparse.ArgumentTypeError)


def _launch(argv: list[str], processes: int) -> int:
    """``mia-book score`` again under ``accelerate launch`` with ``processes`` processes on this
    machine (one GPU each where there are GPUs, else CPU processes talking over gloo)."""
    import os
    import socket
    import subprocess

    import torch

    if torch.cuda.is_available() and processes > torch.cuda.device_count():
        raise ValueError(f"--num-processes {processes}: this machine has {torch.cuda.device_count()} GPU(s); "
                         "run one process per GPU.")
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--num-processes":
            skip = True
        elif not arg.startswith("--num-processes="):
            rest.append(arg)
    with socket.socket() as sock:  # a free port, so that two runs on one machine do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ)
    if not torch.cuda.is_available():  # the cores shared out: one run of N processes uses what one would
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(port), "-m", "mia_utils", *rest]
    return subprocess.call(cmd, env=env)


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(prog="mia-book", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("audit", help="run the book's chapters on your checkpoint and images")
    a.add_argument("--checkpoint", required=True, help="a local diffusers folder (or a zoo: name)")
    a.add_argument("--lora", help="a LoRA adapter folder (diffusers' save_lora_weights) loaded onto the checkpoint")
    a.add_argument("--members", required=True, help="folder of member images (PNG/JPEG; captions in metadata.jsonl)")
    a.add_argument("--nonmembers", required=True, help="folder of non-member images (PNG/JPEG)")
    a.add_argument("--chapters", help="comma-separated chapter numbers, e.g. 02,03 (default: all)")
    a.add_argument("--suspect", help="folder of suspect images: was this collection used? (chapter 08's set test)")
    a.add_argument("--device", default="auto", help='"auto", "cpu" or "cuda"')
    a.add_argument("--n-eval", type=_positive, default=None, help="evaluation images per side (default: all)")
    a.add_argument("--batch-size", type=_positive, default=256, help="images per forward pass")
    a.add_argument("--resize", action="store_true", help="resize and convert images to the model's size and channels")
    a.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", default="audit", help="report folder (default: ./audit)")
    a.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="any other chapter parameter, e.g. -p n_boot 200")
    s = sub.add_parser("score", help="raw per-image scores of one attack, sharded over processes (accelerate)",
                       description=scoring.__doc__.split("\n\n")[0])
    s.add_argument("--checkpoint", required=True, help="a local diffusers folder (or a zoo: name)")
    s.add_argument("--attack", required=True, help=f"one of {', '.join(scoring.attack_names())}")
    s.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="an attack parameter, e.g. -p t 50 (JSON values: -p ts '[100, 200]')")
    s.add_argument("--images", help="folder of images to score (unlabelled; sub-folders included)")
    s.add_argument("--members", help="folder of known members (a calibration set, with --nonmembers)")
    s.add_argument("--nonmembers", help="folder of known non-members")
    s.add_argument("--base", help="the pre-trained model the checkpoint was fine-tuned from (noise_probe)")
    s.add_argument("--out", required=True, help="the .parquet or .csv file to write (and OUT.json beside it)")
    s.add_argument("--device", default="auto", help='"auto", "cpu", "cuda" or "cuda:N"')
    s.add_argument("--dtype", default="fp32", choices=PRECISIONS,
                   help="precision of the forward passes: fp32 (default, exact) or, on CUDA, tf32, bf16, fp16")
    s.add_argument("--batch-size", type=_positive, default=256, help="images per forward pass")
    s.add_argument("--shard-size", type=_positive, default=1024, help="images per shard (the unit of resumption)")
    s.add_argument("--fpr", type=float, default=0.01, help="false-positive rate the decisions are set at")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--resize", action="store_true", help="resize and convert images to the model's size and channels")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out and its shards")
    s.add_argument("--num-processes", type=_positive, default=None,
                   help="run under accelerate launch with this many processes on this machine")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    main_rank = os.environ.get("RANK", "0") == "0"
    try:
        if args.cmd == "audit":
            audit(args.checkpoint, args.members, args.nonmembers, out=args.out,
                  chapters=args.chapters.split(",") if args.chapters is not None else None, device=args.device,
                  n_eval=args.n_eval, batch_size=args.batch_size, seed=args.seed,
                  parameters=nbrun._parse_params(args.parameter), resize=args.resize, overwrite=args.overwrite,
                  suspect=args.suspect, lora=args.lora)
        elif args.num_processes is not None and args.num_processes > 1:
            return _launch(argv, args.num_processes)
        else:
            scoring.score(args.checkpoint, args.attack, args.out, parameters=nbrun._parse_params(args.parameter),
                          images=args.images, members=args.members, nonmembers=args.nonmembers, base=args.base,
                          device=args.device, dtype=args.dtype, batch_size=args.batch_size, seed=args.seed,
                          resize=args.resize, fpr=args.fpr, shard_size=args.shard_size, overwrite=args.overwrite)
    except (CheckpointError, DataError, ZooError, ValueError, TypeError) as err:
        if main_rank:  # under accelerate every process finds the same fault: say it once
            print(f"mia-book: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
