"""Golden values: every registered attack's scores (and the feature attacks' features) on a
fixed model and fixed images, as the code gave them before the package was reorganised
(``tests/golden/attacks.json``). A silent change of any score fails here; a deliberate one
rewrites the file and says why in its commit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mia_utils as mu

from .conftest import tiny_references, tiny_unet

GOLDEN = json.loads((Path(__file__).parent / "golden" / "attacks.json").read_text())
# Written and checked on one intra-op thread (as the xdist workers run): bitwise equal here. The
# tolerances leave room for another CPU's float32 kernels; a silent change of a score is far larger.
RTOL, ATOL = 1e-4, 1e-8
# A log-norm below this is the log of a gradient that is zero up to rounding (a bias a group norm
# right after cancels, a time embedding added before one): its value is rounding noise, compared as
# "tiny" only. The golden GSA features are bimodal: 72 between -16.6 and -13.2, none in (-10, -5);
# at -20 a new machine's kernels moved the rounding-level ones by up to 5 % (2026-12-07).
TINY_LOG = -10.0


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fixed():
    model = mu.DiffusionModel(tiny_unet(seed=0), mu.models.default_scheduler(), device="cpu", batch_size=16)
    base = mu.DiffusionModel(tiny_unet(seed=3), mu.models.default_scheduler(), device="cpu", batch_size=16)
    digits = mu.datasets.load_digits_images()
    # the reference attacks' other inputs: four references over digits[:40], population digits[100:110]
    others = {"base": base, "references": tiny_references(digits), "population": digits[100:110]}
    return model, others, digits[:6]


def _hyper(name):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in GOLDEN["hyper"][name].items()}


def test_every_registered_attack_has_golden_values():
    unconditional = {n for n, a in mu.attacks.REGISTRY.items() if "captions" not in a.needs}
    assert set(GOLDEN["values"]) == unconditional


@pytest.mark.parametrize("name", sorted(mu.attacks.ATTACKS.keys() & GOLDEN["values"].keys()))
def test_scores_are_the_golden_ones(name, fixed):
    model, others, x = fixed
    hyper = {**_hyper(name), **{k: v for k, v in others.items() if k in mu.attacks.get(name).needs}}
    np.testing.assert_allclose(mu.attacks.get(name)(model, x, **hyper), GOLDEN["values"][name], rtol=RTOL,
                               atol=ATOL)


@pytest.mark.parametrize("name", sorted(mu.attacks.FEATURE_ATTACKS))
def test_features_are_the_golden_ones(name, fixed):
    model, _, x = fixed
    f, names = mu.attacks.get(name)(model, x, **_hyper(name))
    golden = np.asarray(GOLDEN["values"][name]["features"])
    assert names == GOLDEN["values"][name]["names"] and f.shape == golden.shape
    sound = golden > TINY_LOG
    np.testing.assert_allclose(f[sound], golden[sound], rtol=RTOL, atol=ATOL)
    assert (f[~sound] < TINY_LOG / 2).all()  # zero gradients stay (numerically) zero
