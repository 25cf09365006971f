"""The β-VAE first stage (diffusers ``AutoencoderKL``): training, encoding, decoding, sampling.

Objective per image (Higgins et al. 2017), with a unit-variance Gaussian decoder written as a
sum of squares over pixels in [-1, 1]:

    L(x) = ‖x − D(z)‖² + β · KL(q(z|x) ‖ N(0, I)),   z ~ q(z|x) = N(μ(x), diag σ²(x)).

β = 1 is the plain VAE (the ELBO up to constants); a small β barely constrains the latent
(an autoencoder), a large β pulls every posterior towards the prior (a tight bottleneck).

The same model serves twice: as a **non-diffusion generator** (decode z ~ N(0, I): chapter 04's
model attribution) and as the **first stage of a latent diffusion model** (chapter 05), whose
latents are scaled to unit variance by ``LatentCodec.scale``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from .errors import CheckpointError
from .models import load_model, resolve_device
from .noise import draw, generators


def vae_config(sample_size: int = 8, channels: int = 1, latent_channels: int = 2,
               block_out_channels: tuple[int, ...] = (32, 64)) -> dict:
    """An AutoencoderKL config: one down/up block per width (each but the last halves the side)."""
    n = len(block_out_channels)
    return {"in_channels": channels, "out_channels": channels, "latent_channels": latent_channels,
            "down_block_types": ["DownEncoderBlock2D"] * n, "up_block_types": ["UpDecoderBlock2D"] * n,
            "block_out_channels": list(block_out_channels), "layers_per_block": 1,
            "norm_num_groups": min(32, block_out_channels[0]), "sample_size": sample_size}


@dataclass(frozen=True)
class VAETrainConfig:
    """How a β-VAE is trained: a step budget at a batch size, Adam, a seed."""

    beta: float = 1.0
    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    log_every: int = 25

    def to_dict(self) -> dict:
        return asdict(self)


def kl_per_image(posterior) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²), summed over latent dimensions."""
    return 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).flatten(1).sum(1)


def train_vae(vae: AutoencoderKL, images: torch.Tensor, config: VAETrainConfig = VAETrainConfig(),
              progress: bool = True, device: str | torch.device = "cpu") -> list[dict]:
    """Train ``vae`` in place on images [N, C, H, W] in [-1, 1]; returns the log
    (step, loss, reconstruction, KL per image, seconds)."""
    gen = torch.Generator().manual_seed(config.seed)
    vae.to(device).train()
    data = images.float().to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=config.lr)
    log, run, t0 = [], [], time.perf_counter()
    bar = tqdm(range(1, config.steps + 1), desc=f"β-VAE β={config.beta:g}", disable=not progress, mininterval=2)
    for step in bar:
        x = data[torch.randint(len(data), (config.batch_size,), generator=gen).to(device)]
        post = vae.encode(x).latent_dist
        # the reparameterised sample z = μ + σ·n, n from our seeded generator
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(device)
        rec = (vae.decode(z).sample - x).pow(2).flatten(1).sum(1)
        kl = kl_per_image(post)
        loss = (rec + config.beta * kl).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.append((loss.item(), rec.mean().item(), kl.mean().item()))
        if step % config.log_every == 0 or step == config.steps:
            m = torch.tensor(run).mean(0).tolist()
            log.append({"step": step, "loss": m[0], "reconstruction": m[1], "kl": m[2],
                        "seconds": round(time.perf_counter() - t0, 2)})
            run = []
            bar.set_postfix(rec=f"{m[1]:.3f}", kl=f"{m[2]:.2f}")
    vae.eval()
    return log


class LatentCodec:
    """A trained β-VAE as a codec: ``encode`` (posterior mean or a seeded sample, scaled),
    ``decode``, and ``sample`` from the prior. Counts encoder and decoder passes (images) in
    ``encoder_queries`` / ``decoder_queries``, separately from the diffusion model's queries.

    ``scale`` (1 / the standard deviation of the training latents' posterior means) makes the
    latents unit-variance, as Rombach et al.'s scale factor does for Stable Diffusion; ``shift``
    is subtracted first (SD3's and Flux's ``shift_factor``): z = s · (μ(x) − shift).
    """

    def __init__(self, vae: AutoencoderKL, scale: float = 1.0, device: str | torch.device = "cpu",
                 batch_size: int = 256, shift: float = 0.0):
        self.vae = vae.to(device).eval()
        self.scale = float(scale)
        self.shift = float(shift or 0.0)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.encoder_queries = 0
        self.decoder_queries = 0

    @property
    def downsampling(self) -> int:
        """How many pixels a latent spans per side: each encoder block but the last halves the side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        c = self.vae.config
        side = c.sample_size // self.downsampling
        return (c.latent_channels, side, side)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, mode: str = "mean", seed: int = 0) -> torch.Tensor:
        """Scaled latents [N, c, h, w] on the CPU: ``mode="mean"`` the posterior mean μ(x)
        (deterministic), ``"sample"`` μ + σ·n with n drawn for each image from (``seed``, the
        image's content): the same latent whatever the batch, the order or the device."""
        if mode not in ("mean", "sample"):
            raise ValueError(f"mode must be 'mean' or 'sample', not {mode!r}.")
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = images[i:i + self.batch_size].float()
            encoded = self.vae.encode(batch.to(self.device))
            if not hasattr(encoded, "latent_dist"):  # a VQModel: its latents before quantisation
                if mode == "sample":
                    raise ValueError("A VQ first stage has no posterior to sample from: use mode='mean'.")
                out.append((encoded.latents.cpu() - self.shift) * self.scale)
                self.encoder_queries += len(batch)
                continue
            post = encoded.latent_dist
            z = post.mean
            if mode == "sample":
                n = draw(generators(batch, seed, salt="latent"), tuple(z.shape[1:]))
                z = z + post.std * n.to(self.device)
            out.append((z.cpu() - self.shift) * self.scale)
            self.encoder_queries += len(z)
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] (clamped) from scaled latents."""
        out = []
        for i in range(0, len(latents), self.batch_size):
            z = latents[i:i + self.batch_size].float().to(self.device) / self.scale + self.shift
            out.append(self.vae.decode(z).sample.clamp(-1, 1).cpu())
            self.decoder_queries += len(z)
        return torch.cat(out)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images from the VAE's prior: decode z ~ N(0, I) (the non-diffusion generator)."""
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        z = torch.randn((n, *self.latent_shape), generator=gen)
        return self.decode(z * self.scale)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        self.vae.save_pretrained(path / "vae", safe_serialization=True)
        (path / "codec.json").write_text(json.dumps({"scale": self.scale}))
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> LatentCodec:
        path = Path(path)
        vae = AutoencoderKL.from_pretrained(path / "vae", use_safetensors=True, local_files_only=True,
                                            low_cpu_mem_usage=False)
        return cls(vae, json.loads((path / "codec.json").read_text())["scale"], device=device)


def latent_scale(vae: AutoencoderKL, images: torch.Tensor) -> float:
    """1 / std of the posterior means of ``images`` (the unit-variance scale factor)."""
    codec = LatentCodec(vae)
    return float(1.0 / codec.encode(images).std())


def load_ldm(source: str | Path, device: str | torch.device = "auto", batch_size: int = 256):
    """A latent diffusion model as (the latent ``DiffusionModel``, its ``LatentCodec``).

    ``source``: a folder holding the latent UNet (``unet/``, ``scheduler/``) and its first
    stage (``vae/`` + ``codec.json``, as ``LatentCodec.save`` writes them); ``specs.load_ldm``
    also takes ``zoo:`` names.
    """

    folder = Path(source)
    if not (folder / "codec.json").is_file():
        raise CheckpointError(f"{str(folder)!r} has no first stage: a latent model folder needs vae/ and "
                              "codec.json beside unet/ (write them with LatentCodec.save(folder)).")
    model = load_model(folder, device=device, batch_size=batch_size)
    model.input_range = None  # its inputs are latents, not pixels
    codec = LatentCodec.load(folder, device=resolve_device(device))
    if tuple(codec.latent_shape) != tuple(model.sample_shape):
        raise CheckpointError(f"The VAE's latents are {codec.latent_shape} but the UNet takes {model.sample_shape}.")
    return model, codec
