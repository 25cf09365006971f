"""Real-size models, random weights, nothing downloaded: what an audit costs before it starts.

Builds Ho et al.'s CIFAR-10 DDPM (35.7M parameters, 3x32x32) as a ``DDPMPipeline``-style
folder from its published configuration and, with ``--sd``, a Stable Diffusion 1.5-sized
``StableDiffusionPipeline`` (UNet 859.5M, CLIP ViT-L/14 text encoder 123M, VAE 83.7M) from
theirs; then prints, per attack, ``mia-book score``'s plan (estimated seconds, measured before
any image is scored) against the measured seconds, with load seconds, peak RSS, seconds per
forward pass and, for SD, the VAE's seconds per image. On a GPU (``--device cuda``) each
attack's images/s at every ``--dtypes`` against the bare forward at that precision.

    python benchmarks/bench_families.py --images 32            # CPU, the 35.7M DDPM
    python benchmarks/bench_families.py --sd --images 4        # + SD 1.5-sized (minutes, ~5 GB)
    python benchmarks/bench_families.py --device cuda --images 1024 --dtypes fp32,bf16,fp16
    python benchmarks/bench_families.py --audit 6 --images 16  # audit --budget 6 on chapters 02, 08

Figures, not pass/fail; not in ``make bench`` (the SD part alone takes many CPU minutes).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from mia_utils import cli, scoring
from mia_utils.images import save_image_folder

CIFAR10_DDPM = {
    "sample_size": 32, "in_channels": 3, "out_channels": 3, "layers_per_block": 2,
    "block_out_channels": (128, 256, 256, 256),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "dropout": 0.1, "attention_head_dim": None, "norm_eps": 1e-6, "flip_sin_to_cos": False, "freq_shift": 1,
}
SD15_UNET = {"sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
             "block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "attention_head_dim": 8,
             "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
             "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3}
SD15_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 512, "layers_per_block": 2,
            "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4, "scaling_factor": 0.18215}
CLIP_L = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
          "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768}
ATTACKS = {"sima": {"t": 50}, "loss": {"t": 50, "n_noise": 4}, "pia": {"t": 100}}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cifar_folder(root: Path) -> Path:
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    UNet2DModel(**CIFAR10_DDPM).save_pretrained(root / "cifar" / "unet")
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(root / "cifar" / "scheduler")
    return root / "cifar"


def sd_folder(root: Path) -> Path:
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from mia_utils.text2img import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer("a photo of an image".split(), root / "tok", max_length=77)
    config = CLIPTextConfig(**{**CLIP_L, "vocab_size": max(len(tokenizer), 100),
                               "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id})
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**SD15_VAE), text_encoder=CLIPTextModel(config).eval(), tokenizer=tokenizer,
        unet=UNet2DConditionModel(**SD15_UNET),
        scheduler=PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                skip_prk_steps=True, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root / "sd15", safe_serialization=True)
    return root / "sd15"


def image_folders(root: Path, n: int, side: int) -> tuple[Path, Path]:
    gen = torch.Generator().manual_seed(1)
    folders = []
    for name in ("members", "nonmembers"):
        images = torch.rand((n, 3, side, side), generator=gen) * 2 - 1
        folders.append(save_image_folder(images, root / f"{name}{side}"))
    return tuple(folders)


def bench(folder: Path, side: int, args, root: Path, label: str) -> None:
    members, nonmembers = image_folders(root, args.images, side)
    for dtype in args.dtypes.split(","):
        for name, params in ATTACKS.items():
            lines = []
            t0 = time.perf_counter()
            out = scoring.score(str(folder), name, root / f"{label}-{name}-{dtype}.parquet", params,
                                members=str(members), nonmembers=str(nonmembers), device=args.device, dtype=dtype,
                                batch_size=args.batch_size, n_boot=50, overwrite=True, report=lines.append)
            total = time.perf_counter() - t0
            info = json.loads(Path(str(out) + ".json").read_text())
            plan = info["plan"]
            est = plan["estimated_minutes"] * 60
            per_fwd = plan["seconds_per_forward"]
            print(f"{label:10s} {dtype:5s} {name:5s}  {2 * args.images} images, {plan['queries_per_image']} q/img: "
                  f"plan {est:7.1f} s, scored {info['seconds']:7.1f} s (ratio {info['seconds'] / est:4.2f}); "
                  f"{info['images_per_second']:8.1f} img/s vs bare forward {1 / per_fwd:8.1f} q/s; "
                  f"load+checks {total - info['seconds']:6.1f} s; peak RSS {peak_rss_mb():7.0f} MiB"
                  + (f"; VAE {plan['vae_seconds_per_image']:.2f} s/img" if plan["vae_seconds_per_image"] else ""),
                  flush=True)


def bench_audit(folder: Path, side: int, args, root: Path, label: str) -> None:
    """``mia-book audit --budget`` on the folder: each chapter's plan (after the budget) against its measured seconds."""
    members, nonmembers = image_folders(root, args.images, side)
    out = cli.audit.audit(str(folder), str(members), str(nonmembers), out=root / f"audit-{label}",
                          chapters=args.chapters.split(","), device=args.device, batch_size=args.batch_size,
                          parameters={"n_boot": 50}, overwrite=True, budget=args.audit)
    summary = json.loads((out / "summary.json").read_text())
    for stem, plan in summary["plan"].items():
        est, took = plan["estimated_minutes"] * 60, summary["seconds"][stem]
        changed = ", ".join(f"{k} {v['from']} -> {v['to']}" for k, v in plan["changed"].items()) or "nothing"
        print(f"{label:10s} audit {stem}: plan {est:7.1f} s, measured {took:7.1f} s (ratio {took / est:4.2f}); "
              f"{plan['forward']:,} queries planned, {plan['measured']['forward']:,} counted; --budget "
              f"{args.audit:g} changed {changed}; peak RSS {peak_rss_mb():7.0f} MiB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=32, help="images per side (members, non-members)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", default="fp32")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--sd", action="store_true", help="also the SD 1.5-sized pipeline (CPU: many minutes)")
    ap.add_argument("--audit", type=float, default=None, metavar="MINUTES",
                    help="instead: mia-book audit --chapters CHAPTERS --budget MINUTES on the 35.7M folder")
    ap.add_argument("--chapters", default="02,08", help="the chapters of --audit")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        folder = cifar_folder(root)
        print(f"CIFAR-10 DDPM folder written in {time.perf_counter() - t0:.1f} s", flush=True)
        if args.audit is not None:
            bench_audit(folder, 32, args, root, "ddpm35.7M")
            return
        bench(folder, 32, args, root, "ddpm35.7M")
        if args.sd:
            t0 = time.perf_counter()
            folder = sd_folder(root)
            print(f"SD 1.5-sized folder written in {time.perf_counter() - t0:.1f} s", flush=True)
            bench(folder, 512, args, root, "sd1.5")


if __name__ == "__main__":
    main()
