"""Point -> pixel mapping with a depth test, convex hulls of pixel sets, patch-grid helpers.

The mapping is DESIGN.md section 5: ``p_cam = inv(pose) @ [p_raw, 1]`` in float64,
``u = fx * x / z + cx``, ``v = fy * y / z + cy`` rounded half to even (``torch.round``), keep
``z > 0``, ``border <= u < W - border``, ``border <= v < H - border`` and
``|depth[v, u] - z| <= tol`` with ``tol = depth_tol * depth[v, u]`` (``relative``, the paper's 0.25)
or ``tol = depth_tol`` metres (``absolute``); depth 0 is invalid. Projection uses the *raw*
coordinates (``Scene.points``), never the axis-aligned ones.

Everything is vectorised over points and batched over frames in torch, on the device of the inputs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from featurizer.errors import ConfigError

DEPTH_MODES = ("relative", "absolute")
_CHUNK_ELEMENTS = 1 << 22  # frames x points handled at once (bounds the float64 temporaries)


def check_mapping_options(depth_mode: str, depth_tol: float, border: int, option: str = "fusion") -> None:
    """Raise :class:`ConfigError` for an unknown depth mode, a negative tolerance or border."""
    if depth_mode not in DEPTH_MODES:
        raise ConfigError(f"{option}.depth_mode", f"unknown depth test '{depth_mode}' (one of {DEPTH_MODES})")
    if not (isinstance(depth_tol, (int, float)) and math.isfinite(depth_tol) and depth_tol >= 0):
        raise ConfigError(f"{option}.depth_tol", f"must be a finite number >= 0, got {depth_tol!r}")
    if int(border) != border or border < 0:
        raise ConfigError(f"{option}.border", f"must be an integer >= 0, got {border!r}")


@dataclass
class Mapping:
    """Visible points of a batch of frames, concatenated frame after frame.

    point_ids: (M,) int64 indices into the projected points; u, v: (M,) int64 pixel column / row;
    offsets: (F + 1,) int64, frame f's entries are ``[offsets[f], offsets[f + 1])``.
    Within a frame, entries are in increasing point order (or candidate order, see ``project_points``).
    """

    point_ids: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    offsets: torch.Tensor

    @property
    def num_frames(self) -> int:
        return len(self.offsets) - 1

    def counts(self) -> torch.Tensor:
        """(F,) number of visible points per frame."""
        return self.offsets[1:] - self.offsets[:-1]

    def frame_index(self) -> torch.Tensor:
        """(M,) int64 frame (0 .. F-1) of every entry."""
        frames = torch.arange(self.num_frames, device=self.offsets.device)
        return torch.repeat_interleave(frames, self.counts())

    def frame(self, f: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(point_ids, u, v) of frame ``f``, each (M_f,)."""
        a, b = int(self.offsets[f]), int(self.offsets[f + 1])
        return self.point_ids[a:b], self.u[a:b], self.v[a:b]


def project_points(
    points: torch.Tensor | np.ndarray,
    poses: torch.Tensor | np.ndarray,
    intrinsics: torch.Tensor | np.ndarray,
    depths: torch.Tensor | np.ndarray,
    *,
    depth_mode: str = "relative",
    depth_tol: float = 0.25,
    border: int = 10,
    candidates: torch.Tensor | None = None,
) -> Mapping:
    """Depth-tested projection of points into a batch of frames of one size.

    points: (N, 3) raw mesh-frame coordinates. poses: (F, 4, 4) camera-to-world.
    intrinsics: (F, 3, 3) pinhole matrices at the frames' size. depths: (F, H, W) metres, 0 = invalid.
    candidates: optional, the only points tested in each frame (the others are not visible): an
    (F, N) bool mask or a list of F (M_f,) int64 id tensors (e.g. :meth:`VoxelCuller.candidates`);
    a conservative culling leaves the result unchanged, but entries then come in candidate order.
    Frames whose pose has a non-finite entry get no visible point (with a warning).
    Computed on ``depths``' device. Returns a :class:`Mapping`.
    """
    check_mapping_options(depth_mode, depth_tol, border)
    depths = torch.as_tensor(depths)
    device = depths.device
    if depths.dim() == 2:
        depths = depths[None]
    num_frames, height, width = depths.shape
    pts = torch.as_tensor(points, device=device).to(torch.float64).reshape(-1, 3)
    poses = torch.as_tensor(poses, device=device).to(torch.float64).reshape(-1, 4, 4)
    k = torch.as_tensor(intrinsics, device=device).to(torch.float64).reshape(-1, 3, 3)
    if len(poses) != num_frames or len(k) != num_frames:
        raise ValueError(f"{num_frames} depth maps but {len(poses)} poses and {len(k)} intrinsics")
    finite = torch.isfinite(poses).flatten(1).all(1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        warnings.warn(f"skipping {len(bad)} frame(s) with a non-finite pose (batch positions {bad})", stacklevel=2)
        poses = torch.where(finite[:, None, None], poses, torch.eye(4, dtype=torch.float64, device=device))
    world_to_cam = torch.linalg.inv(poses)
    if candidates is not None:
        if isinstance(candidates, torch.Tensor):
            candidates = [torch.nonzero(c).flatten() for c in candidates.to(device)]
        return _project_sparse(pts, world_to_cam, k, depths, finite, candidates, depth_mode,
                               float(depth_tol), int(border))
    n = len(pts)
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    ids, us, vs, counts = [], [], [], []
    border = int(border)
    for f0 in range(0, num_frames, chunk):
        f1 = min(num_frames, f0 + chunk)
        rot, trans = world_to_cam[f0:f1, :3, :3], world_to_cam[f0:f1, :3, 3]
        cam = torch.einsum("fij,nj->fni", rot, pts) + trans[:, None, :]  # (f, N, 3)
        x, y, z = cam.unbind(-1)
        fx, fy = k[f0:f1, 0, 0, None], k[f0:f1, 1, 1, None]
        cx, cy = k[f0:f1, 0, 2, None], k[f0:f1, 1, 2, None]
        u = torch.round(fx * x / z + cx)
        v = torch.round(fy * y / z + cy)
        keep = (z > 0) & (u >= border) & (u < width - border) & (v >= border) & (v < height - border)
        keep &= finite[f0:f1, None]
        fi, pi = torch.nonzero(keep, as_tuple=True)  # row-major: frame, then point order
        ui, vi = u[fi, pi].long(), v[fi, pi].long()
        d = depths[f0 + fi, vi, ui].to(torch.float64)
        zi = z[fi, pi]
        tol = depth_tol * d if depth_mode == "relative" else torch.full_like(d, float(depth_tol))
        ok = (d > 0) & ((d - zi).abs() <= tol)
        fi, pi, ui, vi = fi[ok], pi[ok], ui[ok], vi[ok]
        ids.append(pi)
        us.append(ui)
        vs.append(vi)
        counts.append(torch.bincount(fi, minlength=f1 - f0))
    offsets = torch.zeros(num_frames + 1, dtype=torch.int64, device=device)
    if counts:
        offsets[1:] = torch.cumsum(torch.cat(counts), 0)
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    return Mapping(
        point_ids=torch.cat(ids) if ids else empty,
        u=torch.cat(us) if us else empty,
        v=torch.cat(vs) if vs else empty,
        offsets=offsets,
    )


def _visible(pts, w2c, k, depth, depth_mode, depth_tol, border):
    """Visibility of (M, 3) float64 points in one frame: keep (M,) bool, u, v (M,) int64 (0 where not kept)."""
    height, width = depth.shape
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    x, y, z = cam.unbind(-1)
    u = torch.round(k[0, 0] * x / z + k[0, 2])
    v = torch.round(k[1, 1] * y / z + k[1, 2])
    keep = (z > 0) & (u >= border) & (u < width - border) & (v >= border) & (v < height - border)
    ui = torch.where(keep, u, 0.0).long()
    vi = torch.where(keep, v, 0.0).long()
    d = depth[vi, ui].to(torch.float64)
    tol = depth_tol * d if depth_mode == "relative" else depth_tol
    keep &= (d > 0) & ((d - z).abs() <= tol)
    return keep, ui, vi


def _project_sparse(pts, world_to_cam, k, depths, finite, candidates, depth_mode, depth_tol, border) -> Mapping:
    ids, us, vs, counts = [], [], [], []
    for f in range(len(depths)):
        sel = candidates[f].to(pts.device) if bool(finite[f]) else torch.zeros(0, dtype=torch.int64, device=pts.device)
        keep, u, v = _visible(pts[sel], world_to_cam[f], k[f], depths[f], depth_mode, depth_tol, border)
        ids.append(sel[keep])
        us.append(u[keep])
        vs.append(v[keep])
        counts.append(int(keep.sum()))
    offsets = torch.zeros(len(depths) + 1, dtype=torch.int64, device=pts.device)
    offsets[1:] = torch.cumsum(torch.tensor(counts, dtype=torch.int64), 0).to(pts.device)
    return Mapping(torch.cat(ids), torch.cat(us), torch.cat(vs), offsets)


def _maybe_unoccluded(cam: torch.Tensor, intrinsics, depths: torch.Tensor, depth_mode: str,
                      depth_tol: float) -> torch.Tensor:
    """(F, K) bool: False where box k (corners ``cam`` (F, K, 8, 3) in camera coordinates) lies
    wholly behind the depth map (or over invalid depth only) beyond the tolerance."""
    num_frames, height, width = depths.shape
    k = torch.as_tensor(intrinsics, device=cam.device).to(torch.float64).reshape(-1, 3, 3)
    x, y, z = cam.unbind(-1)
    zmin = z.min(-1).values
    front = zmin > 1e-6
    zs = torch.where(front[..., None], z, torch.ones_like(z))
    u = k[:, 0, 0, None, None] * x / zs + k[:, 0, 2, None, None]
    v = k[:, 1, 1, None, None] * y / zs + k[:, 1, 2, None, None]
    u0 = torch.floor(u.min(-1).values).clamp(0, width - 1).long()
    u1 = torch.ceil(u.max(-1).values).clamp(0, width - 1).long()
    v0 = torch.floor(v.min(-1).values).clamp(0, height - 1).long()
    v1 = torch.ceil(v.max(-1).values).clamp(0, height - 1).long()
    extent = torch.maximum(u1 - u0, v1 - v0) + 1
    dmax = torch.zeros_like(zmin)
    extent = torch.where(front, extent, torch.full_like(extent, 1 << 30))  # behind the camera: not looked up
    # max-depth pyramid (exact in the depth maps' float32), from 8 x 8 pixel tiles up
    tile = 8
    level = torch.nn.functional.max_pool2d(depths.to(torch.float32)[:, None], tile, tile, ceil_mode=True)
    fi = torch.arange(num_frames, device=cam.device)[:, None].expand_as(u0)
    while True:
        # boxes spanning at most ``tile`` pixels touch at most 2 x 2 tiles of this level
        last = tile >= max(width, height)
        sel = (extent < (1 << 30)) if last else (extent <= tile)
        if bool(sel.any()):
            lv = level[:, 0]
            f = fi[sel]
            a, b, c, d = v0[sel] // tile, v1[sel] // tile, u0[sel] // tile, u1[sel] // tile
            m = torch.maximum(torch.maximum(lv[f, a, c], lv[f, a, d]), torch.maximum(lv[f, b, c], lv[f, b, d]))
            dmax[sel] = m.to(torch.float64)
            extent = torch.where(sel, torch.full_like(extent, 1 << 30), extent)
        if last:
            break
        level = torch.nn.functional.max_pool2d(level, 2, 2, ceil_mode=True)
        tile *= 2
    limit = dmax * (1.0 + depth_tol) if depth_mode == "relative" else dmax + depth_tol
    return ~front | ((dmax > 0) & (zmin <= limit))


def frustum_candidates(lo: torch.Tensor, hi: torch.Tensor, poses, intrinsics, image_size: tuple[int, int],
                       border: int = 0, return_cam: bool = False):
    """Conservative frustum culling of axis-aligned boxes: (F, K) bool, False only where box k has no
    point that could project inside ``border <= u < W - border``, ``border <= v < H - border`` with
    z > 0 in frame f (every corner is outside one of the frustum's planes, with a 1 px margin).

    lo, hi: (K, 3) box corners (raw coordinates); poses (F, 4, 4) c2w; intrinsics (F, 3, 3).
    """
    device = lo.device
    poses = torch.as_tensor(poses, device=device).to(torch.float64).reshape(-1, 4, 4)
    k = torch.as_tensor(intrinsics, device=device).to(torch.float64).reshape(-1, 3, 3)
    finite = torch.isfinite(poses).flatten(1).all(1)
    poses = torch.where(finite[:, None, None], poses, torch.eye(4, dtype=torch.float64, device=device))
    w2c = torch.linalg.inv(poses)
    sel = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], device=device, dtype=torch.bool)
    corners = torch.where(sel[None], hi.to(torch.float64)[:, None], lo.to(torch.float64)[:, None])  # (K, 8, 3)
    cam = torch.einsum("fij,kcj->fkci", w2c[:, :3, :3], corners) + w2c[:, None, None, :3, 3]
    x, y, z = cam.unbind(-1)
    fx, fy = k[:, 0, 0, None, None], k[:, 1, 1, None, None]
    cx, cy = k[:, 0, 2, None, None], k[:, 1, 2, None, None]
    width, height = image_size
    a_lo, a_u, a_v = border - 1.0, width - border + 1.0, height - border + 1.0
    planes = [z, fx * x + (cx - a_lo) * z, (a_u - cx) * z - fx * x, fy * y + (cy - a_lo) * z, (a_v - cy) * z - fy * y]
    outside = torch.zeros(z.shape[:2], dtype=torch.bool, device=device)
    for p in planes:
        outside |= (p <= 0).all(-1)
    cand = ~outside & finite[:, None]
    return (cand, cam) if return_cam else cand


class VoxelCuller:
    """Frustum culling of points by voxels, so that a frame's mapping only tests the points of the
    voxels its frustum may reach (exact: the culling is conservative).

    points: (N, 3) raw coordinates. voxel_points: aim for about this many points per voxel.
    """

    def __init__(self, points: torch.Tensor, voxel_points: int = 256):
        pts = points.to(torch.float64)
        device = pts.device
        n = len(pts)
        lo_all, hi_all = pts.min(0).values, pts.max(0).values
        size = max(float((hi_all - lo_all).max()) / 4.0, 1e-3)
        while True:
            cell = torch.floor((pts - lo_all) / size).long()
            dims = cell.max(0).values + 1
            key = (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]
            uniq, inv = torch.unique(key, return_inverse=True)
            if len(uniq) * voxel_points >= n or size < 0.02:
                break
            size /= 1.5
        order = torch.argsort(inv, stable=True)
        counts = torch.bincount(inv, minlength=len(uniq))
        self.order = order  # point ids grouped by voxel
        self.ptr = torch.nn.functional.pad(torch.cumsum(counts, 0), (1, 0))
        idx = inv[:, None].expand(-1, 3)
        self.lo = torch.full((len(uniq), 3), float("inf"), dtype=torch.float64, device=device).scatter_reduce_(
            0, idx, pts, "amin")
        self.hi = torch.full((len(uniq), 3), float("-inf"), dtype=torch.float64, device=device).scatter_reduce_(
            0, idx, pts, "amax")
        self.voxel_size = size

    def candidates(self, poses, intrinsics, image_size: tuple[int, int], border: int = 0,
                   depths: torch.Tensor | None = None, depth_mode: str = "relative",
                   depth_tol: float = 0.25) -> list[torch.Tensor]:
        """Per frame, the (M_f,) int64 ids of the points whose voxel may be in the frustum and, given
        the (F, H, W) depth maps, may pass the depth test: a voxel whose nearest corner is farther
        than ``dmax + tol(dmax)``, with dmax the largest depth over the pixels its box projects
        to, holds no point that passes the test (tol grows with the depth)."""
        cand, cam = frustum_candidates(self.lo, self.hi, poses, intrinsics, image_size, border, return_cam=True)
        if depths is not None:
            cand &= _maybe_unoccluded(cam, intrinsics, depths, depth_mode, depth_tol)
        out = []
        for f in range(len(cand)):
            vox = torch.nonzero(cand[f]).flatten()
            start, count = self.ptr[vox], self.ptr[vox + 1] - self.ptr[vox]
            rep = torch.repeat_interleave(torch.arange(len(vox), device=vox.device), count)
            within = torch.arange(len(rep), device=vox.device) - (torch.cumsum(count, 0) - count)[rep]
            out.append(self.order[start[rep] + within])
        return out


# ---------------------------------------------------------------------------------------------------
# Convex hulls


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain: the (K, 2) counter-clockwise hull vertices of (P, 2) points.

    Collinear points on an edge are dropped; fewer than 3 distinct non-collinear points give the
    distinct extreme points (K < 3, zero area).
    """
    pts = sorted(set(map(tuple, np.asarray(points).reshape(-1, 2).tolist())))
    if len(pts) <= 2:
        return np.asarray(pts, dtype=np.float64).reshape(-1, 2)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.asarray(lower[:-1] + upper[:-1], dtype=np.float64)


def polygon_area(vertices: np.ndarray) -> float:
    """Shoelace area of a (K, 2) polygon (0 when K < 3)."""
    p = np.asarray(vertices, dtype=np.float64).reshape(-1, 2)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _minorant_integral2(group: torch.Tensor, x: torch.Tensor, y: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Twice the integral of each group's convex minorant (lower monotone chain) of points (x, y).

    group, x, y: (P,) int64, sorted by (group, x) with x strictly increasing within a group.
    The chain is found by parallel pruning: a point on or above the chord of its two neighbours is
    never a strict vertex of the lower chain, so every such point is removed at once; repeat on the
    groups that changed until none does. Endpoints are never removed. Returns (G,) int64.
    """
    device = x.device
    done: list[torch.Tensor] = []
    cur = torch.arange(len(x), device=device)
    while len(cur) >= 3:
        g = group[cur]
        a, b, c = cur[:-2], cur[1:-1], cur[2:]
        same = (g[:-2] == g[1:-1]) & (g[1:-1] == g[2:])
        above = (y[b] - y[a]) * (x[c] - x[a]) >= (y[c] - y[a]) * (x[b] - x[a])
        drop = same & above
        if not bool(drop.any()):
            break
        remove = torch.zeros(len(cur), dtype=torch.bool, device=device)
        remove[1:-1] = drop
        changed = torch.zeros(num_groups, dtype=torch.bool, device=device)
        changed[g[remove]] = True
        active = changed[g]
        done.append(cur[~active])
        cur = cur[active & ~remove]
    done.append(cur)
    alive = torch.sort(torch.cat(done)).values
    ga = group[alive]
    same = ga[1:] == ga[:-1]
    xa, ya = x[alive], y[alive]
    trap = (xa[1:] - xa[:-1]) * (ya[1:] + ya[:-1])
    out = torch.zeros(num_groups, dtype=torch.int64, device=device)
    out.index_add_(0, ga[1:][same], trap[same])
    return out


def grouped_hull_area2(
    group: torch.Tensor, row: torch.Tensor, col: torch.Tensor, num_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Convex hull of many pixel sets at once: twice the area (exact) and the box of each set.

    group, row, col: (P,) int64 (pixel p belongs to set ``group[p]`` in 0 .. G-1).
    The hull of a pixel set is bounded by the convex minorant of each row's leftmost pixel and the
    concave majorant of each row's rightmost pixel (the two monotone chains of Andrew's algorithm
    with the points sorted by row), so the area is the integral of their difference.
    Returns area2 (G,) int64 (0 for empty, single-row, single-column or otherwise collinear sets)
    and box (G, 4) int64 ``(r0, r1, c0, c1)`` = min/max row and column (undefined for empty sets).
    """
    device = row.device
    big = torch.iinfo(torch.int64).max
    box = torch.empty(num_groups, 4, dtype=torch.int64, device=device)
    box[:, 0] = big
    box[:, 2] = big
    box[:, 1] = -big
    box[:, 3] = -big
    box[:, 0].scatter_reduce_(0, group, row, "amin")
    box[:, 1].scatter_reduce_(0, group, row, "amax")
    box[:, 2].scatter_reduce_(0, group, col, "amin")
    box[:, 3].scatter_reduce_(0, group, col, "amax")
    if len(row) == 0:
        return torch.zeros(num_groups, dtype=torch.int64, device=device), box
    height = int(row.max()) + 1
    key, inv = torch.unique(group * height + row, return_inverse=True)  # sorted: group, then row
    left = torch.full((len(key),), big, dtype=torch.int64, device=device).scatter_reduce_(0, inv, col, "amin")
    right = torch.full((len(key),), -big, dtype=torch.int64, device=device).scatter_reduce_(0, inv, col, "amax")
    g, r = key // height, key % height
    lower = _minorant_integral2(g, r, left, num_groups)
    upper = -_minorant_integral2(g, r, -right, num_groups)
    return upper - lower, box


# ---------------------------------------------------------------------------------------------------
# Patch grids


def box_sums(tokens: torch.Tensor, b: torch.Tensor, r0: torch.Tensor, r1: torch.Tensor,
             c0: torch.Tensor, c1: torch.Tensor) -> torch.Tensor:
    """Sums of tokens over half-open boxes ``[r0, r1) x [c0, c1)`` of the grids.

    tokens: (B, R, C, D); b, r0, r1, c0, c1: (K,) int64 (frame in the batch and box, clamped by the
    caller into 0 .. R / 0 .. C). Returns (K, D) float64 (zero for empty boxes). One batched matmul
    of 0/1 box masks with the tokens, in the tokens' dtype (float32 sums of at most R*C tokens).
    """
    bsz, rows, cols, dim = tokens.shape
    device = tokens.device
    if len(b) == 0:
        return torch.zeros(0, dim, dtype=torch.float64, device=device)
    ar, ac = torch.arange(rows, device=device), torch.arange(cols, device=device)
    in_r = (ar >= r0[:, None]) & (ar < r1[:, None])
    in_c = (ac >= c0[:, None]) & (ac < c1[:, None])
    mask = (in_r[:, :, None] & in_c[:, None, :]).reshape(len(b), rows * cols).to(tokens.dtype)
    order = torch.argsort(b, stable=True)
    per = torch.bincount(b, minlength=bsz)
    slot = torch.empty_like(b)
    slot[order] = torch.arange(len(b), device=device) - (torch.cumsum(per, 0) - per)[b[order]]
    padded = torch.zeros(bsz, int(per.max()), rows * cols, dtype=tokens.dtype, device=device)
    padded[b, slot] = mask
    out = torch.bmm(padded, tokens.reshape(bsz, rows * cols, dim))
    return out[b, slot].to(torch.float64)


def cell_rects(encoded_region: tuple[float, float, float, float], grid: tuple[int, int],
               rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Frame-pixel rectangles (K, 4) ``(x0, y0, x1, y1)`` of patch cells (rows, cols) of a grid
    (R, C) covering ``encoded_region`` uniformly."""
    x0, y0, x1, y1 = encoded_region
    ch, cw = (y1 - y0) / grid[0], (x1 - x0) / grid[1]
    rows = np.asarray(rows, dtype=np.float64)
    cols = np.asarray(cols, dtype=np.float64)
    return np.stack([x0 + cols * cw, y0 + rows * ch, x0 + (cols + 1) * cw, y0 + (rows + 1) * ch], axis=-1)
