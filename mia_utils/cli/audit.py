"""``mia-book audit``: the book's chapters on an auditor's checkpoint and images.

The inputs are validated before anything runs (the checkpoint loads with every weight, one ε̂
query is finite, the model has the chapters' time steps, the images match the model's size and
channels, no image is a member and a non-member, exactly or as a near-copy, enough images for
``--n-eval``, every ``-p`` is a chosen chapter's parameter of the right type, a ``--suspect``
folder fits the model and shares no image with the non-members); each failure is one sentence
and exit code 2. Two checks are printed before any attack runs: the model-blind baseline (can
pixels alone tell members from non-members?) and the overlap across the splits; then the plan
(``costs``: each chapter's queries and minutes, one batch of queries timed on the model), which
``--budget`` scales to fit or refuses. Then each
chosen chapter is executed with papermill on that checkpoint and data, and the report is
written to ``--out``: the executed notebooks, every chapter's ``metrics.json``, and
``summary.html`` (the two checks, then one table of every attack) with ``summary.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import NamedTuple

from .. import data, evidence, nbrun, specs
from ..checks import like_default, positive_int
from ..errors import CheckpointError
from ..images import folder_images
from ..io import check_writable, exclusive_lock, write_text_atomic
from ..models import check_device
from ..scoring import PLAN_SECONDS, time_queries
from . import costs
from .costs import Sizes
from .policy import NEEDS, OWN, TEXT_TO_IMAGE, USER_DEFAULTS, ZOO_TARGETS, time_steps
from .report import provenance_lines, summary_html


def validate(checkpoint: str, members: str, nonmembers: str, device: str = "auto",
             n_eval: int | None = None, resize: bool = False, max_t: int | None = None,
             suspect: str | None = None, lora: str | None = None) -> Validated:
    """Load the checkpoint (its weights checked and one ε̂ query run; a pipeline folder with its
    LoRA) and both image sets once; with ``max_t``, check that the model has that many time
    steps; with ``suspect``, that its images fit the model and share none with the non-members
    (the set test's reference). Return a one-line description and the provenance checks
    (``evidence.provenance``; for a text-to-image model, where the captions come from), with
    the loaded target and sets the plan is measured on.

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
    images = ()
    if suspect is not None:
        images, files = folder_images(suspect, target.image_shape, resize=resize, return_names=True)
        data.check_no_leakage(suspect=(images, [str(Path(suspect) / f) for f in files]),
                              nonmembers=sets.named("nonmembers"))
        description += f"; {len(images)} suspect images"
    checks = evidence.provenance(sets, n_boot=200)
    if target.conditional:
        checks["captions"] = ("from metadata.jsonl (or the zoo split)" if sets.captions is not None else
                              "none: every image gets the empty prompt (no metadata.jsonl in the folders)")
    return Validated(description, checks, target, sets, len(images))


class Validated(NamedTuple):
    """What ``validate`` checked and loaded."""

    description: str
    checks: dict
    target: object  # pipelines.Target
    sets: data.MembershipSets
    n_suspect: int


def price(target, batch_size: int, n_images: int) -> dict[str, float]:
    """Seconds per query on the audited model and device (``scoring.time_queries``): one image
    first (the pace), then a batch of up to ``batch_size`` that takes about
    ``scoring.PLAN_SECONDS``; a query with a gradient timed on a batch of up to 8."""
    one = time_queries(target, 1)
    b = max(1, min(batch_size, n_images, int(PLAN_SECONDS / max(one, 1e-9))))
    return {"forward": time_queries(target, b) if b > 1 else one,
            "grad": time_queries(target, max(1, min(8, b)), grad=True), "timed_batch": b}


def sizes_of(validated: Validated) -> Sizes:
    return Sizes(**{part: len(x) for part, x in validated.sets.parts().items()},
                 T=validated.target.model.num_train_timesteps, suspect=validated.n_suspect)


def zoo_fits(checkpoint: str, stem: str) -> bool:
    """Whether chapter ``stem``'s zoo defaults fit ``checkpoint``: a zoo model among the chapter's
    ``ZOO_TARGETS`` (chapter 10's comparison is digits-ddpm's, chapter 09's references fashion-lira's)."""
    return specs.is_zoo(checkpoint) and checkpoint in ZOO_TARGETS.get(stem, (checkpoint,))


def chapter_parameters(src: Path, checkpoint: str, common: dict) -> dict:
    """The parameters chapter ``src`` runs with: its own defaults, those of the audit's policy on
    a folder (``USER_DEFAULTS``), the audit's (``common``: its options and -p)."""
    own = nbrun.parameters_of(src)
    # a folder, or a zoo model its zoo defaults do not fit: the policy's defaults for a folder
    defaults = {} if zoo_fits(checkpoint, src.stem) else USER_DEFAULTS.get(src.stem, {})
    return {**own, **{k: v for k, v in {**defaults, **common}.items() if k in own}}


def plan_chapters(sources: list[Path], checkpoint: str, common: dict, validated: Validated, batch_size: int,
                  budget: float | None, fixed: set[str]) -> tuple[dict[str, dict], list[costs.ChapterPlan]]:
    """Each chapter's parameters and plan, printed; scaled to ``budget`` minutes
    (``costs.fit_budget``, -p's knobs in ``fixed`` kept) and printed again when given."""
    parameters = {src.stem: chapter_parameters(src, checkpoint, common) for src in sources}
    sizes = sizes_of(validated)
    prices = price(validated.target, batch_size, sizes.images)
    plans = [p for src in sources if (p := costs.chapter_plan(src.stem, parameters[src.stem], sizes, prices))]
    for line in plan_lines(plans, prices):
        print(f"[audit] {line}", flush=True)
    if budget is not None:
        costs.fit_budget(plans, parameters, sizes, budget, fixed)
        for line in budget_lines(plans, budget):
            print(f"[audit] {line}", flush=True)
    return parameters, plans


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
        names = () if need is None else (need[0],) if isinstance(need[0], str) else need[0]
        if any(n not in parameters for n in names) and not zoo_fits(checkpoint, src.stem):
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
        like_default(k, v, declared[k])


def plan_lines(plans: list[costs.ChapterPlan], prices: dict) -> list[str]:
    """The plan as the audit prints it before any chapter runs: the price of a query, one line
    per chapter, the total."""
    return [f"plan: {prices['forward'] * 1e3:.2f} ms a query (timed on a batch of {prices['timed_batch']}), "
            f"{prices['grad'] * 1e3:.2f} ms with its gradient, + {costs.OVERHEAD_SECONDS:.0f} s a chapter",
            *(f"plan: {p.line()}" for p in plans),
            f"plan: about {sum(p.seconds for p in plans) / 60:.1f} min in all"]


def budget_lines(plans: list[costs.ChapterPlan], budget: float) -> list[str]:
    """What ``--budget`` changed, chapter by chapter, and the plan after it."""
    changed = [f"--budget {budget:g}: {p.stem}'s {k} {a} -> {b}" for p in plans for k, (a, b) in p.changed.items()]
    if not changed:
        return [f"--budget {budget:g}: the plan fits, nothing changed"]
    return [*changed, *(f"plan: {p.line()}" for p in plans if p.changed),
            f"plan: about {sum(p.seconds for p in plans) / 60:.1f} min in all after --budget {budget:g}"]


def measured_queries(results: Path) -> dict:
    """The queries a chapter's process made, as its metrics.json records them (``nbrun.save_metrics``)."""
    path = results / "metrics.json"
    queries = json.loads(path.read_text()).get("queries") if path.is_file() else None
    return {"measured": queries} if queries else {}


MARKER = ".mia-book-audit"  # written into every report folder: only such a folder is ever cleared
LOCK = ".mia-book-audit.lock"  # held by the audit writing the folder: one audit per --out at a time


def _report_files(out: Path) -> list[Path]:
    """What an audit writes into ``out``: the summary, the chapters' results and notebooks."""
    stems = [p.stem for p in nbrun.chapters()]
    found = [out / "summary.json", out / "summary.html", *(out / "results" / s for s in stems),
             *(out / f"{s}.ipynb" for s in stems)]
    return [p for p in found if p.exists() or p.is_symlink()]


def prepare_out(out: Path, overwrite: bool, clear: bool = True) -> None:
    """A report folder that holds nothing of an earlier run: refused when it does, unless ``overwrite``
    (which removes the earlier report first, so that no old number can mix into the new one).

    Only a folder an audit wrote (its ``MARKER`` file) is ever cleared, and then only of what an
    audit writes (``_report_files``): a user's own files in it, or a folder of the user's that
    merely holds a ``summary.json``, are never deleted. With ``clear`` False: the checks only."""
    check_writable(out, f"--out {str(out)!r}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file: name a folder for the report.")
    earlier = _report_files(out) if out.is_dir() else []
    if earlier:
        names = ", ".join(str(p.relative_to(out)) for p in earlier[:3])
        if not (out / MARKER).is_file():
            raise ValueError(f"--out {str(out)!r} holds files that no audit wrote there ({names}): they are never "
                             "deleted; choose a new or empty folder.")
        if not overwrite:
            raise ValueError(f"--out {str(out)!r} holds an earlier report ({names}): choose another "
                             "folder, or pass --overwrite to replace it.")
        if not clear:
            return
        for p in earlier:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    if not clear:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("a report folder written by mia-book audit: --overwrite clears only what it wrote\n")


def audit(checkpoint: str, members: str, nonmembers: str, out: str | Path = "audit",
          chapters: list[str] | None = None, device: str = "auto", n_eval: int | None = None,
          batch_size: int = 256, seed: int = 0, parameters: dict | None = None, resize: bool = False,
          overwrite: bool = False, suspect: str | None = None, lora: str | None = None,
          budget: float | None = None) -> Path:
    """Run the chosen chapters (default: every chapter) on a checkpoint; write the report to ``out``.

    Everything is checked before anything runs, and each chapter's plan printed (``costs``:
    queries and minutes, timed on the model); with ``budget`` (minutes) the chapters' knobs are
    scaled down to fit it, or the audit is refused. The summary is written last, atomically, so
    an interrupted audit leaves no summary that looks complete.
    """
    out = Path(out).resolve()
    parameters = parameters or {}
    positive_int("--batch-size", batch_size)
    sources = choose_chapters(chapters)
    check_parameters(sources, parameters)
    kind = specs.kind_of(checkpoint)
    chosen = sources
    sources, skipped = plan(sources, checkpoint, parameters, kind)
    if not sources:
        applicable = [p.name[:2] for p in plan(choose_chapters(None), checkpoint, parameters, kind)[0]]
        raise ValueError(f"No chosen chapter ({', '.join(p.name[:2] for p in chosen)}) applies to this {kind} "
                         f"model: {'; '.join(f'{k} needs {v}' for k, v in skipped.items())}. The chapters that do: "
                         f"{', '.join(applicable) or 'none'} (--chapters {','.join(applicable)}).")
    if lora is not None and kind != "text-to-image":
        raise CheckpointError(f"--lora applies to a text-to-image pipeline; {checkpoint} is a {kind} model.")
    declared = {}
    for src in sources:
        declared.update({k: v for k, v in nbrun.parameters_of(src).items() if k not in declared})
    if suspect is not None and "suspect" not in declared:
        raise ValueError("--suspect is tested by chapter 08 (from scores to evidence): add 08 to --chapters.")
    max_t = max(time_steps({**declared, **parameters}), default=None)
    validated = validate(checkpoint, members, nonmembers, device, n_eval, resize, max_t, suspect, lora)
    description, checks = validated.description, validated.checks
    print(f"[audit] {description}", flush=True)
    for line in provenance_lines(checks):  # before any attack: what could make every AUC meaningless
        print(f"[audit] {line}", flush=True)
    common = {"checkpoint": specs.display(checkpoint), "members": specs.display(members),
              "nonmembers": specs.display(nonmembers), "device": device, "n_eval": n_eval,
              "batch_size": batch_size, "seed": seed, "resize": resize, "suspect": suspect,
              "lora": None if lora is None else specs.display(lora), **parameters}
    chapter_params, plans = plan_chapters(sources, checkpoint, common, validated, batch_size, budget, set(parameters))
    prepare_out(out, overwrite, clear=False)  # refused before anything is written
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out / LOCK, f"--out {str(out)!r}"):
        prepare_out(out, overwrite)  # again under the lock: another audit may have written since
        for stem, need in skipped.items():
            print(f"[audit] {stem} skipped: it needs {need}", flush=True)
        times = {}
        for src in sources:
            t0 = time.perf_counter()
            print(f"[audit] {src.stem} ...", flush=True)
            own = nbrun.parameters_of(src)
            # only what differs from the chapter's own defaults is passed: the notebook shows the rest as written
            params = {k: v for k, v in chapter_params[src.stem].items() if v != own[k] or k in common}
            params["out_dir"] = str(out / "results" / src.stem)
            nbrun.run_notebook(src, out / f"{src.stem}.ipynb", parameters=params, cwd=out)
            times[src.stem] = round(time.perf_counter() - t0, 1)
            print(f"[audit] {src.stem}: {times[src.stem]} s", flush=True)
        table = nbrun.summary_table(out / "results")
        planned = {p.stem: {**p.as_dict(), **measured_queries(out / "results" / p.stem)} for p in plans}
        write_text_atomic(out / "summary.html", summary_html(table, checkpoint, members, nonmembers, times, skipped,
                                                  provenance_lines(checks), planned))
        write_text_atomic(out / "summary.json", json.dumps({"checkpoint": str(checkpoint), "members": str(members),
                                                        "nonmembers": str(nonmembers), "suspect": suspect,
                                                        "seconds": times, "skipped": skipped, "plan": planned,
                                                        "seconds_per_query": plans[0].price if plans else None,
                                                        "provenance": provenance_lines(checks),
                                                        "rows": table.to_dict(orient="records")}, indent=1))
        print(f"[audit] report: {out / 'summary.html'}", flush=True)
        return out
