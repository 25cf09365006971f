"""mia_utils: membership inference and origin attribution for diffusion models.

The package behind the executable book. One module a concept:
``data`` (data sets, splits, image folders), ``models`` (the DiffusionModel wrapper and
checkpoint loading), ``train`` and ``zoo`` (the victims), ``sampling`` (DDPM / DDIM samples),
``attacks`` (one module per attack, one contract), ``features`` and ``probes`` (trajectory
features and the classifiers on them), ``extraction`` (near-copies of training images),
``latent`` (the β-VAE), ``metrics``, ``plots`` and ``nbrun`` (executing the chapters with papermill).
"""

import importlib

from . import (
    attacks,
    data,
    extraction,
    features,
    kde,
    latent,
    metrics,
    models,
    plots,
    probes,
    quality,
    sampling,
    train,
)
from .data import DataError, load_image_folder, load_membership_sets
from .models import CheckpointError, DiffusionModel, load_model

__version__ = "0.1.0"

# zoo and nbrun are also run as scripts (python -m mia_utils.zoo): imported on first use, so
# that running them does not import them twice.
_LAZY = ("nbrun", "zoo")


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
    "extraction",
    "features",
    "kde",
    "latent",
    "load_image_folder",
    "load_membership_sets",
    "load_model",
    "metrics",
    "models",
    "nbrun",
    "plots",
    "probes",
    "quality",
    "sampling",
    "train",
    "zoo",
]
