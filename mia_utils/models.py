"""The model every attack talks to: a diffusers UNet2DModel and its noise schedule.

``DiffusionModel.eps(x_t, t)`` is the one hook all attacks call (as PIA's ``EpsGetter``); it
batches, moves data to the model's device, and counts queries (one query = one image through
one forward pass), so the cost column of every table is measured, not claimed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
PICKLE_WEIGHTS = ("diffusion_pytorch_model.bin", "pytorch_model.bin", "model.pt", "model.pth", "model.ckpt")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the fix."""


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
    tensor [T], ᾱ_t = ∏_{s<=t} (1 - β_s), on the CPU), ``device``, ``batch_size``,
    ``queries`` (images passed through the UNet since the last ``reset_queries``).
    """

    def __init__(self, unet: UNet2DModel, scheduler: DDPMScheduler | None = None,
                 device: str | torch.device = "auto", batch_size: int = 256):
        self.device = resolve_device(device)
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

    # ------------------------------------------------------------------ the hook
    def check_images(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.sample_shape:
            raise CheckpointError(
                f"Images of shape {tuple(x.shape[1:])} given but the model takes {self.sample_shape} "
                "([C, H, W]): load them with load_image_folder(path, size=..., channels=...)."
            )

    def eps(self, x_t: torch.Tensor, t, batch_size: int | None = None,
            grad: bool = False) -> torch.Tensor:
        """ε̂(x_t, t) for images [N, C, H, W]; ``t`` an int or an int tensor [N].

        Runs in batches of ``batch_size`` (default the model's) on the model's device and
        returns a float32 tensor on the device of ``x_t``. Counts N queries. With ``grad``
        the graph is kept (for gradient features); otherwise under ``torch.no_grad``.
        """
        self.check_images(x_t)
        n = len(x_t)
        t = torch.as_tensor(t, dtype=torch.long)
        t = t.expand(n) if t.ndim == 0 else t
        if len(t) != n:
            raise ValueError(f"t has {len(t)} entries for {n} images.")
        if int(t.min()) < 0 or int(t.max()) >= self.num_train_timesteps:
            raise ValueError(f"t must lie in [0, {self.num_train_timesteps - 1}].")
        bs = batch_size or self.batch_size
        out = []
        with torch.set_grad_enabled(grad):
            for i in range(0, n, bs):
                xb = x_t[i:i + bs].to(self.device, torch.float32)
                out.append(self.unet(xb, t[i:i + bs].to(self.device)).sample.to(x_t.device))
                self.queries += len(xb)
        return torch.cat(out) if out else x_t.new_zeros(x_t.shape)

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε (no query)."""
        t = torch.as_tensor(t, dtype=torch.long).expand(len(x0))
        ab = self.alpha_bar[t].float().view(-1, 1, 1, 1).to(x0.device)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    # ------------------------------------------------------------------ saving
    def save(self, path: str | Path) -> Path:
        """Write a DDPMPipeline-style folder (``unet/`` + ``scheduler/``), safetensors weights."""
        path = Path(path)
        self.unet.save_pretrained(path / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(path / "scheduler")
        return path

    def __repr__(self) -> str:
        return (f"DiffusionModel({self.num_parameters / 1e6:.2f}M parameters, images {self.sample_shape}, "
                f"T={self.num_train_timesteps}, device={self.device})")


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
            config = json.loads(cand.read_text())
            return DDPMScheduler.from_config(config)
    warnings.warn(
        f"No scheduler config in {str(root)!r}: using the DDPM default (T=1000, linear β 1e-4..0.02). "
        "Save the training scheduler with scheduler.save_pretrained(folder/'scheduler') to be explicit.",
        stacklevel=3,
    )
    return default_scheduler()


def load_model(source: str | Path, device: str | torch.device = "auto",
               batch_size: int = 256) -> DiffusionModel:
    """A DiffusionModel from a ``zoo:NAME`` or a local diffusers folder.

    Folders: a DDPMPipeline layout (``unet/`` and ``scheduler/``) or a bare UNet2DModel folder
    (``config.json``, the weights, and ``scheduler_config.json`` beside them). Weights are read
    from safetensors only: pickled weights (``.bin``/``.pt``) can run code when loaded.
    """
    if isinstance(source, str) and source.startswith("zoo:"):
        from . import zoo

        return load_model(zoo.path_of(source[4:]), device=device, batch_size=batch_size)
    root = Path(source)
    if not root.is_dir():
        raise CheckpointError(
            f"Checkpoint folder {str(root)!r} does not exist: pass a local diffusers folder or a zoo: name "
            "(nothing is downloaded)."
        )
    unet_dir = _find_unet_dir(root)
    if not (unet_dir / WEIGHTS_NAME).is_file():
        pickled = [p.name for p in unet_dir.iterdir() if p.name in PICKLE_WEIGHTS or p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        if pickled:
            raise CheckpointError(
                f"{str(unet_dir)!r} holds weights only as a pickle ({', '.join(pickled)}), which we do not load "
                "(unpickling runs code): convert once with UNet2DModel.from_pretrained(folder)"
                ".save_pretrained(folder, safe_serialization=True)."
            )
        raise CheckpointError(f"{str(unet_dir)!r} has no {WEIGHTS_NAME}: save the UNet with save_pretrained.")
    config = json.loads((unet_dir / "config.json").read_text())
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise CheckpointError(f"{str(unet_dir)!r} holds a {config['_class_name']}; a UNet2DModel is needed.")
    unet = UNet2DModel.from_pretrained(unet_dir, use_safetensors=True, local_files_only=True,
                                      low_cpu_mem_usage=False)
    scheduler = _load_scheduler(root, unet_dir)
    return DiffusionModel(unet, scheduler, device=device, batch_size=batch_size)
