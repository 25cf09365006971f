"""The embedded data sets: scikit-learn's digits and Debian's Fashion-MNIST, their classes and
captions, a class-restricted draw, and the preprocessing shifts of chapter 04.

Nothing here downloads anything: ``load_digits`` ships inside scikit-learn, and Fashion-MNIST
comes from Debian's ``dataset-fashion-mnist`` (installed by ``make data``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .images import image_hashes, to_uint8


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
