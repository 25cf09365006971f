"""mia_utils: membership inference and origin attribution for diffusion models.

The package behind the executable book, in floors; a module imports only from floors below its
own (``tests/test_layers.py`` keeps this true, reading ``LAYERS``):

0. ``errors`` (the two errors), ``checks`` (argument checks), ``io`` (atomic writes, JSON,
   the one refusal of pickled weights), ``noise`` (the one content hash, content-seeded noise),
   ``flow`` (rectified flow's maps to a VP ε-predictor);
1. ``images`` (image files, decoding, ``metadata.jsonl``), ``metrics``;
2. ``datasets`` (digits, Fashion-MNIST, captions), ``models`` (the DiffusionModel wrapper, the
   one door to the UNet, and checkpoint loading);
3. ``data`` (splits, leakage checks, ``MembershipSets``), ``latent`` (the β-VAE), ``text2img``
   (the text-conditional hook, tiny SD pipelines), ``sampling``, ``train``, ``kde``,
   ``extraction``, ``features``, ``references`` (reference models and their members' manifests),
   ``privacy`` (ε lower bounds from attacks, per-sample gradients for DP-SGD);
4. ``pipelines`` (any local diffusers pipeline folder, + LoRA, as an audit target),
   ``quality``, ``probes``;
5. ``attacks`` (one module per attack, feature attacks included, one contract, one registry),
   ``evidence``;
6. ``zoo`` (the embedded default's named, cached models);
7. ``specs`` (``zoo:NAME`` or a folder, resolved to folders and tensors);
8. ``harness`` (the honest protocol: ``evaluate`` and one ``measure``), ``tables`` (the one
   results table), ``plots``, ``scoring`` (``mia-book score``'s sharded run);
9. ``studies`` (one module per chapter's study);
10. ``nbrun`` (executing the chapters with papermill), ``cli`` (``mia-book``).

Every module is imported on first use (``mia_utils.plots`` loads matplotlib only when a
chapter draws): ``import mia_utils`` loads no model or plotting library. ``load_model``,
``load_membership_sets`` and ``load_target`` here take specs (``specs``); the ones in
``models`` and ``data`` take folders and tensors.
"""

import importlib

__version__ = "0.1.0"

LAYERS = (
    ("errors",),
    ("checks", "io", "noise", "flow"),
    ("images", "metrics"),
    ("datasets", "models"),
    ("data", "latent", "text2img", "sampling", "train", "kde", "extraction", "features", "references", "privacy"),
    ("pipelines", "quality", "probes"),
    ("attacks", "evidence"),
    ("zoo",),
    ("specs",),
    ("harness", "tables", "plots", "scoring"),
    ("studies",),
    ("nbrun",),
    ("cli",),
)
MODULES = tuple(name for floor in LAYERS for name in floor)

# names offered at the top, and the module each comes from
_NAMES = {
    "CheckpointError": "errors",
    "DataError": "errors",
    "DiffusionModel": "models",
    "load_image_folder": "images",
    "load_membership_sets": "specs",
    "load_model": "specs",
    "load_target": "specs",
}


def __getattr__(name: str):
    # PEP 562: a module on first use (importlib caches it), a name from its module
    if name in MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'mia_utils' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *MODULES, *_NAMES])


__all__ = sorted([*MODULES, *_NAMES])
