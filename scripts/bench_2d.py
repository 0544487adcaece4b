"""Benchmark of the 2D stage's mapping + pooling + fusion against the reference-style implementation.

    python scripts/bench_2d.py [--points 150000] [--instances 100] [--frames 150] [--dim 1024]

A synthetic room of ``instances`` boxes (``points`` surface points), ``frames`` 640x480 RGB-D frames
rendered with the z-buffer rasteriser (depth consistent with the points, occlusions included) and
fixed random 16x16 patch tokens (the encoder is excluded). Every row runs the ``paper``
algorithm (DESIGN.md section 5) on the same inputs:

- published loop: Chat-Scene's published feature loop ported line by line (:func:`published_loop`),
  only its file reading taken out: the baseline of the speed-ups;
- numpy reference: the same algorithm written leaner: per frame a numpy projection of every point,
  then per (instance, frame) a Python set intersection, a convex hull (scipy's ConvexHull, as the
  reference, when scipy is installed; otherwise a Python monotone chain) and a numpy slice mean; and
  a tuned variant of it;
- featurizer: ``featurizer.stage2d.run_2d`` with ``PaperFusion`` (its map + fuse time; map includes the
  per-scene setup: the point -> instance index and the culling voxels, as the reference's time includes
  its instance sets), once with the compiled CPU kernels (numba, the default on CPU) and once with the
  torch code (the GPU path, also run here on CPU); both give the same features.

Prints a Markdown table of the times and speed-ups, then how many of featurizer's features equal the
published loop's bit for bit (``torch.equal``; they all should: PaperFusion does the reference's float32
arithmetic) and the max abs difference.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featurizer.dataset.frames import MemorySource  # noqa: E402
from featurizer.dataset.render import box_mesh, look_at, render_mesh  # noqa: E402
from featurizer.encoder2d.base import PatchEncoder  # noqa: E402
from featurizer.fusion.paper import PaperFusion  # noqa: E402
from featurizer.geometry import backend as geometry_backend  # noqa: E402
from featurizer.geometry.hulls import convex_hull, polygon_area  # noqa: E402
from featurizer.scene import Frame, Instance, Scene  # noqa: E402
from featurizer.stage2d import run_2d  # noqa: E402

WIDTH, HEIGHT = 640, 480


class FixedTokens(PatchEncoder):
    """Returns precomputed (F, 16, 16, D) tokens for the frames in the order they are encoded."""

    name = "fixed"

    def __init__(self, tokens: torch.Tensor):
        super().__init__()
        self.tokens, self.next = tokens, 0
        self.dim = tokens.shape[-1]

    def grid_shape(self, image_size):
        return tuple(self.tokens.shape[1:3])

    def patch_tokens(self, images):
        out = self.tokens[self.next:self.next + len(images)]
        self.next += len(images)
        return out


def make_scene(n_points: int, n_inst: int, n_frames: int, seed: int = 0, room: float = 3.5) -> Scene:
    rng = np.random.default_rng(seed)
    per = n_points // n_inst
    verts, faces, vcols, points, instances = [], [], [], [], []
    for i in range(n_inst):
        size = rng.uniform(0.2, 1.4, 3)
        lo = np.append(rng.uniform(-room, room - size[:2]), rng.choice([0.0, 0.0, 0.7]))
        hi = lo + size
        v, f = box_mesh(lo, hi)
        faces.append(f + 8 * i)
        verts.append(v)
        vcols.append(np.tile(rng.integers(30, 255, 3), (8, 1)))
        p = rng.uniform(lo, hi, size=(per, 3))
        axis, side = rng.integers(0, 3, per), rng.integers(0, 2, per)
        p[np.arange(per), axis] = np.where(side == 1, hi[axis], lo[axis])
        instances.append(Instance(np.arange(i * per, (i + 1) * per), f"box{i}"))
        points.append(p)
    verts, faces, vcols = np.concatenate(verts), np.concatenate(faces), np.concatenate(vcols)
    k = np.array([[577.9, 0, 319.5], [0, 577.9, 239.5], [0, 0, 1]])
    frames = []
    for j in range(n_frames):
        # a scan trajectory: the camera walks around the room near the walls, looking inwards
        a = 2 * np.pi * j / n_frames
        eye = np.array([1.1 * room * np.cos(a), 1.1 * room * np.sin(a), 1.5 + 0.3 * np.sin(5 * a)])
        pose = look_at(eye, np.append(rng.uniform(-room / 2, room / 2, 2), 0.4))
        color, depth = render_mesh(verts, faces, vcols, pose, k, WIDTH, HEIGHT)
        frames.append(Frame(j, pose, k, (WIDTH, HEIGHT), source=MemorySource(color, depth)))
    points = np.concatenate(points)
    colors = np.zeros_like(points, dtype=np.uint8)
    return Scene("scene_bench", points, colors, instances=instances, frames=frames)


def _compute_mapping(camera_to_world, coords, depth, intrinsic, image_dim, cut_bound, vis_thres):
    """OpenScene's ``PointCloudToImageMapper.compute_mapping``, which the published loop calls per frame:
    (N, 3) int rows (pixel row, pixel column, visible)."""
    mapping = np.zeros((3, coords.shape[0]), dtype=int)
    coords_new = np.concatenate([coords, np.ones([coords.shape[0], 1])], axis=1).T
    world_to_camera = np.linalg.inv(camera_to_world)
    p = np.matmul(world_to_camera, coords_new)
    with np.errstate(divide="ignore", invalid="ignore"):
        p[0] = (p[0] * intrinsic[0][0]) / p[2] + intrinsic[0][2]
        p[1] = (p[1] * intrinsic[1][1]) / p[2] + intrinsic[1][2]
        pi = np.round(p).astype(int)
    inside_mask = (pi[0] >= cut_bound) * (pi[1] >= cut_bound) \
        * (pi[0] < image_dim[0] - cut_bound) * (pi[1] < image_dim[1] - cut_bound)
    depth_cur = depth[pi[1][inside_mask], pi[0][inside_mask]]
    occlusion_mask = (np.abs(depth[pi[1][inside_mask], pi[0][inside_mask]] - p[2][inside_mask])
                      <= vis_thres * depth_cur)
    inside_mask[inside_mask == True] = occlusion_mask  # noqa: E712 (as published)
    mapping[0][inside_mask] = pi[1][inside_mask]
    mapping[1][inside_mask] = pi[0][inside_mask]
    mapping[2][inside_mask] = 1
    return mapping.T


class _MonotoneHull:
    """``scipy.spatial.ConvexHull``'s ``volume`` and ``vertices`` when scipy is not installed."""

    def __init__(self, points):
        pts = np.asarray(points)
        hull = convex_hull(pts)
        if len(hull) < 3:
            raise ValueError("degenerate hull")
        self.volume = polygon_area(hull)
        index = {tuple(p): i for i, p in enumerate(pts.tolist())}
        self.vertices = np.array([index[tuple(v)] for v in hull.astype(int).tolist()])


def published_loop(scene: Scene, depths: list[np.ndarray], tokens: torch.Tensor,
                   use_scipy: bool) -> dict[int, torch.Tensor]:
    """Chat-Scene's published 2D feature loop, ported line by line with only the file reading taken out
    (poses, intrinsics and depth maps as arrays; the depth in float64 metres, as ``imread / 1000`` gives
    it; the DINOv2 tokens given): per frame OpenScene's mapping of every point into an (N, 4) int array
    and a torch tensor, the visible column of an (N, frames) ``vis_id`` tensor, a Python list of the
    visible ids; per instance the intersection of two sets built from lists, torch list indexing,
    ``ConvexHull``, torch ``volume`` and ``crop_bbox`` tensors, a slice mean; at the end the
    area-weighted sum."""
    if use_scipy:
        from scipy.spatial import ConvexHull
    else:
        ConvexHull = _MonotoneHull  # noqa: N806
    locs_in = scene.points.astype(np.float64)
    inst_segids = [inst.point_ids.tolist() for inst in scene.instances]  # GT mode: lists of point ids
    n_points = locs_in.shape[0]
    num_img = len(scene.frames)
    inst_num = len(inst_segids)
    volume = torch.zeros((inst_num, num_img), dtype=float)
    crop_bbox = torch.zeros((inst_num, num_img, 4), dtype=float)
    vis_id = torch.zeros((n_points, num_img), dtype=int)
    inst_img_feats = defaultdict(list)
    for img_id, frame in enumerate(scene.frames):
        pose = frame.pose
        depth = depths[img_id].astype(np.float64)
        mapping = np.ones([n_points, 4], dtype=int)
        mapping[:, 1:4] = _compute_mapping(pose, locs_in, depth, frame.intrinsics, (WIDTH, HEIGHT), 10, 0.25)
        if mapping[:, 3].sum() == 0:
            continue
        mapping = torch.from_numpy(mapping)
        mask = mapping[:, 3]
        vis_id[:, img_id] = mask
        mask_ids = torch.arange(mask.shape[0])[mask.bool()].tolist()
        height, width = depth.shape
        delta_h, delta_w = height // 16, width // 16
        for instid in range(inst_num):
            inst_seg = inst_segids[instid]
            overlap_ids = list(set(mask_ids).intersection(set(inst_seg)))
            single_inst_points = mapping[overlap_ids][:, 1:3]
            if len(single_inst_points) < 3:
                continue
            try:
                hull = ConvexHull(single_inst_points)
            except Exception:  # noqa: BLE001 (as published: a bare except)
                continue
            volume[instid, img_id] = hull.volume
            crop_bbox[instid, img_id] = torch.as_tensor(np.concatenate([
                single_inst_points[hull.vertices].min(axis=0)[0],
                single_inst_points[hull.vertices].max(axis=0)[0]]))
            if volume[instid, img_id] < delta_h * delta_w:
                continue
            x0, y0, x1, y1 = crop_bbox[instid, img_id].to(int).tolist()
            crop_img_feats = tokens[img_id, (x0 // delta_h):((x1 + delta_h - 1) // delta_h),
                                    (y0 // delta_w):((y1 + delta_w - 1) // delta_w)]
            inst_img_feats[instid].append(
                (volume[instid, img_id].cpu(), crop_img_feats.flatten(0, 1).mean(0).cpu()))
    all_feats = {}
    for instid in range(inst_num):
        if instid not in inst_img_feats:
            continue
        inst_tmp = inst_img_feats[instid]
        inst_img_feat = torch.zeros(tokens.shape[-1], dtype=torch.float32)
        tot_weight = sum([p[0] for p in inst_tmp]).cpu()
        for weight, feat in inst_tmp:
            inst_img_feat += (weight / tot_weight) * feat.cpu()
        all_feats[instid] = inst_img_feat.detach()
    return all_feats


def reference(scene: Scene, depths: list[np.ndarray], tokens: np.ndarray, use_scipy: bool,
              literal: bool = True) -> dict[int, np.ndarray]:
    """Chat-Scene's 2D fusion written leaner than the published loop: per frame a numpy projection, per
    (instance, frame) a Python set intersection of the instance's ids with the frame's visible ids
    (``literal``: both sets built for every pair, as a straightforward loop does; otherwise the
    sets are built once, a tuned variant), a convex hull and a slice mean."""
    if use_scipy:
        from scipy.spatial import ConvexHull
        from scipy.spatial import QhullError

    n = len(scene.points)
    homo = np.c_[scene.points.astype(np.float64), np.ones(n)]
    inst_sets = [set(inst.point_ids.tolist()) for inst in scene.instances]
    acc = [None] * len(scene.instances)
    total = [0.0] * len(scene.instances)
    for f, frame in enumerate(scene.frames):
        depth = depths[f]
        cam = homo @ np.linalg.inv(frame.pose).T
        x, y, z = cam[:, 0], cam[:, 1], cam[:, 2]
        k = frame.intrinsics
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.round(k[0, 0] * x / z + k[0, 2])
            v = np.round(k[1, 1] * y / z + k[1, 2])
        ok = (z > 0) & (u >= 10) & (u < WIDTH - 10) & (v >= 10) & (v < HEIGHT - 10)
        ids = np.flatnonzero(ok)
        d = depth[v[ids].astype(int), u[ids].astype(int)].astype(np.float64)
        ids = ids[np.abs(d - z[ids]) <= 0.25 * d]
        visible = None if literal else set(ids.tolist())
        for i, inst in enumerate(inst_sets):
            if literal:
                common = set(scene.instances[i].point_ids.tolist()) & set(ids.tolist())
            else:
                common = inst & visible
            if len(common) < 3:
                continue
            sel = np.fromiter(common, dtype=np.int64)
            pix = np.stack([v[sel], u[sel]], 1)
            if use_scipy:
                try:
                    hull = ConvexHull(pix)
                except QhullError:
                    continue
                area, verts = hull.volume, pix[hull.vertices]
            else:
                verts = convex_hull(pix)
                area = polygon_area(verts)
            if area < (HEIGHT // 16) * (WIDTH // 16):
                continue
            r0, r1 = int(verts[:, 0].min()), int(verts[:, 0].max())
            c0, c1 = int(verts[:, 1].min()), int(verts[:, 1].max())
            patches = tokens[f, r0 // 30: math.ceil(r1 / 30), c0 // 40: math.ceil(c1 / 40)]
            feat = patches.reshape(-1, tokens.shape[-1]).mean(0)
            acc[i] = area * feat if acc[i] is None else acc[i] + area * feat
            total[i] += area
    return {i: acc[i] / total[i] for i in range(len(acc)) if acc[i] is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=150_000)
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--frame-batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="featurizer runs (the best is reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-scipy", action="store_true",
                        help="reference hull in Python even if scipy is installed")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    scene = make_scene(args.points, args.instances, args.frames)
    depths = [f.read()[1] for f in scene.frames]
    normal = np.random.default_rng(1).normal(size=(args.frames, 16, 16, args.dim))
    tokens = torch.from_numpy(normal.astype(np.float32))
    print(f"built the scene in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    def timed(backend: str):
        """Best map + fuse time over the repeats and its result, after one untimed run (which loads or
        compiles the kernels)."""
        run_2d(scene, FixedTokens(tokens), PaperFusion(), frame_batch=args.frame_batch, backend=backend)
        best, result = math.inf, None
        for _ in range(args.repeat):
            res = run_2d(scene, FixedTokens(tokens), PaperFusion(), frame_batch=args.frame_batch,
                         backend=backend)
            t = res.timings["map"] + res.timings["fuse"]
            if t < best:
                best, result = t, res
        return best, result

    backends = (["numba"] if geometry_backend.available() else []) + ["torch"]
    runs = {b: timed(b) for b in backends}
    best, result = runs[backends[0]]
    same_backends = all(sorted(r.features) == sorted(result.features)
                        and all(torch.equal(r.features[i], result.features[i]) for i in r.features)
                        for _, r in runs.values())

    try:
        import scipy  # noqa: F401

        use_scipy = not args.no_scipy
    except ImportError:
        use_scipy = False
    t0 = time.perf_counter()
    published = published_loop(scene, depths, tokens, use_scipy)
    t_pub = time.perf_counter() - t0
    t0 = time.perf_counter()
    want = reference(scene, depths, tokens.numpy(), use_scipy, literal=True)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    tuned = reference(scene, depths, tokens.numpy(), use_scipy, literal=False)
    t_tuned = time.perf_counter() - t0
    assert sorted(tuned) == sorted(want) == sorted(published)

    same_keys = sorted(published) == sorted(result.features)
    common = [i for i in published if i in result.features]
    identical = sum(torch.equal(result.features[i], published[i]) for i in common)
    diff = max((float((result.features[i] - published[i]).abs().max()) for i in common), default=float("nan"))
    vis = sum(r["visible_points"] for r in result.records.values())
    views = sum(r["views"] for r in result.records.values())
    print(f"\nmachine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"python {platform.python_version()}")
    print(f"scene: {len(scene.points)} points, {len(scene.instances)} instances, {len(scene.frames)} frames "
          f"{WIDTH}x{HEIGHT}, D={args.dim}; {vis / len(scene.frames):.0f} visible instance points per frame "
          f"({vis / (len(scene.frames) * len(scene.points)):.1%} of the points); {views} kept views; "
          f"{len(published)} instances with a feature")
    print(f"reference hull: {'scipy ConvexHull' if use_scipy else 'Python monotone chain'}\n")
    print("| implementation | map + pool + fuse (s) | vs published loop | vs numpy reference |")
    print("|---|---:|---:|---:|")
    rows = [("published loop, ported line by line (OpenScene mapping of every point, torch tensors, "
             "sets per instance x frame)", t_pub),
            ("numpy reference (numpy projection per frame, sets per instance x frame, numpy indexing)",
             t_ref),
            ("tuned numpy reference (instance sets built once, frame set once per frame)", t_tuned)]
    names = {"numba": f"compiled CPU kernels, numba {getattr(geometry_backend.numba, '__version__', '')}",
             "torch": "torch code (the GPU path) on CPU"}
    rows += [(f"featurizer (run_2d + PaperFusion, {names[b]}, {torch.get_num_threads()} threads)", runs[b][0])
             for b in backends]
    for name, t in rows:
        print(f"| {name} | {t:.3f} | {t_pub / t:.1f}x | {t_ref / t:.1f}x |")
    print(f"\nsame instances with a feature: {same_keys}; features bit-identical to the published loop's: "
          f"{identical} of {len(published)} (max abs diff {diff:.2e}); "
          f"backends give identical features: {same_backends}")
    for b in backends:
        timings = ", ".join(f"{k} {v:.3f}" for k, v in runs[b][1].timings.items())
        print(f"featurizer timings, {b} (s): {timings}")


if __name__ == "__main__":
    main()
