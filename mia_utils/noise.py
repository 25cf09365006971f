"""Seeded noise that belongs to an image, not to its position in a batch.

Every random draw an attack or a feature makes for an image comes from a generator seeded by
(the run's ``seed``, a ``salt`` naming the draw, the image's content hash). An image's score is
then the same whatever other images are scored with it, in whatever order, batch size, device
or number of processes: the property the contract tests and the sharded scorer rely on.

The content hash is SHA-256 of the image's float32 values and shape (exact content: latents
and images outside [-1, 1] hash as they are). Noises are drawn on the CPU in float32 and moved
afterwards, so they do not depend on the device either.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def content_hashes(images: torch.Tensor | np.ndarray) -> list[str]:
    """SHA-256 (hex) of each image's values and shape, for a batch [N, ...]: the package's one
    content hash. A tensor is hashed as float32 (one copy to the CPU for all), an array in its
    own dtype (``images.image_hashes`` hashes 8-bit pixels so)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().float().numpy()
    arr = np.ascontiguousarray(images)
    head = str(arr.shape[1:]).encode()
    return [hashlib.sha256(head + row.tobytes()).hexdigest() for row in arr]


def content_hash(image: torch.Tensor) -> str:
    """``content_hashes`` of one image."""
    return content_hashes(image[None])[0]


def seeded_generator(*parts) -> torch.Generator:
    """A CPU generator seeded by SHA-256 of the parts (joined by "|"): the one seed derivation."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def generators(images: torch.Tensor, seed: int = 0, salt: str = "") -> list[torch.Generator]:
    """One CPU generator per image, seeded from (seed, salt, the image's content hash).

    Cost on the CPU here: about 50 µs per image (hash + generator), plus the draws."""
    return [seeded_generator(int(seed), salt, h) for h in content_hashes(images)]


def draw(gens: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """The next standard normal draw of each generator, stacked: ``[len(gens), *shape]``, float32, CPU."""
    if not gens:
        return torch.zeros((0, *shape))
    return torch.stack([torch.randn(shape, generator=g) for g in gens])


def image_noise(images: torch.Tensor, seed: int = 0, salt: str = "") -> torch.Tensor:
    """One ε ~ N(0, I) per image, shaped like ``images``, from its own content-seeded generator."""
    return draw(generators(images, seed, salt), tuple(images.shape[1:]))
