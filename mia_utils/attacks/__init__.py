"""Membership-inference attacks, one module each, one contract, one registry.

``score(model, images, **hyper) -> np.ndarray``: one score per image, in the images' order,
**higher = more likely a member** (statistics for which smaller means member are negated
inside the attack). Every attack calls the model only through ``DiffusionModel.eps``, which
counts queries; each docstring gives the paper's equation, the defaults and the cost in
queries per image. Every random draw is seeded by (seed, the image's content), so a score
does not depend on the other images, their order, the batch size or the device.

``ATTACKS`` registers each attack with what every table shows beside its numbers: its access
level and its declared cost in queries per image (which ``harness.evaluate`` checks against
the count). ``FEATURE_ATTACKS`` registers the attacks that give each image a feature vector
instead (``trajectory``, ``gsa``), scored by a linear probe trained on labelled calibration
images; they state their cost the same way, backward passes included. ``REGISTRY`` holds both,
and ``get`` reads it. Access levels, as the literature uses them:

* black box: generated images only, no ε̂;
* gray box: ε̂(x_t, t) (or the sampler's initial noise) on chosen inputs, no weights or gradients;
* white box: the weights (gradients through the model).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from ..models import DiffusionModel
from ..references import ReferenceModels
from . import clid, gsa, lira, loss, noise_probe, pfami, pia, rediffuse, rmia, secmi, sima, trajectory, wen

ACCESS = ("black box", "gray box", "white box")


def keyword_defaults(fn: Callable) -> dict:
    """The defaults of ``fn``'s parameters after (model, images): an attack's hyper-parameters."""
    sig = inspect.signature(fn)
    return {k: p.default for k, p in list(sig.parameters.items())[2:] if p.default is not inspect.Parameter.empty}


@dataclass(frozen=True)
class Attack:
    """A registered attack: its score function, access level and declared cost."""

    name: str
    title: str  # how tables and figures name it
    score: Callable[..., np.ndarray]
    access: str
    cost: Callable[[dict], int]  # queries per image for the given hyper-parameters (defaults filled in)
    paper: str
    needs: tuple[str, ...] = field(default_factory=tuple)  # other models it takes, e.g. ("base",)
    # queries once per call whatever the number of images (RMIA's population samples z)
    per_call: Callable[[dict], int] = lambda h: 0

    def __post_init__(self):
        if self.access not in ACCESS:
            raise ValueError(f"access must be one of {ACCESS}, not {self.access!r}.")

    @property
    def defaults(self) -> dict:
        """The score function's keyword defaults (its hyper-parameters)."""
        return keyword_defaults(self.score)

    def check_hyper(self, hyper: dict) -> dict:
        """``hyper`` with the defaults filled in; an error listing the valid names for an unknown one."""
        unknown = sorted(set(hyper) - set(self.defaults))
        if unknown:
            raise ValueError(f"{self.name} has no parameter {', '.join(map(repr, unknown))}; its parameters are "
                             f"{', '.join(sorted(self.defaults))}.")
        return {**self.defaults, **hyper}

    def queries_per_image(self, **hyper) -> int:
        """The declared cost: model queries per image (every model it queries, the base included)."""
        return int(self.cost(self.check_hyper(hyper)))

    def queries_per_call(self, **hyper) -> int:
        """The declared queries of one call beside the per-image ones (0 for most attacks)."""
        return int(self.per_call(self.check_hyper(hyper)))

    def queries(self, n_images: int, **hyper) -> int:
        """The declared queries of one call on ``n_images`` images, every model counted."""
        return n_images * self.queries_per_image(**hyper) + self.queries_per_call(**hyper)

    def __call__(self, model, images, **hyper):
        """The scores (a feature attack: the features and their names) of ``images``."""
        self.check_hyper(hyper)
        return self.score(model, images, **hyper)


def _probe_cost(h: dict) -> int:
    inversion = h["inversion_steps"] if h["noise"] in ("semantic", "graybox") and h.get("x_init") is None else 0
    return inversion + h["generation_steps"]


def _models_queried(h: dict) -> int:
    """1 + R: the target and its reference models (R = 0 when none are given)."""
    return 1 + (len(h["references"]) if h.get("references") is not None else 0)


def _signal_cost(h: dict) -> int:
    """The reference attacks' queries per image: K noises x len(ts) time steps on each model."""
    return _models_queried(h) * h["n_noise"] * len(h["ts"])


ATTACKS: dict[str, Attack] = {a.name: a for a in [
    Attack("loss", "loss", loss.score, "gray box", lambda h: h["n_noise"], "matsumoto2023mia"),
    Attack("sima", "SimA", sima.score, "gray box", lambda h: 1, "rao2025sima"),
    Attack("pia", "PIA", pia.score, "gray box", lambda h: 2, "kong2024pia"),
    Attack("pian", "PIAN", pia.score_pian, "gray box", lambda h: 2, "kong2024pia"),
    Attack("secmi", "SecMI_stat", secmi.score, "gray box", lambda h: h["t_sec"] // h["k"] + 1, "duan2023secmi"),
    Attack("noise_probe", "noise as a probe", noise_probe.score, "gray box", _probe_cost, "noiseprobe2026",
           needs=("base",)),
    Attack("pfami", "PFAMI", pfami.score, "gray box", lambda h: (len(h["strengths"]) + 1) * len(h["ts"]),
           "fu2023pfami"),
    Attack("rediffuse", "ReDiffuse", rediffuse.score, "black box", lambda h: h["n"] * h["steps"], "li2025rediffuse"),
    # text-conditional: a model bound to the images' captions (target.bind(captions))
    Attack("clid", "CLiD", clid.score, "gray box", lambda h: 2 * len(h["ts"]) * h["n_noise"], "zhai2024clid",
           needs=("captions",)),
    Attack("wen", "Wen et al.", wen.score, "gray box", lambda h: 2 * len(h["ts"]) * h["n_noise"], "wen2024detecting",
           needs=("captions",)),
    # reference models of the target's recipe, each with the manifest of its members (mia_utils.references)
    Attack("lira", "LiRA", lira.score, "gray box", _signal_cost, "carlini2022lira", needs=("references",),
           per_call=lambda h: (_models_queried(h) - 1) * h["n_noise"] * len(h["ts"])
           * (len(h["variance_images"]) if h["variance_images"] is not None else 0)),
    Attack("rmia", "RMIA", rmia.score, "gray box", _signal_cost, "zarifzadeh2024rmia",
           needs=("references", "population"),
           per_call=lambda h: _signal_cost(h) * (len(h["population"]) if h["population"] is not None else 0)),
]}


@dataclass(frozen=True)
class FeatureAttack(Attack):
    """A registered feature attack: its ``score`` field is the feature function,
    ``(model, images, **hyper) -> (matrix [N, F], names)``; beside the access level and the
    declared queries per image it declares its ``backward`` passes per image. A probe trained on
    labelled calibration images turns the features into scores (``harness.evaluate`` refuses it)."""

    backward: Callable[[dict], int] = lambda h: 0  # backward passes per image

    @property
    def features(self) -> Callable[..., tuple[np.ndarray, list[str]]]:
        """The feature function (the ``score`` field)."""
        return self.score

    def backward_per_image(self, **hyper) -> int:
        """The declared backward passes per image."""
        return int(self.backward(self.check_hyper(hyper)))


FEATURE_ATTACKS: dict[str, FeatureAttack] = {a.name: a for a in [
    FeatureAttack("trajectory", "trajectory features + probe", trajectory.features, "white box",
                  lambda h: len(h["ts"]), "floros2025tracing",
                  backward=lambda h: len(h["ts"]) * sum(k.startswith("grad") for k in h["kinds"])),
    FeatureAttack("gsa", "GSA + probe", gsa.feature_matrix, "white box", lambda h: len(h["ts"]), "pang2025gsa",
                  backward=lambda h: 1 if h["mode"] == "gsa1" else len(h["ts"])),
]}

REGISTRY: dict[str, Attack | FeatureAttack] = {**ATTACKS, **FEATURE_ATTACKS}


def get(name: str) -> Attack | FeatureAttack:
    """The registered attack ``name`` (``REGISTRY``); an error listing the registry otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"No attack {name!r}; the attacks are {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def models_in(hyper: dict) -> list[DiffusionModel]:
    """Every model among an attack call's hyper-parameters: a base, and each reference model."""
    found = []
    for v in hyper.values():
        if isinstance(v, DiffusionModel):
            found.append(v)
        elif isinstance(v, ReferenceModels):
            found.extend(v.models)
    return found


def sweep(attack: Callable[..., np.ndarray], model, images, ts: Iterable[int], **hyper) -> dict[int, np.ndarray]:
    """The attack's scores at every time step in ``ts``: {t: scores}; costs add up per t."""
    return {int(t): attack(model, images, t=int(t), **hyper) for t in ts}


__all__ = [
    "ACCESS", "ATTACKS", "FEATURE_ATTACKS", "REGISTRY", "Attack", "FeatureAttack", "clid", "get", "gsa",
    "keyword_defaults", "lira", "loss", "models_in", "noise_probe", "pfami", "pia", "rediffuse", "rmia", "secmi",
    "sima", "sweep", "trajectory", "wen",
]
