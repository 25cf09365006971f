"""Chapter 04's allocation and shift questions on another zoo victim."""

from __future__ import annotations

from collections.abc import Iterable

from .. import probes, specs
from ..datasets import class_sample
from ..images import image_hashes


def class_shift_study(victim: str, elsewhere: str, classes: Iterable[int], ts, window: int, n_dev: int = 32, *,
                      device="auto", batch_size: int = 256, seed: int = 0, n_boot: int = 1000) -> tuple[dict, dict]:
    """``probes.shift_study`` on the zoo victim ``victim``: its members, its non-members, and
    non-members "collected elsewhere": images of the data set ``elsewhere`` of the given
    ``classes`` only, none of them a member (content hashes excluded)."""
    model = specs.load_model(victim, device=device, batch_size=batch_size)
    sets = specs.load_membership_sets(f"{victim}/members", f"{victim}/nonmembers", model=model, seed=seed)
    other = class_sample(elsewhere, list(classes), n_dev + len(sets.members_eval), seed=seed,
                         exclude=image_hashes(sets.members()))
    return probes.shift_study(model, sets, other, ts, window, n_dev, seed, n_boot)
