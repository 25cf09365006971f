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
from .sampling import ddim_sample

# the time steps of a model's held-out loss (chapter 10's utility, ``studies.defenses.held_out_loss``):
# a uniform grid over the schedule, the training objective's t
HELD_OUT_TS = tuple(range(50, 1000, 100))

PIXEL = "pixel DDPM"  # the row of the pixel model beside the latent ones (chapter 05)


def _covered(points: torch.Tensor, centres: torch.Tensor, k: int) -> float:
    """Share of ``points`` inside the union of k-NN balls around ``centres``."""
    d, _ = nearest_neighbours(centres, centres, k=k + 1)  # the nearest is the centre itself
    radius = torch.from_numpy(d[:, k])
    dist = torch.cdist(points.double().flatten(1), centres.double().flatten(1))
    return float((dist <= radius[None, :]).any(1).double().mean())


def precision_recall(samples: torch.Tensor, real: torch.Tensor, k: int = 3) -> dict[str, float]:
    """Improved precision (realism) and recall (coverage) of ``samples`` against ``real``."""
    return {"precision": _covered(samples, real, k), "recall": _covered(real, samples, k)}


def latent_quality(pixel_samples: torch.Tensor, latents: dict, held_out: torch.Tensor, real: torch.Tensor,
                   n: int = 256, ddim_steps: int = 50, seed: int = 0, k: int = 3) -> tuple[dict, dict]:
    """Chapter 05's quality table: precision and recall against ``held_out`` real images of real
    images (``real``, the ceiling), of the pixel model's samples and of ``n`` DDIM samples of each
    latent model ({label: (model, LatentCodec)}), decoded; and each first stage's held-out
    reconstruction error ‖x − D(μ(x))‖² (summed over pixels, mean over images).
    Returns (rows {label: {"precision", "recall", "reconstruction MSE"}}, samples {label: images})."""

    nan = float("nan")
    rows = {"real images (calibration non-members)": {**precision_recall(real, held_out, k), "reconstruction MSE": nan},
            PIXEL: {**precision_recall(pixel_samples, held_out, k), "reconstruction MSE": nan}}
    samples = {PIXEL: pixel_samples}
    for label, (model, codec) in latents.items():
        z = ddim_sample(model, n, num_inference_steps=ddim_steps, generator=torch.Generator().manual_seed(seed),
                        progress=False)
        samples[label] = codec.decode(z)
        error = (codec.decode(codec.encode(held_out)) - held_out).pow(2).flatten(1).sum(1).mean()
        rows[label] = {**precision_recall(samples[label], held_out, k), "reconstruction MSE": float(error)}
    return rows, samples
