"""The model every attack talks to: a diffusers denoiser and its noise schedule.

``DiffusionModel.eps(x_t, t)`` is the one hook all attacks call (as PIA's ``EpsGetter``); it
batches, moves data to the model's device, and counts queries (one query = one image through
one forward pass), so the cost column of every table is measured, not claimed. It also runs
every forward at the model's precision (``PRECISIONS``): fp32 by default, everywhere.

Whatever the network predicts, the hook returns ε̂ in variance-preserving coordinates
x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, converted exactly (``DiffusionModel.predict_eps``):

    ε-prediction       ε̂ = output
    v-prediction       ε̂ = √ᾱ_t v̂ + √(1 − ᾱ_t) x_t      (v = √ᾱ_t ε − √(1 − ᾱ_t) x_0; SD 2.x)
    x_0-prediction     ε̂ = (x_t − √ᾱ_t x̂_0) / √(1 − ᾱ_t)
    learned variance   the first C output channels (the mean's; DiT, Improved DDPM)
    rectified flow     ε̂ = x_σ + (1 − σ) v̂ at x_σ = s(σ) x_t (``mia_utils.flow``; SD3)

so every attack runs on every family unchanged. The network is a UNet (``UNet2DModel``,
``UNet2DConditionModel``, SDXL's with its added embeddings) or a transformer (SD3's
``SD3Transformer2DModel``, ``DiTTransformer2DModel``); ``forward`` is the one place that knows
how each is called. A condition is a tensor with one row per image (text states [N, L, D],
class labels [N]) or a tuple of such tensors (SDXL: states, pooled embeddings, time ids;
SD3: states, pooled embeddings).
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

from . import flow
from .checks import positive_int
from .errors import CheckpointError
from .io import read_json, refuse_pickles

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


# The precisions a forward pass may run at. fp32 is exact IEEE float32 (TF32 switched off for
# matmuls and convolutions alike: PyTorch leaves cuDNN's convolutions on TF32 by default, so
# "fp32" on a GPU is not float32 unless told); tf32 lets the tensor cores round inputs to 10-bit
# mantissas; bf16 and fp16 run under torch.autocast (weights stay float32, ε̂ comes back float32).
# Only fp32 exists on the CPU.
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
# What a scheduler's ``prediction_type`` may say; each is converted to ε̂ exactly (see the module).
PREDICTIONS = ("epsilon", "v_prediction", "sample")
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")
# class-conditional transformers (DiT): class labels in, ε̂ and a learned variance out
CLASS_TRANSFORMERS = ("DiTTransformer2DModel", "Transformer2DModel")


def condition_slice(condition, i: int, j: int, device=None):
    """Rows i:j of a condition, on ``device`` (floating parts as float32, labels kept integer)."""
    if condition is None:
        return None
    if isinstance(condition, tuple):
        return tuple(condition_slice(c, i, j, device) for c in condition)
    c = condition[i:j]
    return c.to(device, torch.float32) if c.is_floating_point() else c.to(device)


def check_precision(dtype: str, device: torch.device) -> str:
    """``dtype`` if it is one of ``PRECISIONS`` and the device runs it (all but fp32 need CUDA)."""
    if dtype not in PRECISIONS:
        raise CheckpointError(f"dtype={dtype!r}: use one of {', '.join(PRECISIONS)}.")
    if dtype != "fp32" and device.type != "cuda":
        raise CheckpointError(f"dtype={dtype!r} runs on a CUDA GPU only; on {device.type} use fp32 (the default).")
    return dtype


@contextlib.contextmanager
def precision(dtype: str, device: torch.device):
    """Run the forward passes inside at ``dtype`` on ``device`` (see ``PRECISIONS``)."""
    if device.type != "cuda":
        yield
        return
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    matmul.fp32_precision = conv.fp32_precision = "tf32" if dtype == "tf32" else "ieee"
    try:
        if dtype in ("bf16", "fp16"):
            with torch.autocast("cuda", dtype=torch.bfloat16 if dtype == "bf16" else torch.float16):
                yield
        else:
            yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


def small_unet_config(sample_size: int = 8, channels: int = 1,
                      block_out_channels: tuple[int, ...] = (32, 64), layers_per_block: int = 1,
                      attention: bool = False) -> dict:
    """A UNet2DModel config for small images: one down/up block per width, optional attention."""
    n = len(block_out_channels)
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return {
        "sample_size": sample_size, "in_channels": channels, "out_channels": channels,
        "block_out_channels": list(block_out_channels), "layers_per_block": layers_per_block,
        "down_block_types": down, "up_block_types": up,
        "norm_num_groups": min(32, block_out_channels[0]),
    }


DEVICES = ("auto", "cpu", "cuda", "mps")


def check_device(device) -> str:
    """"auto", "cpu", "cuda", "cuda:N" or "mps" (or a torch.device); a one-line error otherwise."""
    if isinstance(device, torch.device):
        return device
    base, _, index = str(device).partition(":")
    if base not in DEVICES or (index and not (base == "cuda" and index.isdigit())):
        raise CheckpointError(f"--device {device!r}: use one of auto, cpu, cuda, cuda:N or mps.")
    return device


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when there is a GPU, else the CPU; ``"cuda"`` without one is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError('device="cuda" was asked but no CUDA GPU is visible: use device="cpu" or "auto".')
    return device


def default_scheduler(num_train_timesteps: int = 1000, clip_sample: bool = True) -> DDPMScheduler:
    """The DDPM schedule of Ho et al.: T = 1000, linear β from 1e-4 to 0.02, ε-prediction.

    ``clip_sample`` clips the samplers' x̂_0 to [-1, 1]: right for images, wrong for the
    unit-variance latents of a latent model (whose values routinely exceed 1).
    """
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_start=1e-4, beta_end=0.02,
                         beta_schedule="linear", prediction_type="epsilon", clip_sample=clip_sample)


# every query of every DiffusionModel of this process, those that carry a gradient apart: a
# chapter's kernel writes them to its metrics.json (``nbrun.save_metrics``), the count the
# audit's plan (``cli.costs``) is checked against
_PROCESS_QUERIES = {"forward": 0, "grad": 0}


def process_queries() -> dict[str, int]:
    """This process's queries so far, over every model: ``{"forward": n, "grad": m}`` (``grad``:
    queries whose gradient was taken, per-sample parameter gradients included)."""
    return dict(_PROCESS_QUERIES)


class DiffusionModel:
    """A denoiser seen as an ε-predictor with its schedule, on a device, counting its queries.

    Attributes: ``unet`` (the network: a UNet or a transformer), ``scheduler`` (a diffusers
    scheduler with the training schedule: DDPM, DDIM, PNDM, Euler …; for a flow model the VP
    DDPM scheduler equivalent to it, the flow's own in ``flow_scheduler``), ``alpha_bar``
    (float64 tensor [T], ᾱ_t = ∏_{s<=t} (1 - β_s), on the CPU), ``prediction_type`` (one of
    ``PREDICTIONS``, or "flow"), ``device``, ``batch_size``, ``dtype`` (the forward passes'
    precision, one of ``PRECISIONS``), ``queries`` (images passed through the network since the
    last ``reset_queries``).
    """

    def __init__(self, unet: UNet2DModel, scheduler: DDPMScheduler | None = None,
                 device: str | torch.device = "auto", batch_size: int = 256, dtype: str = "fp32"):
        self.device = resolve_device(device)
        self.dtype = check_precision(dtype, self.device)
        self.unet = unet.to(self.device).eval()
        scheduler = scheduler if scheduler is not None else default_scheduler()
        self.flow_scheduler, self.flow_sigma = None, None
        if type(scheduler).__name__ in FLOW_SCHEDULERS:
            # rectified flow: the VP schedule of its path, as a DDPM scheduler the samplers can step
            self.flow_scheduler, self.flow_sigma = scheduler, flow.sigmas(scheduler)
            self.alpha_bar = flow.alpha_bar(self.flow_sigma)
            scheduler = DDPMScheduler(num_train_timesteps=len(self.alpha_bar),
                                      trained_betas=flow.betas(self.alpha_bar).tolist(), clip_sample=False)
            self.prediction_type = "flow"
        else:
            if not hasattr(scheduler, "alphas_cumprod"):
                raise CheckpointError(f"The scheduler {type(scheduler).__name__} carries no training schedule "
                                      "(alphas_cumprod): save the pipeline with the scheduler it was trained with.")
            self.prediction_type = getattr(scheduler.config, "prediction_type", "epsilon")
            if self.prediction_type not in PREDICTIONS:
                raise CheckpointError(f"The scheduler predicts {self.prediction_type!r}; the attacks convert "
                                      f"{', '.join(PREDICTIONS)} (and rectified-flow velocities) to ε̂.")
            self.alpha_bar = scheduler.alphas_cumprod.double().cpu()
        self.scheduler = scheduler
        self.batch_size = batch_size
        self.queries = 0
        # the range clean inputs must lie in: [-1, 1] for a pixel model (its sampler clips to it),
        # None (unchecked) for a latent model, whose unit-variance latents exceed it
        self.input_range = (-1.0, 1.0) if getattr(self.scheduler.config, "clip_sample", False) else None

    # ------------------------------------------------------------------ facts
    @property
    def num_train_timesteps(self) -> int:
        return len(self.alpha_bar)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """[C, H, W] of the images the model takes."""
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (self.unet.config.in_channels, h, w)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    @property
    def learned_variance(self) -> bool:
        """True when the network outputs 2C channels, ε̂ then its variance: DiT's transformer (as
        ``DiTPipeline`` reads it), or a UNet whose scheduler says ``variance_type="learned*"``."""
        out = getattr(self.unet.config, "out_channels", None)
        if out != 2 * self.sample_shape[0]:
            return False
        return (type(self.unet).__name__ in CLASS_TRANSFORMERS
                or str(getattr(self.scheduler.config, "variance_type", "")).startswith("learned"))

    def _count(self, n: int, grad: bool) -> None:
        """Count n queries: on this model, and in the process's totals (``process_queries``)."""
        self.queries += n
        _PROCESS_QUERIES["grad" if grad else "forward"] += n

    def reset_queries(self) -> int:
        """Zero the query counter; return what it held."""
        n, self.queries = self.queries, 0
        return n

    def sigma(self, t: int) -> float:
        """σ_t = √(1 - ᾱ_t)."""
        return float((1 - self.alpha_bar[t]).sqrt())

    def self_check(self) -> None:
        """Weights all finite, and one ε̂ query on a blank image finite and of the input's shape.

        Catches, at load time, what would otherwise fail deep inside an attack: NaN weights, an
        ε̂ with other channels than the image (out_channels ≠ in_channels). The query is not counted.
        """
        bad = [name for name, p in self.unet.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise CheckpointError(f"{len(bad)} weight tensor(s) hold NaN or inf (e.g. {bad[0]}): the checkpoint is "
                                  "broken (a diverged training run?); use an earlier one.")
        x = torch.zeros((1, *self.sample_shape), device=self.device)
        blank = condition_slice(self.blank_condition(1), 0, 1, self.device)
        with torch.no_grad(), precision(self.dtype, self.device):
            out = self.forward(x, torch.tensor([0], device=self.device), blank).float()
        if tuple(out.shape) != tuple(x.shape) and not (self.learned_variance and out.shape[2:] == x.shape[2:]):
            raise CheckpointError(f"The network maps images {tuple(x.shape[1:])} to {tuple(out.shape[1:])}: a "
                                  "denoiser returns the input's shape (or twice its channels, a learned variance).")
        if not torch.isfinite(out).all():
            raise CheckpointError("One ε̂ query on a blank image returned NaN or inf: the checkpoint is broken.")

    def blank_condition(self, n: int) -> torch.Tensor | None:
        """The condition of n unconditioned queries: None here (a text model: the empty prompt's)."""
        return None

    def clean_images(self, images) -> torch.Tensor:
        """An attack's input, checked: a float tensor [N, C, H, W] (numpy arrays are converted), at
        least one image, all finite, of the model's shape and inside ``input_range`` ([-1, 1] for
        a pixel model, whose scheduler clips samples to it). Returned as float32 on its device."""
        import numpy as np

        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch tensor [N, C, H, W], not {type(images).__name__}.")
        if not images.is_floating_point():
            raise ValueError(f"images are {images.dtype}: scale 8-bit pixels to [-1, 1] first (x / 127.5 - 1), "
                             "or load them with mia_utils.load_image_folder.")
        if images.ndim != 4 or len(images) == 0:
            raise ValueError(f"images must be a non-empty [N, C, H, W] tensor; got shape {tuple(images.shape)}.")
        self.check_images(images)
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or inf: check how they were loaded or computed.")
        if self.input_range is not None:
            lo, hi = float(images.min()), float(images.max())
            if lo < self.input_range[0] - 1e-3 or hi > self.input_range[1] + 1e-3:
                raise ValueError(f"pixel values span [{lo:.3g}, {hi:.3g}] but the model takes [-1, 1]: scale them "
                                 "(0..255: x / 127.5 - 1; 0..1: 2x - 1).")
        return images.float()

    def check_t(self, t, name: str = "t") -> int:
        """A time step, checked: a whole number in [0, T − 1] (2.7 is an error, not 2)."""
        import numbers

        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            if isinstance(t, torch.Tensor) and t.ndim == 0 and not t.is_floating_point():
                t = int(t)
            else:
                raise ValueError(f"{name}={t!r}: a time step is a whole number in [0, {self.num_train_timesteps - 1}].")
        if not 0 <= int(t) < self.num_train_timesteps:
            raise ValueError(f"{name}={t} lies outside [0, {self.num_train_timesteps - 1}] (this model has "
                             f"T = {self.num_train_timesteps} steps).")
        return int(t)

    # ------------------------------------------------------------------ the hook
    def check_images(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.sample_shape:
            raise CheckpointError(
                f"Images of shape {tuple(x.shape[1:])} given but the model takes {self.sample_shape} "
                "([C, H, W]): load them with load_image_folder(path, size=..., channels=...)."
            )

    @property
    def conditional(self) -> bool:
        """True when ε̂ needs a condition: a text-conditional network (``encoder_hidden_states``)
        or a class-conditional one (DiT, a UNet2DModel with class embeddings)."""
        params = inspect.signature(self.unet.forward).parameters
        config = self.unet.config
        return ("encoder_hidden_states" in params
                or type(self.unet).__name__ in CLASS_TRANSFORMERS
                or getattr(config, "num_class_embeds", None) is not None)

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition=None) -> torch.Tensor:
        """The network's raw output for one batch on the model's device (no checks, no count, no
        conversion): the one call of the network that the hook and training share. ``t`` is the
        network's own timestep (for a flow model σ · T, see ``predict_eps``)."""
        net, name = self.unet, type(self.unet).__name__
        if name == "SD3Transformer2DModel":
            states, pooled = condition
            return net(hidden_states=x, timestep=t, encoder_hidden_states=states, pooled_projections=pooled).sample
        if (name in CLASS_TRANSFORMERS or name == "UNet2DModel") and condition is not None:
            return net(x, timestep=t, class_labels=condition).sample
        if condition is None:
            return net(x, t).sample
        if isinstance(condition, tuple):  # SDXL: text states, pooled text embedding, size / crop time ids
            states, pooled, time_ids = condition
            return net(x, t, encoder_hidden_states=states,
                       added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        return net(x, t, encoder_hidden_states=condition).sample

    def predict_eps(self, x: torch.Tensor, t: torch.Tensor, condition=None) -> torch.Tensor:
        """ε̂(x_t, t) in VP coordinates from one forward (float32): the network's prediction
        converted exactly (the module's table). ``t`` long [N] on the model's device."""
        if self.flow_sigma is not None:
            sigma = self.flow_sigma.to(x.device)[t].float().view(-1, 1, 1, 1)
            x_sigma = flow.scale(sigma) * x
            timestep = sigma.flatten() * self.flow_scheduler.config.num_train_timesteps
            v = self.forward(x_sigma, timestep, condition).float()
            return flow.eps_from_velocity(x_sigma, v, sigma)
        out = self.forward(x, t, condition).float()
        if self.learned_variance:  # the mean's channels come first
            out = out[:, :x.shape[1]]
        if self.prediction_type == "epsilon":
            return out
        ab = self.alpha_bar.to(x.device)[t].float().view(-1, 1, 1, 1)
        if self.prediction_type == "v_prediction":  # ε = √ᾱ v + √(1 − ᾱ) x_t
            return ab.sqrt() * out + (1 - ab).sqrt() * x
        return (x - ab.sqrt() * out) / (1 - ab).sqrt()  # "sample": x̂_0 predicted

    def check_condition(self, condition, n: int) -> None:
        """A condition fits the model: none for an unconditional network, n rows (each part of a
        tuple) for a conditional one, text states [n, L, D] or class labels [n]."""
        if condition is None and self.conditional:
            raise ValueError("This model is conditional: query it through model.bind(captions) (the empty "
                             "prompt \"\" when there is none).")
        if condition is not None and not self.conditional:
            raise ValueError("This model takes no condition (an unconditional UNet2DModel).")
        if condition is None:
            return
        parts = condition if isinstance(condition, tuple) else (condition,)
        if any(len(c) != n for c in parts) or (not isinstance(condition, tuple) and condition.is_floating_point()
                                               and condition.ndim != 3):
            shapes = ", ".join(str(tuple(c.shape)) for c in parts)
            raise ValueError(f"condition must hold N = {n} rows, one per image (text states [N, L, D]); got "
                             f"{shapes}.")

    def eps(self, x_t: torch.Tensor, t, batch_size: int | None = None,
            grad: bool = False, condition: torch.Tensor | None = None) -> torch.Tensor:
        """ε̂(x_t, t, c) for images [N, C, H, W]; ``t`` an int or an int tensor [N].

        ``condition`` (text-conditional models only): the text encoder's hidden states
        [N, L, D], row i conditioning image i (``bind`` supplies them from captions).
        Runs in batches of ``batch_size`` (default the model's) on the model's device and
        returns a float32 tensor on the device of ``x_t``. Counts N queries. With ``grad``
        the graph is kept (for gradient features); otherwise under ``torch.no_grad``.
        """
        self.check_images(x_t)
        n = len(x_t)
        self.check_condition(condition, n)
        t = torch.as_tensor(t, dtype=torch.long)
        t = t.expand(n) if t.ndim == 0 else t
        if len(t) != n:
            raise ValueError(f"t has {len(t)} entries for {n} images.")
        if int(t.min()) < 0 or int(t.max()) >= self.num_train_timesteps:
            raise ValueError(f"t must lie in [0, {self.num_train_timesteps - 1}].")
        bs = batch_size or self.batch_size
        out = []
        with torch.set_grad_enabled(grad), precision(self.dtype, self.device):
            for i in range(0, n, bs):
                xb = x_t[i:i + bs].to(self.device, torch.float32)
                cb = condition_slice(condition, i, i + bs, self.device)
                out.append(self.predict_eps(xb, t[i:i + bs].to(self.device), cb).to(x_t.device))
                self._count(len(xb), grad)
        return torch.cat(out) if out else x_t.new_zeros(x_t.shape)

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε (no query): the one forward process of the package.

        ``t`` an int or an int tensor [N] (on any device); the result is on ``x0``'s device,
        differentiable in ``x0`` and ``noise``.
        """
        t = torch.as_tensor(t, dtype=torch.long).cpu().expand(len(x0))
        ab = self.alpha_bar[t].float().view(-1, *[1] * (x0.ndim - 1)).to(x0.device)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise.to(x0.device)

    def per_sample_param_grad_sq(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                                 chunk: int = 32) -> torch.Tensor:
        """‖∇_θ ‖ε̂_θ(x_t, t) − ε‖²‖² per sample. Counts one query per sample."""
        return self.per_sample_layer_grad_norms(x_t[:, None], t[:, None], eps[:, None], chunk).pow(2).sum(1)

    def per_sample_layer_grad_norms(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                                    chunk: int = 32) -> torch.Tensor:
        """Per sample and per parameter tensor (layer), ‖∇_θl (1/K) Σ_k ‖ε̂_θ(x_t^k, t_k) − ε_k‖²‖:
        ``x_t`` [N, K, C, H, W], ``t`` [N, K], ``eps`` like ``x_t`` (K noisy versions of each
        sample, their loss averaged before the gradient). Returns [N, L] in the order of
        ``unet.named_parameters()``. Counts K queries per sample.

        torch.func's vmap over grad gives per-sample parameter gradients in one batched backward
        (no library computes per-sample gradient norms of an arbitrary module; a loop of batch-1
        backward passes is ~4x slower here).
        """
        from torch.func import functional_call, grad, vmap

        if x_t.ndim != 5:
            raise ValueError(f"x_t must be [N, K, C, H, W]; got shape {tuple(x_t.shape)}.")
        if self.conditional:
            raise ValueError("Per-sample gradients of a text-conditional UNet are not supported (GSA and the "
                             "∇θ trajectory features take an unconditional model).")
        if self.prediction_type != "epsilon":
            raise ValueError(f"Per-sample gradients are of the ε-loss on the raw output; this model predicts "
                             f"{self.prediction_type!r} (GSA and the ∇θ features take an ε-prediction UNet).")
        self.check_images(x_t[:, 0])
        unet = self.unet
        params = {k: v.detach() for k, v in unet.named_parameters()}

        def loss_one(p, x, tt, e):
            out = functional_call(unet, p, (x, tt)).sample
            return (out - e).pow(2).flatten(1).sum(1).mean()

        per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0, 0))
        out = []
        for i in range(0, len(x_t), chunk):
            xb = x_t[i:i + chunk].to(self.device, torch.float32)
            with warnings.catch_warnings(), precision(self.dtype, self.device):
                # "no batching rule for attention": a speed notice only
                warnings.filterwarnings("ignore", message="There is a performance drop")
                g = per_sample(params, xb, t[i:i + chunk].to(self.device), eps[i:i + chunk].to(self.device))
            out.append(torch.stack([v.flatten(1).norm(dim=1) for v in g.values()], dim=1).detach())
            self._count(xb.shape[0] * xb.shape[1], True)
        return torch.cat(out)

    # ------------------------------------------------------------------ saving
    def save(self, path: str | Path) -> Path:
        """Write a DDPMPipeline-style folder (``unet/`` + ``scheduler/``), safetensors weights."""
        path = Path(path)
        self.unet.save_pretrained(path / "unet", safe_serialization=True)
        (self.flow_scheduler or self.scheduler).save_pretrained(path / "scheduler")
        return path

    def __repr__(self) -> str:
        dtype = "" if self.dtype == "fp32" else f", dtype={self.dtype}"
        return (f"DiffusionModel({self.num_parameters / 1e6:.2f}M parameters, images {self.sample_shape}, "
                f"T={self.num_train_timesteps}, device={self.device}{dtype})")


# ---------------------------------------------------------------------- loading
def _find_unet_dir(root: Path) -> Path:
    if (root / "unet" / "config.json").is_file():
        return root / "unet"
    if (root / "config.json").is_file():
        return root
    raise CheckpointError(
        f"{str(root)!r} has no model config: expected a diffusers folder with config.json (a bare "
        "UNet2DModel saved by save_pretrained) or unet/config.json (a DDPMPipeline folder)."
    )


def _load_scheduler(root: Path, unet_dir: Path) -> DDPMScheduler:
    for cand in (root / "scheduler" / "scheduler_config.json", unet_dir / "scheduler_config.json"):
        if cand.is_file():
            return DDPMScheduler.from_config(read_json(cand, "scheduler config"))
    warnings.warn(
        f"No scheduler config in {str(root)!r}: using the DDPM default (T=1000, linear β 1e-4..0.02). "
        "Save the training scheduler with scheduler.save_pretrained(folder/'scheduler') to be explicit.",
        stacklevel=3,
    )
    return default_scheduler()


# How to convert a pickled UNet, for the one who trusts the file.
UNET_PICKLE_FIX = ("Only if you trust the file, convert it once in Python: "
                   "UNet2DModel.from_pretrained(folder, use_safetensors=False).save_pretrained(folder, "
                   "safe_serialization=True).")


def _load_unet(unet_dir: Path) -> UNet2DModel:
    """The UNet of ``unet_dir`` with every weight from its safetensors file, or a one-line error."""
    from safetensors import SafetensorError, safe_open

    weights = unet_dir / WEIGHTS_NAME
    if not weights.is_file():
        refuse_pickles(unet_dir, UNET_PICKLE_FIX, recursive=False)
        raise CheckpointError(f"{str(unet_dir)!r} has no {WEIGHTS_NAME}: save the UNet with save_pretrained.")
    config = read_json(unet_dir / "config.json", "UNet config")
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise CheckpointError(f"{str(unet_dir)!r} holds a {config['_class_name']}; a UNet2DModel is needed.")
    try:
        with safe_open(str(weights), framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{str(weights)!r} is not a readable safetensors file ({err}): it may be "
                              "truncated; save the weights again.") from None
    try:
        expected = {k: tuple(v.shape) for k, v in UNet2DModel.from_config(config).state_dict().items()}
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as err:
        raise CheckpointError(f"{str(unet_dir / 'config.json')!r} is not a valid UNet2DModel config ({err}).") from None
    missing = sorted(set(expected) - set(stored))
    wrong = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])
    if wrong:
        k = wrong[0]
        raise CheckpointError(f"{len(wrong)} weight tensor(s) in {str(weights)!r} do not fit the config, e.g. {k} "
                              f"is {list(stored[k])} where the config builds {list(expected[k])}: the config and "
                              "the weights come from different models.")
    if missing:
        raise CheckpointError(f"{str(weights)!r} lacks {len(missing)} weight tensor(s) the config needs (e.g. "
                              f"{missing[0]}): they would be random; save the complete model again.")
    return UNet2DModel.from_pretrained(unet_dir, use_safetensors=True, local_files_only=True,
                                       low_cpu_mem_usage=False)


def load_model(source: str | Path, device: str | torch.device = "auto",
               batch_size: int = 256, dtype: str = "fp32") -> DiffusionModel:
    """A DiffusionModel from a local diffusers folder (``specs.load_model`` also takes ``zoo:`` names).

    Folders: a DDPMPipeline layout (``unet/`` and ``scheduler/``) or a bare UNet2DModel folder
    (``config.json``, the weights, and ``scheduler_config.json`` beside them). Weights are read
    from safetensors only: pickled weights (``.bin``/``.pt``) can run code when loaded. Every
    weight the config needs must be there with its shape, and one ε̂ query must be finite and
    of the input's shape (``DiffusionModel.self_check``). ``dtype``: the forward passes' precision
    (``PRECISIONS``; all but fp32 need a CUDA device).
    """
    root = Path(source)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise CheckpointError(
            f"Checkpoint folder {str(root)!r} {what}: pass a local diffusers folder or a zoo: name "
            "(nothing is downloaded)."
        )
    positive_int("batch_size", batch_size, CheckpointError, " of images per forward pass")
    unet_dir = _find_unet_dir(root)
    unet = _load_unet(unet_dir)
    scheduler = _load_scheduler(root, unet_dir)
    model = DiffusionModel(unet, scheduler, device=device, batch_size=batch_size, dtype=dtype)
    model.self_check()
    return model
