"""errors, io and checks: the floor every module stands on."""

from __future__ import annotations

import json

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
