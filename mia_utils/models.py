"""The model every attack talks to: a diffusers UNet2DModel and its noise schedule.

``DiffusionModel.eps(x_t, t)`` is the one hook all attacks call (as PIA's ``EpsGetter``); it
batches, moves data to the model's device, and counts queries (one query = one image through
one forward pass), so the cost column of every table is measured, not claimed. It also runs
every forward at the model's precision (``PRECISIONS``): fp32 by default, everywhere.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

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


class DiffusionModel:
    """A UNet2DModel ε-predictor with its schedule, on a device, counting its queries.

    Attributes: ``unet``, ``scheduler`` (a diffusers DDPMScheduler), ``alpha_bar`` (float64
    tensor [T], ᾱ_t = ∏_{s<=t} (1 - β_s), on the CPU), ``device``, ``batch_size``, ``dtype``
    (the forward passes' precision, one of ``PRECISIONS``), ``queries`` (images passed through
    the UNet since the last ``reset_queries``).
    """

    def __init__(self, unet: UNet2DModel, scheduler: DDPMScheduler | None = None,
                 device: str | torch.device = "auto", batch_size: int = 256, dtype: str = "fp32"):
        self.device = resolve_device(device)
        self.dtype = check_precision(dtype, self.device)
        self.unet = unet.to(self.device).eval()
        self.scheduler = scheduler if scheduler is not None else default_scheduler()
        if getattr(self.scheduler.config, "prediction_type", "epsilon") != "epsilon":
            raise CheckpointError(
                f"The scheduler predicts {self.scheduler.config.prediction_type!r}; the attacks need an "
                "ε-prediction model (prediction_type='epsilon')."
            )
        self.alpha_bar = self.scheduler.alphas_cumprod.double().cpu()
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
        with torch.no_grad(), precision(self.dtype, self.device):
            out = self.forward(x, torch.tensor([0], device=self.device), self.blank_condition(1)).float()
        if tuple(out.shape) != tuple(x.shape):
            raise CheckpointError(f"The UNet maps images {tuple(x.shape[1:])} to {tuple(out.shape[1:])}: an "
                                  "ε-prediction model returns the input's shape (out_channels = in_channels).")
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
        """True for a text-conditional UNet (``UNet2DConditionModel``): ε̂ needs a condition."""
        return "encoder_hidden_states" in inspect.signature(self.unet.forward).parameters

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """The UNet's raw output for one batch on the model's device (no checks, no count): the
        one call of the UNet that the hook, the samplers and training share."""
        if condition is None:
            return self.unet(x, t).sample
        return self.unet(x, t, encoder_hidden_states=condition).sample

    def check_condition(self, condition: torch.Tensor | None, n: int) -> None:
        """A condition fits the model: none for an unconditional UNet, [n, L, D] for a conditional one."""
        if condition is None and self.conditional:
            raise ValueError("This model is text-conditional: query it through model.bind(captions) (the empty "
                             "prompt \"\" when there is none).")
        if condition is not None and not self.conditional:
            raise ValueError("This model takes no condition (an unconditional UNet2DModel).")
        if condition is not None and (condition.ndim != 3 or len(condition) != n):
            raise ValueError(f"condition must be [N, L, D] with N = {n} rows, one per image; got "
                             f"{tuple(condition.shape)}.")

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
                cb = None if condition is None else condition[i:i + bs].to(self.device, torch.float32)
                out.append(self.forward(xb, t[i:i + bs].to(self.device), cb).float().to(x_t.device))
                self.queries += len(xb)
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
            self.queries += xb.shape[0] * xb.shape[1]
        return torch.cat(out)

    # ------------------------------------------------------------------ saving
    def save(self, path: str | Path) -> Path:
        """Write a DDPMPipeline-style folder (``unet/`` + ``scheduler/``), safetensors weights."""
        path = Path(path)
        self.unet.save_pretrained(path / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(path / "scheduler")
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
