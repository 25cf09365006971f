"""Golden values: every registered attack's scores (and the feature attacks' features) on a
fixed model and fixed images, as the code gave them before the package was reorganised
(``tests/golden/attacks.json``). A silent change of any score fails here; a deliberate one
rewrites the file and says why in its commit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mia_utils as mu

from .conftest import tiny_unet

GOLDEN = json.loads((Path(__file__).parent / "golden" / "attacks.json").read_text())
RTOL = 1e-5  # float32 kernels may round differently on another CPU; on this one the values are bitwise equal


@pytest.fixture(scope="module")
def fixed():
    model = mu.DiffusionModel(tiny_unet(seed=0), mu.models.default_scheduler(), device="cpu", batch_size=16)
    base = mu.DiffusionModel(tiny_unet(seed=3), mu.models.default_scheduler(), device="cpu", batch_size=16)
    return model, base, mu.datasets.load_digits_images()[:6]


def _hyper(name):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in GOLDEN["hyper"][name].items()}


def test_every_registered_attack_has_golden_values():
    unconditional = {n for n, a in mu.attacks.REGISTRY.items() if "captions" not in a.needs}
    assert set(GOLDEN["values"]) == unconditional


@pytest.mark.parametrize("name", sorted(mu.attacks.ATTACKS.keys() & GOLDEN["values"].keys()))
def test_scores_are_the_golden_ones(name, fixed):
    model, base, x = fixed
    hyper = _hyper(name)
    if "base" in mu.attacks.get(name).needs:
        hyper["base"] = base
    np.testing.assert_allclose(mu.attacks.get(name)(model, x, **hyper), GOLDEN["values"][name], rtol=RTOL)


@pytest.mark.parametrize("name", sorted(mu.attacks.FEATURE_ATTACKS))
def test_features_are_the_golden_ones(name, fixed):
    model, _, x = fixed
    f, names = mu.attacks.get(name)(model, x, **_hyper(name))
    golden = GOLDEN["values"][name]
    assert names[:3] == golden["names_head"]
    np.testing.assert_allclose(f.sum(1), golden["row_sums"], rtol=RTOL)
    np.testing.assert_allclose(f[0, :8], golden["first_row"], rtol=RTOL, atol=1e-6)
