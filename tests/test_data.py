"""Data: the default set, the split and its manifest, image folders, and bad input."""

from __future__ import annotations

import functools
import json
import operator

import numpy as np
import pytest
import torch
from PIL import Image

import mia_utils as mu
from mia_utils.data import DataError


def test_digits_shape_and_range(digits):
    assert digits.shape == (1797, 1, 8, 8) and digits.dtype == torch.float32
    assert digits.min() == -1 and digits.max() == 1


def test_split_is_disjoint_sized_and_seeded():
    split = mu.data.make_split("digits", n_members=256, seed=0)
    idx = split.indices
    all_idx = functools.reduce(operator.iadd, idx.values(), [])
    assert len(all_idx) == len(set(all_idx)) == 1797
    assert len(idx["members_cal"]) + len(idx["members_eval"]) == 256
    assert len(idx["nonmembers_cal"]) + len(idx["nonmembers_eval"]) == 256
    assert len(idx["members_cal"]) == round(256 / 3)
    assert mu.data.make_split("digits", seed=0).indices == idx
    assert mu.data.make_split("digits", seed=1).indices != idx


def test_manifest_round_trip_and_tamper_check(tmp_path, digits):
    split = mu.data.make_split("digits", n_members=100, seed=3)
    path = split.save(tmp_path / "split.json")
    back = mu.data.Split.load(path)
    assert back.indices == split.indices
    m = json.loads(path.read_text())
    assert m["sha256"]["members_cal"][0] == mu.images.image_hashes(digits[split.indices["members_cal"][:1]])[0]
    m["indices"]["members_cal"][0] = m["indices"]["public"][0]  # point a member at another image
    path.write_text(json.dumps(m))
    with pytest.raises(DataError, match="does not match"):
        mu.data.Split.load(path)


def test_leakage_check_refuses_a_shared_image(digits):
    mu.data.check_no_leakage(a=digits[:10], b=digits[10:20])
    with pytest.raises(DataError, match=r"same image is in 'a' \(image 9\) and in 'b' \(image 0\)"):
        mu.data.check_no_leakage(a=digits[:10], b=digits[9:20])


def test_image_folder_round_trip_grey_and_rgb(tmp_path, digits):
    mu.images.save_image_folder(digits[:5], tmp_path / "grey")
    back = mu.load_image_folder(tmp_path / "grey")
    assert back.shape == (5, 1, 8, 8)
    assert torch.allclose(back, digits[:5], atol=1 / 127.5)
    rgb = mu.load_image_folder(tmp_path / "grey", channels=3, size=16)
    assert rgb.shape == (5, 3, 16, 16)
    assert torch.allclose(rgb[:, 0], rgb[:, 1])
    mu.images.save_image_folder(rgb, tmp_path / "rgb")
    assert mu.load_image_folder(tmp_path / "rgb").shape == (5, 3, 16, 16)
    # JPEG is read too
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(tmp_path / "rgb" / "z.jpg")
    assert mu.load_image_folder(tmp_path / "rgb").shape == (6, 3, 16, 16)


def test_image_folder_errors(tmp_path, digits):
    with pytest.raises(DataError, match="does not exist"):
        mu.load_image_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        mu.load_image_folder(tmp_path / "empty")
    mu.images.save_image_folder(digits[:2], tmp_path / "mixed")
    (tmp_path / "mixed" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a PNG or JPEG"):
        mu.load_image_folder(tmp_path / "mixed")
    (tmp_path / "mixed" / "notes.txt").unlink()
    (tmp_path / "mixed" / "broken.png").write_bytes(b"not really a png")
    with pytest.raises(DataError, match="could not be read"):
        mu.load_image_folder(tmp_path / "mixed")
    (tmp_path / "mixed" / "broken.png").unlink()
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "mixed" / "big.png")
    with pytest.raises(DataError, match=r"differ in \[channels, height, width\] \(\(1, 9, 9\) as in big.png; "
                                        r"\(1, 8, 8\) as in img_00000.png\)"):
        mu.load_image_folder(tmp_path / "mixed")
    with pytest.raises(DataError, match="is a file"):
        mu.load_image_folder(tmp_path / "mixed" / "big.png")


@pytest.fixture
def folders(tmp_path, digits):
    mu.images.save_image_folder(digits[:30], tmp_path / "members")
    mu.images.save_image_folder(digits[30:60], tmp_path / "nonmembers")
    return tmp_path


def test_membership_sets_from_folders(folders, tiny_model):
    sets = mu.load_membership_sets(folders / "members", folders / "nonmembers", model=tiny_model, n_eval=15)
    assert len(sets.members_cal) == 10 and len(sets.members_eval) == 15
    assert len(sets.nonmembers_cal) == 10 and len(sets.nonmembers_eval) == 15


def test_membership_sets_errors(folders, tiny_model, digits):
    with pytest.raises(DataError, match="n_eval=25"):
        mu.load_membership_sets(folders / "members", folders / "nonmembers", model=tiny_model, n_eval=25)
    mu.images.save_image_folder(digits[29:30], folders / "nonmembers", prefix="dup")
    with pytest.raises(DataError, match=r"members/img_00029.png\) and in 'nonmembers' \(.*nonmembers/dup_00000.png"):
        mu.load_membership_sets(folders / "members", folders / "nonmembers", model=tiny_model)
    mu.images.save_image_folder(torch.zeros(3, 1, 16, 16), folders / "big")
    with pytest.raises(DataError, match=r"are \(16, 16\) but the model takes \(8, 8\)"):
        mu.load_membership_sets(folders / "big", folders / "members", model=tiny_model)
    sets = mu.load_membership_sets(folders / "big", folders / "members", model=tiny_model, resize=True)
    assert sets.members_eval.shape[1:] == (1, 8, 8)
    mu.images.save_image_folder(torch.zeros(3, 3, 8, 8), folders / "rgb")
    with pytest.raises(DataError, match="3 channel"):
        mu.load_membership_sets(folders / "rgb", folders / "members", model=tiny_model)


def test_membership_sets_refuse_bad_counts(folders, tiny_model):
    for bad in (0, -3, 2.5):
        with pytest.raises(DataError, match="n_eval=.*whole number >= 1"):
            mu.load_membership_sets(folders / "members", folders / "nonmembers", model=tiny_model, n_eval=bad)
    for bad in (0, 1, 1.5, -0.2):
        with pytest.raises(DataError, match="strictly between 0 and 1"):
            mu.load_membership_sets(folders / "members", folders / "nonmembers", calibration_fraction=bad)


def test_a_member_re_saved_as_jpeg_among_the_nonmembers_is_refused(folders, tiny_model, digits):
    arr = mu.images.to_uint8(digits[7:8])[0, 0]
    Image.fromarray(arr).save(folders / "nonmembers" / "copy.jpg", quality=95)  # not byte- or pixel-identical
    with pytest.raises(DataError, match=r"near-duplicate pair.*img_00007.png and .*copy.jpg"):
        mu.load_membership_sets(folders / "members", folders / "nonmembers", model=tiny_model)


def test_near_duplicates_sees_re_encodings_not_distinct_digits(digits):
    import io

    pairs = mu.data.near_duplicates(digits, digits)
    assert all(i == j for i, j, _ in pairs)  # distinct digits are never near-duplicates
    buf = io.BytesIO()
    Image.fromarray(mu.images.to_uint8(digits[3:4])[0, 0]).save(buf, "JPEG", quality=95)
    again = torch.from_numpy(np.asarray(Image.open(buf), dtype=np.float32) / 127.5 - 1)[None, None]
    assert [p[:2] for p in mu.data.near_duplicates(digits[:10], again)] == [(3, 0)]


def test_image_modes_load_as_their_content(tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(ramp).save(folder / "a16.png")  # 16-bit grey
    x = mu.load_image_folder(folder)
    assert x.shape == (1, 1, 8, 8) and len(torch.unique(x)) == 64  # not collapsed to {-1, 1}
    np.testing.assert_allclose(x.flatten().numpy(), ramp.flatten() / 65535 * 2 - 1, atol=1e-5)
    la = Image.fromarray(np.stack([np.full((8, 8), 100, np.uint8), np.full((8, 8), 255, np.uint8)], -1), mode="LA")
    la.save(folder / "b.png")
    pal = Image.fromarray(np.full((8, 8), 50, np.uint8)).convert("P")
    pal.save(folder / "c.png")
    x = mu.load_image_folder(folder)
    assert x.shape == (3, 1, 8, 8)  # LA and a grey palette are grey, not "3 channels"
    assert float(x[1].mean()) == pytest.approx(100 / 127.5 - 1) and float(x[2].mean()) == pytest.approx(50 / 127.5 - 1)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8) + np.array([255, 0, 0], np.uint8)).convert("P").save(folder / "d.png")
    with pytest.raises(DataError, match="differ"):
        mu.load_image_folder(folder)  # a colour palette is RGB
    assert mu.load_image_folder(folder, channels=3).shape == (4, 3, 8, 8)


def test_a_decompression_bomb_is_refused(tmp_path, monkeypatch):
    (tmp_path / "bomb").mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "bomb" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # as if the file were gigapixels
    with pytest.raises(DataError, match="far larger than any diffusion model's input"):
        mu.load_image_folder(tmp_path / "bomb")


def test_fashion_mnist_loads_as_16x16_from_the_idx_files():
    """The real Fashion-MNIST (Debian's package): 60,000 + 10,000 images; each 16x16 pixel is the
    mean of a 2x2 block of the 28x28 original padded to 32x32 (checked on the raw IDX bytes),
    rounded to 8 bits; labels 0-9."""
    import gzip

    x, x_test = mu.datasets.load_dataset("fashion"), mu.datasets.load_dataset("fashion-test")
    assert x.shape == (60000, 1, 16, 16) and x_test.shape == (10000, 1, 16, 16)
    assert x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
    labels = mu.datasets.dataset_labels("fashion")
    assert labels.shape == (60000,) and set(np.unique(labels)) == set(range(10))
    raw = gzip.decompress((mu.datasets.FASHION_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())
    first = np.frombuffer(raw, np.uint8, count=28 * 28, offset=16).reshape(28, 28).astype(np.float64)
    padded = np.pad(first, 2)
    expected = np.round(padded.reshape(16, 2, 16, 2).mean(axis=(1, 3))) / 127.5 - 1
    np.testing.assert_allclose(x_test[0, 0].double().numpy(), expected, atol=1e-6)
    assert mu.datasets.FASHION_CLASSES[mu.datasets.dataset_labels("fashion-test")[0]] == "Ankle boot"  # the IDX's first
    split = mu.data.make_split("fashion", n_members=20, seed=3)
    assert split.images("members").shape == (20, 1, 16, 16)


def test_a_missing_fashion_package_is_named(monkeypatch, tmp_path):
    mu.datasets._fashion.cache_clear()
    monkeypatch.setattr(mu.datasets, "FASHION_DIR", tmp_path)
    try:
        with pytest.raises(mu.DataError, match="apt-get install dataset-fashion-mnist"):
            mu.datasets.load_dataset("fashion")
    finally:
        mu.datasets._fashion.cache_clear()
    with pytest.raises(mu.DataError, match="choose one of"):
        mu.datasets.load_dataset("cifar10")


def test_idx_reader_refuses_a_non_byte_file(tmp_path):
    import gzip

    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress((0x0D03).to_bytes(4, "big") + bytes(12)))  # 0x0D: float IDX
    with pytest.raises(mu.DataError, match="unsigned-byte IDX"):
        mu.datasets._read_idx(bad)


def test_a_camera_s_orientation_is_applied(tmp_path, digits):
    """A JPEG/PNG with EXIF Orientation 6 (rotate 90° clockwise to view) is read upright, as
    diffusers' load_image and the fine-tuning scripts read it (it was scored unrotated)."""
    from PIL import Image

    upright = mu.images.to_uint8(digits[:1])[0, 0]
    upright = np.kron(upright, np.ones((2, 2), dtype=np.uint8))  # 16x16
    stored = np.rot90(upright, k=1)  # what the camera wrote: upright = stored rotated 90° clockwise
    exif = Image.Exif()
    exif[274] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "rotated.png", exif=exif)
    Image.fromarray(upright).save(tmp_path / "plain.png")
    read = mu.images.load_image_files([tmp_path / "rotated.png", tmp_path / "plain.png"])
    assert torch.equal(read[0], read[1])
