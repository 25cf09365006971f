"""Data: the embedded default, users' image folders, member/non-member splits, leakage checks.

Images are float32 tensors of shape [N, C, H, W] scaled to [-1, 1], the convention of
diffusers' DDPM pipelines. Nothing here downloads anything: the embedded default is
scikit-learn's ``load_digits``, which ships inside the installed package.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_NAMES = ("members_cal", "members_eval", "nonmembers_cal", "nonmembers_eval", "public")


class DataError(ValueError):
    """Bad input data; the message says what was wrong and how to fix it."""


# --------------------------------------------------------------------------- the default
def load_digits_images() -> torch.Tensor:
    """scikit-learn's 1,797 handwritten digits, [1797, 1, 8, 8], scaled from 0..16 to [-1, 1]."""
    from sklearn.datasets import load_digits

    pixels = load_digits().images.astype(np.float32)  # [N, 8, 8], integers 0..16
    return torch.from_numpy(pixels / 8.0 - 1.0).unsqueeze(1)


DATASETS = {"digits": load_digits_images}


def load_dataset(name: str) -> torch.Tensor:
    """An embedded data set by name (``digits``)."""
    if name not in DATASETS:
        raise DataError(f"Unknown embedded data set {name!r}; choose one of {sorted(DATASETS)}.")
    return DATASETS[name]()


# --------------------------------------------------------------------------- hashing
def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] floats -> uint8 0..255, the form images are hashed and written in."""
    arr = images.detach().cpu().float().numpy()
    return np.clip(np.round((arr + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_hashes(images: torch.Tensor) -> list[str]:
    """SHA-256 of each image's 8-bit pixels and shape: equal hashes mean equal content.

    Hashing the decoded, quantised pixels (not the file bytes) catches the same image saved
    twice under different names or encodings.
    """
    out = []
    for img in to_uint8(images):
        h = hashlib.sha256(str(img.shape).encode())
        h.update(np.ascontiguousarray(img).tobytes())
        out.append(h.hexdigest())
    return out


def check_no_leakage(**sets: torch.Tensor) -> None:
    """Refuse two sets that share an image (by content hash). Call with named sets."""
    seen: dict[str, str] = {}
    for name, images in sets.items():
        for i, h in enumerate(image_hashes(images)):
            if h in seen and seen[h] != name:
                raise DataError(
                    f"An image is in both {seen[h]!r} and {name!r} (image {i} of {name!r}, "
                    f"sha256 {h[:12]}...): remove it from one of the two sets."
                )
            seen.setdefault(h, name)


SHIFTS = ("shift", "blur", "contrast")


def distribution_shift(images: torch.Tensor, kind: str = "shift") -> torch.Tensor:
    """The same images from a slightly different source: a preprocessing change a reader would
    not notice, the kind that separates members from non-members collected elsewhere.

    ``shift``: moved one pixel right (the vacated column takes the image's minimum, the
    background); ``blur``: a 3x3 binomial blur (weights 1-2-1 in each direction, edges
    replicated); ``contrast``: pixel values scaled by 0.8 about the image's mean.
    """
    x = images.float()
    if kind == "shift":
        out = torch.roll(x, shifts=1, dims=-1)
        out[..., 0] = x.flatten(1).min(1).values.view(-1, 1, 1)
        return out
    if kind == "blur":
        k1 = torch.tensor([1.0, 2.0, 1.0]) / 4
        k = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 3, 3)
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
        return torch.nn.functional.conv2d(padded, k, groups=x.shape[1])
    if kind == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (mean + 0.8 * (x - mean)).clamp(-1, 1)
    raise DataError(f"Unknown shift {kind!r}; choose one of {SHIFTS}.")


# --------------------------------------------------------------------------- the split
@dataclass
class Split:
    """Indices into a data set: members (the training set) and non-members, each with a
    calibration part (for choosing hyper-parameters and thresholds) and an evaluation part,
    and the rest as public data (reference models, VAEs, base models)."""

    dataset: str
    seed: int
    indices: dict[str, list[int]]
    hashes: dict[str, list[str]] = field(default_factory=dict)

    def images(self, name: str, data: torch.Tensor | None = None) -> torch.Tensor:
        """The images of one part (``members``, ``nonmembers`` or a name of SPLIT_NAMES)."""
        data = load_dataset(self.dataset) if data is None else data
        if name in ("members", "nonmembers"):
            idx = self.indices[f"{name}_cal"] + self.indices[f"{name}_eval"]
        else:
            idx = self.indices[name]
        return data[idx]

    def to_manifest(self) -> dict:
        return {"dataset": self.dataset, "seed": self.seed, "indices": self.indices, "sha256": self.hashes}

    def save(self, path: str | Path) -> Path:
        """Write the manifest (indices and a SHA-256 per image) as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_manifest(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> Split:
        """Read a manifest; with ``verify`` check every image's hash against the data."""
        m = json.loads(Path(path).read_text())
        split = cls(m["dataset"], m["seed"], m["indices"], m.get("sha256", {}))
        if verify:
            data = load_dataset(split.dataset)
            for name, idx in split.indices.items():
                if image_hashes(data[idx]) != split.hashes[name]:
                    raise DataError(
                        f"The manifest {path} does not match the {split.dataset!r} images of part "
                        f"{name!r}: the data changed; rebuild the split (delete the file)."
                    )
        return split


def make_split(
    dataset: str = "digits",
    n_members: int = 256,
    n_nonmembers: int | None = None,
    calibration_fraction: float = 1 / 3,
    seed: int = 0,
) -> Split:
    """A seeded split of an embedded data set into members / non-members / public.

    Members and non-members are drawn from the same shuffled pool (same distribution), each
    cut into a calibration part (``calibration_fraction``) and an evaluation part.
    """
    data = load_dataset(dataset)
    n_nonmembers = n_members if n_nonmembers is None else n_nonmembers
    if n_members + n_nonmembers > len(data):
        raise DataError(f"{n_members}+{n_nonmembers} images asked but {dataset!r} has {len(data)}.")
    perm = np.random.default_rng(seed).permutation(len(data)).tolist()
    members, rest = perm[:n_members], perm[n_members:]
    nonmembers, public = rest[:n_nonmembers], rest[n_nonmembers:]
    n_mc = round(n_members * calibration_fraction)
    n_nc = round(n_nonmembers * calibration_fraction)
    indices = {
        "members_cal": sorted(members[:n_mc]),
        "members_eval": sorted(members[n_mc:]),
        "nonmembers_cal": sorted(nonmembers[:n_nc]),
        "nonmembers_eval": sorted(nonmembers[n_nc:]),
        "public": sorted(public),
    }
    hashes = {name: image_hashes(data[idx]) for name, idx in indices.items()}
    check_no_leakage(**{name: data[idx] for name, idx in indices.items()})
    return Split(dataset, seed, indices, hashes)


# --------------------------------------------------------------------------- folders
def load_image_folder(path: str | Path, size: int | tuple[int, int] | None = None,
                      channels: int | None = None) -> torch.Tensor:
    """Read every PNG/JPEG in a folder (sorted by name) as [N, C, H, W] in [-1, 1].

    ``channels`` 1 or 3 converts (grey <-> RGB); None keeps the files' own mode, which must
    then agree across files. ``size`` (int or (H, W)) resizes with bicubic filtering; None
    keeps the files' size, which must then agree across files.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"Image folder {str(path)!r} does not exist: pass a folder of PNG/JPEG images.")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"Image folder {str(path)!r} is empty: put the PNG/JPEG images in it.")
    if channels not in (None, 1, 3):
        raise DataError(f"channels={channels!r}: use 1 (grey) or 3 (RGB).")
    arrays = []
    for f in files:
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{str(f)!r} is not a PNG or JPEG image: remove it from the folder.")
        try:
            with Image.open(f) as im:
                im.load()
                mode = {1: "L", 3: "RGB", None: "L" if im.mode in ("L", "1", "I", "I;16") else "RGB"}[channels]
                im = im.convert(mode)
                if size is not None:
                    hw = (size, size) if isinstance(size, int) else tuple(size)
                    im = im.resize((hw[1], hw[0]), Image.BICUBIC)
                arr = np.asarray(im, dtype=np.float32)
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"{str(f)!r} could not be read as an image ({err}): remove or re-save it.") from None
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(
            f"Images in {str(path)!r} differ in size or channels {sorted(shapes)}: pass size= "
            "(and channels=) to convert them, or make them agree."
        )
    return torch.from_numpy(np.stack(arrays) / 127.5 - 1.0).float()


def save_image_folder(images: torch.Tensor, path: str | Path, prefix: str = "img") -> Path:
    """Write [N, C, H, W] images in [-1, 1] as PNG files ``{prefix}_{i:05d}.png``."""
    from PIL import Image

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(to_uint8(images)):
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        Image.fromarray(arr).save(path / f"{prefix}_{i:05d}.png")
    return path


# --------------------------------------------------------------------------- what a chapter loads
@dataclass
class MembershipSets:
    """Known members and non-members, each as a calibration and an evaluation part."""

    members_cal: torch.Tensor
    members_eval: torch.Tensor
    nonmembers_cal: torch.Tensor
    nonmembers_eval: torch.Tensor
    source: dict = field(default_factory=dict)

    def parts(self) -> dict[str, torch.Tensor]:
        """The four parts by name: members_cal, members_eval, nonmembers_cal, nonmembers_eval."""
        return {name: getattr(self, name) for name in SPLIT_NAMES[:4]}

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={len(getattr(self, k))}" for k in SPLIT_NAMES[:4])
        return f"MembershipSets({parts})"


def _folder_images(path, shape: tuple[int, int, int] | None, resize: bool) -> torch.Tensor:
    """A folder's images, checked against (or, with ``resize``, converted to) a model's [C, H, W]."""
    if shape is None:
        return load_image_folder(path)
    c, h, w = shape
    if resize:
        return load_image_folder(path, size=(h, w), channels=c)
    images = load_image_folder(path)
    if images.shape[1] != c:
        raise DataError(
            f"Images in {str(path)!r} have {images.shape[1]} channel(s) but the model takes {c}: "
            f"convert them (load_image_folder(path, channels={c})) or pass resize=True."
        )
    if tuple(images.shape[2:]) != (h, w):
        raise DataError(
            f"Images in {str(path)!r} are {tuple(images.shape[2:])} but the model takes {(h, w)}: "
            f"resize them to {h}x{w}, or pass resize=True to have them resized on loading."
        )
    return images


def load_membership_sets(members, nonmembers, model=None, n_eval: int | None = None,
                         calibration_fraction: float = 1 / 3, seed: int = 0,
                         resize: bool = False) -> MembershipSets:
    """Members and non-members from ``zoo:NAME/members`` specs or folders of images.

    A zoo split keeps its own calibration/evaluation parts; folders are cut seeded, a
    ``calibration_fraction`` of each for calibration. ``n_eval`` keeps the first n of each
    evaluation part (an error when more are asked than exist). With a ``model``, image size
    and channels are checked against it (or converted with ``resize=True``).
    """
    shape = None if model is None else model.sample_shape
    parts = {}
    for label, spec in (("members", members), ("nonmembers", nonmembers)):
        if isinstance(spec, str) and spec.startswith("zoo:"):
            from . import zoo

            name, _, part = spec[4:].partition("/")
            if part != label:
                raise DataError(f"{label}={spec!r}: write zoo:{name}/{label}.")
            split = zoo.split_of(name)
            data = load_dataset(split.dataset)
            cal, ev = split.images(f"{label}_cal", data), split.images(f"{label}_eval", data)
            if shape is not None and tuple(cal.shape[1:]) != tuple(shape):
                raise DataError(f"{spec!r} images are {tuple(cal.shape[1:])} but the model takes {tuple(shape)}.")
        else:
            images = _folder_images(spec, shape, resize)
            if len(images) < 2:
                raise DataError(f"{label} folder {spec!r} holds {len(images)} image(s); at least 2 are needed.")
            perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(images)))
            n_cal = max(1, round(len(images) * calibration_fraction))
            cal, ev = images[perm[:n_cal]], images[perm[n_cal:]]
        if n_eval is not None:
            if n_eval > len(ev):
                raise DataError(
                    f"n_eval={n_eval} evaluation images asked but {label} has only {len(ev)} "
                    f"for evaluation: pass n_eval <= {len(ev)} (or None for all)."
                )
            ev = ev[:n_eval]
        parts[label] = (cal, ev)
    sets = MembershipSets(*parts["members"], *parts["nonmembers"],
                          source={"members": str(members), "nonmembers": str(nonmembers)})
    check_no_leakage(members=torch.cat(parts["members"]), nonmembers=torch.cat(parts["nonmembers"]))
    return sets
