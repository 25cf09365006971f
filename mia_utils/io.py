"""Files: atomic writes, JSON objects read with an error that names the file, and the one
refusal of pickled weights.

Atomic: every file the package writes for a user (a chapter's ``metrics.json``, an audit's
summary, a scoring run's shards and result) is written to a temporary name in the same folder,
then renamed (``os.replace``, atomic on POSIX): a file that exists under its name is complete,
whatever killed the writer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from .errors import CheckpointError

# Suffixes of pickled weights (torch.save, pickle, Lightning checkpoints): never loaded here,
# since unpickling runs code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``text`` written atomically to ``path``."""
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: str | Path, value, **dumps) -> Path:
    """``json.dumps(value, **dumps)`` written atomically to ``path``."""
    return write_text_atomic(path, json.dumps(value, **dumps))


def write_frame_atomic(frame, path: str | Path) -> Path:
    """A pandas DataFrame written atomically, as CSV for a ``.csv`` path, else as parquet."""
    path = Path(path)
    if path.suffix == ".csv":
        return write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))
    return write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def read_json(path: str | Path, what: str = "config", error: type[Exception] = CheckpointError) -> dict:
    """A JSON object from ``path``; ``error`` (a CheckpointError by default) naming the file when
    it is not one."""
    try:
        value = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{str(path)!r} is not valid JSON ({err}): re-save the {what}.") from None
    if not isinstance(value, dict):
        raise error(f"{str(path)!r} holds a JSON {type(value).__name__}, not the object a {what} is: "
                    "re-save it with save_pretrained.")
    return value


def refuse_pickles(folder: str | Path, fix: str, recursive: bool = True) -> None:
    """A CheckpointError when ``folder`` (and, ``recursive``, its sub-folders) holds pickled
    weights (``PICKLE_SUFFIXES``): never unpickled here. ``fix`` is the sentence that says how to
    convert them."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    pickled = sorted(p.relative_to(folder).as_posix() for p in found if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise CheckpointError(f"{str(folder)!r} holds pickled weights ({', '.join(pickled[:3])}), which we do not "
                              f"load (unpickling runs code). {fix}")
