"""PFAMI and ReDiffuse against independent computations: closed forms and per-image loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mia_utils as mu
from mia_utils.attacks import pfami, rediffuse
from mia_utils.noise import generators

from .conftest import zero_eps_model


# ---------------------------------------------------------------------- ReDiffuse
def test_rediffuse_with_a_zero_predictor_matches_its_closed_form(digits):
    """ε̂ ≡ 0: each DDIM step rescales x by √(ᾱ_to/ᾱ_from), so a variation is √(ᾱ_0/ᾱ_t) x_t and
    the average of n is √ᾱ_0 x + √(ᾱ_0 (1 − ᾱ_t)/ᾱ_t) · mean_j ε_j."""
    model, x, t, n = zero_eps_model(), digits[:5], 120, 3
    ab = model.alpha_bar.double()
    gens = generators(x, 7, salt="rediffuse")
    eps = torch.stack([torch.stack([torch.randn(x.shape[1:], generator=g) for g in gens]) for _ in range(n)])
    mean = ab[0].sqrt() * x.double() + (ab[0] * (1 - ab[t]) / ab[t]).sqrt() * eps.double().mean(0)
    expected = -(x.double() - mean).flatten(1).pow(2).sum(1).numpy()
    np.testing.assert_allclose(rediffuse.score(model, x, t=t, n=n, steps=6, seed=7), expected, rtol=1e-5)


def test_rediffuse_equals_a_per_image_loop_of_written_out_ddim_steps(memorised):
    model, members, nonmembers = memorised
    x = torch.cat([members[:2], nonmembers[:2]])
    t, n, steps, seed = 100, 2, 4, 0
    ab = model.alpha_bar.double()
    path = [100, 75, 50, 25, 0]
    assert rediffuse.time_grid(t, steps) == path
    got = rediffuse.score(model, x, t=t, n=n, steps=steps, seed=seed)
    for i in range(len(x)):
        g = mu.noise.seeded_generator(seed, "rediffuse", mu.noise.content_hash(x[i]))
        outs = []
        for _ in range(n):
            z = ab[t].sqrt() * x[i:i + 1].double() + (1 - ab[t]).sqrt() * torch.randn(x.shape[1:], generator=g).double()
            for a, b in zip(path[:-1], path[1:]):
                e = model.unet(z.float(), torch.tensor([a])).sample.double()
                z = ab[b].sqrt() * (z - (1 - ab[a]).sqrt() * e) / ab[a].sqrt() + (1 - ab[b]).sqrt() * e
            outs.append(z)
        by_hand = -(x[i:i + 1].double() - torch.stack(outs).mean(0)).pow(2).sum().item()
        assert got[i] == pytest.approx(by_hand, rel=1e-4)
    assert got[:2].mean() > got[2:].mean()  # the memorised members come back closer


def test_rediffuse_refuses_more_steps_than_time_steps(tiny_model, digits):
    with pytest.raises(ValueError, match="give steps <= t"):
        rediffuse.score(tiny_model, digits[:2], t=3, steps=5)


# ---------------------------------------------------------------------- PFAMI
def test_crop_is_a_central_zoom_equal_to_interpolating_the_centre(digits):
    x = digits[:3]
    np.testing.assert_allclose(pfami.crop(x, 0.0), x, atol=1e-6)
    # the centre 4x4 upsampled 2x samples the same points, except the outer rows and columns, which
    # interpolate clamps to the crop's edge while the zoom reads the pixels beyond it
    centre = F.interpolate(x[..., 2:6, 2:6], size=8, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(pfami.crop(x, 0.5)[..., 1:-1, 1:-1], centre[..., 1:-1, 1:-1], atol=1e-6)
    with pytest.raises(ValueError, match="0 <= strength < 1"):
        pfami.crop(x, 1.0)


def test_pfami_equals_a_per_image_loop(memorised):
    model, members, nonmembers = memorised
    x = torch.cat([members[:2], nonmembers[:2]])
    ts, strengths, seed = (30, 90), (0.1, 0.25), 5
    ab = model.alpha_bar.double()
    got = pfami.score(model, x, ts=ts, strengths=strengths, seed=seed)
    for i in range(len(x)):
        g = mu.noise.seeded_generator(seed, "pfami", mu.noise.content_hash(x[i]))
        variants = [x[i:i + 1], *[pfami.crop(x[i:i + 1], s) for s in strengths]]
        loss = np.zeros(len(variants))
        for t in ts:
            e = torch.randn(x.shape[1:], generator=g).double()
            for v, xv in enumerate(variants):
                z = ab[t].sqrt() * xv.double() + (1 - ab[t]).sqrt() * e
                loss[v] += ((e - model.unet(z.float(), torch.tensor([t])).sample.double()) ** 2).sum().item() / len(ts)
        assert got[i] == pytest.approx(np.mean((loss[1:] - loss[0]) / loss[0]), rel=1e-4)


# ---------------------------------------------------------------------- GSA1 / GSA2
@pytest.mark.parametrize("mode", ["gsa1", "gsa2"])
def test_gsa_features_equal_a_per_image_autograd_loop(memorised, mode):
    from mia_utils.attacks import gsa

    model, members, nonmembers = memorised
    x, ts, seed = torch.cat([members[:2], nonmembers[:1]]), (40, 200), 3
    model.reset_queries()
    got = gsa.features(model, x, ts=ts, mode=mode, seed=seed)
    assert model.reset_queries() == len(x) * len(ts) and got.shape == (3, len(list(model.unet.parameters())))
    ab = model.alpha_bar.double()
    for i in range(len(x)):
        g = mu.noise.seeded_generator(seed, "gsa", mu.noise.content_hash(x[i]))
        eps = [torch.randn(x.shape[1:], generator=g) for _ in ts]
        losses = []
        for e, t in zip(eps, ts):
            z = (ab[t].sqrt() * x[i].double() + (1 - ab[t]).sqrt() * e.double()).float()[None]
            losses.append((model.unet(z, torch.tensor([t])).sample[0] - e).pow(2).sum())
        params = list(model.unet.parameters())
        if mode == "gsa1":
            grads = torch.autograd.grad(sum(losses) / len(ts), params)
            norms = torch.stack([gr.norm() for gr in grads])
        else:
            norms = torch.stack([torch.stack([gr.norm() for gr in torch.autograd.grad(loss, params)])
                                 for loss in losses]).mean(0)
        # on the norm scale: a few layers' gradients are float32 round-off (~1e-6), whose logs differ
        np.testing.assert_allclose(np.exp(got[i]), norms.double().numpy(), rtol=1e-3, atol=1e-5 * norms.max().item())


def test_evaluate_gsa_trains_on_calibration_and_reports_white_box_cost(memorised, digits):
    from mia_utils.attacks import gsa

    model, members, nonmembers = memorised
    sets = mu.data.MembershipSets(members[:4], members[4:8], nonmembers[:12], nonmembers[12:24])
    res = mu.studies.secmi_pia.evaluate_gsa(model, sets, ts=(40, 200), mode="gsa2", seed=0, n_boot=20)["honest"]
    f = {p: gsa.features(model, x, ts=(40, 200), mode="gsa2", seed=0) for p, x in sets.parts().items()}
    probe = mu.probes.fit(np.concatenate([f["members_cal"], f["nonmembers_cal"]]), np.r_[np.ones(4), np.zeros(12)])
    auc = mu.metrics.auc(mu.probes.binary_scores(probe, f["members_eval"]),
                         mu.probes.binary_scores(probe, f["nonmembers_eval"]))
    assert res["auc"] == pytest.approx(auc) and res["access"] == "white box"
    assert res["queries_per_image"] == 2 and res["backward_per_image"] == 2
