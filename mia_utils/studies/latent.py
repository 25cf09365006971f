"""Chapter 05's measurements: the attacks on a pixel model and on latent models behind β-VAEs,
and the samples' quality beside them (what the privacy-utility figure plots)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .. import quality, specs
from ..data import MembershipSets
from ..harness import evaluate
from ..models import DiffusionModel
from ..quality import PIXEL


def load_latents(sources: Sequence[str], device="auto", batch_size: int = 256) -> dict[str, tuple]:
    """{label: (latent DiffusionModel, LatentCodec)} for latent model specs, labelled by
    ``specs.latent_label`` (their β for zoo models)."""
    return {specs.latent_label(s): specs.load_ldm(s, device=device, batch_size=batch_size) for s in sources}


def quality_study(spec, model: DiffusionModel, latents: Mapping[str, tuple], sets: MembershipSets, n_samples: int,
                  ddim_steps: int, seed: int = 0, device="auto") -> tuple[dict, dict]:
    """Precision / recall (k = 3, ``quality.latent_quality``) of the pixel model's DDIM samples
    (cached in the zoo for a zoo model) and of each latent model's, against held-out real images
    (the evaluation non-members; the calibration ones as the real-image reference), and the first
    stages' held-out reconstruction error. Returns (rows, samples)."""
    pixel_samples = specs.generated(spec, n_samples, sampler="ddim", steps=ddim_steps, seed=seed, device=device,
                                    model=model)
    return quality.latent_quality(pixel_samples, latents, sets.nonmembers_eval, sets.nonmembers_cal, n_samples,
                                  ddim_steps, seed)


def replicate(spec: str, latent_models: Sequence[str], attacks: Mapping[str, tuple], n_samples: int, ddim_steps: int,
              sampled: Iterable[str] = (), device="auto", batch_size: int = 256, n_boot: int = 1000,
              seed: int = 0) -> tuple[dict, dict]:
    """The whole study on another zoo victim (``spec``) and its latent models: its own members and
    non-members, the quality rows and ``latent_study``'s rows. Returns (results, quality rows)."""
    pixel = specs.load_model(spec, device=device, batch_size=batch_size)
    sets = specs.load_membership_sets(f"{spec}/members", f"{spec}/nonmembers", model=pixel, seed=seed)
    latents = load_latents(latent_models, device=device, batch_size=batch_size)
    rows, _ = quality_study(spec, pixel, latents, sets, n_samples, ddim_steps, seed, device)
    return latent_study(pixel, latents, sets, attacks, n_boot=n_boot, seed=seed, sampled=sampled), rows


def metrics_rows(studies: Mapping[str, tuple[dict, dict]], first: str) -> dict[str, dict]:
    """The rows of chapter 05's metrics.json from {study: (results, quality)}: ``attack (latent,
    β = …[, study])``; the ``first`` study's rows carry no study name."""
    rows = {}
    for study, (results, _) in studies.items():
        for model_name, model_rows in results.items():
            for attack, r in model_rows.items():
                latent = "latent, " if model_name != PIXEL else ""
                rows[f"{attack} ({latent}{model_name}{'' if study == first else ', ' + study})"] = r
    return rows


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
    results = {PIXEL: rows(pixel, sets)}
    for label, (model, codec) in latents.items():
        for mode, name, which in (("mean", label, None), ("sample", f"{label}, sampled latent", list(sampled))):
            if which == []:
                continue
            codec.encoder_queries = 0
            z = MembershipSets(**{k: codec.encode(x, mode=mode, seed=seed) for k, x in parts.items()})
            results[name] = rows(model, z, codec.encoder_queries / sum(len(x) for x in parts.values()), which)
    return results
