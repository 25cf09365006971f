"""Every chapter executed through papermill with tiny parameters on an auditor-style checkpoint."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nbformat
import pytest

import mia_utils as mu
from mia_utils import cli

from .conftest import make_reference_folders

# Per-chapter knobs that make a run take seconds; the common parameters come from the fixture.
TINY = {
    "00_victims": {"n_samples": 4, "ddpm_steps": 20, "ddim_steps": 5, "n_noise": 1, "n_boot": 20},
    "01_theory": {"ts": [0, 50, 500], "n_boot": 20, "toy_grid": 5},
    "03_secmi_pia": {"sima_ts": [10, 50], "loss_ts": [50], "n_noise": 1, "secmi_grid": [[20, 10], [40, 20]],
                     "pia_ts": [100], "sens_t_sec": [20], "sens_k": [10], "sens_pia_ts": [100], "nn_epochs": 3,
                     "pfami_ts_sets": [[10, 50]], "rediffuse_ts": [20], "n_variations": 1, "variation_steps": 2,
                     "gsa_ts": [10, 50], "n_boot": 20},
    "04_trajectories": {"n_dev": 4, "n_generated": 12, "feature_stride": 250, "theta_stride": 500, "ddpm_steps": 10,
                        "ddim_steps": 5, "generators": {}, "window": 500, "n_extract": 20, "keep_fraction": 0.25,
                        "replication": None, "n_boot": 20},
    # the base model of chapter 06 must match the target's shape: the test checkpoint stands in for it
    "06_noise_probe": {"base": "<checkpoint>", "inversion_steps": 4, "generation_steps": 3, "t_starts": [200, 999],
                       "sima_ts": [10], "pia_ts": [100], "n_boot": 20},
    "05_latent": {"latent_models": ["<ldm>"], "sima_ts": [10, 50], "loss_ts": [50], "n_noise": 1, "pia_ts": [100],
                  "n_samples": 8, "ddim_steps": 3, "replication": None, "n_boot": 20},
    "08_evidence": {"sima_ts": [10, 50], "loss_ts": [50], "n_noise": 1, "pia_ts": [100], "ks": [1, 2, 4], "n_reference": 2,
                    "n_draws": 5, "suspect": "<members>", "n_boot": 20},
    # on the tiny SD folder with its LoRA (the noise probe inverts with the folder itself)
    "07_text_to_image": {"lora": "<lora>", "base": None, "second": None, "sima_ts": [10], "loss_ts": [50],
                         "n_noise": 1, "pia_ts": [100], "secmi_grid": [[20, 10]], "clid_ts": [[50, 100]],
                         "wen_ts": [[500]], "guidances": [1.0, 3.5], "inversion_steps": 3, "generation_steps": 2,
                         "n_boot": 20},
    # four random reference UNets of the checkpoint's shape with members.json, mirrored non-members as z
    "09_references": {"references": "<references>", "population": "<population>", "n_population": None, "ts": [50],
                      "n_noise": 1, "ks": [1, 2, 4], "sima_ts": [10], "pia_ts": [100], "n_boot": 20},
    # the checkpoint compared with itself under another name; its members and non-members as canaries
    "10_defenses": {"defenses": {"again": "<checkpoint>"}, "canaries": "<canaries>", "sima_ts": [10], "loss_ts": [50],
                    "n_noise": 1, "pia_ts": [100], "gsa_ts": [50], "n_samples": 8, "ddim_steps": 3, "guesses": 4,
                    "n_boot": 20},
    "02_sima": {"ts": [0, 50], "n_noise": 1, "n_generated": 8, "ddpm_steps": 10, "ddim_steps": 5, "other_victims": [],
                "n_boot": 20},
}


def test_glue_takes_one_value_or_a_mapping_and_unwraps_numpy_scalars(monkeypatch):
    import myst_nb
    import numpy as np

    calls = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=False: calls.append((name, value, type(value))))
    mu.nbrun.glue("one", np.int64(3))
    mu.nbrun.glue({"a": np.float64(0.5), "b": "0.970 [0.953, 0.984]"})
    assert calls == [("one", 3, int), ("a", 0.5, float), ("b", "0.970 [0.953, 0.984]", str)]


@pytest.mark.parametrize("source", mu.nbrun.chapters(), ids=lambda p: p.stem)
def test_chapters_stay_thin(source):
    """The logic lives in mia_utils, the chapter tells the story: at most 140 non-blank code
    lines besides the parameters cell (81 to 156 before the studies moved into the package, 74
    to 140 after; d2l's aim is 120)."""
    import jupytext

    cells = [c for c in jupytext.read(source).cells
             if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])]
    lines = sum(1 for c in cells for line in c.source.splitlines() if line.strip())
    assert lines <= 140, f"{source.name}: {lines} code lines; move logic into mia_utils"


@pytest.mark.parametrize("source", mu.nbrun.chapters(), ids=lambda p: p.stem)
def test_the_parameters_cell_fits_the_text_column(source):
    """An auditor reads the parameters cell first: each line fits the book's text column (about
    85 characters at 1366 px), so that no comment wraps or hides."""
    import jupytext

    cell = next(c for c in jupytext.read(source).cells if "parameters" in c.metadata.get("tags", []))
    long = [line for line in cell.source.splitlines() if len(line) > 85]
    assert not long, f"{source.name}: {len(long)} parameter lines over 85 characters, e.g. {long[0]!r}"


def test_every_chapter_has_tiny_parameters():
    assert {p.stem for p in mu.nbrun.chapters()} == set(TINY)


def plan_of(source, params: dict, folders: dict):
    """The audit's plan of ``source`` at ``params`` on the test's folders (timing left out)."""
    target = mu.load_target(params["checkpoint"], device="cpu", lora=params.get("lora"))
    sets = mu.load_membership_sets(folders["members"], folders["nonmembers"], model=target, n_eval=params["n_eval"])
    validated = cli.audit.Validated("", {}, target, sets, 0)
    sizes = cli.audit.sizes_of(validated)
    if params.get("suspect"):
        sizes = dataclasses.replace(sizes, suspect=len(mu.images.folder_images(params["suspect"], target.image_shape)))
    plan = cli.costs.chapter_plan(source.stem, {**mu.nbrun.parameters_of(source), **params}, sizes,
                                  {"forward": 0.0, "grad": 0.0})
    assert plan is not None, f"{source.stem} has no cost formula in mia_utils.cli.costs"
    return plan


# Once per chapter, on the RGB 16x16 checkpoint only: a chapter that assumed one channel or 8x8
# images fails here, and the grey 8x8 path is the one `make book` executes on the zoo. (Each chapter
# also ran on the grey checkpoint, with a summary kernel after each: 1.6 min of the suite's 6.8.)
@pytest.mark.slow
@pytest.mark.parametrize("tiny_checkpoint", [(3, 16)], indirect=True, ids=["rgb16"])
@pytest.mark.parametrize("source", mu.nbrun.chapters(), ids=lambda p: p.stem)
def test_chapter_runs_on_a_folder_checkpoint(source, tiny_checkpoint, tiny_ldm, tiny_sd, tmp_path):
    out_dir = tmp_path / "results" / source.stem
    folders = tiny_checkpoint
    if source.stem == "07_text_to_image":  # the text-to-image chapter runs on the SD folder + LoRA
        folders = {"checkpoint": tiny_sd["folder"], "members": tiny_sd["members"], "nonmembers": tiny_sd["nonmembers"]}
    params = {"checkpoint": str(folders["checkpoint"]), "members": str(folders["members"]),
              "nonmembers": str(folders["nonmembers"]), "n_eval": 8, "device": "cpu",
              "batch_size": 64, "out_dir": str(out_dir)}
    stand_in = {"<checkpoint>": params["checkpoint"], "<ldm>": str(tiny_ldm),  # folders made by the fixtures
                "<members>": params["members"], "<lora>": str(tiny_sd["lora"])}
    if source.stem == "09_references":
        made = make_reference_folders(folders, tmp_path)
        stand_in.update({"<references>": made["references"], "<population>": made["population"]})
    if source.stem == "10_defenses":  # canaries "in" = the members, "out" = the non-members (linked folders)
        (tmp_path / "canaries").mkdir()
        (tmp_path / "canaries" / "in").symlink_to(Path(folders["members"]).resolve())
        (tmp_path / "canaries" / "out").symlink_to(Path(folders["nonmembers"]).resolve())
        stand_in["<canaries>"] = str(tmp_path / "canaries")

    def fill(v):
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        return stand_in.get(v, v) if isinstance(v, str) else [fill(x) for x in v] if isinstance(v, list) else v

    params.update({k: fill(v) for k, v in TINY[source.stem].items()})
    output = mu.nbrun.run_notebook(source, tmp_path / f"{source.stem}.ipynb", parameters=params)
    nb = nbformat.read(output, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"]
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["parameters"]["checkpoint"] == params["checkpoint"]
    # the audit's plan (mia_utils.cli.costs) = the queries the chapter's process counted
    planned = plan_of(source, params, folders)
    counted = metrics["queries"]
    assert planned.grad == counted["grad"], planned.parts
    # exact, but for the parts that depend on a choice made on calibration (planned at the dearest)
    assert planned.forward - planned.slack <= counted["forward"] <= planned.forward, planned.parts
    for row in metrics["metrics"].values():
        assert 0 <= row["auc"] <= 1 and row["n_members"] == 8 and row["queries_per_image"] >= 0  # the oracle: 0
    # the summary page's table reads what the chapter wrote: every row, under the chapter's name
    table = mu.nbrun.summary_table(tmp_path / "results")
    assert set(table["chapter"]) == {source.stem} and len(table) == len(metrics["metrics"])
    assert table["AUC [95 % CI]"].str.fullmatch(r"[01]\.\d{3}( \[[01]\.\d{3}, [01]\.\d{3}\])?").all()
    if source.stem != "02_sima":  # the summary notebook itself once, in a kernel, on one chapter's results
        return
    summary = mu.nbrun.run_notebook(mu.nbrun.ROOT / "book" / "summary.md", tmp_path / "summary.ipynb",
                                    parameters={"results_dir": str(tmp_path / "results")})
    outputs = [o.get("data", {}) for c in nbformat.read(summary, 4).cells if c.cell_type == "code"
               for o in c.get("outputs", [])]
    html = "".join(d.get("text/html", "") for d in outputs)
    headings = "".join(d.get("text/markdown", "") for d in outputs)
    assert source.stem in headings and "AUC [95 % CI]" in html


def test_run_book_runs_chapters_side_by_side_then_the_summary(tmp_path, monkeypatch):
    """--jobs 2: every chapter once, kernels on one thread, the summary after all of them; a
    chapter's failure is raised."""
    import os
    import threading

    root = tmp_path / "book"
    (root / "notebooks").mkdir(parents=True)
    (root / "book").mkdir()
    for name in ("00_a", "01_b", "02_c"):
        (root / "notebooks" / f"{name}.md").write_text("x")
    (root / "book" / "summary.md").write_text("x")
    order, running, most = [], [0], [0]
    lock = threading.Lock()

    def fake_run(src, parameters=None, cwd=None, progress=False):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        import time
        time.sleep(0.2)
        with lock:
            running[0] -= 1
            order.append(src.stem)
        if src.stem.endswith("fail"):
            raise RuntimeError("chapter failed")

    monkeypatch.setattr(mu.nbrun, "run_notebook", fake_run)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    times = mu.nbrun.run_book(root, build=False, jobs=2)
    assert sorted(order[:3]) == ["00_a", "01_b", "02_c"] and order[3] == "summary" and most[0] == 2
    assert set(times) == {"00_a", "01_b", "02_c", "summary"} and os.environ["OMP_NUM_THREADS"] == "1"
    (root / "notebooks" / "03_fail.md").write_text("x")
    with pytest.raises(RuntimeError, match="chapter failed"):
        mu.nbrun.run_book(root, build=False, jobs=2)


def test_every_chapter_is_in_the_table_of_contents():
    import yaml

    toc = yaml.safe_load((mu.nbrun.ROOT / "_toc.yml").read_text())
    listed = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert [f"notebooks/{p.stem}" for p in mu.nbrun.chapters()] == [f for f in listed if f.startswith("notebooks/")]
