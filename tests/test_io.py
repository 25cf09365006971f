"""errors, io and checks: the floor every module stands on."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from mia_utils import checks, io
from mia_utils.errors import CheckpointError, DataError


def test_an_atomic_write_is_whole_or_absent(tmp_path):
    path = tmp_path / "metrics.json"
    io.write_json_atomic(path, {"auc": 0.97}, indent=1)
    assert json.loads(path.read_text()) == {"auc": 0.97}

    def dies(tmp):
        tmp.write_text('{"auc": 0.')  # half written, then the writer fails
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        io.write_atomic(path, dies)
    assert json.loads(path.read_text()) == {"auc": 0.97}  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind
    frame = pd.DataFrame({"path": ["a.png"], "score": [1.5]})
    for name in ("s.csv", "s.parquet"):
        io.write_frame_atomic(frame, tmp_path / name)
    assert pd.read_csv(tmp_path / "s.csv").equals(pd.read_parquet(tmp_path / "s.parquet"))


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="config.json' holds a JSON list"):
        io.read_json(bad)
    bad.write_text("{")
    with pytest.raises(DataError, match="is not valid JSON"):
        io.read_json(bad, error=DataError)


def test_pickles_are_refused_where_they_lie(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "weights.ckpt").write_bytes(b"x")
    io.refuse_pickles(tmp_path, "fix it", recursive=False)  # not in the folder itself
    with pytest.raises(CheckpointError, match=r"sub/weights.ckpt.*unpickling runs code\). fix it"):
        io.refuse_pickles(tmp_path, "fix it")


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3", None])
def test_a_whole_number_at_least_one(bad):
    with pytest.raises(DataError, match=r"n=.*: give a whole number >= 1 of images\."):
        checks.positive_int("n", bad, DataError, " of images")
    assert checks.positive_int("n", 3) == 3


HOLD = """
import sys, time
from mia_utils.io import exclusive_lock
with exclusive_lock(sys.argv[1], "--out x"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_one_holder_of_an_output_lock_and_a_kill_frees_it(tmp_path):
    """A second run on the same output is refused at once, naming the holder's pid; the kernel's
    lock dies with its holder (kill -9), so no stale lock file blocks the next run."""
    import subprocess
    import sys

    lock = tmp_path / "scores.parquet.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=rf"--out x is in use by another mia-book run \(pid {holder.pid}\)"):
            with io.exclusive_lock(lock, "--out x"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with io.exclusive_lock(lock, "--out x") as path:  # free again, though the file is still there
        assert path == lock and lock.read_text().strip() == f"pid {os.getpid()}"


ORPHAN = """
import subprocess, sys, time
from mia_utils.io import die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=die_with_parent)
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_that_asked_to_die_with_its_parent_does(tmp_path):
    """kill -9 of the parent (mia-book score --num-processes N) takes its child (the launcher, and
    each worker in turn) with it: no orphan writes the output a minute later."""
    import signal
    import subprocess
    import time

    parent = subprocess.Popen([sys.executable, "-c", ORPHAN], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    os.kill(child, 0)  # alive
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        try:
            if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":  # dead, not yet reaped
                break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the child outlived its parent by 5 s")


def test_outputs_that_cannot_be_written_are_named_before_any_work(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        io.check_writable(tmp_path / "a-file" / "out.csv", "--out 'y'")
    with pytest.raises(ValueError, match="bytes long; this file system allows"):
        io.check_writable(tmp_path / ("n" * 300 + ".csv"), "--out 'y'")
    io.check_writable(tmp_path / "new" / "deeper" / "out.csv", "--out 'y'")  # made when written
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        with pytest.raises(ValueError, match="is not writable by this user"):
            io.check_writable(ro / "out.csv", "--out 'y'")
