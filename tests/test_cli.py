"""The auditor's command, end to end on a checkpoint that is not from the zoo (RGB 16x16)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mia_utils as mu
from mia_utils import cli

from .test_notebooks import TINY


@pytest.mark.slow
@pytest.mark.parametrize("tiny_checkpoint", [(3, 16)], indirect=True, ids=["rgb16"])
def test_audit_writes_the_report(tiny_checkpoint, tmp_path):
    params = {**TINY["02_sima"], **{k: v for k, v in TINY["08_evidence"].items() if k != "suspect"}}
    argv = ["audit", "--checkpoint", str(tiny_checkpoint["checkpoint"]), "--members", str(tiny_checkpoint["members"]),
            "--nonmembers", str(tiny_checkpoint["nonmembers"]), "--chapters", "02,08", "--device", "cpu",
            "--n-eval", "8", "--out", str(tmp_path / "report"), "--suspect", str(tiny_checkpoint["members"])]
    for k, v in params.items():
        argv += ["-p", k, json.dumps(v)]
    assert cli.main(argv) == 0
    report = tmp_path / "report"
    assert (report / "02_sima.ipynb").is_file() and (report / "08_evidence.ipynb").is_file()
    assert not (report / "00_victims.ipynb").exists() and not (report / "01_theory.ipynb").exists()
    summary = json.loads((report / "summary.json").read_text())
    chapters = {row["chapter"] for row in summary["rows"]}
    assert chapters == {"02_sima", "08_evidence"}
    # the guardrails come first; the suspect folder (here: the members) is tested in chapter 08
    assert summary["provenance"][0].startswith("model-blind baseline") and "0 identical images" in summary["provenance"][1]
    evidence = json.loads((report / "results" / "08_evidence" / "metrics.json").read_text())
    assert evidence["parameters"]["suspect"] == str(tiny_checkpoint["members"])
    assert 0 <= evidence["suspect"]["SimA (p=4)"]["p_value"] <= 1 and evidence["suspect"]["SimA (p=4)"]["k"] == 24
    for chapter in chapters:
        m = json.loads((report / "results" / chapter / "metrics.json").read_text())
        assert m["parameters"]["n_eval"] == 8
        # the plan printed before the chapter ran = the queries its process counted (models.process_queries)
        plan = summary["plan"][chapter]
        assert plan["measured"] == m["queries"] and m["queries"]["forward"] > 0
        assert (plan["forward"], plan["grad"]) == (m["queries"]["forward"], m["queries"]["grad"]), chapter
    html = (report / "summary.html").read_text()
    assert "<table" in html and "SimA" in html and "planned" in html


@pytest.mark.slow
def test_audit_of_a_stable_diffusion_folder_with_a_lora(tiny_sd, tmp_path):
    """The SD folder diffusers wrote, its LoRA adapter, captioned folders: only the text-to-image
    chapter applies, the others are listed with the reason."""
    params = {k: v for k, v in TINY["07_text_to_image"].items() if k not in ("lora", "base", "second")}
    argv = ["audit", "--checkpoint", str(tiny_sd["folder"]), "--lora", str(tiny_sd["lora"]),
            "--members", str(tiny_sd["members"]), "--nonmembers", str(tiny_sd["nonmembers"]), "--device", "cpu",
            "--n-eval", "8", "--out", str(tmp_path / "report")]
    for k, v in params.items():
        argv += ["-p", k, json.dumps(v)]
    assert cli.main(argv) == 0
    report = tmp_path / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert {row["chapter"] for row in summary["rows"]} == {"07_text_to_image"}
    assert set(summary["skipped"]) == {p.stem for p in mu.nbrun.chapters()} - {"07_text_to_image"}
    assert all("pixel-space UNet2DModel" in why for why in summary["skipped"].values())
    assert any(line.startswith("captions: from metadata.jsonl") for line in summary["provenance"])
    m = json.loads((report / "results" / "07_text_to_image" / "metrics.json").read_text())
    assert m["parameters"]["lora"] == str(tiny_sd["lora"].resolve()) and m["parameters"]["captions"] == "metadata"
    attacks = {name.split(": ", 1)[1] for name in m["metrics"]}
    assert {"SimA p=4", "CLiD", "Wen et al.", "noise probe γ₁=3.5", "SimA p=4, empty prompt"} <= attacks
    # each row names what the auditor gave (it said "full fine-tune", the zoo's example)
    given = f"{tiny_sd['folder'].name} + LoRA {tiny_sd['lora'].name}"
    assert {name.split(": ", 1)[0] for name in m["metrics"]} == {given}
    # --lora on a pixel checkpoint: one sentence, exit 2, nothing written
    assert cli.main(["audit", "--checkpoint", "zoo:digits-ddpm", "--lora", str(tiny_sd["lora"]), "--members",
                     str(tiny_sd["members"]), "--nonmembers", str(tiny_sd["nonmembers"]), "--out",
                     str(tmp_path / "r2")]) == 2
    assert not (tmp_path / "r2").exists()


@pytest.mark.parametrize("tiny_checkpoint", [(3, 16)], indirect=True, ids=["rgb16"])
def test_audit_refuses_bad_input_before_running(tiny_checkpoint, tmp_path, capsys):
    base = ["audit", "--members", str(tiny_checkpoint["members"]), "--out", str(tmp_path / "r")]
    assert cli.main([*base, "--checkpoint", str(tmp_path / "nope"), "--nonmembers", str(tiny_checkpoint["nonmembers"])]) == 2
    assert "does not exist" in capsys.readouterr().err
    # the members folder given as non-members too: every image is in both sets
    assert cli.main([*base, "--checkpoint", str(tiny_checkpoint["checkpoint"]),
                     "--nonmembers", str(tiny_checkpoint["members"])]) == 2
    assert "same image is in 'members'" in capsys.readouterr().err
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
    model): on a non-zoo checkpoint without them they are skipped with what they need; chapter
    07 audits text-to-image pipelines, not this pixel checkpoint."""
    sources = mu.nbrun.chapters()
    checkpoint = str(tiny_checkpoint["checkpoint"])
    assert mu.specs.kind_of(checkpoint) == "pixel"
    run, skipped = cli.audit.plan(sources, checkpoint, {})
    assert set(skipped) == {"05_latent", "06_noise_probe", "07_text_to_image", "09_references"}
    assert "-p base DIR" in skipped["06_noise_probe"] and "text-to-image pipeline" in skipped["07_text_to_image"]
    assert "-p references DIR" in skipped["09_references"] and "-p population DIR" in skipped["09_references"]
    assert [s.stem for s in run] == [s.stem for s in sources if s.stem not in skipped]
    run, skipped = cli.audit.plan(sources, checkpoint, {"base": "x", "latent_models": ["y"], "references": "r"})
    assert set(skipped) == {"07_text_to_image", "09_references"}  # chapter 09 needs both of its inputs
    run, skipped = cli.audit.plan(sources, checkpoint, {"base": "x", "latent_models": ["y"], "references": "r",
                                                        "population": "z"})
    assert set(skipped) == {"07_text_to_image"} and len(run) == len(sources) - 1
    # the zoo defaults fit the zoo: every pixel chapter runs on a zoo pixel model (chapter 09 on the
    # one the zoo holds references of), chapter 07 on a zoo text-to-image one
    run, skipped = cli.audit.plan(sources, "zoo:digits-ddpm", {})
    assert set(skipped) == {"07_text_to_image", "09_references"} and len(run) == len(sources) - 2
    run, skipped = cli.audit.plan(sources, "zoo:fashion-lira", {})
    assert set(skipped) == {"07_text_to_image"} and len(run) == len(sources) - 1
    run, skipped = cli.audit.plan(sources, "zoo:digits-t2i-full", {}, kind="text-to-image")
    assert [s.stem for s in run] == ["07_text_to_image"] and len(skipped) == len(sources) - 1
    argv = ["audit", "--checkpoint", str(tiny_checkpoint["checkpoint"]), "--members", str(tiny_checkpoint["members"]),
            "--nonmembers", str(tiny_checkpoint["nonmembers"]), "--chapters", "05,06", "--device", "cpu",
            "--out", str(tmp_path / "report")]
    # every chosen chapter needs what only the auditor has: one sentence naming each need and the
    # chapters that do apply, exit 2, nothing written (it wrote an empty report and exited 0)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "No chosen chapter (05, 06) applies" in err and "-p base DIR" in err and "--chapters 00,01,02,03,04,08" in err
    assert not (tmp_path / "report").exists()
    argv[argv.index("05,06")] = "02,06"  # one that applies: it runs, the other is listed with its need
    for k, v in TINY["02_sima"].items():
        argv += ["-p", k, json.dumps(v)]
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert set(summary["skipped"]) == {"06_noise_probe"} and {r["chapter"] for r in summary["rows"]} == {"02_sima"}
    assert "skipped, it needs" in (tmp_path / "report" / "summary.html").read_text()


@pytest.mark.parametrize("tiny_checkpoint", [(1, 8)], indirect=True, ids=["grey8"])
def test_audit_bad_options_exit_2_with_one_line(tiny_checkpoint, tmp_path, capsys):
    """Issue 13's command-line list: each a one-sentence error, exit 2, nothing run or written."""
    ck, mem, non = (str(tiny_checkpoint[k]) for k in ("checkpoint", "members", "nonmembers"))
    ok = ["audit", "--checkpoint", ck, "--members", mem, "--nonmembers", non, "--out", str(tmp_path / "r")]
    (tmp_path / "afile").write_text("")
    ten = tmp_path / "t10"
    mu.DiffusionModel(mu.load_model(ck, device="cpu").unet, mu.models.default_scheduler(num_train_timesteps=10),
                      device="cpu").save(ten)
    cases = [
        (["--chapters", "00,99"], "no chapter 99; the book has 00, 01"),
        (["--chapters", ""], "names no chapter"),
        (["-p", "checkpoint", "/elsewhere"], "-p checkpoint is set by the audit's own option (--checkpoint)"),
        (["-p", "nonsense", "3"], "-p nonsense: no chosen chapter has this parameter"),
        (["--chapters", "02", "-p", "ts", "[1, 2"], "is not valid JSON"),
        (["--chapters", "02", "-p", "ts", "5"], "expected a list like the default"),
        (["--device", "gpu"], "--device 'gpu': use one of auto, cpu, cuda"),
        (["--out", str(tmp_path / "afile")], "is a file: name a folder"),
        (["--chapters", "02", "--suspect", mem], "--suspect is tested by chapter 08"),
        (["--chapters", "08", "--suspect", non], "same image is in 'suspect'"),
    ]
    for extra, message in cases:
        assert cli.main([*ok, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)
    for extra in (["--batch-size", "0"], ["--batch-size", "-1"], ["--n-eval", "0"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main([*ok, *extra])
        assert exit_.value.code == 2 and "give a whole number >= 1" in capsys.readouterr().err
    assert cli.main([*ok[:2], "zoo:nonexistent", *ok[3:]]) == 2
    assert "No zoo model 'nonexistent'; the zoo has digits-aug, digits-base, digits-ddpm" in capsys.readouterr().err
    assert cli.main(["audit", "--checkpoint", str(ten), "--members", mem, "--nonmembers", non, "--chapters", "02",
                     "--out", str(tmp_path / "r")]) == 2
    assert "time steps up to 300 but the model has only T = 10" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_reused_out_folder_is_refused_unless_overwritten(tmp_path):
    out = tmp_path / "r"
    cli.audit.prepare_out(out, overwrite=False)  # a new report folder, marked as the audit's
    (out / "results" / "02_sima").mkdir(parents=True)
    (out / "results" / "02_sima" / "metrics.json").write_text("{}")
    (out / "summary.json").write_text("{}")
    (out / "02_sima.ipynb").write_text("{}")
    (out / "my_notes.ipynb").write_text("mine")  # the user's own, put beside the report
    with pytest.raises(ValueError, match="holds an earlier report .*--overwrite"):
        cli.audit.prepare_out(out, overwrite=False)
    cli.audit.prepare_out(out, overwrite=True)
    # nothing of the earlier run can mix in; nothing of the user's is lost
    assert sorted(p.name for p in out.rglob("*")) == [cli.audit.MARKER, "my_notes.ipynb", "results"]


def test_overwrite_never_deletes_a_folder_no_audit_wrote(tmp_path):
    """A user's project folder that happens to hold a summary.json, results/ and notebooks is
    refused even with --overwrite, and every file stays (it lost them all before)."""
    out = tmp_path / "myproject"
    (out / "results" / "experiment1").mkdir(parents=True)
    files = [out / "summary.json", out / "results" / "experiment1" / "important.csv", out / "analysis.ipynb",
             out / "02_sima.ipynb"]
    for f in files:
        f.write_text("the user's")
    (out / "results" / "02_sima").mkdir()
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="holds files that no audit wrote there .*never deleted"):
            cli.audit.prepare_out(out, overwrite=overwrite)
    assert all(f.read_text() == "the user's" for f in files) and (out / "results" / "02_sima").is_dir()
    # a folder of unrelated files is written into, and nothing in it is touched
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    cli.audit.prepare_out(other, overwrite=True)
    assert (other / "notes.txt").read_text() == "x"


def test_parameters_are_read_from_the_cell_not_its_comments():
    params = mu.nbrun.parameters_of(mu.nbrun.ROOT / "notebooks" / "00_victims.md")
    assert params["ddpm_steps"] == 1000 and params["checkpoint"] == "zoo:digits-ddpm"
    assert cli.policy.time_steps({"ts": [0, 5, 300], "t_loss": 50, "secmi_grid": [[100, 10]], "n_noise": 4}) == [0, 5, 300,
                                                                                                          50, 100, 10]


def test_an_audit_whose_chosen_chapters_all_do_not_apply_is_refused(tmp_path, capsys):
    """A text-to-image model with --chapters 02: exit 2 naming the chapters that apply (it exited 0
    with an empty summary). The kind is read from the zoo recipe: nothing is trained or loaded."""
    t2i = "zoo:digits-t2i-full"
    assert cli.main(["audit", "--checkpoint", t2i, "--members", f"{t2i}/members", "--nonmembers",
                     f"{t2i}/nonmembers", "--chapters", "02", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "No chosen chapter (02) applies to this text-to-image model" in err and "--chapters 07" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("value", ["False", "no", 0, [1]])
def test_score_type_checks_its_parameters_as_audit_does(value, capsys):
    """-p noisy False ran the noisy variant (a non-empty string is true); now one sentence, exit 2,
    before any model is loaded."""
    argv = ["score", "--checkpoint", "zoo:nonexistent-never-loaded", "--attack", "sima", "-p", "noisy",
            json.dumps(value) if not isinstance(value, str) else value, "--images", ".", "--out", "x.csv"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "-p noisy" in err and "expected a bool like the default false" in err, err


@pytest.mark.parametrize("tiny_checkpoint", [(1, 8)], indirect=True, ids=["grey8"])
def test_two_audits_never_write_one_folder_at_once(tiny_checkpoint, tmp_path, capsys):
    """An audit holds a lock on its --out while it writes: a second one on the same folder exits 2
    at once naming the holder (both exited 0 and mixed their reports), and runs once it is free."""
    out = tmp_path / "report"
    out.mkdir()
    argv = ["audit", "--checkpoint", str(tiny_checkpoint["checkpoint"]), "--members", str(tiny_checkpoint["members"]),
            "--nonmembers", str(tiny_checkpoint["nonmembers"]), "--chapters", "02", "--device", "cpu", "--n-eval", "8",
            "--out", str(out), "--overwrite"]
    for k, v in TINY["02_sima"].items():
        argv += ["-p", k, json.dumps(v)]
    with mu.io.exclusive_lock(out / cli.audit.LOCK, "the first audit"):  # another audit writing this folder
        assert cli.main(argv) == 2
        assert f"--out {str(out)!r} is in use by another mia-book run (pid " in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [cli.audit.LOCK]  # nothing written, nothing cleared
    assert cli.main(argv) == 0 and (out / "summary.json").is_file()


def test_outputs_that_cannot_be_written_are_refused_in_both_commands(tmp_path):
    (tmp_path / "adir.csv").mkdir()
    with pytest.raises(ValueError, match="is a folder: name a .parquet or .csv file"):
        mu.scoring.check_out(tmp_path / "adir.csv", overwrite=True)
    for check in (lambda p: mu.scoring.check_out(p.with_suffix(".csv"), overwrite=False),
                  lambda p: cli.audit.prepare_out(p, overwrite=False)):
        with pytest.raises(ValueError, match="bytes long"):
            check(tmp_path / ("x" * 300))
    assert not any(tmp_path.glob("x*"))


@pytest.mark.parametrize("tiny_checkpoint", [(1, 8)], indirect=True, ids=["grey8"])
def test_audit_and_score_read_a_folder_by_one_rule(tiny_checkpoint, tmp_path):
    """Sub-folders, a linked sub-folder and linked files count in both commands (audit read the
    top folder only, score skipped linked folders); a link loop ends; hidden files stay out."""
    import os
    import shutil

    src = sorted(Path(tiny_checkpoint["members"]).iterdir())
    members = tmp_path / "members"
    (members / "sub" / "deeper").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for i, f in enumerate(src[:12]):
        dest = [members, members / "sub", members / "sub" / "deeper", elsewhere][i % 4]
        shutil.copy(f, dest / f.name)
    os.symlink(elsewhere, members / "linked")
    os.symlink(src[12], members / "file-link.png")
    os.symlink(members, members / "sub" / "loop")  # back up the tree
    (members / ".hidden.png").write_bytes(src[13].read_bytes())
    files = mu.images.image_files(members)
    names = [f.relative_to(members).as_posix() for f in files]
    assert len(names) == 13 and "linked/" + src[3].name in names and "file-link.png" in names
    assert not any("loop" in n or ".hidden" in n for n in names)
    sets = mu.load_membership_sets(str(members), str(tiny_checkpoint["nonmembers"]), seed=0)
    assert len(sets.members()) == 13  # audit (the chapters) reads all of them
    run = mu.scoring.prepare(str(tiny_checkpoint["checkpoint"]), "sima", {"t": 20}, members=str(members),
                             nonmembers=str(tiny_checkpoint["nonmembers"]), device="cpu")
    assert sorted(it.path for it in run.items if it.split == "member") == sorted(names)  # and so does score
    assert "sub-folders (links followed" in help_text("audit") and "sub-folders (links followed" in \
        help_text("score")


def help_text(command: str) -> str:
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf), pytest.raises(SystemExit):
        cli.main([command, "--help"])
    return " ".join(buf.getvalue().split())


@pytest.mark.parametrize("tiny_checkpoint", [(1, 8)], indirect=True, ids=["grey8"])
def test_a_suspect_that_copies_a_nonmember_is_named_by_its_files(tiny_checkpoint, tmp_path):
    """A suspect equal to a non-member was named by position ("image 2", "image 0 and image 46")
    and called "a copy of a member": both files are named now."""
    import shutil

    suspect = tmp_path / "suspect"
    suspect.mkdir()
    nonmember = sorted(Path(tiny_checkpoint["nonmembers"]).iterdir())[5]
    shutil.copy(nonmember, suspect / "mine.png")
    with pytest.raises(mu.errors.DataError) as err:
        cli.audit.validate(str(tiny_checkpoint["checkpoint"]), str(tiny_checkpoint["members"]),
                           str(tiny_checkpoint["nonmembers"]), "cpu", None, False, None, str(suspect), None)
    assert str(suspect / "mine.png") in str(err.value) and str(nonmember) in str(err.value)
    assert "image 0" not in str(err.value) and "member" not in str(err.value).replace("nonmember", "")


def _plans(parameters: dict, sizes, price):
    return [cli.costs.chapter_plan(stem, p, sizes, price) for stem, p in parameters.items()]


def test_the_budget_scales_the_costliest_part_first_and_never_a_knob_set_with_p():
    """Chapter 02 at its defaults on a 1,000-step model: the 256 DDPM samples of 1,000 steps are
    97 % of the queries; the budget halves them (samples, then steps) before it touches the sweep,
    leaves n_generated alone when -p set it, and refuses in one sentence when the floors do not fit."""
    source = next(p for p in mu.nbrun.chapters() if p.stem == "02_sima")
    sizes = cli.costs.Sizes(16, 16, 16, 16, T=1000)
    price = {"forward": 0.01, "grad": 0.03}
    params = {"02_sima": mu.nbrun.parameters_of(source)}
    (plan,) = _plans(params, sizes, price)
    # the formula by hand: 64 images x 13 t x (3 + 4 noises) + 256 x 1000 + 256 x 50 + 2 x 256 x 13
    assert plan.forward == 64 * 13 * 7 + 256 * 1000 + 256 * 50 + 2 * 256 * 13
    assert plan.seconds == pytest.approx(cli.costs.OVERHEAD_SECONDS + plan.forward * 0.01)
    before = plan.seconds / 60
    cli.costs.fit_budget([plan], params, sizes, budget_minutes=before / 8, fixed=set())
    assert plan.seconds / 60 <= before / 8
    assert set(plan.changed) <= {"n_generated", "ddpm_steps"} and params["02_sima"]["ts"] == mu.nbrun.parameters_of(
        source)["ts"]  # the sweep (6 % of the cost) untouched
    assert plan.changed["n_generated"][0] == 256 and params["02_sima"]["n_generated"] == plan.changed["n_generated"][1]
    # the same budget with n_generated fixed by -p: the steps go down instead, n_generated stays
    params = {"02_sima": mu.nbrun.parameters_of(source)}
    (plan,) = _plans(params, sizes, price)
    cli.costs.fit_budget([plan], params, sizes, budget_minutes=before / 8, fixed={"n_generated"})
    assert params["02_sima"]["n_generated"] == 256 and "n_generated" not in plan.changed
    assert params["02_sima"]["ddpm_steps"] < 1000 and params["02_sima"]["ddim_steps"] <= 50
    with pytest.raises(ValueError, match=r"even with .*n_generated.* at their floors .* > --budget 0.01"):
        params = {"02_sima": mu.nbrun.parameters_of(source)}
        cli.costs.fit_budget(_plans(params, sizes, price), params, sizes, budget_minutes=0.01, fixed=set())


def test_smaller_halves_thins_and_doubles_strides_down_to_the_floors():
    assert cli.costs.smaller("n_generated", 256, 1000) == 128 and cli.costs.smaller("n_generated", 32, 1000) is None
    assert cli.costs.smaller("ddpm_steps", None, 1000) == 500  # None: all T
    assert cli.costs.smaller("ts", [0, 1, 2, 5, 10], 1000) == [0, 2, 10]  # the ends kept
    assert cli.costs.smaller("ts", [5, 10], 1000) is None
    assert cli.costs.smaller("feature_stride", 20, 1000) == 40 and cli.costs.smaller("feature_stride", 400, 1000) is None
    assert cli.costs.smaller("seed", 3, 1000) is None  # no knob


@pytest.mark.parametrize("tiny_checkpoint", [(3, 16)], indirect=True, ids=["rgb16"])
def test_audit_prints_its_plan_and_the_budget_refuses_before_anything_is_written(tiny_checkpoint, tmp_path, capsys):
    argv = ["audit", "--checkpoint", str(tiny_checkpoint["checkpoint"]), "--members", str(tiny_checkpoint["members"]),
            "--nonmembers", str(tiny_checkpoint["nonmembers"]), "--chapters", "02", "--device", "cpu",
            "--out", str(tmp_path / "r"), "--budget", "0.1"]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert "[audit] plan: 02_sima: " in out and "costliest: DDPM samples" in out
    assert "> --budget 0.1" in err and "--n-eval" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.parametrize("tiny_checkpoint", [(3, 16)], indirect=True, ids=["rgb16"])
def test_audit_under_a_budget_runs_the_chapter_with_the_scaled_knobs(tiny_checkpoint, tmp_path, capsys):
    """--budget that the defaults exceed: the knobs it prints are the ones the chapter ran with,
    and the report keeps the plan (scaled) beside the measured seconds and the counted queries."""
    out = tmp_path / "r"
    argv = ["audit", "--checkpoint", str(tiny_checkpoint["checkpoint"]), "--members", str(tiny_checkpoint["members"]),
            "--nonmembers", str(tiny_checkpoint["nonmembers"]), "--chapters", "02", "--device", "cpu",
            "--n-eval", "8", "--out", str(out), "-p", "n_boot", "20", "-p", "other_victims", "[]"]
    # the unscaled plan, as the audit makes it (timed on this model), then a budget an eighth of its model work
    source = next(p for p in mu.nbrun.chapters() if p.stem == "02_sima")
    validated = cli.audit.validate(*argv[2:7:2], device="cpu", n_eval=8)
    _, (plan,) = cli.audit.plan_chapters([source], argv[2], {"n_eval": 8, "n_boot": 20, "other_victims": []},
                                         validated, 256, None, set())
    overhead = cli.costs.OVERHEAD_SECONDS / 60
    budget = overhead + (plan.seconds / 60 - overhead) / 8
    capsys.readouterr()
    assert cli.main([*argv, "--budget", f"{budget:.4f}"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    plan = summary["plan"]["02_sima"]
    assert plan["changed"] and f"--budget {float(f'{budget:.4f}'):g}: 02_sima's" in printed
    ran_with = json.loads((out / "02_sima.ipynb").read_text())["metadata"]["papermill"]["parameters"]
    for knob, change in plan["changed"].items():
        assert ran_with[knob] == change["to"]
    assert plan["estimated_minutes"] <= float(f"{budget:.4f}") and plan["forward"] == plan["measured"]["forward"]
