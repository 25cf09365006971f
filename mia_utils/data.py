"""Who is a member: seeded splits of the embedded data sets, the leakage checks, and the
members and non-members a chapter or an audit works on (``MembershipSets``).

Images are float32 tensors [N, C, H, W] in [-1, 1] (``images``); the embedded data sets are in
``datasets``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checks import positive_int
from .datasets import dataset_captions, load_dataset
from .errors import DataError
from .images import METADATA, folder_images, image_hashes, read_captions

SPLIT_NAMES = ("members_cal", "members_eval", "nonmembers_cal", "nonmembers_eval", "public")


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
                    "image is the same image; remove it from one of the two sets."
                )


NEAR_DUPLICATE_TOL = 0.02  # mean |Δ| on [-1, 1] after reduction (measured: near_duplicates' docstring)


def thumbnails(images: torch.Tensor, side: int = 16) -> torch.Tensor:
    """The form ``near_duplicates`` compares: grey, area-averaged to ``side`` x ``side`` (or the
    images' own size when smaller), [N, 1, s, s]. Comparing thumbnails gives the same pairs as
    comparing the images (the pooling of a thumbnail to its own size is the identity), so a caller
    that reads many images in chunks keeps only these."""
    g = images.float().mean(1, keepdim=True)
    return torch.nn.functional.adaptive_avg_pool2d(g, min(side, g.shape[-2], g.shape[-1]))


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
    ra, rb = thumbnails(a, side).flatten(1), thumbnails(b, side).flatten(1)
    if ra.shape[1] != rb.shape[1]:
        return []
    out = []
    for i in range(0, len(ra), 512):
        d = torch.cdist(ra[i:i + 512], rb, p=1) / ra.shape[1]
        for j, k in (d < tol).nonzero().tolist():
            out.append((i + j, k, float(d[j, k])))
    return sorted(out, key=lambda p: p[2])


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

    def reference_half(self, r: int) -> list[int]:
        """The data set indices reference model ``r`` trains on: half of the population (members
        and non-members together), drawn in complementary pairs. Pair j = r // 2 draws a seeded
        half (seed: the split's seed and j); reference 2j takes it, 2j + 1 the rest. Every image
        of the population is then IN for exactly R/2 of R = 2, 4, 6 … references, and a
        reference's images depend on (split seed, r) only, never on how many references exist.
        """
        population = sorted(self.index("members") + self.index("nonmembers"))
        rng = np.random.default_rng([int(self.seed), 0x5EF, int(r) // 2])
        pick = np.zeros(len(population), dtype=bool)
        pick[rng.permutation(len(population))[: len(population) // 2]] = True
        side = pick if int(r) % 2 == 0 else ~pick
        return [i for i, keep in zip(population, side) if keep]

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


@dataclass(frozen=True)
class CutPart:
    """Members or non-members already cut into a calibration and an evaluation part (a zoo
    split's), with each part's captions (None: no captions)."""

    cal: torch.Tensor
    eval: torch.Tensor
    captions: tuple[list[str], list[str]] | None = None


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
    # part name -> each image's name in messages (its file, or "members_cal[3]"); None: by position
    names: dict[str, list[str]] | None = None

    def named(self, name: str) -> tuple[torch.Tensor, list[str]]:
        """(images, names) of a part or of ``members`` / ``nonmembers``: what ``check_no_leakage``
        takes, so that its message names files, not positions."""
        if name in ("members", "nonmembers"):
            (a, na), (b, nb) = self.named(f"{name}_cal"), self.named(f"{name}_eval")
            return torch.cat([a, b]), na + nb
        images = getattr(self, name)
        given = (self.names or {}).get(name)
        return images, list(given) if given is not None else [f"{name}[{i}]" for i in range(len(images))]

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


def load_membership_sets(members, nonmembers, model=None, n_eval: int | None = None,
                         calibration_fraction: float = 1 / 3, seed: int = 0,
                         resize: bool = False) -> MembershipSets:
    """Members and non-members, each from a folder of images or a ``CutPart`` (a split that
    already has its parts: ``specs`` passes zoo splits so; a ``(calibration, evaluation)`` pair
    of tensors is one without captions).

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
        if isinstance(spec, (CutPart, tuple)):
            part = spec if isinstance(spec, CutPart) else CutPart(*spec)
            cal, ev, caps[label] = part.cal, part.eval, part.captions
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
        names[f"{label}_cal"], names[f"{label}_eval"] = cal_names, ev_names
    folders = not isinstance(members, (CutPart, tuple)) and not isinstance(nonmembers, (CutPart, tuple))
    given = [label for label in ("members", "nonmembers") if caps[label] is not None]
    if folders and len(given) == 1:  # one folder captioned, the other prompted with "": caption attacks skewed
        other = "nonmembers" if given[0] == "members" else "members"
        raise DataError(f"The {given[0]} have captions ({METADATA}) but the {other} have none: caption both sets "
                        f"(put a {METADATA} in {str(nonmembers if other == 'nonmembers' else members)!r}) or neither.")
    captions = None
    if caps["members"] is not None or caps["nonmembers"] is not None:
        captions = {}
        for label in ("members", "nonmembers"):
            cal, ev = parts[label]
            given = caps[label] or ([""] * len(cal), [""] * len(ev))
            captions[f"{label}_cal"], captions[f"{label}_eval"] = list(given[0]), list(given[1])
    sets = MembershipSets(*parts["members"], *parts["nonmembers"],
                          source={"members": str(members), "nonmembers": str(nonmembers)}, captions=captions,
                          names={k: v for k, v in names.items() if k in SPLIT_NAMES[:4]})
    check_no_leakage(members=(torch.cat(parts["members"]), names["members"]),
                     nonmembers=(torch.cat(parts["nonmembers"]), names["nonmembers"]))
    return sets
