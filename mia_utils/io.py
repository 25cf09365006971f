"""Files: atomic writes, JSON objects read with an error that names the file, and the one
refusal of pickled weights.

Atomic: every file the package writes for a user (a chapter's ``metrics.json``, an audit's
summary, a scoring run's shards and result) is written to a temporary name in the same folder,
then renamed (``os.replace``, atomic on POSIX): a file that exists under its name is complete,
whatever killed the writer.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
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


def check_writable(path: str | Path, what: str) -> None:
    """Refuse, before any work, an output ``path`` that cannot be written: a name longer than the
    file system allows, or a parent (the nearest one that exists; the folder itself where ``path``
    is one) that is not a writable folder.
    ``what`` names it in the message (``--out 'x'``)."""
    path = Path(path).absolute()
    try:  # the limit of the file system at the root (stat of a longer name fails before any check)
        limit = os.pathconf(path.anchor, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # pragma: no cover - no pathconf here
        limit = 255
    long = [part for part in path.parts if len(os.fsencode(part)) > limit]
    if long:
        raise ValueError(f"{what}: the name {long[0][:40]!r}... is {len(os.fsencode(long[0]))} bytes long; this file "
                         f"system allows {limit}: choose a shorter name.")
    parent = path if path.is_dir() else path.parent  # a folder that exists is written into
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what}: {str(parent)!r} is a file, not a folder: choose a path inside a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: the folder {str(parent)!r} is not writable by this user: choose a path you can "
                         "write to.")


@contextlib.contextmanager
def exclusive_lock(path: str | Path, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the block, or raise
    ValueError naming ``what`` at once when another process holds it: two runs never write the
    same output. The lock is the kernel's (``fcntl.flock``): it is released when the holder exits,
    however it exits (``kill -9`` included), so a stale lock file never blocks a later run. The file
    is left in place (removing it would let a process that opened it before the removal lock a
    file nobody else sees). On a system without ``fcntl`` (Windows) the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on the machines we support
        yield Path(path)
        return
    path = Path(path)
    with open(path, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise ValueError(f"{what} is in use by another mia-book run ({holder}): wait for it to finish, or "
                             "choose another output.") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        try:
            yield path
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


LAUNCHER_ENV = "MIA_BOOK_COMMAND_PID"  # set by `mia-book score --num-processes N` for its workers


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``):
    the workers of ``mia-book score --num-processes N`` and their launcher must not outlive a
    ``kill -9`` of the command and write its output a minute later. A worker also exits at once
    when the command that launched it (``LAUNCHER_ENV``) is gone already: its launcher may have
    died before the request was made. No effect outside Linux."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return
    command = os.environ.get(LAUNCHER_ENV, "")
    if os.getppid() != parent or (command.isdigit() and int(command) != os.getpid() and not _alive(int(command))):
        os._exit(1)  # the parent (or the command above it) died before the request: go now


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
