"""Uni3D throughput: one instance per forward (the reference's way) vs batched, same instances, same device.

    python scripts/bench_3d.py                          # uni3d-ti, 100 instances of 200..5000 points, CPU
    python scripts/bench_3d.py --device cuda --size g --bf16
    python scripts/bench_3d.py --count 40 --min-points 30 --max-points 800

Random weights (throughput does not depend on them). Prints a Markdown table of instances/second
for the whole encoder and for the grouping stage alone (farthest point sampling + kNN), with the
batched/one-at-a-time ratio, and the largest difference between the two results.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featurizer.encoder3d.grouping import group  # noqa: E402
from featurizer.encoder3d.uni3d import Uni3D, preprocess  # noqa: E402


def make_instances(count: int, lo: int, hi: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``count`` object-like clouds (box, cylinder and sphere surfaces, noisy) of lo..hi points."""
    rng = np.random.default_rng(seed)
    xyz, rgb = [], []
    for i in range(count):
        n = int(rng.integers(lo, hi + 1))
        shape = i % 3
        u = rng.uniform(-1, 1, size=(n, 3))
        if shape == 0:  # box surface
            axis = rng.integers(0, 3, size=n)
            u[np.arange(n), axis] = np.sign(u[np.arange(n), axis])
        elif shape == 1:  # cylinder
            t = rng.uniform(0, 2 * np.pi, n)
            u[:, 0], u[:, 1] = np.cos(t), np.sin(t)
        else:  # sphere
            u /= np.linalg.norm(u, axis=1, keepdims=True)
        p = u * rng.uniform(0.1, 1.5, size=3) + rng.uniform(-4, 4, size=3) + rng.normal(0, 0.005, (n, 3))
        xyz.append(p.astype(np.float32))
        rgb.append(rng.integers(0, 256, size=(n, 3), dtype=np.uint8))
    return xyz, rgb


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> tuple[float, object]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def grouping_only(model: Uni3D, xyz, rgb, batch_size: int, device: torch.device) -> None:
    """FPS + kNN of every instance, ``batch_size`` at a time (sorted by size, padded)."""
    clouds = [preprocess(p, c) for p, c in zip(xyz, rgb)]
    order = np.argsort([len(c) for c in clouds], kind="stable")
    enc = model.point_encoder
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            ids = order[s : s + batch_size]
            lengths = torch.tensor([len(clouds[i]) for i in ids])
            padded = np.zeros((len(ids), int(lengths.max()), 6), np.float32)
            for r, i in enumerate(ids):
                padded[r, : len(clouds[i])] = clouds[i]
            group(torch.from_numpy(padded).to(device), enc.num_group, enc.group_size, lengths.to(device))


def reference_style(model: Uni3D, xyz, rgb, device: torch.device) -> torch.Tensor:
    """The published script's way: one instance per forward, autograd on (no no_grad), the
    Conv1d module stack on all 512 groups (no shared concat half, no de-duplication)."""
    enc = model.point_encoder
    outs = []
    for p, c in zip(xyz, rgb):
        pts = torch.from_numpy(preprocess(p, c))[None].to(device)  # (1, N, 6)
        _, center, nbr = group(pts, enc.num_group, enc.group_size)
        grp = pts[0][nbr[0]]  # (G, K, 6)
        feats = torch.cat([grp[..., :3] - center[0][:, None], grp[..., 3:]], dim=-1)
        f = enc.encoder.first_conv(feats.transpose(2, 1))  # (G, 256, K)
        f = torch.cat([f.amax(dim=2, keepdim=True).expand_as(f), f], dim=1)
        tokens = enc.encoder2trans(enc.encoder.second_conv(f).amax(dim=2)[None])
        x = torch.cat([enc.cls_token, tokens], dim=1) + torch.cat([enc.cls_pos, enc.pos_embed(center)], dim=1)
        for blk in enc.visual.blocks:
            x = blk(x)
        outs.append(enc.trans2embed(enc.visual.fc_norm(x[:, 0])).detach().float().cpu())
    return torch.cat(outs)


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"CPU {cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="ti", choices=["ti", "s", "b", "l", "g", "tiny"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--count", type=int, default=100, help="instances")
    ap.add_argument("--min-points", type=int, default=200)
    ap.add_argument("--max-points", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="interleaved repeats; the best time of each is kept")
    ap.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the published script's way of running (once)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.size == "tiny":
        arch = dict(size=None, width=96, depth=2, num_heads=2, mlp_hidden=256, block_style="packed_swiglu",
                    pc_encoder_dim=128, embed_dim=64)
    else:
        arch = dict(size=args.size)
    model = Uni3D(**arch, batch_size=args.batch_size, bf16=args.bf16).to(device)
    xyz, rgb = make_instances(args.count, args.min_points, args.max_points, args.seed)
    warm_x, warm_c = make_instances(2, args.min_points, args.max_points, args.seed + 1)
    model.encode(warm_x, warm_c)  # warm-up (allocator, kernels)

    def single():
        model.batch_size = 1
        try:
            return model.encode(xyz, rgb)
        finally:
            model.batch_size = args.batch_size

    # interleaved repeats, best of each: other processes on a shared machine only ever add time
    t_single = t_batch = g_single = g_batch = float("inf")
    for _ in range(args.repeats):
        t, out_single = timed(single, device)
        t_single = min(t_single, t)
        t, out_batch = timed(lambda: model.encode(xyz, rgb), device)
        t_batch = min(t_batch, t)
        g_single = min(g_single, timed(lambda: grouping_only(model, xyz, rgb, 1, device), device)[0])
        t, _ = timed(lambda: grouping_only(model, xyz, rgb, args.batch_size, device), device)
        g_batch = min(g_batch, t)
    diff = (out_single - out_batch).abs().max().item()
    if args.reference:
        t_ref, out_ref = timed(lambda: reference_style(model, xyz, rgb, device), device)
        diff_ref = (out_ref - out_batch).abs().max().item()

    n = args.count
    bf16 = " (bf16 autocast)" if args.bf16 and device.type == "cuda" else ""
    print(f"Uni3D-{args.size} on {device.type}{bf16}: "
          f"{n} instances of {args.min_points}..{args.max_points} points, batch {args.batch_size}, "
          f"best of {args.repeats}")
    print(machine(device))
    print()
    print("| stage | one at a time (inst/s) | batched (inst/s) | batched / one at a time |")
    print("|---|---:|---:|---:|")
    print(f"| whole encoder | {n / t_single:.2f} | {n / t_batch:.2f} | {t_single / t_batch:.2f}x |")
    if args.reference:
        print(f"| reference-style forward (autograd on, Conv1d stack, batch 1) | {n / t_ref:.2f} | "
              f"{n / t_batch:.2f} | {t_ref / t_batch:.2f}x |")
    print(f"| grouping only (FPS + kNN) | {n / g_single:.2f} | {n / g_batch:.2f} | "
          f"{g_single / g_batch:.2f}x |")
    print()
    print(f"max |one at a time - batched| = {diff:.2e}")
    if args.reference:
        print(f"max |reference-style - batched| = {diff_ref:.2e}")
    print(f"grouping share of the one-at-a-time time: {g_single / t_single:.0%}")


if __name__ == "__main__":
    main()
