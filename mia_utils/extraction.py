"""Near-copies of training images among generated samples (data extraction).

A generated image x̃ is a *near-copy* of a training image when its nearest training neighbour
is much closer than the second nearest (Carlini et al. 2023 call such generations
"extracted"; their criterion compares the nearest distance with those of the next neighbours):

    d_1(x̃) / d_2(x̃) < ratio,     d_k the k-th smallest ℓ2 distance to the training images.

An image close to one training image and far from all others was reproduced, not composed.
"""

from __future__ import annotations

import numpy as np
import torch

# The rows of ``screen``'s table
KEPT, REJECTED, ALL, EXTERNAL = "kept by the probe", "rejected by the probe", "all generations", "external real images"


def nearest_neighbours(queries: torch.Tensor, reference: torch.Tensor, k: int = 2,
                       chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest ℓ2 distances of each query to ``reference`` ([N, k]) and their indices."""
    ref = reference.double().flatten(1)
    dists, idx = [], []
    for i in range(0, len(queries), chunk):
        d = torch.cdist(queries[i:i + chunk].double().flatten(1), ref)
        v, j = d.topk(k, dim=1, largest=False)
        dists.append(v)
        idx.append(j)
    return torch.cat(dists).numpy(), torch.cat(idx).numpy()


def near_copies(samples: torch.Tensor, training: torch.Tensor, ratio: float = 1 / 3) -> dict:
    """Which samples are near-copies of a training image (d_1/d_2 < ``ratio``).

    Returns ``is_copy`` (bool [N]), ``ratio`` (d_1/d_2 [N]), ``d1`` and ``neighbour`` (the index
    of the nearest training image) for every sample.
    """
    d, j = nearest_neighbours(samples, training, k=2)
    r = d[:, 0] / np.maximum(d[:, 1], 1e-12)
    return {"is_copy": r < ratio, "ratio": r, "d1": d[:, 0], "neighbour": j[:, 0]}


def closeness(copies: dict, mask=slice(None)) -> dict:
    """How close some samples lie to the training set (a ``near_copies`` result, ``mask`` selecting
    samples): their number, median d_1, median d_1/d_2 and the share of near-copies in percent."""
    return {"images": int(np.size(copies["d1"][mask])), "median d1": float(np.median(copies["d1"][mask])),
            "median d1/d2": float(np.median(copies["ratio"][mask])),
            "near-copies (%)": 100 * float(np.mean(copies["is_copy"][mask]))}


def screen(pool: torch.Tensor, member_score: np.ndarray, training: torch.Tensor, reference: torch.Tensor,
           keep_fraction: float = 0.1, ratio: float = 0.5) -> dict:
    """A data-extraction filter: keep the ``keep_fraction`` of generations ``pool`` with the
    highest ``member_score`` and measure how close kept and rejected ones lie to ``training``,
    beside real held-out images (``reference``) that tell how close an unseen image happens to be.

    Returns ``table`` (rows of ``closeness``), ``kept`` (bool [N]), ``copies`` (``near_copies``
    of the pool) and ``p_value``: one-sided Mann-Whitney, kept closer (smaller d_1) than rejected.
    """
    from scipy.stats import mannwhitneyu

    if not 0 < keep_fraction < 1:
        raise ValueError(f"keep_fraction must lie in (0, 1), not {keep_fraction}.")
    kept = member_score >= np.quantile(member_score, 1 - keep_fraction)
    copies = near_copies(pool, training, ratio=ratio)
    table = {KEPT: closeness(copies, kept), ALL: closeness(copies), REJECTED: closeness(copies, ~kept),
             EXTERNAL: closeness(near_copies(reference, training, ratio=ratio))}
    p_value = float(mannwhitneyu(copies["d1"][kept], copies["d1"][~kept], alternative="less").pvalue)
    return {"table": table, "kept": kept, "copies": copies, "p_value": p_value}
