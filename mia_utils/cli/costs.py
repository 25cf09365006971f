"""What each chapter costs on an auditor's checkpoint, before it runs, and how ``--budget`` scales it.

A chapter's cost is counted in model queries (one image through the network once, as
``DiffusionModel`` counts them), split into parts — an attack sweep, a set of samples, a
feature extraction — each with the parameters ("knobs") that set its size. The formulas below
mirror each chapter's notebook on a checkpoint that is not a zoo model (the zoo's extra victims,
snapshots and cached samples are other models, left out) and use the attacks' own declared
costs (``attacks.REGISTRY``). They are kept honest by a test: a chapter executed on a tiny
checkpoint writes the queries its process made into its ``metrics.json``
(``models.process_queries``), and the plan must equal them.

Time is then queries x the seconds of one query, timed on the audited model and device
(``scoring.time_queries``), a query with a gradient at its own timed price, plus a fixed
``OVERHEAD_SECONDS`` per chapter (the kernel, the bootstrap, the figures). Work that is not a
model query (training SecMI_NN's network or the probes, k-NN quality measures) is not counted:
the estimate is a plan, not a promise, and the report puts the measured seconds beside it.

``fit_budget`` scales the knobs down, the costliest part's first, each halved (a list of
time steps thinned to every other one, ends kept) until the plan fits, never below a floor
(``FLOORS``) and never a knob the auditor set with ``-p``; when nothing is left to scale it
refuses in one sentence naming the knobs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..attacks import REGISTRY
from ..features import stride
from ..harness import settings
from ..images import image_files
from ..quality import HELD_OUT_TS
from ..references import reference_folders

# kernel start, imports, bootstrap intervals and figures of one chapter, measured on the tiny
# test checkpoint (the chapters took 20-40 s there with a few hundred queries)
OVERHEAD_SECONDS = 30.0


@dataclass(frozen=True)
class Sizes:
    """The images a chapter runs on, per part of the sets (``data.MembershipSets``), ``T`` the
    model's time steps, ``suspect`` the images of ``--suspect`` (0 without)."""

    members_cal: int
    nonmembers_cal: int
    members_eval: int
    nonmembers_eval: int
    T: int
    suspect: int = 0

    @property
    def images(self) -> int:
        """All four parts."""
        return self.members_cal + self.nonmembers_cal + self.members_eval + self.nonmembers_eval

    @property
    def eval(self) -> int:
        """The two evaluation parts."""
        return self.members_eval + self.nonmembers_eval


@dataclass
class Part:
    """One costly piece of a chapter: its queries (``grad``: those whose gradient is taken) and the knobs that size it."""

    name: str
    forward: int = 0
    grad: int = 0
    knobs: tuple[str, ...] = ()
    # forward queries counted as an upper bound: the part depends on a choice made on the
    # calibration split (the dearest setting is planned); the run makes between forward - slack and forward
    slack: int = 0

    def seconds(self, price: Mapping[str, float]) -> float:
        return self.forward * price["forward"] + self.grad * price["grad"]


def runs_queries(runs, n: int) -> int:
    """Queries of ``harness.evaluate`` runs on n images: each (attack, grid, fixed
    hyper-parameters) at every setting of its grid, at the attack's declared cost."""
    return sum(n * REGISTRY[attack].queries_per_image(**{**hyper, **setting})
               for attack, grid, hyper in runs for setting in settings(grid).values())


def _q(attack: str, **hyper) -> int:
    return REGISTRY[attack].queries_per_image(**hyper)


def _steps(value, T: int) -> int:
    return T if value is None else int(value)


# ---------------------------------------------------------------------------- the chapters
def _victims(p: dict, s: Sizes) -> list[Part]:
    return [Part("DDPM samples", p["n_samples"] * _steps(p["ddpm_steps"], s.T), knobs=("n_samples", "ddpm_steps")),
            Part("DDIM samples", p["n_samples"] * p["ddim_steps"], knobs=("n_samples", "ddim_steps")),
            Part("the loss attack", s.images * _q("loss", n_noise=p["n_noise"]), knobs=("n_noise",))]


def _theory(p: dict, s: Sizes) -> list[Part]:
    # the oracle (the optimal denoiser) is a kernel sum over the members, no model query
    return [Part("‖ε̂‖ at the evaluation images, every t", s.eval * len(p["ts"]), knobs=("ts",))]


def _sima(p: dict, s: Sizes) -> list[Part]:
    ts, k, n_gen = p["ts"], p["n_noise"], p["n_generated"]
    return [Part("SimA p=2, p=4, noisy and the loss attack at every t", s.images * len(ts) * (3 + k),
                 knobs=("ts", "n_noise")),
            Part("DDPM samples", n_gen * _steps(p["ddpm_steps"], s.T), knobs=("n_generated", "ddpm_steps")),
            Part("DDIM samples", n_gen * p["ddim_steps"], knobs=("n_generated", "ddim_steps")),
            Part("SimA on the samples", 2 * n_gen * len(ts), knobs=("n_generated", "ts"))]


def _secmi_pia(p: dict, s: Sizes) -> list[Part]:
    n, e = s.images, s.eval
    secmi = {f"{a},{b}": {"t_sec": a, "k": b} for a, b in p["secmi_grid"]}
    maps = [_q("secmi", **h) for h in secmi.values()]
    sens_secmi = sum(_q("secmi", t_sec=t, k=k) for k in p["sens_k"] for t in p["sens_t_sec"] if t % k == 0 and t >= k)
    return [
        Part("SimA, loss", runs_queries([("sima", p["sima_ts"], {}), ("loss", p["loss_ts"], {"n_noise": p["n_noise"]})], n),
             knobs=("sima_ts", "loss_ts", "n_noise")),
        Part("SecMI_stat", runs_queries([("secmi", secmi, {})], n), knobs=("secmi_grid",)),
        # its error maps at SecMI_stat's choice, not known beforehand: the dearest setting
        Part("SecMI_NN's error maps", n * max(maps, default=0), knobs=("secmi_grid",),
             slack=n * (max(maps, default=0) - min(maps, default=0))),
        Part("PIA, PIAN", runs_queries([("pia", p["pia_ts"], {}), ("pian", p["pia_ts"], {})], n), knobs=("pia_ts",)),
        Part("PFAMI", runs_queries([("pfami", {str(ts): {"ts": tuple(ts)} for ts in p["pfami_ts_sets"]}, {})], n),
             knobs=("pfami_ts_sets",)),
        Part("ReDiffuse", runs_queries([("rediffuse", p["rediffuse_ts"],
                                         {"n": p["n_variations"], "steps": p["variation_steps"]})], n),
             knobs=("n_variations", "variation_steps", "rediffuse_ts")),
        Part("GSA1, GSA2 (per-sample gradients)", grad=2 * n * len(p["gsa_ts"]), knobs=("gsa_ts",)),
        Part("sensitivity: SecMI", e * sens_secmi, knobs=("sens_t_sec", "sens_k")),
        Part("sensitivity: PIA, PIAN", 2 * e * _q("pia") * len(p["sens_pia_ts"]), knobs=("sens_pia_ts",)),
    ]


def _trajectories(p: dict, s: Sizes) -> list[Part]:
    n_dev, n_gen, n_ev = p["n_dev"], p["n_generated"], s.members_eval
    ts = stride(p["feature_stride"], stop=s.T)
    theta_ts = [t for t in ts if t % p["theta_stride"] == 0]
    # studies.trajectories.image_groups: (development, evaluation) sizes of each group
    members = min(n_dev, s.members_cal) + s.members_eval
    external = min(n_dev, s.nonmembers_cal) + s.nonmembers_eval
    generated = min(n_dev, n_gen) + min(n_ev, max(0, n_gen - n_dev))
    others = len(p["generators"]) * generated  # at most: another generator's images may be fewer
    groups = members + 2 * external + 2 * generated + others  # external twice: as it is, and shifted
    theta = (members + external + 2 * generated) * len(theta_ts)  # THETA_GROUPS
    return [Part("DDPM samples", n_gen * _steps(p["ddpm_steps"], s.T), knobs=("n_generated", "ddpm_steps")),
            Part("DDIM samples", n_gen * p["ddim_steps"], knobs=("n_generated", "ddim_steps")),
            Part("L_t and ∇x L_t of every group", grad=groups * len(ts), knobs=("feature_stride", "n_dev")),
            Part("∇θ L_t (per-sample gradients)", grad=theta, knobs=("theta_stride", "n_dev")),
            Part("the extraction filter's DDIM pool and its L_t", p["n_extract"] * (p["ddim_steps"] + len(ts)),
                 knobs=("n_extract", "ddim_steps", "feature_stride"))]


def _latent(p: dict, s: Sizes) -> list[Part]:
    runs = [("sima", p["sima_ts"], {}), ("loss", p["loss_ts"], {"n_noise": p["n_noise"]}), ("pia", p["pia_ts"], {})]
    knobs = ("sima_ts", "loss_ts", "n_noise", "pia_ts")
    latents = len(p["latent_models"])
    return [Part("SimA, loss, PIA on the pixel model", runs_queries(runs, s.images), knobs=knobs),
            Part("SimA, loss, PIA on each latent model (and SimA on a sampled latent)",
                 latents * (runs_queries(runs, s.images) + runs_queries(runs[:1], s.images)), knobs=knobs),
            Part("DDIM samples of every model, for quality", (1 + latents) * p["n_samples"] * p["ddim_steps"],
                 knobs=("n_samples", "ddim_steps"))]


def _text_to_image(p: dict, s: Sizes) -> list[Part]:
    def guided(g) -> int:  # a query at guidance γ ≠ 1 is two: ε̂(∅) and ε̂(c)
        return 1 if float(g) == 1.0 else 2

    targets = 1 + (p["second"] is not None)
    n_noise = p["n_noise"]
    attacks = [("sima", p["sima_ts"], {}), ("loss", p["loss_ts"], {"n_noise": n_noise}), ("pia", p["pia_ts"], {}),
               ("secmi", {str(g): {"t_sec": g[0], "k": g[1]} for g in p["secmi_grid"]}, {})]
    text = [("clid", {str(ts): {"ts": tuple(ts)} for ts in p["clid_ts"]}, {"n_noise": n_noise}),
            ("wen", {str(ts): {"ts": tuple(ts)} for ts in p["wen_ts"]}, {"n_noise": n_noise})]
    knobs = ("sima_ts", "loss_ts", "n_noise", "pia_ts", "secmi_grid", "clid_ts", "wen_ts")
    parts = [Part("the prompts' samples shown", 10 * 25 * (1 + guided(p["guidance"]))),
             Part("every attack with the captions, and SimA on a sampled latent",
                  targets * (runs_queries(attacks + text, s.images) + runs_queries(attacks[:1], s.images)), knobs=knobs),
             Part("the attacks without captions", targets * runs_queries(attacks, s.images), knobs=knobs)]
    if p["base"] is not None or p["lora"] is not None:  # the noise probe (studies.text_to_image.base_spec)
        inversion = s.images * p["inversion_steps"] * guided(p["base_guidance"])
        generation = s.images * p["generation_steps"]
        parts += [Part("the noise probe at every guidance (one inversion)",
                       targets * (inversion + generation * sum(guided(g) for g in p["guidances"])),
                       knobs=("inversion_steps", "generation_steps")),
                  Part("the noise probe without captions", targets * (inversion + generation * guided(p["guidance"])),
                       knobs=("inversion_steps", "generation_steps"))]
    return parts


def _noise_probe(p: dict, s: Sizes) -> list[Part]:
    steps = {"inversion_steps": p["inversion_steps"], "generation_steps": p["generation_steps"]}
    knobs = ("inversion_steps", "generation_steps")
    # each initial noise once (semantic: the base inverts; gray box: the target; closed form, random: none)
    noises = sum(_q("noise_probe", noise=n, **steps) for n in ("semantic", "graybox", "closed_form", "random"))
    shown = 2 * min(8, s.members_eval, s.nonmembers_eval)
    # the inversion-depth sweep on the evaluation split; T - 1 is the study's own, not scored again
    depths = sum(1 for t in p["t_starts"] if int(t) != s.T - 1)
    return [Part("the four initial noises and their regenerations", s.images * noises, knobs=knobs),
            Part("the reconstructions shown", shown * _q("noise_probe", noise="semantic", **steps), knobs=knobs),
            Part("inversion depths", depths * s.eval * _q("noise_probe", noise="semantic", **steps),
                 knobs=("t_starts", *knobs)),
            Part("SimA, PIA", runs_queries([("sima", p["sima_ts"], {}), ("pia", p["pia_ts"], {})], s.images),
                 knobs=("sima_ts", "pia_ts"))]


def _evidence(p: dict, s: Sizes) -> list[Part]:
    runs = [("sima", p["sima_ts"], {}), ("loss", p["loss_ts"], {"n_noise": p["n_noise"]}), ("pia", p["pia_ts"], {})]
    # the suspect images at each attack's calibration choice: one setting, its cost the same at every t
    suspect = s.suspect * sum(_q(a, **{**h, **next(iter(settings(g).values()))}) for a, g, h in runs if g)
    return [Part("SimA, loss, PIA", runs_queries(runs, s.images), knobs=("sima_ts", "loss_ts", "n_noise", "pia_ts")),
            Part("the suspect images", suspect, knobs=("n_noise",))]


def _references(p: dict, s: Sizes) -> list[Part]:
    # "zoo" (a zoo target's references and population) is the zoo's own study: planned on folders only
    refs = len(reference_folders(p["references"])) if p["references"] != "zoo" else 0
    population = len(image_files(p["population"])) if p["population"] != "zoo" else 0
    population = population if p["n_population"] is None else min(population, p["n_population"])
    signals = (1 + refs) * p["n_noise"] * len(p["ts"]) * (s.images + population)
    return [Part("SimA, PIA", runs_queries([("sima", p["sima_ts"], {}), ("pia", p["pia_ts"], {})], s.images),
                 knobs=("sima_ts", "pia_ts")),
            Part("the loss signals of the target and every reference, population included", signals,
                 knobs=("n_noise", "ts", "n_population"))]


def _defenses(p: dict, s: Sizes) -> list[Part]:
    runs = [("sima", p["sima_ts"], {}), ("loss", p["loss_ts"], {"n_noise": p["n_noise"]}), ("pia", p["pia_ts"], {})]
    models = len({**p["defenses"], p["checkpoint_label"]: p["checkpoint"]})
    # one-run audit: the canaries scored by the attack whose calibration bound is largest (the dearest planned)
    canaries = (sum(len(image_files(Path(p["canaries"]) / side)) for side in ("in", "out"))
                if p["canaries"] not in (None, "zoo") else 0)
    per = [_q(a, **{**h, **next(iter(settings(g).values()))}) for a, g, h in runs if g]
    held_out = s.nonmembers_eval * sum(_q("loss", t=t) for t in HELD_OUT_TS if t < s.T)
    return [Part("SimA, loss, PIA on every model", models * runs_queries(runs, s.images),
                 knobs=("sima_ts", "loss_ts", "n_noise", "pia_ts")),
            Part("GSA1 on every model (per-sample gradients)", grad=models * s.images * len(p["gsa_ts"]),
                 knobs=("gsa_ts",)),
            Part("DDIM samples of every model", models * p["n_samples"] * p["ddim_steps"],
                 knobs=("n_samples", "ddim_steps")),
            Part("the held-out loss of every model", models * held_out),
            Part("the canaries", models * canaries * max(per, default=0),
                 slack=models * canaries * (max(per, default=0) - min(per, default=0)))]


CHAPTERS: dict[str, Callable[[dict, Sizes], list[Part]]] = {
    "00_victims": _victims,
    "01_theory": _theory,
    "02_sima": _sima,
    "03_secmi_pia": _secmi_pia,
    "04_trajectories": _trajectories,
    "05_latent": _latent,
    "06_noise_probe": _noise_probe,
    "07_text_to_image": _text_to_image,
    "08_evidence": _evidence,
    "09_references": _references,
    "10_defenses": _defenses,
}

# the least a knob is scaled to: below it a chapter's figures lose their meaning
FLOORS = {"n_noise": 1, "n_generated": 32, "n_samples": 32, "ddpm_steps": 10, "ddim_steps": 10, "inversion_steps": 10,
          "generation_steps": 10, "n_variations": 1, "variation_steps": 5, "n_extract": 64, "n_population": 64,
          "n_dev": 8}
LIST_FLOOR = 2  # time steps (or settings) kept in a list
GROWS = ("feature_stride", "theta_stride")  # knobs whose larger value costs less



# ---------------------------------------------------------------------------- the plan
@dataclass
class ChapterPlan:
    """One chapter's parts at its parameters, priced: seconds = queries x price + overhead."""

    stem: str
    parts: list[Part]
    price: Mapping[str, float]
    changed: dict = field(default_factory=dict)  # knob: (before, after), what --budget scaled

    @property
    def forward(self) -> int:
        return sum(p.forward for p in self.parts)

    @property
    def grad(self) -> int:
        return sum(p.grad for p in self.parts)

    @property
    def slack(self) -> int:
        return sum(p.slack for p in self.parts)

    @property
    def seconds(self) -> float:
        return OVERHEAD_SECONDS + sum(p.seconds(self.price) for p in self.parts)

    def line(self) -> str:
        grad = f" + {self.grad:,} with gradients" if self.grad else ""
        return (f"{self.stem}: {self.forward:,} queries{grad}, about {self.seconds / 60:.1f} min "
                f"(costliest: {max(self.parts, key=lambda p: p.seconds(self.price)).name})")

    def as_dict(self) -> dict:
        return {"forward": self.forward, "grad": self.grad, "upper_bound_slack": self.slack,
                "estimated_minutes": self.seconds / 60,
                "parts": {p.name: {"forward": p.forward, "grad": p.grad} for p in self.parts},
                "changed": {k: {"from": a, "to": b} for k, (a, b) in self.changed.items()}}


def chapter_plan(stem: str, parameters: dict, sizes: Sizes, price: Mapping[str, float]) -> ChapterPlan | None:
    """The plan of chapter ``stem`` at ``parameters`` (its defaults with the audit's), None for a
    chapter without a cost formula."""
    cost = CHAPTERS.get(stem)
    return None if cost is None else ChapterPlan(stem, cost(parameters, sizes), price)


def smaller(name: str, value, T: int):
    """``value`` of knob ``name`` one step cheaper (halved, a list thinned to every other entry
    with its ends kept, a stride doubled), or None where it is at its floor or is no knob we can scale."""
    if isinstance(value, list):
        if len(value) <= LIST_FLOOR:
            return None
        keep = np.unique(np.linspace(0, len(value) - 1, max(LIST_FLOOR, (len(value) + 1) // 2)).round().astype(int))
        return [value[i] for i in keep]
    if name in GROWS:  # a stride: doubled, while it leaves more than one step
        return value * 2 if isinstance(value, int) and value * 2 < T // 2 else None
    if name.endswith("_steps") and value is None:
        value = T
    if isinstance(value, bool) or not isinstance(value, int) or name not in FLOORS:
        return None
    return max(FLOORS[name], value // 2) if value > FLOORS[name] else None


def fit_budget(plans: list[ChapterPlan], parameters: dict[str, dict], sizes: Sizes, budget_minutes: float,
               fixed: set[str]) -> list[ChapterPlan]:
    """Scale the chapters' knobs until the plans' total fits ``budget_minutes``: the costliest part
    of all, one knob halved at a time (``smaller``), never a knob in ``fixed`` (set by -p).
    ``parameters`` {stem: the chapter's parameters} is updated in place; each plan records what
    changed. Raises ValueError naming the knobs when the plan cannot fit."""
    if budget_minutes <= 0:
        raise ValueError(f"--budget {budget_minutes:g}: give the minutes the audit may take (a positive number).")
    for _ in range(10_000):
        total = sum(p.seconds for p in plans) / 60
        if total <= budget_minutes:
            return plans
        candidates = sorted(((part.seconds(plan.price), plan, part) for plan in plans for part in plan.parts),
                            key=lambda c: -c[0])
        for _, plan, part in candidates:
            params = parameters[plan.stem]
            knob = next((k for k in part.knobs if k not in fixed and smaller(k, params[k], sizes.T) is not None), None)
            if knob is not None:
                before = plan.changed.get(knob, (params[knob], None))[0]
                params[knob] = smaller(knob, params[knob], sizes.T)
                plan.changed[knob] = (before, params[knob])
                plan.parts = CHAPTERS[plan.stem](params, sizes)
                break
        else:
            knobs = sorted({k for plan in plans for part in plan.parts for k in part.knobs})
            raise ValueError(f"The chapters need about {total:.1f} min even with {', '.join(knobs) or 'their knobs'} "
                             f"at their floors (-p to set them yourself) > --budget {budget_minutes:g}: give fewer "
                             f"images (--n-eval), fewer chapters, or run on a GPU (--device cuda).")
    raise AssertionError("fit_budget did not converge")  # every step shrinks a knob: unreachable
