"""Benchmark: ``mia-book score`` at 1 and 2 processes, and each precision on a GPU (figures only).

    python benchmarks/bench_score.py [--checkpoint zoo:digits-ddpm] [--n 4096] [--attacks sima,loss,pia,secmi]

Processes (any machine): the victim's 512 member and non-member images plus unlabelled copies
up to ``--n`` images are scored by the command itself, with 1 and with 2 processes (accelerate,
one intra-op thread each so that a process has the same cores in both), and the scoring loop's
images per second are compared: scaling efficiency = (2-process rate) / (2 × 1-process rate).
Start-up (imports, loading, the launcher) is printed apart.

Precisions (with a CUDA GPU): on the victim and on a CIFAR-10-sized UNet (Ho et al.'s 35.7M
parameters, 3×32×32, random weights), a bare forward and each attack at fp32, tf32, bf16 and
fp16 (images per second, and the attack's rate per query against the bare forward's at the
same precision); on the victim also what the precision changes: Spearman correlation and the
largest relative change of the scores against fp32, and the evaluation AUC with its interval.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import mia_utils as mu
from mia_utils.models import PRECISIONS, DiffusionModel, precision

CIFAR_UNET = {"sample_size": 32, "in_channels": 3, "out_channels": 3, "block_out_channels": (128, 256, 256, 256),
              "layers_per_block": 2, "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
              "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")}
HYPER = {"sima": {"t": 50}, "loss": {"t": 50}, "pia": {"t": 200}, "secmi": {"t_sec": 100, "k": 10}}


def export(checkpoint: str, n: int, root: Path) -> dict:
    """The victim's members and non-members as folders, and unlabelled copies up to n images in all."""
    sets = mu.specs.load_membership_sets(f"{checkpoint}/members", f"{checkpoint}/nonmembers")
    members, nonmembers = sets.members(), sets.nonmembers()
    mu.images.save_image_folder(members, root / "members")
    mu.images.save_image_folder(nonmembers, root / "nonmembers")
    both = torch.cat([members, nonmembers])
    extra = max(0, n - len(both))
    mu.images.save_image_folder(both.repeat(extra // len(both) + 1, 1, 1, 1)[:extra], root / "unlabelled")
    return {"members": root / "members", "nonmembers": root / "nonmembers", "images": root / "unlabelled"}


def run_command(checkpoint: str, attack: str, folders: dict, out: Path, processes: int, batch_size: int) -> dict:
    cmd = [sys.executable, "-m", "mia_utils", "score", "--checkpoint", checkpoint, "--attack", attack,
           "--members", str(folders["members"]), "--nonmembers", str(folders["nonmembers"]), "--images",
           str(folders["images"]), "--out", str(out), "--device", "cpu", "--batch-size", str(batch_size),
           "--shard-size", "256", "--num-processes", str(processes), "--overwrite"]
    for k, v in HYPER.get(attack, {}).items():
        cmd += ["-p", k, json.dumps(v)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    info = json.loads(Path(str(out) + ".json").read_text())
    return {"wall": wall, "seconds": info["seconds"], "ips": info["images_per_second"],
            "queries": info["queries_per_image"], "auc": info["calibration"]["held_out"]["auc"]}


def processes_table(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folders = export(args.checkpoint, args.n, Path(tmp))
        print(f"mia-book score on {args.checkpoint}, {args.n} images, batch {args.batch_size}, CPU, one thread per "
              f"process ({os.cpu_count()} cores)")
        print(f"{'attack':8s} {'q/img':>6s} {'1 proc img/s':>13s} {'2 proc img/s':>13s} {'efficiency':>11s} "
              f"{'start-up s (1 / 2)':>19s} {'held-out AUC':>13s}")
        for attack in args.attacks.split(","):
            r = {p: run_command(args.checkpoint, attack, folders, Path(tmp) / f"{attack}{p}.parquet", p,
                                args.batch_size) for p in (1, 2)}
            eff = r[2]["ips"] / (2 * r[1]["ips"])
            print(f"{attack:8s} {r[1]['queries']:6.0f} {r[1]['ips']:13.0f} {r[2]['ips']:13.0f} {eff:11.2f} "
                  f"{r[1]['wall'] - r[1]['seconds']:9.1f} / {r[2]['wall'] - r[2]['seconds']:.1f} "
                  f"{r[1]['auc']:13.3f}")


def rate(fn, n: int, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        runs.append(time.perf_counter() - t0)
    return n / statistics.median(runs)


def precision_table(args) -> None:
    from diffusers import UNet2DModel

    device = torch.device("cuda")
    victim = mu.load_model(args.checkpoint, device=device, batch_size=args.batch_size)
    torch.manual_seed(0)
    cifar = DiffusionModel(UNet2DModel(**CIFAR_UNET), device=device, batch_size=args.batch_size)
    sets = mu.specs.load_membership_sets(f"{args.checkpoint}/members", f"{args.checkpoint}/nonmembers")
    reference = {}
    for label, model in (("victim", victim), ("CIFAR-10 UNet 35.7M", cifar)):
        n = args.gpu_n
        x = (sets.members().repeat(n // 256 + 1, 1, 1, 1)[:n] if model is victim
             else torch.rand(n, *model.sample_shape) * 2 - 1).to(device)
        print(f"\n{label}: {model}; {n} images on the GPU, batch {args.batch_size}")
        print(f"{'dtype':6s} {'bare img/s':>11s} " + " ".join(f"{a + ' img/s (×)':>18s}" for a in HYPER))
        for dtype in PRECISIONS:
            model.dtype = dtype

            def bare(model=model, x=x, dtype=dtype):
                with torch.no_grad(), precision(dtype, device):
                    for i in range(0, len(x), args.batch_size):
                        model.unet(x[i:i + args.batch_size], torch.full((len(x[i:i + args.batch_size]),), 50,
                                                                         device=device)).sample.float()

            b = rate(bare, n, args.repeats, device)
            cells = []
            for attack, hyper in HYPER.items():
                q = mu.attacks.get(attack).queries_per_image(**hyper)
                r = rate(lambda a=attack, h=hyper, m=model, xx=x: mu.attacks.get(a)(m, xx, **h), n, args.repeats, device)
                cells.append(f"{r:9.0f} ({r * q / b:4.2f})")
            print(f"{dtype:6s} {b:11.0f} " + " ".join(f"{c:>18s}" for c in cells))
            if model is victim:
                s = {p: mu.attacks.sima.score(model, x_p.to(device), t=50) for p, x_p in
                     (("m", sets.members_eval), ("n", sets.nonmembers_eval))}
                reference.setdefault("fp32", s)
                ref = reference["fp32"]
                a, r = np.r_[s["m"], s["n"]], np.r_[ref["m"], ref["n"]]
                from scipy.stats import spearmanr

                row = mu.metrics.evaluate(s["m"], s["n"], n_boot=1000)
                print(f"       SimA vs fp32: Spearman {spearmanr(a, r).statistic:.5f}, largest relative change "
                      f"{np.max(np.abs(a - r) / np.abs(r)):.2%}; AUC {mu.metrics.format_ci(row, 'auc')}")
        model.dtype = "fp32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="zoo:digits-ddpm")
    parser.add_argument("--n", type=int, default=4096, help="images scored by the command (CPU)")
    parser.add_argument("--gpu-n", type=int, default=8192, help="images per precision run (GPU)")
    parser.add_argument("--attacks", default="sima,loss,pia,secmi")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-processes", action="store_true", help="only the GPU precision table")
    args = parser.parse_args()
    if not args.skip_processes:
        processes_table(args)
    if torch.cuda.is_available():
        precision_table(args)
    else:
        print("\nNo CUDA GPU: the precision table (fp32 / tf32 / bf16 / fp16) needs one.")


if __name__ == "__main__":
    main()
