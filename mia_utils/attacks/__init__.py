"""Membership-inference attacks, one module each, one contract.

``score(model, images, **hyper) -> np.ndarray``: one score per image, in the images' order,
**higher = more likely a member** (statistics for which smaller means member are negated
inside the attack). Every attack calls the model only through ``DiffusionModel.eps``, which
counts queries; each docstring gives the paper's equation, the defaults and the cost in
queries per image.
"""

from . import loss

ATTACKS = {"loss": loss.score}

__all__ = ["ATTACKS", "loss"]
