"""Membership-inference attacks, one module each, one contract.

``score(model, images, **hyper) -> np.ndarray``: one score per image, in the images' order,
**higher = more likely a member** (statistics for which smaller means member are negated
inside the attack). Every attack calls the model only through ``DiffusionModel.eps``, which
counts queries; each docstring gives the paper's equation, the defaults and the cost in
queries per image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from . import loss, noise_probe, pia, secmi, sima

ATTACKS = {"loss": loss.score, "sima": sima.score, "secmi": secmi.score, "pia": pia.score, "pian": pia.score_pian,
           "noise_probe": noise_probe.score}


def sweep(attack: Callable[..., np.ndarray], model, images, ts: Iterable[int], **hyper) -> dict[int, np.ndarray]:
    """The attack's scores at every time step in ``ts``: {t: scores}; costs add up per t."""
    return {int(t): attack(model, images, t=int(t), **hyper) for t in ts}


def sweep_sets(attack: Callable[..., np.ndarray], model, sets, ts: Iterable[int], **hyper) -> dict[str, dict]:
    """``sweep`` over the four parts of a ``MembershipSets``: {part: {t: scores}}.

    The result unpacks straight into ``mia_utils.metrics.honest_and_oracle(**result)``.
    """
    return {part: sweep(attack, model, images, ts, **hyper) for part, images in sets.parts().items()}


__all__ = ["ATTACKS", "loss", "noise_probe", "pia", "secmi", "sima", "sweep", "sweep_sets"]
