"""The zoo: named, cached, reproducible models of the embedded default.

``recipes`` names every model (what it learns from, its architecture, budget and seed);
``cache`` trains a recipe once into ``$MIA_ZOO_DIR`` (default ``~/.cache/mia-book/zoo``) and
finds it there afterwards; ``samples`` caches generated sets beside a model; ``mia-book zoo``
is its command line. The zoo sits above data, models, latent and train, which
know nothing of it; ``mia_utils.specs`` turns ``zoo:NAME`` specs into its folders.
"""

from ..models import small_unet_config
from .cache import (
    build,
    build_all,
    build_vae,
    canaries,
    codec,
    folder_of,
    info,
    is_cached,
    path_of,
    snapshots,
    split_of,
    zoo_dir,
)
from .recipes import LDM_BETAS, RECIPES, Recipe, VAERecipe, ZooError, get_recipe, ldm_name, register
from .samples import generated

__all__ = [
    "LDM_BETAS", "RECIPES", "Recipe", "VAERecipe", "ZooError", "build", "build_all", "build_vae", "canaries", "codec",
    "folder_of", "generated", "get_recipe", "info", "is_cached", "ldm_name", "path_of", "register", "small_unet_config",
    "snapshots", "split_of", "zoo_dir",
]
