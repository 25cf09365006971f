"""The auditor's command, end to end on a checkpoint that is not from the zoo (RGB 16x16)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import mia_utils as mu
from mia_utils import cli

from .test_notebooks import TINY


@pytest.mark.slow
@pytest.mark.parametrize("tiny_checkpoint", [(3, 16)], indirect=True, ids=["rgb16"])
def test_audit_writes_the_report(tiny_checkpoint, tmp_path):
    params = {**TINY["00_victims"], **TINY["02_sima"]}
    argv = ["audit", "--checkpoint", str(tiny_checkpoint["checkpoint"]), "--members", str(tiny_checkpoint["members"]),
            "--nonmembers", str(tiny_checkpoint["nonmembers"]), "--chapters", "00,02", "--device", "cpu",
            "--n-eval", "8", "--out", str(tmp_path / "report")]
    for k, v in params.items():
        argv += ["-p", k, json.dumps(v)]
    assert cli.main(argv) == 0
    report = tmp_path / "report"
    assert (report / "00_victims.ipynb").is_file() and (report / "02_sima.ipynb").is_file()
    assert not (report / "01_theory.ipynb").exists()
    summary = json.loads((report / "summary.json").read_text())
    chapters = {row["chapter"] for row in summary["rows"]}
    assert chapters == {"00_victims", "02_sima"}
    for chapter in chapters:
        m = json.loads((report / "results" / chapter / "metrics.json").read_text())
        assert m["parameters"]["n_eval"] == 8
    html = (report / "summary.html").read_text()
    assert "<table" in html and "SimA" in html


@pytest.mark.parametrize("tiny_checkpoint", [(3, 16)], indirect=True, ids=["rgb16"])
def test_audit_refuses_bad_input_before_running(tiny_checkpoint, tmp_path, capsys):
    base = ["audit", "--members", str(tiny_checkpoint["members"]), "--out", str(tmp_path / "r")]
    assert cli.main([*base, "--checkpoint", str(tmp_path / "nope"), "--nonmembers", str(tiny_checkpoint["nonmembers"])]) == 2
    assert "does not exist" in capsys.readouterr().err
    # the members folder given as non-members too: every image is in both sets
    assert cli.main([*base, "--checkpoint", str(tiny_checkpoint["checkpoint"]),
                     "--nonmembers", str(tiny_checkpoint["members"])]) == 2
    assert "in both" in capsys.readouterr().err
    assert cli.main([*base, "--checkpoint", str(tiny_checkpoint["checkpoint"]), "--nonmembers",
                     str(tiny_checkpoint["nonmembers"]), "--n-eval", "500"]) == 2
    assert "n_eval=500" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing ran


def test_python_dash_m_shows_help():
    out = subprocess.run([sys.executable, "-m", "mia_utils", "audit", "--help"], check=False,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "--checkpoint" in out.stdout
    assert mu.cli is cli


@pytest.mark.parametrize("tiny_checkpoint", [(1, 8)], indirect=True, ids=["grey8"])
def test_audit_skips_chapters_that_need_the_auditors_own_models(tiny_checkpoint, tmp_path, capsys):
    """Chapters 05 and 06 compare with models only the auditor has (latent models, the base
    model): on a non-zoo checkpoint without them they are skipped with what they need."""
    sources = mu.nbrun.chapters()
    run, skipped = cli.plan(sources, str(tiny_checkpoint["checkpoint"]), {})
    assert set(skipped) == {"05_latent", "06_noise_probe"} and "-p base DIR" in skipped["06_noise_probe"]
    assert [s.stem for s in run] == [s.stem for s in sources if s.stem not in skipped]
    run, skipped = cli.plan(sources, str(tiny_checkpoint["checkpoint"]), {"base": "x", "latent_models": ["y"]})
    assert skipped == {} and len(run) == len(sources)
    assert cli.plan(sources, "zoo:digits-ddpm", {}) == (sources, {})  # the zoo defaults fit the zoo
    argv = ["audit", "--checkpoint", str(tiny_checkpoint["checkpoint"]), "--members", str(tiny_checkpoint["members"]),
            "--nonmembers", str(tiny_checkpoint["nonmembers"]), "--chapters", "05,06", "--device", "cpu",
            "--out", str(tmp_path / "report")]
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert set(summary["skipped"]) == {"05_latent", "06_noise_probe"} and summary["rows"] == []
    assert "skipped" in capsys.readouterr().out
    assert "skipped, it needs" in (tmp_path / "report" / "summary.html").read_text()
