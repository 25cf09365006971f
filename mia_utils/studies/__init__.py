"""The chapters' studies: what a chapter measures beyond one ``harness.evaluate``, one module
per chapter, so that a chapter tells the story and the package does the work.

* ``sima`` (chapter 02): the same attack on several zoo victims;
* ``secmi_pia`` (chapter 03): SecMI_NN and GSA, attacks with a classifier trained on calibration;
* ``trajectories`` (chapter 04): membership under a class shift on another victim;
* ``latent`` (chapter 05): the attacks on a pixel model and on latent models behind β-VAEs;
* ``noise_probe`` (chapter 06): the noise probe's variants and its two sweeps;
* ``text_to_image`` (chapter 07): the noise probe of a text-to-image model under guidance;
* ``references`` (chapter 09): LiRA and RMIA with 2, 4 … reference models, from one set of signals;
* ``defenses`` (chapter 10): defended victims' leakage and utility, and ε lower bounds of a DP claim.

Each study measures its cost and reports its rows with ``harness.measure`` and
``harness.report``, the protocol every chapter follows.
"""

import importlib

MODULES = ("sima", "secmi_pia", "trajectories", "latent", "noise_probe", "text_to_image", "references", "defenses")


def __getattr__(name: str):
    if name in MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'mia_utils.studies' has no attribute {name!r}")


__all__ = list(MODULES)
