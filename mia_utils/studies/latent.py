"""Chapter 05's measurements: the attacks on a pixel model and on latent models behind β-VAEs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..data import MembershipSets
from ..harness import evaluate
from ..models import DiffusionModel


def latent_study(pixel: DiffusionModel, latents: Mapping[str, tuple], sets: MembershipSets,
                 attacks: Mapping[str, tuple], n_boot: int = 1000, seed: int = 0,
                 sampled: Iterable[str] = ()) -> dict[str, dict[str, dict]]:
    """Each attack of ``attacks`` ({row: (attack, grid, hyper)}) on the pixel model, and on each
    latent model of ``latents`` ({label: (model, LatentCodec)}) through its encoder: on the
    posterior means μ(x), and for the attacks named in ``sampled`` also on a sampled latent
    μ(x) + σ(x)·n (n seeded by the image's content). Each row carries ``encoder_passes`` per
    image and the oracle AUC. Returns {model label: {attack: row}}.
    """
    def rows(model, parts, encoder_passes=0.0, which=None):
        out = {}
        for name, (attack, grid, hyper) in attacks.items():
            if which is None or name in which:
                res = evaluate(attack, model, parts, grid, n_boot=n_boot, boot_seed=seed, **hyper)
                out[name] = {**res["honest"], "oracle_auc": res["oracle"]["auc"], "encoder_passes": encoder_passes}
        return out

    parts = sets.parts()
    results = {"pixel DDPM": rows(pixel, sets)}
    for label, (model, codec) in latents.items():
        for mode, name, which in (("mean", label, None), ("sample", f"{label}, sampled latent", list(sampled))):
            if which == []:
                continue
            codec.encoder_queries = 0
            z = MembershipSets(**{k: codec.encode(x, mode=mode, seed=seed) for k, x in parts.items()})
            results[name] = rows(model, z, codec.encoder_queries / sum(len(x) for x in parts.values()), which)
    return results
