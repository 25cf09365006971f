"""Reference (shadow) models: models of the target's architecture and recipe, each trained on
a known half of a population (the signal LiRA and RMIA compare is ``attacks._reference``).

A reference folder is an ordinary diffusers checkpoint (``unet/``, ``scheduler/``) plus
``members.json``: ``{"sha256": [...]}``, the 8-bit content hash (``images.image_hashes``) of
every image it was trained on. Membership is read from content, never from positions, so an
auditor's own references (trained on their own halves) work the same way as the zoo's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError
from .images import image_hashes
from .models import DiffusionModel, load_model

MEMBERS = "members.json"


def write_members(folder: str | Path, images: torch.Tensor) -> Path:
    """Write ``folder/members.json``: the content hash of every training image of a reference."""
    path = Path(folder) / MEMBERS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"sha256": image_hashes(images)}))
    return path


def read_members(folder: str | Path) -> frozenset[str]:
    """The training members' hashes of a reference folder; a clear error when the manifest is
    missing or malformed."""
    path = Path(folder) / MEMBERS
    if not path.is_file():
        raise CheckpointError(f"The reference model {str(folder)!r} has no {MEMBERS}: a reference must list the "
                              'content hashes of its training images ({"sha256": [...]}, mia_utils.references).')
    try:
        hashes = json.loads(path.read_text(encoding="utf-8"))["sha256"]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a members manifest ({{\"sha256\": [...]}}): {err}") from None
    if not isinstance(hashes, list) or not all(isinstance(h, str) and len(h) == 64 for h in hashes) or not hashes:
        raise CheckpointError(f"{path} must hold a non-empty list of SHA-256 hex digests under \"sha256\".")
    return frozenset(hashes)


def reference_folders(folder: str | Path) -> list[Path]:
    """The sub-folders of ``folder`` that hold a ``members.json`` (the reference models), sorted by name."""
    root = Path(folder)
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / MEMBERS).is_file()) if root.is_dir() else []


@dataclass
class ReferenceModels:
    """R reference models and the member hashes of each: what LiRA and RMIA are given."""

    models: list[DiffusionModel]
    members: list[frozenset[str]]
    names: list[str]

    def __post_init__(self):
        if not self.models or len(self.models) != len(self.members) or len(self.models) != len(self.names):
            raise ValueError("ReferenceModels needs at least one model, each with its members and name.")

    def __len__(self) -> int:
        return len(self.models)

    def __repr__(self) -> str:
        return f"ReferenceModels({len(self)}: {', '.join(self.names)})"

    def first(self, k: int) -> ReferenceModels:
        """The first ``k`` references (the zoo's come in complementary pairs: take an even k)."""
        if not 1 <= k <= len(self):
            raise ValueError(f"k={k} references asked but {len(self)} are loaded.")
        return ReferenceModels(self.models[:k], self.members[:k], self.names[:k])

    def membership(self, images: torch.Tensor) -> np.ndarray:
        """IN [R, N]: whether reference r was trained on image n (by 8-bit content hash)."""
        hashes = image_hashes(images)
        return np.array([[h in m for h in hashes] for m in self.members], dtype=bool).reshape(len(self), len(hashes))

    @classmethod
    def load(cls, folders: Sequence[str | Path], device: str = "auto", batch_size: int = 256,
             dtype: str = "fp32") -> ReferenceModels:
        """Load reference folders (each a diffusers checkpoint with ``members.json``)."""
        folders = [Path(f) for f in folders]
        if not folders:
            raise CheckpointError("No reference models given.")
        members = [read_members(f) for f in folders]
        models = [load_model(f, device=device, batch_size=batch_size, dtype=dtype) for f in folders]
        return cls(models, members, [f.name for f in folders])

    @classmethod
    def from_folder(cls, folder: str | Path, **kwargs) -> ReferenceModels:
        """Every reference in the sub-folders of ``folder`` that hold a ``members.json``, sorted by name."""
        if not Path(folder).is_dir():
            raise CheckpointError(f"--references {str(folder)!r} is not a folder of reference models.")
        found = reference_folders(folder)
        if not found:
            raise CheckpointError(f"{str(folder)!r} holds no reference model: each sub-folder must be a diffusers "
                                  f"checkpoint with a {MEMBERS} of its training images.")
        return cls.load(found, **kwargs)
