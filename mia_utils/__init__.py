"""mia_utils: membership inference and origin attribution for diffusion models.

The package behind the executable book, in layers; imports only go down:

1. ``data`` (data sets, splits, image folders), ``noise`` (content-seeded noise), ``models``
   (the DiffusionModel wrapper, the one door to the UNet, and checkpoint loading), ``latent``
   (the β-VAE), ``text2img`` (the text-conditional hook, captions bound to images, tiny SD
   pipelines), ``pipelines`` (any local diffusers pipeline folder, + LoRA, as an audit target),
   ``train``, ``sampling``, ``kde``, ``metrics``, ``quality``;
2. ``attacks`` (one module per attack, one contract, one registry), ``features`` and
   ``probes`` (trajectory features and the classifiers on them), ``extraction``;
3. ``zoo`` (the embedded default's named, cached models), ``specs`` (``zoo:NAME`` or a
   folder, resolved to folders and tensors), ``harness`` (the honest protocol and the one
   results table), ``plots``;
4. ``nbrun`` (executing the chapters with papermill) and ``cli`` (``mia-book``).

``load_model`` and ``load_membership_sets`` here take specs (``specs``); the ones in ``models``
and ``data`` take folders and tensors.
"""

import importlib

from . import (
    attacks,
    data,
    evidence,
    extraction,
    features,
    harness,
    kde,
    latent,
    metrics,
    models,
    noise,
    pipelines,
    plots,
    probes,
    quality,
    sampling,
    specs,
    text2img,
    train,
    zoo,
)
from .data import DataError, load_image_folder
from .models import CheckpointError, DiffusionModel
from .specs import load_membership_sets, load_model, load_target

__version__ = "0.1.0"

# nbrun is also run as a script (python -m mia_utils.nbrun): imported on first use, so that
# running it does not import it twice.
_LAZY = ("nbrun",)


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'mia_utils' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "DataError",
    "DiffusionModel",
    "attacks",
    "data",
    "evidence",
    "extraction",
    "features",
    "harness",
    "kde",
    "latent",
    "load_image_folder",
    "load_membership_sets",
    "load_model",
    "load_target",
    "metrics",
    "models",
    "nbrun",
    "noise",
    "pipelines",
    "plots",
    "probes",
    "quality",
    "sampling",
    "specs",
    "text2img",
    "train",
    "zoo",
]
