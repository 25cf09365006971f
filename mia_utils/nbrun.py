"""Run the book's chapters: MyST text notebooks → jupytext → papermill → executed .ipynb.

Sources are ``notebooks/NN_slug.md`` (and ``book/summary.md``), the only committed form. Each
is converted in memory by jupytext, executed by papermill with its parameters, and written
beside its source as ``.ipynb`` (gitignored), which the book renders with execution off. The
cell papermill injects with the parameters is tagged ``remove-cell`` so the book hides it.

    mia-book book                       # every chapter, the summary, then the book
    mia-book run notebooks/00_victims.md -p n_eval 50 -p device cpu
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .io import write_json_atomic
from .models import process_queries
from .tables import table

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = Path("book") / "summary.md"
INJECTED_TAG = "injected-parameters"


def chapters(root: str | Path = ROOT) -> list[Path]:
    """The chapter sources in book order: ``notebooks/NN_*.md`` sorted by number."""
    return sorted((Path(root) / "notebooks").glob("[0-9][0-9]_*.md"))


def parameters_of(source: str | Path) -> dict:
    """The parameters a chapter declares: {name: default} from its cell tagged ``parameters``.

    Read with ``ast`` (literal defaults only), not executed; comments never count.
    """
    import ast

    import jupytext

    nb = jupytext.read(Path(source))
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            out = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    try:
                        out[node.targets[0].id] = ast.literal_eval(node.value)
                    except ValueError:
                        out[node.targets[0].id] = None
            return out
    return {}


def _kernel_env() -> None:
    # The kernel is started as plain "python": make that the interpreter running us (the venv's),
    # whether or not the venv was activated.
    bindir = str(Path(sys.executable).parent)
    if not os.environ.get("PATH", "").startswith(bindir + os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def run_notebook(source: str | Path, output: str | Path | None = None, parameters: dict | None = None,
                 cwd: str | Path | None = None, kernel_name: str = "python3",
                 progress: bool = False, log_output: bool = False) -> Path:
    """Execute one MyST text notebook with papermill; return the executed ``.ipynb``.

    ``parameters`` override the cell tagged ``parameters``; ``cwd`` (default: the repository
    root) is where relative paths in the notebook resolve. Raises papermill's execution error
    (the output notebook, with the traceback, is still written) when a cell fails.
    """
    import jupytext
    import nbformat
    import papermill as pm

    source = Path(source).resolve()
    output = Path(output) if output is not None else source.with_suffix(".ipynb")
    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": "Python 3", "language": "python"}
    _kernel_env()
    with tempfile.TemporaryDirectory() as tmp:
        src_ipynb = Path(tmp) / (source.stem + ".ipynb")
        nbformat.write(nb, src_ipynb)
        try:
            pm.execute_notebook(str(src_ipynb), str(output), parameters=parameters or {},
                                cwd=str(cwd or ROOT), kernel_name=kernel_name,
                                progress_bar=progress, log_output=log_output)
        finally:
            if output.exists():
                _hide_injected(output)
    return output


def _hide_injected(path: Path) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if INJECTED_TAG in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(nb, path)


def glue(name, value=None, display: bool = False):
    """``myst_nb.glue`` for a number the prose cites: numpy scalars become Python numbers.
    ``glue({name: value, ...})`` glues each entry of a mapping.

    myst-nb formats glued text from its ``repr``; a numpy scalar's repr
    (``np.float64(0.97)``) cannot be formatted with ``:.3f`` and breaks the build.
    """
    import numpy as np
    from myst_nb import glue as _glue

    if isinstance(name, dict):
        for key, item in name.items():
            glue(key, item, display=display)
        return None

    if isinstance(value, np.generic):
        value = value.item()
    return _glue(name, value, display=display)


def save_metrics(out_dir: str | Path, rows: dict, parameters: dict, **extra) -> Path:
    """Write a chapter's ``metrics.json``: ``{"metrics": {row: {...}}, "parameters": {...},
    "queries": {"forward": n, "grad": m}}``, the last the model queries the chapter's process made
    (``models.process_queries``; what ``mia-book audit``'s plan is checked against)."""
    extra = {"queries": process_queries(), **extra}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(out_dir / "metrics.json", {"metrics": rows, "parameters": parameters, **extra},
                             indent=1, default=str)


def collect_metrics(results_dir: str | Path = "results") -> dict[str, dict]:
    """Every chapter's metrics.json under ``results_dir``, keyed by chapter folder name."""
    out = {}
    for f in sorted(Path(results_dir).glob("*/metrics.json")):
        out[f.parent.name] = json.loads(f.read_text())
    return out


def summary_table(results_dir: str | Path = "results"):
    """One row per chapter × attack, grouped by chapter: the honest metrics with 95 % CIs first,
    then access level, queries per image and seconds (``tables.table``), the victim last."""
    rows, victims = {}, []
    for chapter, blob in collect_metrics(results_dir).items():
        victim = blob.get("parameters", {}).get("checkpoint", "")
        for name, row in blob.get("metrics", {}).items():
            rows[f"{chapter}|{name}"] = {**row, "group": chapter}
            victims.append(victim)
    out = table(rows, setting=False, group="chapter")
    if len(out):
        out["attack"] = [k.split("|", 1)[1] for k in rows]
        out["victim"] = victims
    return out


def build_book(root: str | Path = ROOT) -> None:
    """``jupyter-book build . -W -n --keep-going``: warnings are errors."""
    exe = Path(sys.executable).parent / "jupyter-book"
    subprocess.run([str(exe), "build", str(root), "-W", "-n", "--keep-going"], check=True, cwd=root)


# Seconds each chapter took in a cold CI run (2026-12-07, third session, 2 cores, two side by side): only the order
# in which --jobs N starts them on a fresh clone, longest first (chapter 09 started last added 3 min).
ORDER_SECONDS = {"09_references": 421, "04_trajectories": 238, "10_defenses": 153, "06_noise_probe": 97,
                 "07_text_to_image": 96, "05_latent": 69, "03_secmi_pia": 67, "02_sima": 61, "08_evidence": 38,
                 "00_victims": 35, "01_theory": 13}


def run_book(root: str | Path = ROOT, only: list[str] | None = None, parameters: dict | None = None,
             build: bool = True, progress: bool = True, jobs: int = 1) -> dict[str, float]:
    """Execute every chapter (or the numbers in ``only``), then the summary, then build the book.

    ``jobs`` > 1 executes that many chapters at once, each kernel on one intra-op thread (on 2
    cores two one-thread kernels side by side finish sooner than one two-thread kernel after
    another: the chapters' Python and scikit-learn work runs on one core anyway). Returns the
    wall time in seconds of each notebook (and of the build).
    """
    from concurrent.futures import ThreadPoolExecutor

    root = Path(root)
    times: dict[str, float] = {}
    sources = [p for p in chapters(root) if only is None or p.name[:2] in only]

    def run(src: Path) -> None:
        t0 = time.perf_counter()
        print(f"[nbrun] {src.relative_to(root)} ...", flush=True)
        run_notebook(src, parameters=parameters if src.parent.name == "notebooks" else None,
                     cwd=root, progress=progress and jobs == 1)
        times[src.stem] = round(time.perf_counter() - t0, 1)
        print(f"[nbrun] {src.relative_to(root)}: {times[src.stem]} s", flush=True)

    if jobs > 1:
        os.environ["OMP_NUM_THREADS"] = "1"  # inherited by every kernel started from here
        last = root / "_build" / "timings.json"  # the longest chapters first: as the last run timed them,
        known = {**ORDER_SECONDS, **(json.loads(last.read_text()) if last.is_file() else {})}  # else as CI did
        with ThreadPoolExecutor(jobs) as pool:  # kernels are processes: threads only wait on them
            list(pool.map(run, sorted(sources, key=lambda p: -known.get(p.stem, 0))))  # re-raises a failure
    else:
        for src in sources:
            run(src)
    run(root / SUMMARY)  # reads every chapter's metrics.json
    if build:
        t0 = time.perf_counter()
        build_book(root)
        times["jupyter-book build"] = round(time.perf_counter() - t0, 1)
    (root / "_build").mkdir(exist_ok=True)
    (root / "_build" / "timings.json").write_text(json.dumps(times, indent=1))
    return times
