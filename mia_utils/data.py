"""Data: the embedded default, users' image folders, member/non-member splits, leakage checks.

Images are float32 tensors of shape [N, C, H, W] scaled to [-1, 1], the convention of
diffusers' DDPM pipelines. Nothing here downloads anything: the embedded data sets are
scikit-learn's ``load_digits``, which ships inside the installed package, and Fashion-MNIST from
Debian's ``dataset-fashion-mnist`` (installed by ``make data``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checks import positive_int
from .errors import DataError
from .noise import content_hashes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_NAMES = ("members_cal", "members_eval", "nonmembers_cal", "nonmembers_eval", "public")


# --------------------------------------------------------------------------- the default
def load_digits_images() -> torch.Tensor:
    """scikit-learn's 1,797 handwritten digits, [1797, 1, 8, 8], scaled from 0..16 to [-1, 1]."""
    from sklearn.datasets import load_digits

    pixels = load_digits().images.astype(np.float32)  # [N, 8, 8], integers 0..16
    return torch.from_numpy(pixels / 8.0 - 1.0).unsqueeze(1)


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, gzip-compressed): big-endian header, then uint8 values.

    Written here because no installed library reads IDX offline (torchvision is not a dependency
    and its loader downloads); the format is four lines: magic (dtype, ndim), shape, data.
    """
    import gzip

    raw = gzip.decompress(path.read_bytes())
    magic = int.from_bytes(raw[:4], "big")
    if magic >> 8 != 0x08:  # 0x08: unsigned byte
        raise DataError(f"{path} is not an unsigned-byte IDX file (magic {magic:#x}).")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@functools.lru_cache(maxsize=2)
def _fashion(part: str) -> tuple[torch.Tensor, np.ndarray]:
    prefix = {"train": "train", "test": "t10k"}[part]
    images_file = FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz"
    if not images_file.is_file():
        raise DataError(f"Fashion-MNIST is not installed ({images_file} is missing): install Debian's package "
                        "with `sudo apt-get install dataset-fashion-mnist` (`make data` does it).")
    pixels = torch.from_numpy(_read_idx(images_file).astype(np.float32))  # [N, 28, 28], 0..255
    labels = _read_idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    # 28 -> 32 by a 2-pixel border of background, then each 2x2 block averaged: 16x16, the
    # garment whole and 4x the digits' pixels, which a 2-core machine trains in minutes
    padded = torch.nn.functional.pad(pixels.unsqueeze(1), (2, 2, 2, 2))
    small = torch.nn.functional.avg_pool2d(padded, 2)
    # rounded to 8 bits, the form images are hashed and saved in, so a saved copy loads identically
    images = small.round() / 127.5 - 1.0
    # the few images that are exact copies at 16x16 keep their first occurrence, so no split can
    # put one image on both sides
    _, first = np.unique(to_uint8(images).reshape(len(images), -1), axis=0, return_index=True)
    keep = np.sort(first)
    return images[keep].contiguous(), labels[keep]


def load_fashion_images() -> torch.Tensor:
    """Fashion-MNIST's 60,000 training images (Xiao et al. 2017, MIT licence) from Debian's
    ``dataset-fashion-mnist``, padded to 32x32 and averaged 2x2 to [N, 1, 16, 16] in [-1, 1];
    exact duplicates at that size dropped."""
    return _fashion("train")[0]


def load_fashion_test_images() -> torch.Tensor:
    """Fashion-MNIST's 10,000 test images, prepared as ``load_fashion_images``."""
    return _fashion("test")[0]


def dataset_labels(name: str) -> np.ndarray:
    """The class of each image of an embedded data set (digits 0-9; Fashion-MNIST's FASHION_CLASSES)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        return load_digits().target.astype(np.int64)
    if name in ("fashion", "fashion-test"):
        return _fashion("train" if name == "fashion" else "test")[1]
    raise DataError(f"Unknown embedded data set {name!r}; choose one of {sorted(DATASETS)}.")


def class_sample(name: str, classes: Sequence[int], n: int, seed: int = 0, exclude: Sequence[str] = ()) -> torch.Tensor:
    """``n`` images of an embedded data set drawn (seeded) from the given classes only, none
    whose hash is in ``exclude``: a set "collected elsewhere", whose class mix differs from the
    members' (chapter 04's real distribution shift)."""
    labels = dataset_labels(name)
    pool = np.flatnonzero(np.isin(labels, list(classes)))
    data = load_dataset(name)
    if exclude:
        banned = set(exclude)
        pool = np.array([i for i, h in zip(pool, image_hashes(data[pool])) if h not in banned], dtype=int)
    if n > len(pool):
        raise DataError(f"{n} images of classes {list(classes)} asked but {name!r} has {len(pool)}.")
    return data[np.sort(np.random.default_rng(seed).choice(pool, n, replace=False))]


DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
STROKES = ("thin", "regular", "bold")


@functools.lru_cache(maxsize=2)
def dataset_captions(name: str) -> tuple[str, ...]:
    """A caption per image of an embedded data set, from its class and its ink: "a bold
    handwritten digit seven" (digits), "a thin trouser" (Fashion-MNIST). The stroke word is the
    tercile of the image's mean intensity within its class, so captions say a little more than
    the class (30 distinct captions)."""
    labels = dataset_labels(name)
    ink = load_dataset(name).flatten(1).mean(1).numpy()
    stroke = np.zeros(len(labels), dtype=int)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        cuts = np.quantile(ink[idx], [1 / 3, 2 / 3])
        stroke[idx] = np.searchsorted(cuts, ink[idx], side="right")
    if name == "digits":
        return tuple(f"a {STROKES[s]} handwritten digit {DIGIT_WORDS[c]}" for c, s in zip(labels, stroke))
    words = [c.lower().replace("t-shirt/top", "shirt").replace("ankle boot", "boot") for c in FASHION_CLASSES]
    return tuple(f"a {STROKES[s]} {words[c]}" for c, s in zip(labels, stroke))


DATASETS = {"digits": load_digits_images, "fashion": load_fashion_images, "fashion-test": load_fashion_test_images}


def load_dataset(name: str) -> torch.Tensor:
    """An embedded data set by name: ``digits`` (scikit-learn, 8x8), ``fashion`` and
    ``fashion-test`` (Fashion-MNIST's training and test files, 16x16)."""
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
    return content_hashes(to_uint8(images))


def _named(images) -> tuple[torch.Tensor, list[str]]:
    if isinstance(images, tuple):
        return images
    return images, [f"image {i}" for i in range(len(images))]


def check_no_leakage(near: bool = True, **sets) -> None:
    """Refuse two sets that share an image: by content hash, and (``near``) as a near-duplicate
    (``near_duplicates``: a re-encoded or slightly resized copy). Call with named sets, each a
    tensor or an ``(images, names)`` pair; the message names both images."""
    seen: dict[str, tuple[str, str]] = {}
    for label, value in sets.items():
        images, names = _named(value)
        for name, h in zip(names, image_hashes(images)):
            if h in seen and seen[h][0] != label:
                raise DataError(
                    f"The same image is in {seen[h][0]!r} ({seen[h][1]}) and in {label!r} ({name}), "
                    f"sha256 {h[:12]}...: remove it from one of the two sets."
                )
            seen.setdefault(h, (label, name))
    if not near:
        return
    labels = list(sets)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            (xa, na), (xb, nb) = _named(sets[a]), _named(sets[b])
            pairs = near_duplicates(xa, xb)
            if pairs:
                j, k, d = pairs[0]
                raise DataError(
                    f"{len(pairs)} near-duplicate pair(s) across {a!r} and {b!r}, e.g. {na[j]} and {nb[k]} "
                    f"(mean absolute pixel difference {d:.4f} on [-1, 1]): a re-encoded or resized copy of a "
                    "member is not a non-member; remove it from one of the two sets."
                )


NEAR_DUPLICATE_TOL = 0.02  # mean |Δ| on [-1, 1] after reduction (measured: near_duplicates' docstring)


def near_duplicates(a: torch.Tensor, b: torch.Tensor, tol: float = NEAR_DUPLICATE_TOL,
                    side: int = 16) -> list[tuple[int, int, float]]:
    """Pairs (i, j, d) of images of ``a`` and ``b`` that are near-copies of each other.

    Both are reduced to grey ``side`` x ``side`` (area averaging: re-encoding noise averages
    out, and a slightly resized copy lands on the same grid), then compared by the mean
    absolute difference d; pairs with d < ``tol`` are returned, closest first. Measured: the
    closest two distinct digits of scikit-learn's 1,797 lie 0.031 apart; a JPEG q95 re-save of
    a digit at most 0.011, a JPEG q75 re-save or a 30-pixel round trip of a 32x32 image at most
    0.009 (a q75 re-save of an 8x8 digit, up to 0.06, damages it beyond a copy).
    """
    if len(a) == 0 or len(b) == 0:
        return []

    def reduce(x: torch.Tensor) -> torch.Tensor:
        g = x.float().mean(1, keepdim=True)
        return torch.nn.functional.adaptive_avg_pool2d(g, min(side, g.shape[-2], g.shape[-1])).flatten(1)

    ra, rb = reduce(a), reduce(b)
    if ra.shape[1] != rb.shape[1]:
        return []
    out = []
    for i in range(0, len(ra), 512):
        d = torch.cdist(ra[i:i + 512], rb, p=1) / ra.shape[1]
        for j, k in (d < tol).nonzero().tolist():
            out.append((i + j, k, float(d[j, k])))
    return sorted(out, key=lambda p: p[2])


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

    def index(self, name: str) -> list[int]:
        """The data set indices of one part (``members``, ``nonmembers`` or a name of SPLIT_NAMES)."""
        if name in ("members", "nonmembers"):
            return self.indices[f"{name}_cal"] + self.indices[f"{name}_eval"]
        return self.indices[name]

    def images(self, name: str, data: torch.Tensor | None = None) -> torch.Tensor:
        """The images of one part, in ``index``'s order."""
        data = load_dataset(self.dataset) if data is None else data
        return data[self.index(name)]

    def captions(self, name: str) -> list[str]:
        """The captions of one part, in ``images``' order (``dataset_captions``)."""
        caps = dataset_captions(self.dataset)
        return [caps[i] for i in self.index(name)]

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
    check_no_leakage(near=False, **{name: data[idx] for name, idx in indices.items()})
    return Split(dataset, seed, indices, hashes)


# --------------------------------------------------------------------------- folders
def _pixels(im, channels: int | None, size: tuple[int, int] | None):
    """A PIL image as float32 [H, W] (grey) or [H, W, 3] in 0..1, whatever its mode and depth.

    16-bit greys (modes "I;16*", and "I" holding values above 255) are scaled by 65535, not
    clipped to 8 bits; grey with alpha ("LA"), bilevel ("1") and palette images whose colours
    are all grey are grey; alpha is dropped. ``channels`` 1 or 3 converts, None keeps the
    image's own; ``size`` (H, W) resizes with bicubic filtering.
    """
    from PIL import Image

    if im.mode.startswith("I"):  # 16/32-bit integers: resize as floats, scale to 0..1
        raw = np.asarray(im, dtype=np.float32)
        im = Image.fromarray(raw / (65535.0 if im.mode.startswith("I;16") or raw.max() > 255 else 255.0), mode="F")
        if size is not None:
            im = im.resize((size[1], size[0]), Image.BICUBIC)
        grey = np.clip(np.asarray(im, dtype=np.float32), 0, 1)
        return grey if channels in (None, 1) else np.repeat(grey[..., None], 3, axis=2)
    if im.mode in ("P", "PA", "RGBA", "RGB", "CMYK", "YCbCr", "LAB", "HSV"):
        rgb = im.convert("RGB")
        arr = np.asarray(rgb)
        grey_colours = bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())
        keep_rgb = channels == 3 or (channels is None and not (im.mode in ("P", "PA") and grey_colours))
        im = rgb if keep_rgb else im.convert("L")
    elif im.mode != "L":  # LA, 1, F
        im = im.convert("L")
    if size is not None:
        im = im.resize((size[1], size[0]), Image.BICUBIC)
    arr = np.asarray(im, dtype=np.float32) / 255.0
    if arr.ndim == 2 and channels == 3:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return arr


def image_files(path: str | Path, recursive: bool = False) -> list[Path]:
    """The image files of a folder, sorted (hidden files and ``metadata.jsonl`` left out); with
    ``recursive``, of its sub-folders too (sorted by relative path). A DataError names the folder
    when it is missing or empty."""
    path = Path(path)
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise DataError(f"Image folder {str(path)!r} {what}: pass a folder of PNG/JPEG images.")
    found = path.rglob("*") if recursive else path.iterdir()
    files = sorted((p for p in found if p.is_file() and p.name != "metadata.jsonl"
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)),
                   key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise DataError(f"Image folder {str(path)!r} is empty: put the PNG/JPEG images in it.")
    return files


def _read_image(f: Path, size, channels) -> np.ndarray:
    """One PNG/JPEG as float32 [C, H, W] in 0..1 (``_pixels``), or a DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    if f.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{str(f)!r} is not a PNG or JPEG image: remove it from the folder.")
    try:
        with Image.open(f) as im:
            if Image.MAX_IMAGE_PIXELS and im.width * im.height > Image.MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(f"{im.width}x{im.height} pixels")
            im.load()
            hw = None if size is None else (size, size) if isinstance(size, int) else tuple(size)
            arr = _pixels(im, channels, hw)
    except Image.DecompressionBombError as err:
        raise DataError(f"{str(f)!r} is far larger than any diffusion model's input ({err}): "
                        "remove it, or resize it before auditing.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{str(f)!r} could not be read as an image ({err}): remove or re-save it.") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load_image_files(files, size: int | tuple[int, int] | None = None, channels: int | None = None,
                     where: str | None = None, threads: int = 1) -> torch.Tensor:
    """Read the given PNG/JPEG files, in order, as [N, C, H, W] in [-1, 1] (``load_image_folder``
    says how ``size`` and ``channels`` convert); ``where`` names them in errors (default: their
    folder). ``threads`` > 1 decodes that many files at once (Pillow's decoders release the GIL:
    on a GPU, decoding small PNGs one by one would otherwise bound the throughput)."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    files = [Path(f) for f in files]
    if not files:
        raise DataError("No image files given.")
    where = where or str(files[0].parent)
    if channels not in (None, 1, 3):
        raise DataError(f"channels={channels!r}: use 1 (grey) or 3 (RGB).")
    with warnings.catch_warnings():  # _read_image refuses oversized images itself, in any thread
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if threads > 1 and len(files) > 1:
            with ThreadPoolExecutor(threads) as pool:
                arrays = list(pool.map(lambda f: _read_image(f, size, channels), files))
        else:
            arrays = [_read_image(f, size, channels) for f in files]
    shapes: dict[tuple, str] = {}
    for f, a in zip(files, arrays):
        shapes.setdefault(a.shape, f.name)
    if len(shapes) > 1:
        found = "; ".join(f"{shape} as in {name}" for shape, name in shapes.items())
        raise DataError(
            f"Images in {where!r} differ in [channels, height, width] ({found}): make them agree, or "
            "pass size= and channels= (--resize on the command line) to convert them on loading."
        )
    return torch.from_numpy(np.stack(arrays).astype(np.float32) * 2.0 - 1.0).float()


def load_image_folder(path: str | Path, size: int | tuple[int, int] | None = None,
                      channels: int | None = None, return_names: bool = False):
    """Read every PNG/JPEG in a folder (sorted by name) as [N, C, H, W] in [-1, 1].

    ``channels`` 1 or 3 converts (grey <-> RGB); None keeps the files' own mode (grey for L,
    LA, 16-bit and grey-palette files; RGB for colour), which must then agree across files.
    ``size`` (int or (H, W)) resizes with bicubic filtering; None keeps the files' size, which
    must then agree across files. With ``return_names``, also the file names, in order.
    """
    if channels not in (None, 1, 3):
        raise DataError(f"channels={channels!r}: use 1 (grey) or 3 (RGB).")
    files = image_files(path)
    images = load_image_files(files, size, channels, where=str(path))
    return (images, [f.name for f in files]) if return_names else images


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
    # part name -> one caption per image (from metadata.jsonl or a zoo split); None: no captions
    captions: dict[str, list[str]] | None = None

    def captions_of(self, name: str) -> list[str]:
        """The captions of a part (``members_cal`` …, ``members``, ``nonmembers``); the empty prompt
        for each image when the sets carry none."""
        if name in ("members", "nonmembers"):
            return self.captions_of(f"{name}_cal") + self.captions_of(f"{name}_eval")
        if self.captions is None:
            return [""] * len(getattr(self, name))
        return list(self.captions[name])

    def parts(self) -> dict[str, torch.Tensor]:
        """The four parts by name: members_cal, members_eval, nonmembers_cal, nonmembers_eval."""
        return {name: getattr(self, name) for name in SPLIT_NAMES[:4]}

    def members(self) -> torch.Tensor:
        """Every known member: the calibration part, then the evaluation part."""
        return torch.cat([self.members_cal, self.members_eval])

    def nonmembers(self) -> torch.Tensor:
        """Every known non-member: the calibration part, then the evaluation part."""
        return torch.cat([self.nonmembers_cal, self.nonmembers_eval])

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={len(getattr(self, k))}" for k in SPLIT_NAMES[:4])
        return f"MembershipSets({parts})"


def check_shape(images: torch.Tensor, shape: tuple[int, int, int], where: str) -> None:
    """A DataError naming the fix when ``images`` [N, C, H, W] are not of a model's [C, H, W]."""
    c, h, w = shape
    if images.shape[1] != c:
        raise DataError(
            f"Images in {where!r} have {images.shape[1]} channel(s) but the model takes {c}: "
            f"convert them, or pass resize=True (--resize on the command line) to convert them on loading."
        )
    if tuple(images.shape[2:]) != (h, w):
        raise DataError(
            f"Images in {where!r} are {tuple(images.shape[2:])} but the model takes {(h, w)}: "
            f"resize them to {h}x{w}, or pass resize=True (--resize on the command line) to resize on loading."
        )


def folder_images(path, shape: tuple[int, int, int] | None, resize: bool = False,
                  return_names: bool = False):
    """A folder's images, checked against (or, with ``resize``, converted to) a model's [C, H, W]."""
    if shape is None:
        return load_image_folder(path, return_names=return_names)
    c, h, w = shape
    if resize:
        return load_image_folder(path, size=(h, w), channels=c, return_names=return_names)
    images, names = load_image_folder(path, return_names=True)
    check_shape(images, shape, str(path))
    return (images, names) if return_names else images


METADATA = "metadata.jsonl"


def read_captions(folder: str | Path, files: Sequence[str]) -> list[str] | None:
    """The caption of each of ``files`` (paths relative to ``folder``) from ``folder/metadata.jsonl``
    (Hugging Face's imagefolder convention: one ``{"file_name": ..., "text": ...}`` per line), or
    None when the folder has no such file. Every image needs one caption and every caption an image."""
    path = Path(folder) / METADATA
    if not path.is_file():
        return None
    captions: dict[str, str] = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {i}: not JSON ({err.msg}).") from None
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str) or not isinstance(row.get("text"), str):
            raise DataError(f"{path}, line {i}: each line is {{\"file_name\": ..., \"text\": ...}} with two strings.")
        if row["file_name"] in captions:
            raise DataError(f"{path}, line {i}: {row['file_name']!r} is captioned twice.")
        captions[row["file_name"]] = row["text"]
    unknown = sorted(set(captions) - set(files))
    if unknown:
        raise DataError(f"{path} captions {len(unknown)} file(s) that are not images of the folder, e.g. "
                        f"{unknown[0]!r}: remove the lines or add the images.")
    missing = [f for f in files if f not in captions]
    if missing:
        raise DataError(f"{path} has no caption for {len(missing)} image(s), e.g. {missing[0]!r}: add a line for "
                        "each (\"text\": \"\" for the empty prompt).")
    return [captions[f] for f in files]


def load_membership_sets(members, nonmembers, model=None, n_eval: int | None = None,
                         calibration_fraction: float = 1 / 3, seed: int = 0,
                         resize: bool = False) -> MembershipSets:
    """Members and non-members, each from a folder of images or a ``(calibration, evaluation)``
    pair of tensors (a split that already has its parts: ``specs`` passes zoo splits so).

    Folders are cut seeded, a ``calibration_fraction`` of each for calibration. ``n_eval`` keeps
    the first n of each evaluation part (an error when more are asked than exist). With a
    ``model``, image size and channels are checked against it (or converted with ``resize``).
    No image may be in both sets, exactly or as a near-duplicate (``near_duplicates``).
    """
    if n_eval is not None:
        positive_int("n_eval", n_eval, DataError, " of evaluation images per side (or None for all)")
    if not 0 < calibration_fraction < 1:
        raise DataError(f"calibration_fraction={calibration_fraction!r} must lie strictly between 0 and 1.")
    shape = None if model is None else getattr(model, "image_shape", None) or model.sample_shape
    parts, names, caps = {}, {}, {}
    for label, spec in (("members", members), ("nonmembers", nonmembers)):
        if isinstance(spec, tuple):
            cal, ev, *given = spec
            caps[label] = tuple(given) if given else None
            for x in (cal, ev):
                if shape is not None and tuple(x.shape[1:]) != tuple(shape):
                    raise DataError(f"{label} images are {tuple(x.shape[1:])} but the model takes {tuple(shape)}.")
            cal_names = [f"{label}_cal[{i}]" for i in range(len(cal))]
            ev_names = [f"{label}_eval[{i}]" for i in range(len(ev))]
        else:
            images, files = folder_images(spec, shape, resize, return_names=True)
            if len(images) < 2:
                raise DataError(f"{label} folder {str(spec)!r} holds {len(images)} image(s); at least 2 are needed.")
            perm = np.random.default_rng(seed).permutation(len(images))
            n_cal = min(len(images) - 1, max(1, round(len(images) * calibration_fraction)))
            cal, ev = images[torch.from_numpy(perm[:n_cal])], images[torch.from_numpy(perm[n_cal:])]
            found = read_captions(spec, files)
            caps[label] = None if found is None else ([found[i] for i in perm[:n_cal]], [found[i] for i in perm[n_cal:]])
            cal_names = [str(Path(spec) / files[i]) for i in perm[:n_cal]]
            ev_names = [str(Path(spec) / files[i]) for i in perm[n_cal:]]
        if n_eval is not None:
            if n_eval > len(ev):
                raise DataError(
                    f"n_eval={n_eval} evaluation images asked but {label} has only {len(ev)} "
                    f"for evaluation: pass n_eval <= {len(ev)} (or None for all)."
                )
            ev, ev_names = ev[:n_eval], ev_names[:n_eval]
            if caps[label] is not None:
                caps[label] = (caps[label][0], caps[label][1][:n_eval])
        parts[label] = (cal, ev)
        names[label] = cal_names + ev_names
    captions = None
    if caps["members"] is not None or caps["nonmembers"] is not None:  # a side without: empty prompts
        captions = {}
        for label in ("members", "nonmembers"):
            cal, ev = parts[label]
            given = caps[label] or ([""] * len(cal), [""] * len(ev))
            captions[f"{label}_cal"], captions[f"{label}_eval"] = list(given[0]), list(given[1])
    sets = MembershipSets(*parts["members"], *parts["nonmembers"],
                          source={"members": str(members), "nonmembers": str(nonmembers)}, captions=captions)
    check_no_leakage(members=(torch.cat(parts["members"]), names["members"]),
                     nonmembers=(torch.cat(parts["nonmembers"]), names["nonmembers"]))
    return sets
