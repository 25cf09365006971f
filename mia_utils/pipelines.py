"""Any local diffusers pipeline folder as an audit target: pixel, latent or text-to-image.

A folder with a ``model_index.json`` is loaded by diffusers' own ``from_pretrained`` of the
class it names (safetensors only, nothing downloaded); a folder without one is one of our
older layouts (a DDPM folder, or ``unet/`` + ``vae/`` + ``codec.json`` for a latent model).
LoRA adapters in diffusers' format are attached with the pipeline's ``load_lora_weights``.

    target = load_pipeline("sd-finetune/", lora="lora-dir/")
    z = target.encode(images)                  # latents (the images themselves for a pixel model)
    view = target.bind(captions)               # what the attacks take
    sima.score(view, z)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import CheckpointError
from .io import read_json, refuse_pickles
from .latent import LatentCodec, load_ldm
from .models import DiffusionModel, load_model, resolve_device
from .text2img import ConditionalDiffusionModel, TextEncoder

# pipeline class (model_index.json's _class_name) -> the kind of target it is
SUPPORTED = {"DDPMPipeline": "pixel", "DDIMPipeline": "pixel", "LDMPipeline": "latent",
             "StableDiffusionPipeline": "text-to-image"}
PIPELINE_PICKLE_FIX = "Re-save the pipeline with save_pretrained(folder, safe_serialization=True)."


@dataclass
class Target:
    """A model under audit: ``kind`` (pixel, latent, text-to-image), the ε-predictor, its first
    stage (``codec``, None for a pixel model) and where it came from."""

    kind: str
    model: DiffusionModel
    codec: LatentCodec | None = None
    folder: Path | None = None
    lora: Path | None = None
    pipeline: object | None = field(default=None, repr=False)

    @property
    def conditional(self) -> bool:
        return self.model.conditional

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """[C, H, W] of the images the target takes (through its VAE for a latent model)."""
        if self.codec is None:
            return self.model.sample_shape
        _, h, w = self.model.sample_shape
        factor = self.codec.downsampling
        return (self.codec.vae.config.in_channels, h * factor, w * factor)

    def encode(self, images: torch.Tensor, mode: str = "mean", seed: int = 0) -> torch.Tensor:
        """What the UNet diffuses: z_0 = s · μ(x) (``mode="sample"``: s · (μ + σ n), n seeded by the
        image) for a latent model, the images themselves for a pixel model."""
        if self.codec is None:
            return images
        shape = self.image_shape
        if images.ndim != 4 or tuple(images.shape[1:]) != shape:
            raise CheckpointError(f"Images of shape {tuple(images.shape[1:])} given, but the VAE encodes {shape} "
                                  f"to the UNet's latents {self.model.sample_shape}: resize them to {shape[1]}x"
                                  f"{shape[2]} with {shape[0]} channel(s).")
        return self.codec.encode(images, mode=mode, seed=seed)

    def with_unet(self, unet_folder: str | Path) -> Target:
        """This target with another UNet of the same architecture (a training snapshot saved by
        ``train_ddpm``): text encoder, VAE and schedule shared."""
        import copy

        from diffusers import UNet2DConditionModel, UNet2DModel

        cls = UNet2DConditionModel if self.conditional else UNet2DModel
        unet = cls.from_pretrained(unet_folder, use_safetensors=True, local_files_only=True, low_cpu_mem_usage=False)
        model = copy.copy(self.model)
        model.unet = unet.to(self.model.device).eval()
        model.queries = 0
        return Target(self.kind, model, self.codec, Path(unet_folder), self.lora, self.pipeline)

    def bind(self, captions=None, n: int | None = None, guidance: float = 1.0):
        """The model the attacks query: bound to ``captions`` (None: the empty prompt for each of
        ``n`` images) for a text-to-image target; the model itself otherwise."""
        if not self.conditional:
            return self.model
        if captions is None:
            if n is None:
                raise ValueError("Give the captions, or n (the number of images) for empty prompts.")
            captions = [""] * n
        return self.model.bind(captions, guidance)


@contextlib.contextmanager
def _quiet(critical: bool = False):
    """diffusers' and transformers' loading bars and notices off while a pipeline loads (a chapter
    or an audit shows its own progress); errors still raise. ``critical``: their logged errors off
    too, where we raise our own sentence for the same fault (a LoRA that does not fit: diffusers
    logs every mismatched tensor, 60 lines, before it raises)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    levels = (dlog.get_verbosity(), tlog.get_verbosity())
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    dlog.set_verbosity(dlog.CRITICAL if critical else dlog.ERROR)
    tlog.set_verbosity(tlog.CRITICAL if critical else tlog.ERROR)
    try:
        yield
    finally:
        dlog.enable_progress_bar()
        tlog.enable_progress_bar()
        dlog.set_verbosity(levels[0])
        tlog.set_verbosity(levels[1])


def _check_components(folder: Path, index: dict) -> None:
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        if not (folder / name).is_dir():
            raise CheckpointError(f"model_index.json names the component {name!r} ({spec[1]}) but {str(folder)!r} "
                                  f"has no {name}/ folder: copy the complete pipeline.")


def _load_lora(pipeline, lora: Path) -> None:
    if not lora.is_dir():
        what = ("is a file: name the adapter's folder (the one save_lora_weights wrote)" if lora.exists() else
                "does not exist")
        raise CheckpointError(f"LoRA folder {str(lora)!r} {what}.")
    refuse_pickles(lora, PIPELINE_PICKLE_FIX)
    files = sorted(lora.glob("*.safetensors"))
    if len(files) != 1:
        raise CheckpointError(f"LoRA folder {str(lora)!r} holds {len(files)} .safetensors files; one is needed "
                              "(pytorch_lora_weights.safetensors, as save_lora_weights writes it).")
    try:
        with _quiet(critical=True):  # "no LoRA keys for the text encoder": the usual case, not news
            pipeline.load_lora_weights(str(lora), weight_name=files[0].name, adapter_name="audit")
    except (ValueError, RuntimeError, KeyError, TypeError) as err:
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        first = next((line for line in lines if line.startswith("size mismatch")), lines[0] if lines else "")[:300]
        raise CheckpointError(f"The LoRA in {str(lora)!r} does not fit this pipeline's UNet ({first}).") from None
    if "audit" not in (pipeline.get_active_adapters() or []):
        raise CheckpointError(f"The LoRA in {str(lora)!r} holds no weight for this pipeline's UNet: is it an "
                              "adapter of another model?")


def load_pipeline(source: str | Path, lora: str | Path | None = None, device: str | torch.device = "auto",
                  batch_size: int = 256, dtype: str = "fp32") -> Target:
    """A ``Target`` from a local folder (see the module); ``lora`` a diffusers LoRA folder."""
    folder = Path(source)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise CheckpointError(f"Checkpoint folder {str(folder)!r} {what}.")
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        if lora is not None:
            raise CheckpointError("--lora needs a text-to-image pipeline folder (with model_index.json).")
        if (folder / "codec.json").is_file():  # our latent layout

            model, codec = load_ldm(folder, device=device, batch_size=batch_size)
            return Target("latent", model, codec, folder)
        return Target("pixel", load_model(folder, device=device, batch_size=batch_size, dtype=dtype), None, folder)
    index = read_json(index_file, "model_index.json")
    name = index.get("_class_name")
    if not isinstance(name, str) or name not in SUPPORTED:
        raise CheckpointError(f"{str(folder)!r} holds a {name!r}, which we do not audit; supported pipelines: "
                              f"{', '.join(SUPPORTED)}.")
    _check_components(folder, index)
    refuse_pickles(folder, PIPELINE_PICKLE_FIX)
    kind = SUPPORTED[name]
    if kind == "pixel":
        if lora is not None:
            raise CheckpointError(f"--lora applies to a text-to-image pipeline, not to a {name}.")
        return Target(kind, load_model(folder, device=device, batch_size=batch_size, dtype=dtype), None, folder)
    import diffusers
    from safetensors import SafetensorError

    where = resolve_device(device)
    kwargs = {"safety_checker": None, "requires_safety_checker": False} if kind == "text-to-image" else {}
    try:
        with _quiet():
            pipeline = getattr(diffusers, name).from_pretrained(folder, use_safetensors=True, local_files_only=True,
                                                                 low_cpu_mem_usage=False, **kwargs)
    except (OSError, ValueError, SafetensorError) as err:  # a component's weights unreadable (any of them)
        first = str(err).strip().splitlines()[0][:300]
        raise CheckpointError(f"diffusers cannot load {str(folder)!r} as a {name} ({first}).") from None
    if lora is not None:
        if kind != "text-to-image":
            raise CheckpointError(f"--lora applies to a text-to-image pipeline, not to a {name}.")
        _load_lora(pipeline, Path(lora))
    pipeline.to(where)
    # the attacks' noise schedule: the pipeline's β schedule as DDPM (a sampler's config carries it)
    scheduler = diffusers.DDPMScheduler.from_config(pipeline.scheduler.config)
    if kind == "latent":
        vae = pipeline.vqvae
        model = DiffusionModel(pipeline.unet, scheduler, device=where, batch_size=batch_size, dtype=dtype)
        model.input_range = None
    else:

        vae = pipeline.vae
        model = ConditionalDiffusionModel(pipeline.unet, scheduler, TextEncoder(pipeline), device=where,
                                          batch_size=batch_size, dtype=dtype)
    model.self_check()
    codec = LatentCodec(vae, getattr(vae.config, "scaling_factor", 1.0), device=where, batch_size=batch_size)
    return Target(kind, model, codec, folder, Path(lora) if lora is not None else None, pipeline)
