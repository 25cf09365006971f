"""Any local diffusers pipeline folder as an audit target: pixel, latent, text- or class-to-image.

A folder with a ``model_index.json`` is loaded by diffusers' own ``from_pretrained`` of the
class it names (safetensors only, nothing downloaded; fp16 ``variant`` files when those are
what the folder holds, upcast to float32); a folder without one is one of our older layouts (a
DDPM folder, or ``unet/`` + ``vae/`` + ``codec.json`` for a latent model). LoRA adapters in
diffusers' format are attached with the pipeline's ``load_lora_weights``.

The families (``SUPPORTED``): DDPM / DDIM pixel pipelines; LDM; Stable Diffusion 1.x and 2.x
(ε- or v-prediction, any scheduler that carries the training schedule: PNDM, DDIM, Euler …;
the safety checker and feature extractor are not loaded); SDXL (two text encoders, pooled
embeddings, size time ids); Stable Diffusion 3 (rectified flow, ``mia_utils.flow``; its T5
encoder optional); DiT (class-conditional, the class label as the condition). Every attack of
``mia_utils.attacks`` applies to each through ``DiffusionModel.eps``, with two exceptions said
where they are refused: GSA and the ∇θ features need an unconditional ε-prediction UNet, and
the text attacks (CLiD, Wen et al.) a text condition. Flux is refused: its transformer takes
packed latents and T5 states that no offline tokenizer here can build.

    target = load_pipeline("sd-finetune/", lora="lora-dir/")
    z = target.encode(images)                  # latents (the images themselves for a pixel model)
    view = target.bind(captions)               # what the attacks take
    sima.score(view, z)
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import CheckpointError
from .io import read_json, refuse_pickles
from .latent import LatentCodec, load_ldm
from .models import FLOW_SCHEDULERS, DiffusionModel, load_model, resolve_device
from .text2img import ConditionalDiffusionModel, TextEncoder

# pipeline class (model_index.json's _class_name) -> the kind of target it is
SUPPORTED = {"DDPMPipeline": "pixel", "DDIMPipeline": "pixel", "LDMPipeline": "latent",
             "StableDiffusionPipeline": "text-to-image", "StableDiffusionXLPipeline": "text-to-image",
             "StableDiffusion3Pipeline": "text-to-image", "DiTPipeline": "class-to-image"}
# the pipelines whose load_lora_weights diffusers provides
LORA_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "StableDiffusion3Pipeline")
# components a published folder carries that no attack needs
IGNORED = {"safety_checker": None, "feature_extractor": None, "image_encoder": None}
PIPELINE_PICKLE_FIX = "Re-save the pipeline with save_pretrained(folder, safe_serialization=True)."


@dataclass
class Target:
    """A model under audit: ``kind`` (pixel, latent, text-to-image, class-to-image), the
    ε-predictor, its first stage (``codec``, None for a pixel model) and where it came from."""

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

        cls = type(self.model.unet)
        unet = cls.from_pretrained(unet_folder, use_safetensors=True, local_files_only=True, low_cpu_mem_usage=False)
        model = copy.copy(self.model)
        model.unet = unet.to(self.model.device).eval()
        model.queries = 0
        return Target(self.kind, model, self.codec, Path(unet_folder), self.lora, self.pipeline)

    def bind(self, captions=None, n: int | None = None, guidance: float = 1.0):
        """The model the attacks query: bound to ``captions`` (None: the empty prompt for each of
        ``n`` images) for a text- or class-to-image target; the model itself otherwise."""
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
    if name == "FluxPipeline":
        raise CheckpointError(f"{str(folder)!r} is a Flux pipeline: its transformer takes packed latents and T5 "
                              "states, which this version does not build; Stable Diffusion 3 folders (rectified "
                              "flow too) are supported.")
    if not isinstance(name, str) or name not in SUPPORTED:
        raise CheckpointError(f"{str(folder)!r} holds a {name!r}, which we do not audit; supported pipelines: "
                              f"{', '.join(SUPPORTED)}.")
    index = {k: v for k, v in index.items() if k not in IGNORED}
    _check_components(folder, index)
    for component in index:  # a published folder holds .bin beside .safetensors: only the latter is read
        sub = folder / component
        if not component.startswith("_") and sub.is_dir() and not any(sub.glob("*.safetensors")):
            refuse_pickles(sub, PIPELINE_PICKLE_FIX)
    kind = SUPPORTED[name]
    if kind == "pixel":
        if lora is not None:
            raise CheckpointError(f"--lora applies to a text-to-image pipeline, not to a {name}.")
        return Target(kind, load_model(folder, device=device, batch_size=batch_size, dtype=dtype), None, folder)
    import diffusers
    from safetensors import SafetensorError

    where = resolve_device(device)
    cls = getattr(diffusers, name)
    kwargs = {k: None for k in IGNORED if k in inspect.signature(cls.__init__).parameters}
    if "requires_safety_checker" in inspect.signature(cls.__init__).parameters:
        kwargs["requires_safety_checker"] = False
    # components saved as absent (SD3 without its T5 encoder: [null, null]) are passed as absent
    kwargs.update({k: None for k, v in index.items() if isinstance(v, list) and v and v[0] is None})
    try:
        with _quiet():
            pipeline = cls.from_pretrained(folder, use_safetensors=True, local_files_only=True,
                                           low_cpu_mem_usage=False, variant=variant(folder, index),
                                           dtype=torch.float32, **kwargs)
    except (OSError, ValueError, SafetensorError) as err:  # a component's weights unreadable (any of them)
        first = str(err).strip().splitlines()[0][:300]
        raise CheckpointError(f"diffusers cannot load {str(folder)!r} as a {name} ({first}).") from None
    if lora is not None:
        if name not in LORA_PIPELINES:
            raise CheckpointError(f"--lora applies to a pipeline diffusers loads LoRAs into ({', '.join(LORA_PIPELINES)}), "
                                  f"not to a {name}.")
        _load_lora(pipeline, Path(lora))
    pipeline.to(where)
    # the attacks' noise schedule: the pipeline's β schedule as DDPM (a sampler's config carries it,
    # with its prediction type); a flow scheduler as it is (DiffusionModel maps it to its VP schedule)
    flow = type(pipeline.scheduler).__name__ in FLOW_SCHEDULERS
    scheduler = pipeline.scheduler if flow else diffusers.DDPMScheduler.from_config(pipeline.scheduler.config)
    network = pipeline.transformer if hasattr(pipeline, "transformer") else pipeline.unet
    if kind == "latent":
        vae = pipeline.vqvae
        model = DiffusionModel(network, scheduler, device=where, batch_size=batch_size, dtype=dtype)
        model.input_range = None
    else:
        vae = pipeline.vae
        # one image at a time through the VAE, whatever the batch: the peak memory of a 512-1024 px
        # encoding stays that of one image (each image is encoded independently: the same latents)
        vae.enable_slicing()
        model = ConditionalDiffusionModel(network, scheduler, TextEncoder(pipeline), device=where,
                                          batch_size=batch_size, dtype=dtype)
    model.self_check()
    codec = LatentCodec(vae, getattr(vae.config, "scaling_factor", 1.0), device=where, batch_size=batch_size,
                        shift=getattr(vae.config, "shift_factor", 0.0))
    return Target(kind, model, codec, folder, Path(lora) if lora is not None else None, pipeline)


def variant(folder: Path, index: dict) -> str | None:
    """"fp16" when the denoiser's weights are there only as ``*.fp16.safetensors`` (a published
    folder's half-precision variant), else None (the plain files)."""
    for component in ("unet", "transformer"):
        if component in index and (folder / component).is_dir():
            files = [f.name for f in (folder / component).glob("*.safetensors")]
            plain = [f for f in files if f.count(".") == 1]
            if not plain and any(f.endswith(".fp16.safetensors") for f in files):
                return "fp16"
    return None
