"""mia_utils: membership inference and origin attribution for diffusion models.

The package behind the executable book. One module a concept:
``data`` (data sets, splits, image folders), ``models`` (the DiffusionModel wrapper and
checkpoint loading), ``train`` and ``zoo`` (the victims), ``sampling`` (DDPM / DDIM samples),
``attacks`` (one module per attack, one contract), ``metrics``, ``plots`` and ``nbrun``
(executing the chapters with papermill).
"""

from . import attacks, data, metrics, models, nbrun, plots, sampling, train, zoo
from .data import DataError, load_image_folder, load_membership_sets
from .models import CheckpointError, DiffusionModel, load_model

__version__ = "0.1.0"

__all__ = ["attacks", "data", "metrics", "models", "nbrun", "plots", "sampling", "train", "zoo", "DataError",
           "CheckpointError", "DiffusionModel", "load_image_folder", "load_membership_sets", "load_model"]
