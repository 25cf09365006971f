"""``mia-book``: the one command line of the package::

    mia-book audit --checkpoint DIR [--lora DIR] --members DIR --nonmembers DIR \\
        [--chapters 02,03] [--suspect DIR] [--device cuda] [--n-eval N] [--resize] [--out DIR [--overwrite]]
        [--budget MINUTES] [-p NAME VALUE ...]
    mia-book score --checkpoint DIR [--lora DIR] --attack sima [-p t 50 ...] --images DIR [--members DIR --nonmembers DIR]
        --out scores.parquet [--dtype bf16] [--num-processes N] [--overwrite]
    mia-book zoo build [NAME ...] [--jobs 2]      # train (or find cached) the zoo's models
    mia-book zoo list                             # the recipes and whether they are cached
    mia-book zoo path NAME                        # a model's folder (trained if needed)
    mia-book book [--chapters 00,02] [--no-build] [--jobs 2] [-p NAME VALUE ...]
    mia-book run notebooks/00_victims.md [-o OUT.ipynb] [-p NAME VALUE ...]

``audit`` runs the book's chapters on a checkpoint (``cli.audit``); ``score`` writes raw
per-image scores (``mia_utils.scoring``); under ``accelerate launch -m mia_utils score ...``
(or with ``--num-processes N``) the images are sharded over processes. ``zoo`` trains and lists
the embedded default's models (cached in ``$MIA_ZOO_DIR``, default ``~/.cache/mia-book/zoo``);
``book`` executes every chapter and builds the book (``nbrun``); ``run`` executes one chapter.
Every error is one sentence and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .. import nbrun, scoring, zoo
from ..checks import positive_int
from ..errors import CheckpointError, DataError
from ..images import FOLDER_RULE
from ..io import LAUNCHER_ENV, die_with_parent
from ..models import PRECISIONS
from ..zoo import ZooError
from . import audit


def parse_params(pairs: list[list[str]] | None) -> dict:
    """``-p NAME VALUE`` pairs: VALUE as JSON, or a bare string (a path). A VALUE that starts as
    JSON does (``[``, ``{``, ``"``) but is not valid JSON is an error, not a string."""
    out = {}
    for key, value in pairs or []:
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError as err:
            if value.strip()[:1] in ("[", "{", '"'):
                raise ValueError(f"-p {key} {value!r} is not valid JSON ({err.msg}): quote it, e.g. "
                                 f"-p {key} '[1, 2]'.") from None
            out[key] = value  # a bare string such as a path
    return out


def _positive(text: str) -> int:
    value = int(text) if text.strip().lstrip("+-").isdigit() else text
    return positive_int("value", value, argparse.ArgumentTypeError)


def _launch(argv: list[str], processes: int) -> int:
    """``mia-book score`` again under ``accelerate launch`` with ``processes`` processes on this
    machine (one GPU each where there are GPUs, else CPU processes talking over gloo)."""
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
    env = {**os.environ, LAUNCHER_ENV: str(os.getpid())}  # the workers exit when this command is gone
    if not torch.cuda.is_available():  # the cores shared out: one run of N processes uses what one would
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(port), "-m", "mia_utils", *rest]
    # the launcher dies with this process (kill -9 included), and its workers with it (scoring.score);
    # its stderr is kept: a worker's one-sentence error is printed once, not under torch-elastic's
    # 40-line ChildFailedError report
    with subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent, stderr=subprocess.PIPE, text=True) as proc:
        try:
            _, err = proc.communicate()
        except KeyboardInterrupt:
            proc.terminate()
            _, err = proc.communicate()
    ours = list(dict.fromkeys(line for line in err.splitlines() if line.startswith("mia-book: error:")))
    if proc.returncode != 0 and ours:
        print("\n".join(ours), file=sys.stderr)
        return 2
    if err.strip():
        print(err.rstrip("\n")[-20000:], file=sys.stderr)  # warnings, or an unexpected failure in full
    return proc.returncode


def _zoo(args) -> None:
    if args.zoo_cmd == "build":
        if args.force:
            for name in args.names or list(zoo.RECIPES):
                zoo.build(name, force=True, device=args.device)
        t0 = time.perf_counter()
        for name, folder in zoo.build_all(args.names or None, jobs=args.jobs, device=args.device).items():
            print(f"{name}: {folder}")
        print(f"zoo ready in {time.perf_counter() - t0:.0f} s")
    elif args.zoo_cmd == "list":
        for name, r in zoo.RECIPES.items():
            state = "cached" if zoo.is_cached(r) else "not built"
            print(f"{name:16s} {state:10s} {zoo.folder_of(r)}\n    {r.description}")
    else:
        print(zoo.path_of(args.name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mia-book", description=__doc__.split("\n")[0].replace("``", "").rstrip(":"))
    sub = parser.add_subparsers(dest="cmd", required=True)
    rule = f"Image folders: {FOLDER_RULE}; the same rule in audit and score."
    a = sub.add_parser("audit", help="run the book's chapters on your checkpoint and images", epilog=rule)
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
    a.add_argument("--budget", type=float, default=None, metavar="MINUTES",
                   help="scale the chapters' knobs (samples, sampling steps, time steps, noises) down until the "
                        "measured plan (printed first) fits these minutes, or refuse to start")
    a.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="any other chapter parameter, e.g. -p n_boot 200")
    s = sub.add_parser("score", help="raw per-image scores of one attack, sharded over processes (accelerate)",
                       description=scoring.__doc__.split("\n\n")[0], epilog=rule)
    s.add_argument("--checkpoint", required=True, help="a local diffusers folder (or a zoo: name): pixel, latent, "
                                                      "SD 1.x/2.x, SDXL, SD3 or DiT")
    s.add_argument("--lora", help="a LoRA adapter folder (diffusers' save_lora_weights) loaded onto the checkpoint")
    s.add_argument("--attack", required=True, help=f"one of {', '.join(scoring.attack_names())}")
    s.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="an attack parameter, e.g. -p t 50 (JSON values: -p ts '[100, 200]')")
    s.add_argument("--images", help="folder of images to score (unlabelled)")
    s.add_argument("--members", help="folder of known members (a calibration set, with --nonmembers)")
    s.add_argument("--nonmembers", help="folder of known non-members")
    s.add_argument("--base", help="the pre-trained model the checkpoint was fine-tuned from (noise_probe)")
    s.add_argument("--references", help="folder of reference models of the checkpoint's recipe, one sub-folder each "
                                        "with a members.json of its training images (lira, rmia)")
    s.add_argument("--population", help="folder of images no model was trained on, RMIA's population samples z")
    s.add_argument("--out", required=True, help="the .parquet or .csv file to write (and OUT.json beside it)")
    s.add_argument("--device", default="auto", help='"auto", "cpu", "cuda" or "cuda:N"')
    s.add_argument("--dtype", default="fp32", choices=PRECISIONS,
                   help="precision of the forward passes: fp32 (default, exact) or, on CUDA, tf32, bf16, fp16")
    s.add_argument("--batch-size", type=_positive, default=256, help="images per forward pass")
    s.add_argument("--shard-size", type=_positive, default=1024, help="images per shard (the unit of resumption)")
    s.add_argument("--budget", type=float, default=None, metavar="MINUTES",
                   help="refuse to start when the measured plan (printed first) needs more minutes than this")
    s.add_argument("--fpr", type=float, default=0.01, help="false-positive rate the decisions are set at")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--resize", action="store_true", help="resize and convert images to the model's size and channels")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out and its shards")
    s.add_argument("--num-processes", type=_positive, default=None,
                   help="run under accelerate launch with this many processes on this machine")
    z = sub.add_parser("zoo", help="train (or find cached) the zoo's models, list them, print a folder")
    zsub = z.add_subparsers(dest="zoo_cmd", required=True)
    zb = zsub.add_parser("build", help="train the named models (all when none is named) unless cached")
    zb.add_argument("names", nargs="*")
    zb.add_argument("--force", action="store_true", help="retrain even when cached")
    zb.add_argument("--device", default="auto")
    zb.add_argument("--jobs", type=_positive, default=1, help="models trained side by side, one thread each")
    zsub.add_parser("list", help="the recipes and their cache state")
    zp = zsub.add_parser("path", help="print a model's folder (training it if needed)")
    zp.add_argument("name")
    b = sub.add_parser("book", help="execute every chapter and the summary, then build the book")
    b.add_argument("--chapters", help="comma-separated chapter numbers, e.g. 00,02 (default: all)")
    b.add_argument("--no-build", action="store_true", help="execute only; skip jupyter-book build")
    b.add_argument("--jobs", type=_positive, default=1, help="chapters executed at once, one thread each")
    b.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"))
    r = sub.add_parser("run", help="execute one chapter source (MyST markdown) with papermill")
    r.add_argument("source")
    r.add_argument("-o", "--output")
    r.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    main_rank = os.environ.get("RANK", "0") == "0"
    try:
        if args.cmd == "audit":
            audit.audit(args.checkpoint, args.members, args.nonmembers, out=args.out,
                        chapters=args.chapters.split(",") if args.chapters is not None else None,
                        device=args.device, n_eval=args.n_eval, batch_size=args.batch_size, seed=args.seed,
                        parameters=parse_params(args.parameter), resize=args.resize, overwrite=args.overwrite,
                        suspect=args.suspect, lora=args.lora, budget=args.budget)
        elif args.cmd == "zoo":
            _zoo(args)
        elif args.cmd == "book":
            times = nbrun.run_book(only=args.chapters.split(",") if args.chapters else None,
                                   parameters=parse_params(args.parameter) or None, build=not args.no_build,
                                   jobs=args.jobs)
            for name, sec in times.items():
                print(f"{name:28s} {sec:8.1f} s")
        elif args.cmd == "run":
            print(nbrun.run_notebook(args.source, args.output, parse_params(args.parameter), cwd=os.getcwd(),
                                     progress=True))
        elif args.num_processes is not None and args.num_processes > 1:
            return _launch(argv, args.num_processes)
        else:
            scoring.score(args.checkpoint, args.attack, args.out, parameters=parse_params(args.parameter),
                          images=args.images, members=args.members, nonmembers=args.nonmembers, base=args.base,
                          references=args.references, population=args.population, lora=args.lora, budget=args.budget,
                          device=args.device, dtype=args.dtype, batch_size=args.batch_size, seed=args.seed,
                          resize=args.resize, fpr=args.fpr, shard_size=args.shard_size, overwrite=args.overwrite)
    except (CheckpointError, DataError, ZooError, ValueError, TypeError) as err:
        if main_rank:  # under accelerate every process finds the same fault: say it once
            print(f"mia-book: error: {err}", file=sys.stderr)
        return 2
    return 0
