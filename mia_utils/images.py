"""Image files: listing a folder, decoding PNG/JPEG of any mode and depth, writing images,
captions from ``metadata.jsonl``, and the hash of an image's 8-bit pixels.

Images are float32 tensors of shape [N, C, H, W] scaled to [-1, 1], the convention of
diffusers' DDPM pipelines; they are written and hashed as 8-bit pixels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .noise import content_hashes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
METADATA = "metadata.jsonl"  # Hugging Face's imagefolder captions


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


# The one rule for which files of a folder are its images, for every command and chapter (stated
# in `mia-book audit --help` and `score --help`): every file in it and in its sub-folders, linked
# files and linked folders followed (each folder once: a link loop ends), hidden files and folders
# and metadata.jsonl left out, sorted by path relative to the folder.
FOLDER_RULE = ("images are every file in the folder and its sub-folders (links followed; hidden files and "
               "metadata.jsonl left out)")


def image_files(path: str | Path, recursive: bool = True) -> list[Path]:
    """The image files of a folder (``FOLDER_RULE``), sorted by relative path; with ``recursive``
    False, of the folder alone. A DataError names the folder when it is missing or empty."""
    path = Path(path)
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise DataError(f"Image folder {str(path)!r} {what}: pass a folder of PNG/JPEG images.")
    found, seen = [], set()
    for root, dirs, names in os.walk(path, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree: this folder was listed already
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        found += [Path(root) / n for n in names if not n.startswith(".") and n != "metadata.jsonl"]
    files = sorted((p for p in found if p.is_file()), key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise DataError(f"Image folder {str(path)!r} is empty: put the PNG/JPEG images in it.")
    return files


def _read_image(f: Path, size, channels) -> np.ndarray:
    """One PNG/JPEG as float32 [C, H, W] in 0..1 (``_pixels``), or a DataError naming the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if f.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{str(f)!r} is not a PNG or JPEG image: remove it from the folder.")
    try:
        with Image.open(f) as im:
            if Image.MAX_IMAGE_PIXELS and im.width * im.height > Image.MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(f"{im.width}x{im.height} pixels")
            im.load()
            # the orientation a camera recorded (EXIF 274), applied as diffusers' load_image and the
            # fine-tuning scripts apply it: the model trained on the upright image
            im = ImageOps.exif_transpose(im)
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
    """Read every PNG/JPEG of a folder (``FOLDER_RULE``: sub-folders included, sorted by relative
    path) as [N, C, H, W] in [-1, 1].

    ``channels`` 1 or 3 converts (grey <-> RGB); None keeps the files' own mode (grey for L,
    LA, 16-bit and grey-palette files; RGB for colour), which must then agree across files.
    ``size`` (int or (H, W)) resizes with bicubic filtering; None keeps the files' size, which
    must then agree across files. With ``return_names``, also the files' paths relative to the
    folder (posix), in order.
    """
    if channels not in (None, 1, 3):
        raise DataError(f"channels={channels!r}: use 1 (grey) or 3 (RGB).")
    files = image_files(path)
    images = load_image_files(files, size, channels, where=str(path))
    return (images, [f.relative_to(path).as_posix() for f in files]) if return_names else images


def save_image_folder(images: torch.Tensor, path: str | Path, prefix: str = "img") -> Path:
    """Write [N, C, H, W] images in [-1, 1] as PNG files ``{prefix}_{i:05d}.png``."""
    from PIL import Image

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(to_uint8(images)):
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        Image.fromarray(arr).save(path / f"{prefix}_{i:05d}.png")
    return path


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


def read_captions(folder: str | Path, files: Sequence[str]) -> list[str] | None:
    """The caption of each of ``files`` (paths relative to ``folder``) from ``folder/metadata.jsonl``
    (Hugging Face's imagefolder convention: one ``{"file_name": ..., "text": ...}`` per line), or
    None when the folder has no such file. Every image needs one caption and every caption an image."""
    path = Path(folder) / METADATA
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_file():  # a link to /dev/zero, a fifo, a folder: never read, never taken as absent
        raise DataError(f"{path} is not a regular file: replace it with the captions file or remove it.")
    captions: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text (byte {err.start}): save the captions file as UTF-8.") from None
    for i, line in enumerate(text.splitlines(), 1):
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
