"""``mia-book score``: rows, calibration, sharding over processes, resumption, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import mia_utils as mu
from mia_utils import cli, metrics, scoring
from mia_utils.noise import content_hashes

from .conftest import make_reference_folders

pytestmark = pytest.mark.parametrize("tiny_checkpoint", [(1, 8)], indirect=True, ids=["grey8"])


@pytest.fixture
def folders(tiny_checkpoint, tmp_path):
    """The tiny victim's members and non-members, and an unlabelled folder with a sub-folder."""
    unl = tmp_path / "unlabelled"
    shutil.copytree(tiny_checkpoint["members"], unl / "a", ignore=lambda d, names: sorted(names)[6:])
    shutil.copytree(tiny_checkpoint["nonmembers"], unl / "b" / "deeper", ignore=lambda d, names: sorted(names)[4:])
    return {**{k: str(v) for k, v in tiny_checkpoint.items()}, "images": str(unl)}


def _score(folders, out, **kw):
    kw = {"attack": "sima", "parameters": {"t": 20}, "device": "cpu", "n_boot": 50, "report": lambda s: None, **kw}
    return scoring.score(folders["checkpoint"], out=out, images=folders["images"], members=folders["members"],
                         nonmembers=folders["nonmembers"], **kw)


def test_rows_are_the_attack_on_each_image(folders, tmp_path):
    out = _score(folders, tmp_path / "s.parquet", shard_size=5)
    rows = pd.read_parquet(out)
    assert list(rows["split"].value_counts().sort_index()) == [24, 24, 10]
    assert rows["path"].iloc[-1] == "b/deeper/img_00003.png"  # relative paths, sub-folders included
    model = mu.load_model(folders["checkpoint"], device="cpu")
    for split, folder in (("member", "members"), ("nonmember", "nonmembers")):
        images, names = mu.images.load_image_folder(folders[folder], return_names=True)
        mine = rows[rows["split"] == split].set_index("path").loc[names]
        # the same attack called directly, on the whole folder at once
        np.testing.assert_allclose(mine["score"], mu.attacks.sima.score(model, images, t=20), rtol=1e-6)
        assert list(mine["content_sha256"]) == content_hashes(images)
    ckpt = Path(folders["checkpoint"])
    (weights,) = ckpt.rglob("*.safetensors")
    by_hand = hashlib.sha256(weights.relative_to(ckpt).as_posix().encode() + b"\0" + weights.read_bytes())
    assert set(rows["checkpoint_sha256"]) == {by_hand.hexdigest()}
    assert set(rows["attack"]) == {"sima"} and json.loads(rows["parameters"].iloc[0])["t"] == 20
    assert not (tmp_path / "s.parquet.shards").exists()  # cleaned up once the file is complete


def test_threshold_and_decisions_by_hand(folders, tmp_path):
    out = _score(folders, tmp_path / "s.csv", fpr=0.1)
    rows = pd.read_csv(out, keep_default_na=False)
    info = json.loads((tmp_path / "s.csv.json").read_text())["calibration"]
    cal, held = rows["part"] == "calibration", rows["part"] == "held-out"
    assert (cal | held).sum() == 48 and not (rows.loc[rows["split"] == "unlabelled", "part"] != "").any()
    # the part follows the content hash alone
    assert list(cal[rows["split"] != "unlabelled"]) == list(scoring.calibration_part(
        rows.loc[rows["split"] != "unlabelled", "content_sha256"]))
    member = rows["split"] == "member"
    non_cal = np.sort(rows.loc[cal & ~member & (rows["split"] == "nonmember"), "score"].to_numpy())
    # at most floor(0.1 n) calibration non-members above the threshold, and the smallest such threshold
    tau = info["threshold"]
    assert (non_cal > tau).sum() <= int(0.1 * len(non_cal)) and tau in non_cal
    assert (rows["decision"] == np.where(rows["score"] > tau, "member", "non-member")).all()
    ho_m = rows.loc[held & member, "score"].to_numpy()
    ho_n = rows.loc[held & (rows["split"] == "nonmember"), "score"].to_numpy()
    assert info["held_out"]["tpr"] == pytest.approx(np.mean(ho_m > tau))
    assert info["held_out"]["fpr"] == pytest.approx(np.mean(ho_n > tau))
    assert info["held_out"]["auc"] == pytest.approx(metrics.auc(ho_m, ho_n))


def test_feature_attack_writes_features_and_a_probe_score(folders, tmp_path):
    out = _score(folders, tmp_path / "f.parquet", attack="trajectory", parameters={"ts": [10, 500], "kinds": ["loss"]})
    rows = pd.read_parquet(out)
    assert [c for c in rows if c.startswith("f_")] == ["f_loss_t10", "f_loss_t500"]
    model = mu.load_model(folders["checkpoint"], device="cpu")
    images, names = mu.images.load_image_folder(folders["members"], return_names=True)
    direct = mu.features.trajectory_features(model, images, [10, 500], kinds=["loss"], progress=False).matrix()
    mine = rows[rows["split"] == "member"].set_index("path").loc[names]
    np.testing.assert_allclose(mine[["f_loss_t10", "f_loss_t500"]].to_numpy(), direct, rtol=1e-6)
    assert np.isfinite(rows["score"]).all()  # the probe trained on the calibration part scores every row


def test_two_processes_batch_size_and_order_change_nothing(folders, tmp_path):
    one = _score(folders, tmp_path / "one.parquet", attack="loss", parameters={"t": 30}, shard_size=7)
    two = tmp_path / "two.parquet"
    proc = subprocess.run([sys.executable, "-m", "mia_utils", "score", "--checkpoint", folders["checkpoint"],
                           "--attack", "loss", "-p", "t", "30", "--images", folders["images"], "--members",
                           folders["members"], "--nonmembers", folders["nonmembers"], "--out", str(two),
                           "--device", "cpu", "--shard-size", "7", "--num-processes", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "over 2 process(es)" in proc.stdout
    a, b = pd.read_parquet(one), pd.read_parquet(two)
    pd.testing.assert_frame_equal(a, b)  # bitwise: the same rows, scores and decisions
    # another batch size and the files in reverse order (renamed): each image keeps its score
    rev = tmp_path / "reversed"
    files = mu.images.image_files(folders["members"])
    rev.mkdir()
    for i, f in enumerate(reversed(files)):
        shutil.copy(f, rev / f"r{i:03d}.png")
    c = pd.read_parquet(_score({**folders, "members": str(rev)}, tmp_path / "c.parquet", attack="loss",
                               parameters={"t": 30}, batch_size=5))
    key = ["content_sha256", "split"]
    merged = a.merge(c, on=key, suffixes=("", "_c"))
    assert len(merged) == len(a)
    np.testing.assert_allclose(merged["score"], merged["score_c"], rtol=1e-6)


def _killed(monkeypatch, folders, out, shards: int, shard_size: int) -> None:
    """A run of ``score`` killed (KeyboardInterrupt) after ``shards`` shards were written: the
    first call of Run.score is prepare()'s one-image check, then one call per shard."""
    real, calls = scoring.Run.score, {"n": 0}

    def dies(self, items, images=None):
        calls["n"] += 1
        if calls["n"] > shards + 1:
            raise KeyboardInterrupt("killed")
        return real(self, items, images)

    with monkeypatch.context() as mp:
        mp.setattr(scoring.Run, "score", dies)
        with pytest.raises(KeyboardInterrupt):
            _score(folders, out, shard_size=shard_size)


def _own_copy(folders, tmp_path) -> dict:
    """The fixture's folders copied under ``tmp_path`` (a test that changes images changes its own)."""
    mine = {k: str(tmp_path / k) for k in ("members", "nonmembers", "images")}
    for k in mine:
        shutil.copytree(folders[k], mine[k])
    return {**mine, "checkpoint": folders["checkpoint"]}


def test_a_killed_run_resumes_to_the_same_file(folders, tmp_path, monkeypatch):
    whole = pd.read_parquet(_score(folders, tmp_path / "whole.parquet", shard_size=4))
    out = tmp_path / "s.parquet"
    _killed(monkeypatch, folders, out, shards=3, shard_size=4)
    shards = tmp_path / "s.parquet.shards"
    assert sorted(p.name for p in shards.glob("shard-*")) == [f"shard-{k:05d}.parquet" for k in range(3)]
    assert not out.exists() and not (tmp_path / "s.parquet.json").exists()  # nothing that looks complete
    (shards / ".shard-00003.parquet.999.tmp").write_bytes(b"half a file")  # a kill during a write
    lines = []
    _score(folders, out, shard_size=4, report=lines.append)
    assert any("12 from earlier shards" in line for line in lines)
    pd.testing.assert_frame_equal(pd.read_parquet(out), whole)


def test_shards_of_another_run_are_never_mixed(folders, tmp_path, monkeypatch):
    out = tmp_path / "s.parquet"
    monkeypatch.setattr(scoring, "shutil", type("NoRemove", (), {"rmtree": staticmethod(lambda *a, **k: None)}))
    _score(folders, out, shard_size=4)  # leaves its shards (removal disabled)
    out.unlink()
    with pytest.raises(ValueError, match="another run .*parameters"):
        _score(folders, out, shard_size=4, parameters={"t": 21})
    monkeypatch.undo()
    _score(folders, out, shard_size=4, parameters={"t": 21}, overwrite=True)
    assert json.loads(pd.read_parquet(out)["parameters"].iloc[0])["t"] == 21


@pytest.mark.parametrize("argv, message", [
    (["--attack", "nope"], "No attack 'nope'; the attacks are loss, sima"),
    (["--attack", "sima", "-p", "q", "1"], "sima has no parameter 'q'; its parameters are noisy, p, t"),
    (["--attack", "sima", "-p", "seed", "1"], "-p seed: set by the command's own option (--seed)"),
    (["--attack", "sima", "-p", "t", "5000"], "lies outside [0, 999]"),
    (["--attack", "sima", "--dtype", "bf16"], "runs on a CUDA GPU only"),
    (["--attack", "noise_probe"], "--base DIR"),
    (["--attack", "sima", "--no-nonmembers"], "Give both --members and --nonmembers"),
    (["--attack", "sima", "--out-name", "s.txt"], "name a .parquet or .csv file"),
    (["--attack", "sima", "--overlap"], "both members and non-members"),
])
def test_bad_input_is_one_line_and_writes_nothing(folders, tmp_path, capsys, argv, message):
    out = tmp_path / "s.parquet"
    nonmembers = folders["nonmembers"]
    if "--overlap" in argv:
        argv = [a for a in argv if a != "--overlap"]
        nonmembers = str(tmp_path / "with_a_member")
        shutil.copytree(folders["nonmembers"], nonmembers)
        shutil.copy(mu.images.image_files(folders["members"])[0], tmp_path / "with_a_member" / "copy.png")
    if "--out-name" in argv:
        out = tmp_path / argv.pop(argv.index("--out-name") + 1)
        argv.remove("--out-name")
    base = ["score", "--checkpoint", folders["checkpoint"], "--images", folders["images"], "--members",
            folders["members"], "--device", "cpu", "--out", str(out)]
    if "--no-nonmembers" in argv:
        argv.remove("--no-nonmembers")
    else:
        base += ["--nonmembers", nonmembers]
    assert cli.main(base + argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0
    assert not out.exists() and not list(tmp_path.glob("*.json"))


def test_an_existing_result_is_refused_unless_overwritten(folders, tmp_path):
    out = _score(folders, tmp_path / "s.parquet")
    with pytest.raises(ValueError, match="exists: choose another path, or pass --overwrite"):
        _score(folders, out)
    assert _score(folders, out, overwrite=True) == out


def test_precision_beyond_fp32_needs_cuda(folders):
    with pytest.raises(mu.models.CheckpointError, match="CUDA GPU only"):
        mu.load_model(folders["checkpoint"], device="cpu", dtype="bf16")
    with pytest.raises(mu.models.CheckpointError, match="use one of fp32, tf32, bf16, fp16"):
        mu.load_model(folders["checkpoint"], device="cpu", dtype="float8")
    model = mu.load_model(folders["checkpoint"], device="cpu", dtype="fp32")
    x = torch.zeros((2, *model.sample_shape))
    assert model.eps(x, 10).dtype == torch.float32


CHEAP = {"loss": {"t": 30}, "sima": {"t": 30}, "pia": {"t": 30}, "pian": {"t": 30}, "secmi": {"t_sec": 20, "k": 10},
         "noise_probe": {"inversion_steps": 4, "generation_steps": 4}, "pfami": {"ts": [20, 40]},
         "rediffuse": {"n": 2, "steps": 2}, "trajectory": {"ts": [10, 20]}, "gsa": {"ts": [10, 20]},
         "lira": {"ts": [20, 50], "n_noise": 2}, "rmia": {"ts": [20, 50], "n_noise": 2, "online": False}}


def test_reference_attacks_name_what_they_need(folders, reference_folders):
    kw = {"members": folders["members"], "nonmembers": folders["nonmembers"], "device": "cpu"}
    with pytest.raises(ValueError, match="--references DIR"):
        scoring.prepare(folders["checkpoint"], "lira", **kw)
    with pytest.raises(ValueError, match="--population DIR"):
        scoring.prepare(folders["checkpoint"], "rmia", references=reference_folders["references"], **kw)
    with pytest.raises(ValueError, match="--references is used by the reference-model attacks"):
        scoring.prepare(folders["checkpoint"], "sima", references=reference_folders["references"], **kw)
    with pytest.raises(ValueError, match="z must be OUT of all"):  # the members are inside the references
        scoring.prepare(folders["checkpoint"], "rmia", references=reference_folders["references"],
                        population=folders["members"], **kw)
    run = scoring.prepare(folders["checkpoint"], "lira", references=reference_folders["references"], **kw)
    assert len(run.fingerprint["references_sha256"]) == 64 and len(run.call["references"]) == 4


@pytest.fixture
def reference_folders(folders, tmp_path):
    return make_reference_folders(folders, tmp_path)


def test_every_attack_of_the_book_is_reachable(folders, reference_folders):
    pixel = [n for n in scoring.attack_names() if "captions" not in mu.attacks.get(n).needs]
    assert sorted(pixel) == sorted(CHEAP)
    model = mu.load_model(folders["checkpoint"], device="cpu")
    images = mu.images.load_image_folder(folders["members"])[:3]
    refs = mu.references.ReferenceModels.from_folder(reference_folders["references"], device="cpu")
    z = mu.images.load_image_folder(reference_folders["population"])
    for name, params in CHEAP.items():
        base = folders["checkpoint"] if name == "noise_probe" else None
        needs = mu.attacks.get(name).needs
        others = {k: v for k, v in reference_folders.items() if k in needs}
        run = scoring.prepare(folders["checkpoint"], name, params, members=folders["members"],
                              nonmembers=folders["nonmembers"], base=base, device="cpu", **others)
        rows = run.score(run.items[:3])
        if name in mu.attacks.FEATURE_ATTACKS:  # the same features, computed directly
            direct, _ = mu.attacks.FEATURE_ATTACKS[name].features(model, images, **params)
            np.testing.assert_allclose(rows[[c for c in rows if c.startswith("f_")]].to_numpy(), direct, rtol=1e-5)
        else:  # the registry's attack called directly (noise_probe with its base, lira and rmia with theirs)
            extra = {"base": model} if base else {}
            extra.update({"references": refs} if "references" in needs else {})
            extra.update({"population": z} if "population" in needs else {})
            np.testing.assert_allclose(rows["score"], mu.attacks.get(name)(model, images, **params, **extra),
                                       rtol=1e-5)


def test_weights_hash_reads_only_regular_files_inside_the_folder(tiny_checkpoint, tmp_path):
    """A link to /dev/zero hung the hash at 100 % CPU; a link to a file outside the folder is not
    a weight of this checkpoint either (the module's tiny checkpoint is not needed here)."""
    (tmp_path / "ckpt" / "unet").mkdir(parents=True)
    (tmp_path / "ckpt" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    before = scoring.weights_hash(tmp_path / "ckpt")
    (tmp_path / "outside.safetensors").write_bytes(b"other")
    (tmp_path / "ckpt" / "unet" / "extra.safetensors").symlink_to("/dev/zero")
    (tmp_path / "ckpt" / "unet" / "more.safetensors").symlink_to(tmp_path / "outside.safetensors")
    assert scoring.weights_hash(tmp_path / "ckpt") == before


def test_resumed_shards_are_checked_against_the_images_as_they_are_now(folders, tmp_path, monkeypatch):
    """A shard copied over another (16 images duplicated and 16 missing, exit 0, before) and an
    image replaced after the kill (its stale hash and score kept, before) are both scored again."""
    mine = _own_copy(folders, tmp_path)
    out = tmp_path / "s.parquet"
    _killed(monkeypatch, mine, out, shards=3, shard_size=4)
    shards = tmp_path / "s.parquet.shards"
    shutil.copy(shards / "shard-00000.parquet", shards / "shard-00001.parquet")  # a shard over another
    first = pd.read_parquet(shards / "shard-00002.parquet").iloc[0]  # an image of shard 2, replaced
    assert first["split"] == "member"
    image = Path(mine["members"]) / first["path"]
    Image.open(image).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(image)
    lines = []
    rows = pd.read_parquet(_score(mine, out, shard_size=4, report=lines.append))
    assert any("2 earlier shard(s) (1, 2) do not match" in line for line in lines), lines
    assert not rows.duplicated(["split", "path"]).any() and len(rows) == 58
    fresh = pd.read_parquet(_score(mine, tmp_path / "fresh.parquet", shard_size=4))  # no earlier shards
    pd.testing.assert_frame_equal(rows, fresh)


def test_a_re_encoded_member_among_the_non_members_is_refused_as_audit_refuses_it(folders, tmp_path):
    """A JPEG (q95) copy of a member among --nonmembers passed score's exact-hash check; the audit
    refused the same folders. Both now use data.near_duplicates."""
    nonmembers = tmp_path / "nonmembers"
    shutil.copytree(folders["nonmembers"], nonmembers)
    member = sorted(Path(folders["members"]).glob("*.png"))[3]
    Image.open(member).convert("L").save(nonmembers / "copy.jpg", quality=95)
    with pytest.raises(mu.data.DataError, match=r"near-duplicate pair\(s\) across the members and the non-members, "
                                                r"e\.g\. .*img_00003\.png and .*copy\.jpg"):
        scoring.score(folders["checkpoint"], "sima", tmp_path / "s.csv", {"t": 20}, members=folders["members"],
                      nonmembers=str(nonmembers), device="cpu", report=lambda s: None)
    with pytest.raises(mu.data.DataError, match="near-duplicate"):  # the audit's own check, same verdict
        mu.load_membership_sets(folders["members"], str(nonmembers))
    # the thumbnails give the pairs the images give
    x = mu.images.load_image_folder(folders["members"])
    y = mu.images.load_image_folder(nonmembers)
    assert mu.data.near_duplicates(mu.data.thumbnails(x), mu.data.thumbnails(y)) == mu.data.near_duplicates(x, y)


def test_one_score_run_per_out_at_a_time(folders, tmp_path):
    """The main process holds <out>.lock from its first write to its last: a second run on the same
    --out (or a resume started while orphaned workers of a killed run still write) is refused."""
    out = tmp_path / "s.parquet"
    with mu.io.exclusive_lock(str(out) + ".lock", "a run"):
        with pytest.raises(ValueError, match="is in use by another mia-book run"):
            _score(folders, out)
    assert not out.exists() and not scoring.shard_dir(out).exists()
    assert _score(folders, out) == out.resolve()


def _running_with(text: str) -> list[int]:
    """The pids of live (not zombie) processes whose command line holds ``text``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace") and \
                    (proc / "stat").read_text().split()[2] != "Z":
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_a_multi_process_score_leaves_no_worker_behind(folders, tmp_path):
    """kill -9 of `mia-book score --num-processes 2` left the accelerate launcher and both workers
    running; they wrote --out a minute later. Now the launcher dies with the command and each
    worker with the launcher."""
    import signal
    import time

    out = tmp_path / "killed.parquet"
    cmd = [sys.executable, "-m", "mia_utils", "score", "--checkpoint", folders["checkpoint"], "--attack", "loss",
           "-p", "t", "30", "--images", folders["images"], "--members", folders["members"], "--nonmembers",
           folders["nonmembers"], "--out", str(out), "--device", "cpu", "--shard-size", "1", "--num-processes", "2"]
    top = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(_running_with(str(out))) < 4 and time.time() < deadline:  # the command, the launcher, 2 workers
        time.sleep(0.2)
    assert len(_running_with(str(out))) >= 4, "the workers never started"
    top.send_signal(signal.SIGKILL)
    top.wait()
    deadline = time.time() + 10
    while _running_with(str(out)) and time.time() < deadline:
        time.sleep(0.2)
    left = _running_with(str(out))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} process(es) outlived the killed command"
    assert not out.exists()


def test_bad_outputs_and_damaged_shards_are_one_sentence(folders, tmp_path, monkeypatch):
    """--out inside an image folder is refused (it failed with "scores.csv is not a PNG or JPEG
    image" on the next run); a truncated shard is scored again (it failed with "Parquet magic bytes
    not found"); under --num-processes 2 a validation error is one line and exit 2 (40 lines of
    torch-elastic's ChildFailedError and exit 1 before)."""
    mine = _own_copy(folders, tmp_path)
    with pytest.raises(ValueError, match="lies inside --images .* write it outside the image folders"):
        _score(mine, Path(mine["images"]) / "scores.csv")
    first = pd.read_parquet(_score(mine, tmp_path / "whole.parquet", shard_size=8))
    out = tmp_path / "s.parquet"
    _killed(monkeypatch, mine, out, shards=2, shard_size=8)
    (scoring.shard_dir(out) / "shard-00000.parquet").write_bytes(b"PAR1 cut short")  # a damaged shard
    lines = []
    again = pd.read_parquet(_score(mine, out, shard_size=8, report=lines.append))
    assert any("damaged file" in line for line in lines)
    pd.testing.assert_frame_equal(first, again)
    proc = subprocess.run([sys.executable, "-m", "mia_utils", "score", "--checkpoint", folders["checkpoint"],
                           "--attack", "sima", "-p", "t", "5000", "--images", folders["images"], "--out",
                           str(tmp_path / "x.csv"), "--device", "cpu", "--num-processes", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-3000:]
    assert proc.stderr.startswith("mia-book: error:") and "5000" in proc.stderr


T2I_CHEAP = {"sima": {"t": 30}, "loss": {"t": 50, "n_noise": 1}, "clid": {"ts": [50, 100], "n_noise": 1},
             "wen": {"ts": [500], "n_noise": 1}, "noise_probe": {"inversion_steps": 3, "generation_steps": 3}}


@pytest.mark.parametrize("name", sorted(T2I_CHEAP))
def test_a_text_to_image_folder_scores_with_its_captions(name, tiny_sd, tiny_checkpoint, tmp_path):
    """mia-book score on an SD folder (with its LoRA): latents of the VAE, each image bound to its
    caption from metadata.jsonl; the rows equal the attack called on the same bound view."""
    base = tiny_sd["folder"] if name == "noise_probe" else None
    out = scoring.score(str(tiny_sd["folder"]), name, tmp_path / "s.parquet", T2I_CHEAP[name],
                        members=str(tiny_sd["members"]), nonmembers=str(tiny_sd["nonmembers"]), base=base,
                        device="cpu", lora=str(tiny_sd["lora"]), n_boot=50, report=lambda *_: None)
    rows = pd.read_parquet(out)
    info = json.loads(Path(str(out) + ".json").read_text())
    assert len(rows) == 40 and info["kind"] == "text-to-image" and info["vae_encodes_per_image"] == 1
    target = mu.pipelines.load_pipeline(tiny_sd["folder"], lora=tiny_sd["lora"], device="cpu")
    files = sorted(p.name for p in tiny_sd["members"].glob("*.png"))
    captions = mu.images.read_captions(tiny_sd["members"], files)
    images = mu.images.load_image_files([tiny_sd["members"] / f for f in files])
    view = target.bind(captions)
    extra = {"base": mu.pipelines.load_pipeline(base, device="cpu").bind(captions)} if base else {}
    want = mu.attacks.get(name)(view, target.encode(images), **T2I_CHEAP[name], **extra)
    got = rows[rows["split"] == "member"].set_index("path").loc[files, "score"].to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_text_attacks_on_a_pixel_checkpoint_are_refused(folders):
    with pytest.raises(ValueError, match="needs a text-to-image checkpoint"):
        scoring.prepare(folders["checkpoint"], "clid", members=folders["members"], nonmembers=folders["nonmembers"],
                        device="cpu")


def test_the_plan_counts_the_queries_and_the_budget_refuses_before_anything_is_written(folders, tmp_path):
    kw = {"members": folders["members"], "nonmembers": folders["nonmembers"], "device": "cpu"}
    for name, params in (("sima", {"t": 30}), ("loss", {"t": 30, "n_noise": 3}), ("secmi", {"t_sec": 20, "k": 10})):
        run = scoring.prepare(folders["checkpoint"], name, params, **kw)
        plan = run.plan
        assert plan["queries_per_image"] == mu.attacks.get(name).cost(run.attack.check_hyper(params))
        assert plan["images"] == len(run.items)
        assert plan["forward_passes"] == plan["images"] * plan["queries_per_image"]
        assert plan["seconds_per_forward"] > 0 and plan["estimated_minutes"] > 0
    lines = []
    with pytest.raises(ValueError, match=r"> --budget 1e-09: score fewer images, or lower loss's -p n_noise"):
        scoring.score(folders["checkpoint"], "loss", tmp_path / "s.parquet", {"t": 30}, budget=1e-9,
                      report=lines.append, **kw)
    assert lines and lines[0].startswith("[score] plan:") and not (tmp_path / "s.parquet.shards").exists()
    out = scoring.score(folders["checkpoint"], "sima", tmp_path / "s.parquet", {"t": 30}, budget=60, n_boot=50,
                        report=lines.append, **kw)
    info = json.loads(Path(str(out) + ".json").read_text())
    assert info["plan"]["images"] == len(pd.read_parquet(out)) and info["peak_memory_mb"] > 0
