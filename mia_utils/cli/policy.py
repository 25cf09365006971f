"""The audit's chapter policy, as data: what each chapter needs on an auditor's own checkpoint,
the defaults it runs with there, the kind of model it audits, and the parameters the audit sets
itself. ``mia-book audit`` reads it (``cli.audit.plan``)."""

from __future__ import annotations

import re

from ..zoo.recipes import DEFENSE_MODELS

# parameters the audit sets itself from its own options: -p may not override them
OWN = ("checkpoint", "members", "nonmembers", "device", "n_eval", "batch_size", "seed", "out_dir", "resize", "suspect",
       "lora")

# Chapters whose defaults name zoo models trained on the embedded digits: on an auditor's own
# checkpoint they need inputs only the auditor has (a parameter, or several: all of them), or they
# are skipped with a note.
NEEDS = {
    "05_latent": ("latent_models", ("your latent models: -p latent_models '[\"DIR\"]' (folders with unet/, "
                                    "scheduler/, vae/, codec.json) trained on these members")),
    "06_noise_probe": ("base", "the pre-trained model your checkpoint was fine-tuned from: -p base DIR"),
    "09_references": (("references", "population"),
                      "reference models of your recipe: -p references DIR (sub-folders: diffusers checkpoints, each "
                      "with members.json) and -p population DIR (images none of the models was trained on)"),
}
# Chapters whose zoo defaults fit some zoo targets only: chapter 09's references are fashion-lira's
ZOO_TARGETS = {"09_references": ("zoo:fashion-lira",),
               # chapter 10 compares models trained on digits-ddpm's members: its own, and theirs
               "10_defenses": ("zoo:digits-ddpm", *(f"zoo:{n}" for n in DEFENSE_MODELS))}
# ... or they run with a default that does not point into the zoo (chapter 04: no other generators;
# chapters 04 and 05: no Fashion-MNIST replication, which is about the zoo's victims; chapter 07:
# no second target, and the noise probe inverts with the checkpoint itself under a --lora, else
# it needs -p base)
USER_DEFAULTS = {"04_trajectories": {"generators": {}, "replication": None}, "05_latent": {"replication": None},
                 "07_text_to_image": {"second": None, "base": None},
                 # chapter 10 on another model: its claim audited (with -p claimed_epsilon, -p canaries DIR), no
                 # comparison with the zoo's defended digits models
                 "10_defenses": {"defenses": {}, "checkpoint_label": "your checkpoint"}}
# The kind of model each chapter audits (chapter 07: text-to-image pipelines; the others: pixel UNets)
TEXT_TO_IMAGE = ("07_text_to_image",)

# A chapter parameter that names time steps (ts, *_ts, t_*, *_t, t, a grid's t_sec ...): the
# audit checks them against the model's T before anything runs.
TIME_STEP_NAME = re.compile(r"(^|_)ts$|^t_|_t$|^t$|grid$|_t_sec$")


def time_steps(parameters: dict) -> list[int]:
    """The time steps a chapter's parameters name (``TIME_STEP_NAME``), every whole number in them."""
    out: list[int] = []

    def ints(value):
        if isinstance(value, bool):
            return
        if isinstance(value, int):
            out.append(value)
        elif isinstance(value, list | tuple):
            for v in value:
                ints(v)

    for name, value in parameters.items():
        if TIME_STEP_NAME.search(name):
            ints(value)
    return out
