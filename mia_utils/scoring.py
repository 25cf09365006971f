"""Raw per-image scores at scale: what ``mia-book score`` runs, on one process or many::

    mia-book score --checkpoint DIR --attack sima -p t 50 --images DIR \\
        [--members DIR --nonmembers DIR] --out scores.parquet
    # the same, sharded over the processes:
    accelerate launch -m mia_utils score ...

Every kind of target scores: a pixel checkpoint on its images; a latent or text-to-image
pipeline (SD 1.x/2.x, SDXL, SD3, DiT; with ``--lora``) on its VAE's latents z_0 = s · μ(x),
each image bound to its caption from its folder's ``metadata.jsonl`` (the empty prompt where
a folder has none; a class label for DiT), so the text attacks (CLiD, Wen et al.) score too.

One row per image: its path (relative to the folder it came from), its split (member,
non-member, unlabelled), the SHA-256 of its pixels as the model sees them (the hash that
also seeds its noise), the attack, its parameters, the score (higher = more likely a member)
and the SHA-256 of the checkpoint's weights. Feature attacks (``trajectory``, ``gsa``) add
one column per feature; their score is a linear probe's log-odds, trained on the labelled
calibration images (none without labels).

With labelled images (``members`` and ``nonmembers``), each is put, by its content hash, in
a calibration part or a held-out part. The threshold that calls "member" at the chosen
false-positive rate is set on the calibration non-members; every image gets its decision,
and the FPR and TPR the threshold realises on the held-out labelled images are reported
(with the held-out AUC and its 95 % bootstrap interval) in ``<out>.json``.

Scale. The images are cut into shards of ``shard_size`` files, in a fixed order; the shards
are spread over the processes with accelerate's ``PartialState.split_between_processes`` (as
diffusers' distributed-inference guide does); each shard's rows are written atomically to
``<out>.shards/`` as soon as they are done, so a killed run started again skips the finished
shards; the main process gathers every shard (``accelerate.utils.gather_object``: no shared
file system needed) and writes the file, last and atomically. Every random draw is seeded by
(seed, the image's content hash), so a score depends neither on the number of processes, the
batch size, nor the order of the images (``mia_utils.noise``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import attacks as _attacks
from . import metrics, specs
from .checks import like_default, positive_int
from .data import near_duplicates, thumbnails
from .errors import CheckpointError, DataError
from .images import check_shape, image_files, load_image_files, read_captions
from .io import check_writable, die_with_parent, exclusive_lock, write_frame_atomic, write_json_atomic
from .models import DiffusionModel, check_device, resolve_device
from .noise import content_hashes
from .probes import binary_scores, fit
from .references import MEMBERS, ReferenceModels

FORMAT = 1  # bump when a row's meaning changes: shards of another format are not mixed in
SPLITS = ("member", "nonmember", "unlabelled")
# hyper-parameters the command sets itself (or that are tensors): never -p
OWN = ("batch_size", "seed", "base", "x_init", "progress", "chunk", "theta_chunk", "desc", "references", "population",
       "variance_images")


def attack_names() -> list[str]:
    """Every attack ``score`` reaches: the registry's scores (the text attacks on text-to-image
    targets only), then the feature attacks."""
    return list(_attacks.REGISTRY)


def get_attack(name: str):
    """A registered attack (``attacks.Attack`` or ``attacks.FeatureAttack``); an error listing them otherwise."""
    if name not in _attacks.REGISTRY:
        raise ValueError(f"No attack {name!r}; the attacks are {', '.join(attack_names())}.")
    return _attacks.REGISTRY[name]


def parameters_of(name: str) -> dict:
    """The parameters ``-p`` may set for attack ``name``, with their defaults."""
    return {k: v for k, v in get_attack(name).defaults.items() if k not in OWN}


# ---------------------------------------------------------------------- the inputs
@dataclass(frozen=True)
class Item:
    """One image to score: its split, the folder it was listed from and its path inside it."""

    split: str
    root: str
    path: str
    caption: str = ""  # from the folder's metadata.jsonl ("" where it has none: the empty prompt)

    @property
    def file(self) -> Path:
        return Path(self.root) / self.path


def list_items(images: str | None = None, members: str | None = None, nonmembers: str | None = None) -> list[Item]:
    """Every image file of the folders (sub-folders included), members first, then non-members,
    then unlabelled, each sorted by path: the fixed order the shards are cut in."""
    if (members is None) != (nonmembers is None):
        raise DataError("Give both --members and --nonmembers (a labelled set needs both sides), or neither.")
    if images is None and members is None:
        raise DataError("Nothing to score: give --images DIR, or --members DIR and --nonmembers DIR, or all three.")
    items = []
    for split, folder in (("member", members), ("nonmember", nonmembers), ("unlabelled", images)):
        if folder is not None:
            root = Path(folder).resolve()
            paths = [f.relative_to(root).as_posix() for f in image_files(root, True)]
            captions = read_captions(root, paths) or [""] * len(paths)
            items += [Item(split, str(root), p, c) for p, c in zip(paths, captions)]
    return items


def weights_hash(folder: str | Path) -> str:
    """SHA-256 over every safetensors file of a checkpoint folder (relative path, then bytes),
    in sorted order: which weights scored, whatever the folder is called.

    Only regular files that lie inside the folder count: a link to a device (``/dev/zero``, which
    hung the hash at 100 % CPU) or to a file outside the folder is not a weight of this checkpoint
    and is never read (diffusers loads the components' own files, which are regular)."""
    folder = Path(folder)
    root = folder.resolve()
    h = hashlib.sha256()
    files = sorted((f for f in folder.rglob("*.safetensors") if f.resolve().is_relative_to(root) and f.is_file()),
                   key=lambda p: p.relative_to(folder).as_posix())
    if not files:
        raise CheckpointError(f"{str(folder)!r} holds no safetensors weights.")
    for f in files:
        h.update(f.relative_to(folder).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _jsonable(hyper: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(hyper.items())}


# ---------------------------------------------------------------------- one run
@dataclass
class Run:
    """A scoring run, checked: the model(s), the attack and its parameters, the images and the
    fingerprint that names its shards (what the scores depend on, and nothing else)."""

    target: object       # pipelines.Target: the model, its VAE and its condition encoder
    attack: object
    hyper: dict          # the attack's parameters, defaults filled in (JSON-able)
    call: dict           # what the score function is called with (hyper + base model, batch size)
    items: list[Item]
    fingerprint: dict
    shard_size: int
    resize: bool
    base: object = None  # the base pipelines.Target of the noise probe
    plan: dict | None = None  # measure_plan's estimate, made before any image is scored

    @property
    def model(self) -> DiffusionModel:
        return self.target.model

    @property
    def run_id(self) -> str:
        return hashlib.sha256(json.dumps(self.fingerprint, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def shards(self) -> list[list[Item]]:
        return [self.items[i:i + self.shard_size] for i in range(0, len(self.items), self.shard_size)]

    def queries(self, reset: bool = False) -> int:
        """ε̂ queries since the last reset, of every model the attack calls (the base included)."""
        models = [self.model, *([self.base.model] if self.base is not None else []), *_attacks.models_in(self.call)]
        return sum(m.reset_queries() if reset else m.queries for m in models)

    def vae_passes(self) -> int:
        """Images through the VAE's encoder so far (0 for a pixel model)."""
        return self.target.codec.encoder_queries if self.target.codec is not None else 0

    def load(self, items: list[Item]) -> torch.Tensor:
        """The shard's images as the model takes them (converted with ``resize``, else checked);
        decoded by several threads when a GPU waits for them."""
        shape = self.target.image_shape
        c, h, w = shape
        threads = min(8, os.cpu_count() or 1) if self.model.device.type == "cuda" else 1
        images = load_image_files([it.file for it in items], size=(h, w) if self.resize else None,
                                       channels=c if self.resize else None, where=items[0].root, threads=threads)
        check_shape(images, shape, items[0].root)
        return images

    def score(self, items: list[Item], images: torch.Tensor | None = None) -> pd.DataFrame:
        """The rows of some images (one shard): hashes, scores or features (``images``: the
        items already loaded)."""
        images = self.load(items) if images is None else images
        rows = pd.DataFrame({"path": [it.path for it in items], "split": [it.split for it in items],
                             "content_sha256": content_hashes(images)})
        # what the denoiser diffuses (the VAE's scaled posterior means for a latent model), and the
        # model bound to each image's caption (itself for an unconditional model)
        z = self.target.encode(images)
        captions = [it.caption for it in items]
        view = self.target.bind(captions) if self.target.conditional else self.model
        call = dict(self.call)
        if self.base is not None:
            call["base"] = self.base.bind(captions) if self.base.conditional else self.base.model
        if isinstance(self.attack, _attacks.FeatureAttack):
            x, names = self.attack(view, z, **call)
            rows["score"] = np.nan  # the probe scores them once every shard is in
            rows = pd.concat([rows, pd.DataFrame(x, columns=[f"f_{n}" for n in names])], axis=1)
        else:
            rows["score"] = np.asarray(self.attack(view, z, **call), dtype=np.float64)
        return rows


def prepare(checkpoint: str, attack: str, parameters: dict | None = None, images: str | None = None,
            members: str | None = None, nonmembers: str | None = None, base: str | None = None,
            device: str | torch.device = "auto", dtype: str = "fp32", batch_size: int = 256, seed: int = 0,
            resize: bool = False, shard_size: int = 1024, references: str | None = None,
            population: str | None = None, lora: str | None = None) -> Run:
    """Check everything a run needs and load the model(s); errors name the fix."""
    parameters = dict(parameters or {})
    att = get_attack(attack)
    own = sorted(set(parameters) & set(OWN))
    if own:
        raise ValueError(f"-p {own[0]}: set by the command's own option (--{own[0].replace('_', '-')}) or not "
                         f"settable; {attack}'s parameters are {', '.join(sorted(parameters_of(attack)))}.")
    unknown = sorted(set(parameters) - set(att.defaults))
    if unknown:
        raise ValueError(f"{att.name} has no parameter {', '.join(map(repr, unknown))}; its parameters are "
                         f"{', '.join(sorted(parameters_of(attack)))}.")
    for k, v in parameters.items():  # "False" for a boolean is refused, not read as true
        like_default(k, v, att.defaults[k])
    hyper = att.check_hyper(parameters)
    positive_int("--batch-size", batch_size), positive_int("--shard-size", shard_size)
    target = specs.load_target(checkpoint, lora=lora, device=device, batch_size=batch_size, dtype=dtype)
    model = target.model
    if "captions" in att.needs and target.kind != "text-to-image":
        raise ValueError(f"{att.name} compares ε̂ with and without each image's caption: it needs a text-to-image "
                         f"checkpoint; this one is a {target.kind} model.")
    if "references" in att.needs and target.kind != "pixel":
        raise ValueError(f"{att.name} compares pixel checkpoints with pixel reference models; this one is a "
                         f"{target.kind} model.")
    call = {k: v for k, v in hyper.items() if k not in OWN}
    sig = att.defaults
    if "seed" in sig:
        call["seed"] = seed
    if "batch_size" in sig:
        call["batch_size"] = batch_size
    weights = weights_hash(specs.folder(checkpoint))
    if target.lora is not None:
        weights = hashlib.sha256((weights + weights_hash(target.lora)).encode()).hexdigest()
    fingerprint = {"format": FORMAT, "checkpoint_sha256": weights, "attack": att.name,
                   "parameters": _jsonable({k: v for k, v in call.items() if k != "batch_size"}),
                   "dtype": dtype, "resize": bool(resize), "shard_size": shard_size}
    base_target = None
    if "base" in sig:
        if base is None:
            raise ValueError(f"{att.name} needs the model the checkpoint was fine-tuned from: --base DIR.")
        base_target = specs.load_target(base, device=model.device, batch_size=batch_size, dtype=dtype)
        if base_target.kind != target.kind or base_target.model.sample_shape != model.sample_shape:
            raise ValueError(f"--base {base} is a {base_target.kind} model of inputs {base_target.model.sample_shape}; "
                             f"the checkpoint is a {target.kind} model of {model.sample_shape}: give its own base.")
        fingerprint["base_sha256"] = weights_hash(specs.folder(base))
    elif base is not None:
        raise ValueError(f"--base is used by noise_probe only; {att.name} queries the checkpoint alone.")
    _reference_inputs(att, call, fingerprint, model, references, population, batch_size, dtype, resize)
    items = list_items(images, members, nonmembers)
    fingerprint["images_sha256"] = hashlib.sha256("\n".join(
        f"{it.split}\t{it.root}\t{it.path}" + (f"\t{it.caption}" if target.conditional else "")
        for it in items).encode()).hexdigest()
    run = Run(target, att, fingerprint["parameters"], call, items, fingerprint, shard_size, resize, base_target)
    _check_no_near_copies(run)
    t0 = time.perf_counter()
    run.score(items[:1])  # one image through the whole attack: bad parameters fail before anything is written
    run.plan = measure_plan(run, run.queries(), time.perf_counter() - t0, batch_size)
    run.queries(reset=True)
    if target.codec is not None:
        target.codec.encoder_queries = 0
    return run


# the parameters that scale an attack's cost, named when a plan exceeds --budget
COST_KNOBS = ("ts", "t_sec", "k", "n_noise", "n", "steps", "inversion_steps", "generation_steps", "n_variations")


# how long the timed batch of a plan may take, at the one-image run's pace: a real-size model on a
# CPU (24 s a forward) is timed on one image, not on a batch that would cost half an hour
PLAN_SECONDS = 10.0


def time_queries(target, b: int, grad: bool = False) -> float:
    """Seconds per query of ``target``'s model (a ``pipelines.Target``; a text model bound to the
    empty prompt) on its device: one batch of ``b`` noisy inputs at t = T/2, timed after the
    caller's warm-up; with ``grad``, the forward pass and the backward pass of its loss."""
    model = target.model
    x = torch.randn((b, *model.sample_shape), generator=torch.Generator().manual_seed(0))
    view = target.bind(n=b) if target.conditional else model
    t0 = time.perf_counter()
    if grad:
        x = x.to(model.device).requires_grad_(True)
        view.eps(x, model.num_train_timesteps // 2, batch_size=b, grad=True).pow(2).sum().backward()
    else:
        view.eps(x, model.num_train_timesteps // 2, batch_size=b)
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    return (time.perf_counter() - t0) / b


def measure_plan(run: Run, queries_per_image: int, seconds_one: float, batch_size: int) -> dict:
    """What the run will cost, measured before it starts: the queries one image took through the
    whole attack (counted, the base's included; ``seconds_one`` its time), times the images, at
    the seconds per forward pass that one timed batch takes on the chosen device (after that
    one-image warm-up; ``min(batch_size, images)`` forward passes, fewer where they would take
    more than ``PLAN_SECONDS``), plus the VAE's encoding of one image. An estimate, not a
    promise: it leaves out image decoding and, for feature attacks, the probe."""
    n = len(run.items)
    affordable = int(PLAN_SECONDS * max(queries_per_image, 1) / max(seconds_one, 1e-9))
    b = max(1, min(batch_size, n, affordable))
    per_forward = time_queries(run.target, b)
    vae = 0.0
    if run.target.codec is not None:
        images = run.load(run.items[:1])
        t0 = time.perf_counter()
        run.target.encode(images)
        vae = time.perf_counter() - t0
    seconds = n * (queries_per_image * per_forward + vae)
    return {"images": n, "queries_per_image": int(queries_per_image), "forward_passes": int(n * queries_per_image),
            "seconds_per_forward": per_forward, "vae_seconds_per_image": vae, "timed_batch": b,
            "estimated_minutes": seconds / 60}


def check_budget(run: Run, budget: float | None) -> None:
    """Refuse, in one sentence naming the knobs, a run whose plan exceeds ``budget`` minutes."""
    if budget is None:
        return
    if budget <= 0:
        raise ValueError(f"--budget {budget:g}: give the minutes this run may take (a positive number).")
    plan = run.plan
    if plan["estimated_minutes"] > budget:
        knobs = [k for k in COST_KNOBS if k in run.hyper]
        lower = f"lower {run.attack.name}'s {', '.join(f'-p {k}' for k in knobs)}" if knobs else ""
        raise ValueError(f"The plan needs about {plan['estimated_minutes']:.1f} min ({plan['forward_passes']:,} forward "
                         f"passes: {plan['images']} images x {plan['queries_per_image']} queries, "
                         f"{plan['seconds_per_forward'] * 1e3:.1f} ms each) > --budget {budget:g}: score fewer images"
                         f"{', or ' + lower if lower else ''}, or run on a GPU (--device cuda).")


def plan_line(plan: dict) -> str:
    """The plan as the one line ``mia-book score`` prints before it starts."""
    return (f"[score] plan: {plan['images']} images x {plan['queries_per_image']} queries = {plan['forward_passes']:,} "
            f"forward passes at {plan['seconds_per_forward'] * 1e3:.2f} ms (timed on a batch of {plan['timed_batch']})"
            + (f" + VAE {plan['vae_seconds_per_image'] * 1e3:.1f} ms/image" if plan["vae_seconds_per_image"] else "")
            + f": about {plan['estimated_minutes']:.1f} min")


def _reference_inputs(att, call: dict, fingerprint: dict, model: DiffusionModel, references: str | None,
                      population: str | None, batch_size: int, dtype: str, resize: bool) -> None:
    """LiRA's and RMIA's other inputs, loaded into ``call`` and named in the fingerprint: the
    reference models (each sub-folder of ``references`` a diffusers checkpoint with its
    members.json) and RMIA's population samples z (a folder of images no model trained on)."""
    if "references" not in att.needs:
        for flag, given in (("--references", references), ("--population", population)):
            if given is not None:
                raise ValueError(f"{flag} is used by the reference-model attacks (lira, rmia) only.")
        return
    if references is None:
        raise ValueError(f"{att.name} compares the checkpoint with reference models of its recipe: --references DIR "
                         f"(one sub-folder per reference, each a diffusers checkpoint with a {MEMBERS} of its "
                         "training images' hashes, mia_utils.references).")
    refs = ReferenceModels.from_folder(references, device=model.device, batch_size=batch_size, dtype=dtype)
    call["references"] = refs
    fingerprint["references_sha256"] = hashlib.sha256("\n".join(
        weights_hash(Path(references) / name) + (Path(references) / name / MEMBERS).read_text()
        for name in refs.names).encode()).hexdigest()
    if "population" not in att.needs:
        if population is not None:
            raise ValueError(f"--population is used by rmia only; {att.name} takes each image's own σ.")
        return
    if population is None:
        raise ValueError(f"{att.name} compares each image with population samples z: --population DIR (images of the "
                         "data distribution that neither the checkpoint nor any reference was trained on).")
    files = image_files(Path(population), True)
    c, h, w = model.sample_shape
    z = load_image_files(files, size=(h, w) if resize else None, channels=c if resize else None, where=population)
    check_shape(z, model.sample_shape, population)
    call["population"] = z
    fingerprint["population_sha256"] = hashlib.sha256("".join(content_hashes(z)).encode()).hexdigest()


# ---------------------------------------------------------------------- files
def shard_dir(out: Path) -> Path:
    return out.with_name(out.name + ".shards")


def check_out(out: Path, overwrite: bool) -> None:
    """A .parquet or .csv path, and no existing result there unless ``overwrite`` (checked before
    any model is loaded)."""
    if out.suffix not in (".parquet", ".csv"):
        raise ValueError(f"--out {str(out)!r}: name a .parquet or .csv file.")
    check_writable(out, f"--out {str(out)!r}")
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a folder: name a .parquet or .csv file (not a folder; --overwrite "
                         "never replaces a folder).")
    if out.exists() and not overwrite:
        raise ValueError(f"--out {str(out)!r} exists: choose another path, or pass --overwrite to replace it.")


def check_shards(out: Path, run: Run, overwrite: bool) -> None:
    """Refuse shards of another run (another checkpoint, attack, parameters, images or precision)
    unless ``overwrite``: they must never mix."""
    if overwrite:
        return
    marker = shard_dir(out) / "run.json"
    if marker.is_file():
        earlier = json.loads(marker.read_text())
        if earlier != run.fingerprint:
            diff = sorted(k for k in set(earlier) | set(run.fingerprint) if earlier.get(k) != run.fingerprint.get(k))
            raise ValueError(f"{str(shard_dir(out))!r} holds the shards of another run (it differs in "
                             f"{', '.join(diff)}): they are not mixed in. Delete the folder, or pass --overwrite.")


def _shard_matches(rows: pd.DataFrame, items: list[Item], run: Run) -> bool:
    """An earlier shard is taken only when its rows are those of ``items`` as they are now: the same
    paths and splits in order, and the content hash of each image read again (decoding only, no
    query). A shard copied over another, or an image replaced after the kill, is scored again."""
    if list(rows["path"]) != [it.path for it in items] or list(rows["split"]) != [it.split for it in items]:
        return False
    return list(rows["content_sha256"]) == content_hashes(run.load(items))


def _read_shard(path: Path, run_id: str) -> pd.DataFrame | None:
    """An earlier shard's rows, or None when the file cannot be read (a write cut short outside our
    atomic writes, a truncated copy): the shard is then scored again."""
    try:
        df = pd.read_parquet(path)
    except Exception:  # noqa: BLE001  (pyarrow raises its own types for a damaged file)
        return None
    if "run" not in df or set(df["run"]) != {run_id}:
        raise ValueError(f"{str(path)!r} belongs to another run: delete {str(path.parent)!r} and start again.")
    return df.drop(columns="run")


# ---------------------------------------------------------------------- calibration
def calibration_part(hashes, seed: int = 0, fraction: float = 0.5) -> np.ndarray:
    """True for the images whose content hash puts them in the calibration part (a uniform draw
    from (seed, hash): the same image is in the same part whatever else is scored)."""
    u = np.array([int(hashlib.sha256(f"calibration|{seed}|{h}".encode()).hexdigest()[:13], 16) / 16 ** 13
                  for h in hashes])
    return u < fraction


def calibrate(rows: pd.DataFrame, fpr: float = 0.01, seed: int = 0, fraction: float = 0.5,
              n_boot: int = 1000, features_probe: bool = False) -> dict:
    """Fill ``part`` and ``decision`` (and, for a feature attack, ``score``) in place; return what
    the threshold realised on the held-out labelled images. Without labelled images: {}."""
    labelled = rows["split"].isin(SPLITS[:2]).to_numpy()
    rows["part"] = ""
    rows["decision"] = ""
    if not labelled.any():
        return {}
    cal = labelled & calibration_part(rows["content_sha256"], seed, fraction)
    held = labelled & ~cal
    rows.loc[cal, "part"], rows.loc[held, "part"] = "calibration", "held-out"
    member = (rows["split"] == "member").to_numpy()
    for what, mask in (("calibration", cal), ("held-out", held)):
        for side, m in (("members", member), ("non-members", ~member)):
            if (mask & labelled & m).sum() < 2:
                raise DataError(f"The {what} part has {(mask & labelled & m).sum()} {side}: give more labelled images "
                                "(each part needs at least 2 of each; images go to a part by their content hash).")
    if features_probe:

        cols = [c for c in rows.columns if c.startswith("f_")]
        probe = fit(rows.loc[cal, cols].to_numpy(), member[cal].astype(int), seed=seed)
        rows["score"] = binary_scores(probe, rows[cols].to_numpy())
    s = rows["score"].to_numpy()
    tau = metrics.threshold_at_fpr(s[cal & ~member], fpr)
    rows["decision"] = np.where(s > tau, "member", "non-member")
    row = metrics.evaluate(s[held & member], s[held & ~member], n_boot=n_boot, seed=seed)
    return {"target_fpr": fpr, "threshold": tau,
            "held_out": {"members": int((held & member).sum()), "nonmembers": int((held & ~member).sum()),
                         "fpr": float(np.mean(s[held & ~member] > tau)), "tpr": float(np.mean(s[held & member] > tau)),
                         **{k: row[k] for k in ("auc", "auc_ci", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci", "auc_p")}},
            "calibration": {"members": int((cal & member).sum()), "nonmembers": int((cal & ~member).sum())}}


# ---------------------------------------------------------------------- the command
def score(checkpoint: str, attack: str, out: str | Path, parameters: dict | None = None, images: str | None = None,
          members: str | None = None, nonmembers: str | None = None, base: str | None = None,
          device: str = "auto", dtype: str = "fp32", batch_size: int = 256, seed: int = 0, resize: bool = False,
          fpr: float = 0.01, shard_size: int = 1024, overwrite: bool = False, n_boot: int = 1000,
          references: str | None = None, population: str | None = None, lora: str | None = None,
          budget: float | None = None, report=print) -> Path | None:
    """Score every image; write ``out`` (+ ``out.json``) from the main process. Returns ``out`` on
    the main process, None on the others. Run under ``accelerate launch`` to shard (module
    docstring); a plain call is one process."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    out = Path(out).resolve()
    if "LOCAL_RANK" in os.environ:  # a worker under accelerate launch: never outlive the launcher
        die_with_parent()
    metrics.check_fpr(fpr)
    on_cpu = resolve_device(check_device(device)).type == "cpu"
    state = PartialState(cpu=on_cpu)
    if not on_cpu and state.num_processes > 1:
        device = state.device  # one GPU per process
    check_out(out, overwrite)
    with contextlib.ExitStack() as held:
        run = prepare(checkpoint, attack, parameters, images, members, nonmembers, base, device, dtype, batch_size,
                      seed, resize, shard_size, references, population, lora)
        if state.is_main_process:
            report(plan_line(run.plan))
        check_budget(run, budget)
        for flag, folder in (("--images", images), ("--members", members), ("--nonmembers", nonmembers),
                             ("--population", population)):
            if folder is not None and not specs.is_zoo(folder) and out.is_relative_to(Path(folder).resolve()):
                raise ValueError(f"--out {str(out)!r} lies inside {flag} {str(folder)!r}: its files (and its shards) would "
                                 "be read as images; write it outside the image folders.")
        check_shards(out, run, overwrite)
        folder = shard_dir(out)
        if state.is_main_process:  # one run per --out at a time (held to the end, by the main process)
            out.parent.mkdir(parents=True, exist_ok=True)
            held.enter_context(exclusive_lock(Path(str(out) + ".lock"), f"--out {str(out)!r}"))
        state.wait_for_everyone()  # every process has checked before anything is removed or written
        if state.is_main_process:
            if overwrite:
                shutil.rmtree(folder, ignore_errors=True)
                out.unlink(missing_ok=True)
                Path(str(out) + ".json").unlink(missing_ok=True)
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(folder / "run.json", run.fingerprint, indent=1, sort_keys=True)
        state.wait_for_everyone()
        shards = run.shards
        if state.is_main_process:
            report(f"[score] {run.model}; {run.attack.title} {json.dumps(run.hyper)}; {len(run.items)} images "
                   f"in {len(shards)} shard(s) over {state.num_processes} process(es); run {run.run_id}")
        done, computed, t0 = [], 0, time.perf_counter()
        with state.split_between_processes(list(range(len(shards)))) as mine:
            todo, stale = [], []
            for k in mine:
                path = folder / f"shard-{k:05d}.parquet"
                earlier = _read_shard(path, run.run_id) if path.is_file() else None  # an interrupted run's
                if earlier is not None and _shard_matches(earlier, shards[k], run):
                    done.append((k, earlier))
                else:
                    todo.append(k)
                    if path.is_file():  # another shard's rows, an image replaced since, or a damaged file
                        stale.append(k)
            if stale:
                report(f"[score] {len(stale)} earlier shard(s) ({', '.join(map(str, stale[:5]))}) do not match the images "
                       "as they are now (another shard's rows, an image replaced since, or a damaged file): "
                       "scored again")
            # the next shard is read from disk while this one is scored
            with ThreadPoolExecutor(1) as reader:
                ahead = reader.submit(run.load, shards[todo[0]]) if todo else None
                for i, k in enumerate(todo):
                    images = ahead.result()
                    if i + 1 < len(todo):
                        ahead = reader.submit(run.load, shards[todo[i + 1]])
                    rows = run.score(shards[k], images)
                    write_frame_atomic(rows.assign(run=run.run_id), folder / f"shard-{k:05d}.parquet")
                    done.append((k, rows))
                    computed += len(rows)
        seconds = time.perf_counter() - t0
        stats = {"process": state.process_index, "images": computed, "seconds": seconds, "queries": run.queries(),
                 "vae": run.vae_passes()}
        gathered = gather_object(done) if state.num_processes > 1 else done
        all_stats = gather_object([stats]) if state.num_processes > 1 else [stats]
        if not state.is_main_process:
            return None
        rows = pd.concat([df for _, df in sorted(gathered, key=lambda kv: kv[0])], ignore_index=True)
        if len(rows) != len(run.items):
            raise RuntimeError(f"{len(rows)} rows gathered for {len(run.items)} images: shards are missing.")
        _check_no_overlap(rows)
        summary = calibrate(rows, fpr, seed, n_boot=n_boot, features_probe=isinstance(run.attack, _attacks.FeatureAttack))
        rows.insert(3, "attack", run.attack.name)
        rows.insert(4, "parameters", json.dumps(run.hyper, sort_keys=True))
        rows.insert(5, "dtype", dtype)
        rows["checkpoint_sha256"] = run.fingerprint["checkpoint_sha256"]
        fresh = sum(s["images"] for s in all_stats)
        wall = max(s["seconds"] for s in all_stats)
        info = {"out": str(out), "run": run.run_id, **run.fingerprint, "images": {s: int((rows["split"] == s).sum())
                                                                                   for s in SPLITS},
                "scored_now": fresh, "resumed": len(rows) - fresh, "processes": state.num_processes,
                "seconds": wall, "images_per_second": fresh / wall if wall > 0 and fresh else None,
                "queries_per_image": sum(s["queries"] for s in all_stats) / fresh if fresh else None,
                "kind": run.target.kind, "lora": None if run.target.lora is None else str(run.target.lora),
                "vae_encodes_per_image": sum(s["vae"] for s in all_stats) / fresh if fresh else None,
                "plan": run.plan, "peak_memory_mb": peak_memory_mb(run.model.device), "calibration": summary}
        write_json_atomic(Path(str(out) + ".json"), info, indent=1)
        write_frame_atomic(rows, out)  # last: its existence means the run is complete
        shutil.rmtree(folder, ignore_errors=True)
        report(f"[score] {len(rows)} rows -> {out} ({fresh} scored now, {len(rows) - fresh} from earlier shards; "
               f"{wall:.1f} s against the plan's {run.plan['estimated_minutes'] * 60:.1f} s; peak memory "
               f"{info['peak_memory_mb']:.0f} MiB)")
        if summary:
            h = summary["held_out"]
            n_cal = summary["calibration"]["nonmembers"]
            report(f"[score] threshold {summary['threshold']:.6g} for {fpr:.1%} FPR on {n_cal} "
                   f"calibration non-members; on held-out labelled images: FPR {h['fpr']:.1%}, TPR {h['tpr']:.1%}, "
                   f"AUC {metrics.format_ci(h, 'auc')}")
        elif isinstance(run.attack, _attacks.FeatureAttack):
            report("[score] no labelled images: the features are written, but no probe scores them (give --members and "
                   "--nonmembers).")
        return out


def peak_memory_mb(device: torch.device) -> float:
    """The process's peak resident memory (MiB; ru_maxrss), or on a GPU the peak allocated there."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _check_no_near_copies(run: Run) -> None:
    """No non-member may be a near-copy of a member (a JPEG re-save, a slight resize): the check
    the audit makes (``data.near_duplicates``, its tolerance), on thumbnails read shard by shard so
    that a large labelled set is never held whole. Exact copies are refused from the rows' hashes."""
    thumbs = {}
    for split in ("member", "nonmember"):
        items = [it for it in run.items if it.split == split]
        chunks = [items[i:i + run.shard_size] for i in range(0, len(items), run.shard_size)]
        thumbs[split] = (torch.cat([thumbnails(run.load(c)) for c in chunks]) if chunks else None, items)
    (m, m_items), (n, n_items) = thumbs["member"], thumbs["nonmember"]
    if m is None or n is None:
        return
    pairs = [p for p in near_duplicates(m, n) if p[2] > 0]  # identical pixels: _check_no_overlap names them
    if pairs:
        i, j, d = pairs[0]
        raise DataError(f"{len(pairs)} near-duplicate pair(s) across the members and the non-members, e.g. "
                        f"{m_items[i].file} and {n_items[j].file} (mean absolute pixel difference {d:.4f} on [-1, 1]): "
                        "a re-encoded or resized copy of a member is not a non-member; remove it from one side.")


def _check_no_overlap(rows: pd.DataFrame) -> None:
    m = set(rows.loc[rows["split"] == "member", "content_sha256"])
    n = rows.loc[rows["split"] == "nonmember"]
    both = n[n["content_sha256"].isin(m)]
    if len(both):
        raise DataError(f"{len(both)} image(s) are both members and non-members (identical pixels), e.g. the "
                        f"non-member {both['path'].iloc[0]!r}: remove them from one side.")
