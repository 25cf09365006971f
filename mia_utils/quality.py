"""Sample quality, stated simply: nearest-neighbour precision and recall against real images.

FID needs an Inception network and thousands of large images; 8x8 digits support neither.
We use the k-nearest-neighbour manifold estimate of Kynkäänniemi et al. (2019, "Improved
precision and recall metric for assessing generative models") directly on pixels:

* each real image r gets a radius ρ_k(r): the distance to its k-th nearest other real image;
  the union of these balls estimates the real data's support;
* **precision** = the share of samples inside some real ball (‖s − r‖ ≤ ρ_k(r)): realism;
* **recall** = the share of real images inside some sample ball (radii from the samples):
  coverage, which falls when a generator collapses to a few modes or blurs.

(A digit classifier's confidence was tried first and rejected: a logistic regression is more
confident on uniform noise than on real digits.)
"""

from __future__ import annotations

import torch

from .extraction import nearest_neighbours


def _covered(points: torch.Tensor, centres: torch.Tensor, k: int) -> float:
    """Share of ``points`` inside the union of k-NN balls around ``centres``."""
    d, _ = nearest_neighbours(centres, centres, k=k + 1)  # the nearest is the centre itself
    radius = torch.from_numpy(d[:, k])
    dist = torch.cdist(points.double().flatten(1), centres.double().flatten(1))
    return float((dist <= radius[None, :]).any(1).double().mean())


def precision_recall(samples: torch.Tensor, real: torch.Tensor, k: int = 3) -> dict[str, float]:
    """Improved precision (realism) and recall (coverage) of ``samples`` against ``real``."""
    return {"precision": _covered(samples, real, k), "recall": _covered(real, samples, k)}
