"""Point -> pixel mapping with a depth test, voxel culling and its depth pyramid, with their compiled twins.

The mapping is DESIGN.md section 5: ``p_cam = inv(pose) @ [p_raw, 1]`` in float64,
``u = fx * x / z + cx``, ``v = fy * y / z + cy`` rounded half to even (``torch.round``), keep
``z > 0``, ``border <= u < W - border``, ``border <= v < H - border`` and
``|depth[v, u] - z| <= tol`` with ``tol = depth_tol * depth[v, u]`` (``relative``, the paper's 0.25)
or ``tol = depth_tol`` metres (``absolute``); depth 0 is invalid. Projection uses the *raw*
coordinates (``Scene.points``), never the axis-aligned ones.

:class:`VoxelCuller` groups the points in a two-level voxel hierarchy, culls the voxels that cannot
hold a visible point (frustum and a max-depth pyramid, conservatively) and runs the exact test on the
rest. The torch code below runs on the device of the inputs (the GPU path, and the CPU path without
numba). Its compiled twins, the numba kernels at the end of this file, give the same numbers on CPU:

- :func:`map_frames` (:meth:`VoxelCuller.project`) uses the same float64 operations in the same order,
  ``x = ((r00 px + r01 py) + r02 pz) + t0`` and ``u = rint(fx x / z + cx)``, compiled without fast-math,
  so without fused multiply-adds; the culling is the same conservative voxel test (a frame's coarse
  voxels, then the fine voxels of the coarse ones that pass, against the frustum and a max-depth
  pyramid, see :func:`_boxes_may_be_visible`), so it never drops a visible point; entries come frame
  by frame in the culler's point order, as in the torch code;
- :func:`voxel_keys`, :func:`voxel_layout` (the voxel build) compute the same keys (float64, same
  operations), sorted with torch's stable sort, and take the same bounds.

A batch's frames are split over ``threads`` threads; the kernels release the GIL.
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from featurizer.errors import ConfigError
from featurizer.geometry.backend import njit, use_kernels

DEPTH_MODES = ("relative", "absolute")


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
    Within a frame, entries are in increasing point order (or culling order, see :meth:`VoxelCuller.project`).
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
        if self.offsets.device.type == "cpu":  # numpy's repeat is several times faster than torch's on CPU
            frames = np.arange(self.num_frames, dtype=np.int64)
            return torch.from_numpy(np.repeat(frames, self.counts().numpy()))
        frames = torch.arange(self.num_frames, device=self.offsets.device)
        return torch.repeat_interleave(frames, self.counts())

def _camera_params(poses, intrinsics, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch's float64 world-to-camera (F, 4, 4), intrinsics (F, 3, 3), ``fx, fy, cx, cy`` (F, 4) and
    finite (F,) bool. A frame whose pose has a non-finite entry gets the identity here (every path then
    gives it no visible point), with a warning naming its batch position."""
    poses = torch.as_tensor(poses, device=device).to(torch.float64).reshape(-1, 4, 4)
    k = torch.as_tensor(intrinsics, device=device).to(torch.float64).reshape(-1, 3, 3)
    finite = torch.isfinite(poses).flatten(1).all(1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        warnings.warn(f"skipping {len(bad)} frame(s) with a non-finite pose (batch positions {bad})",
                      stacklevel=3)
        poses = torch.where(finite[:, None, None], poses, torch.eye(4, dtype=torch.float64, device=device))
    k4 = torch.stack([k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2]], 1)
    return torch.linalg.inv(poses), k, k4, finite


def _to_camera(pts: torch.Tensor, w2c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Camera coordinates x, y, z of (N, 3) float64 points under world-to-camera ``w2c`` (..., 4, 4):
    ``x = ((r00 px + r01 py) + r02 pz) + t0`` elementwise, in this order and without fused
    multiply-adds (no matmul), so that every path (this one on CPU or GPU, the compiled kernels below)
    gives the same bits. Shapes broadcast: (N,) for one frame, (F, N)
    for w2c (F, 1, 4, 4)."""
    px, py, pz = pts[:, 0], pts[:, 1], pts[:, 2]
    out = []
    for i in range(3):
        r = w2c[..., i, :]
        out.append(((r[..., 0] * px + r[..., 1] * py) + r[..., 2] * pz) + r[..., 3])
    return out[0], out[1], out[2]


def _check_batch(poses, intrinsics, num_frames: int) -> None:
    """ValueError unless there are as many poses and intrinsics as depth maps."""
    n_poses = len(torch.as_tensor(poses).reshape(-1, 4, 4))
    n_intr = len(torch.as_tensor(intrinsics).reshape(-1, 3, 3))
    if n_poses != num_frames or n_intr != num_frames:
        raise ValueError(f"{num_frames} depth maps but {n_poses} poses and {n_intr} intrinsics")


def _pairs_visible(pts: torch.Tensor, starts: list[int], world_to_cam: torch.Tensor, k: torch.Tensor,
                   depths: torch.Tensor, depth_mode: str, depth_tol: float,
                   border: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The exact test of DESIGN.md section 5 on (frame, point) pairs grouped by frame.

    pts: (M, 3) float64 points of the pairs, frame f's pairs being ``[starts[f], starts[f + 1])``.
    world_to_cam (F, 4, 4) and k (F, 3, 3) float64; depths (F, H, W) metres.
    Returns sel (K,) int64 positions of the kept pairs (increasing), u, v (K,) int64 their pixels.
    The float64 arithmetic is the same, operation for operation, as the full projection's
    (:func:`_to_camera`, ``round(fx * x / z + cx)``), so the kept pairs and pixels are bit-identical to it.
    """
    height, width = depths.shape[-2:]
    m = len(pts)
    dev = pts.device
    u = torch.empty(m, dtype=torch.float64, device=dev)
    v = torch.empty(m, dtype=torch.float64, device=dev)
    z = torch.empty(m, dtype=torch.float64, device=dev)
    frame_base = torch.empty(m, dtype=torch.float64, device=dev)
    for f in range(len(starts) - 1):
        a, b = starts[f], starts[f + 1]
        if a == b:
            continue
        x, y, zf = _to_camera(pts[a:b], world_to_cam[f])
        torch.round(k[f, 0, 0] * x / zf + k[f, 0, 2], out=u[a:b])
        torch.round(k[f, 1, 1] * y / zf + k[f, 1, 2], out=v[a:b])
        z[a:b] = zf
        frame_base[a:b] = float(f * height * width)
    keep = (z > 0) & (u >= border) & (u < width - border) & (v >= border) & (v < height - border)
    sel = torch.nonzero(keep).flatten()
    us, vs = u.index_select(0, sel), v.index_select(0, sel)
    pix = (frame_base.index_select(0, sel) + vs * width + us).long()  # exact: integers below 2**53
    d = depths.reshape(-1).index_select(0, pix).to(torch.float64)
    zi = z.index_select(0, sel)
    tol = depth_tol * d if depth_mode == "relative" else torch.full_like(d, float(depth_tol))
    ok = (d > 0) & ((d - zi).abs() <= tol)
    return sel[ok], us[ok].long(), vs[ok].long()


def _mapping_from_pairs(sel, ids, u, v, starts, device) -> Mapping:
    """Mapping of the kept pairs ``sel`` (increasing positions) of frame-major pairs (``starts``)."""
    bounds = torch.tensor(starts, dtype=torch.int64, device=device)
    offsets = torch.searchsorted(sel, bounds)
    return Mapping(ids, u, v, offsets)


class _DepthPyramid:
    """Max-depth pyramid of a batch of depth maps: level l holds the largest depth of every
    ``8 * 2**l`` pixel square tile (exact float32 values, invalid 0 never wins over a valid depth),
    up to one tile covering the whole frame; all levels flattened into one tensor per frame."""

    TILE = 8

    def __init__(self, depths: torch.Tensor):
        num_frames, height, width = depths.shape
        t = self.TILE
        ph, pw = -(-height // t) * t, -(-width // t) * t
        d = depths.to(torch.float32)
        if (ph, pw) != (height, width):
            d = torch.nn.functional.pad(d, (0, pw - width, 0, ph - height))
        # rows first: the reduction over a non-innermost axis is the vectorised one
        level = d.view(num_frames, ph // t, t, pw).amax(2).view(num_frames, ph // t, pw // t, t).amax(-1)
        levels, tile = [level], t
        while tile < max(width, height):
            level = torch.nn.functional.max_pool2d(level[:, None], 2, 2, ceil_mode=True)[:, 0]
            levels.append(level)
            tile *= 2
        dev = depths.device
        self.shapes = torch.tensor([lv.shape[1:] for lv in levels], dtype=torch.int64, device=dev)  # (L, 2)
        sizes = self.shapes[:, 0] * self.shapes[:, 1]
        self.offsets = torch.cumsum(sizes, 0) - sizes
        self.flat = torch.cat([lv.reshape(num_frames, -1) for lv in levels], 1).reshape(-1)
        self.stride = int(sizes.sum())
        self.num_levels = len(levels)

    def rect_max(self, f: torch.Tensor, r0, r1, c0, c1) -> torch.Tensor:
        """(K,) float32 upper bound of the depth over pixel rectangles rows r0..r1, cols c0..c1
        (inclusive, inside the frame) of frames f: the max of the <= 2 x 2 tiles of the first level
        whose tile is at least as long as the rectangle's longer side."""
        extent = torch.maximum(r1 - r0, c1 - c0)  # longer side - 1
        level = (torch.frexp(extent.to(torch.float64))[1].long() - 3).clamp(0, self.num_levels - 1)
        tile = self.TILE << level
        base = f * self.stride + self.offsets.index_select(0, level)
        w_l = self.shapes[:, 1].index_select(0, level)
        a, b = (r0 // tile) * w_l, (r1 // tile) * w_l
        c, d = c0 // tile, c1 // tile
        idx = torch.stack([a + c, a + d, b + c, b + d]) + base
        return self.flat.index_select(0, idx.reshape(-1)).view(4, -1).amax(0)


def _camera_boxes(center: torch.Tensor, half: torch.Tensor, w2c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-space centres and half extents (F * K, 3) float64 of K world boxes (``center`` ± ``half``,
    (K, 3)) in F frames (``w2c`` (F, 4, 4)), frame-major: row ``f * K + k``."""
    num_frames, num_boxes = len(w2c), len(center)
    rot = w2c[:, :3, :3]
    mat = torch.zeros(6, num_frames, 6, dtype=torch.float64, device=w2c.device)
    mat[:3, :, :3] = rot.permute(2, 0, 1)  # [j, f, i] = R_f[i, j]
    mat[3:, :, 3:] = rot.abs().permute(2, 0, 1)
    out = (torch.cat([center, half], 1) @ mat.reshape(6, -1)).view(num_boxes, num_frames, 6)
    out = out.transpose(0, 1).reshape(num_frames * num_boxes, 6)
    return out[:, :3] + w2c[:, :3, 3].repeat_interleave(num_boxes, 0), out[:, 3:]


def _boxes_may_be_visible(c_cam: torch.Tensor, rad: torch.Tensor, fi: torch.Tensor, intr4: torch.Tensor,
                          pyramid: _DepthPyramid | None, image_size: tuple[int, int], border: int,
                          depth_mode: str, depth_tol: float) -> torch.Tensor:
    """(M,) bool: False only where no point of box m can pass the exact test of frame ``fi[m]``.

    c_cam, rad: (M, 3) float64 camera-space centre and half extent of the box (``sum_j |R_ij| h_j``,
    :func:`_camera_boxes`); intr4: (F, 4) float64 ``fx, fy, cx, cy``; pyramid: max depths of the frames.

    Why it is conservative. Camera coordinates are affine in the point, so over the box each of
    x, y, z lies in ``c ± r``, widened here by ``1e-9 (1 + |c| + r)`` (float64 rounding of these few
    terms and of the exact path's own ``p @ R^T + t`` is below 1e-14 relative: the margin covers it
    many times over). A box with ``z_max <= 0`` holds no point with ``z > 0``. When
    ``z_min > 0``, x / z over the (x, z) rectangle is extreme at its corners, so every point's
    ``fx * x / z + cx`` lies in ``[u_min, u_max]`` up to 1e-12 px; a point is kept only if it
    rounds into ``border .. W - border - 1``, i.e. ``border - 0.5 <= u <= W - border - 0.5``, so
    ``u_max < border - 1`` or ``u_min > W - border`` (a 0.5 px margin) rejects all (same for v).
    A kept point's pixel lies in ``[floor(u_min - 1), ceil(u_max + 1)]`` (clamped to the border
    range; the whole range when the box straddles z = 0) and its depth d there is at most the
    footprint's max ``dmax``; it passes only if ``z <= d + tol(d) <= dmax + tol(dmax)`` (tol grows
    with d in both modes), so ``z_min > (dmax + tol(dmax)) (1 + 1e-9) + 1e-9`` rejects all, and so
    does ``dmax <= 0`` (no valid depth; NaN compares False and keeps the box).
    """
    width, height = image_size
    if width <= 2 * border or height <= 2 * border:  # no pixel inside the border
        return torch.zeros(len(fi), dtype=torch.bool, device=fi.device)
    rad = rad + 1e-9 * (1.0 + c_cam.abs() + rad)
    lo, hi = c_cam - rad, c_cam + rad
    zl, zh = lo[:, 2], hi[:, 2]
    front = zl > 0
    inv_l = torch.where(front, 1.0 / zl, 1.0)
    inv_h = torch.where(front, 1.0 / zh, 1.0)
    kf = intr4.index_select(0, fi)
    bounds = []
    for axis, size in ((0, width), (1, height)):
        f_, c_ = kf[:, axis], kf[:, 2 + axis]
        a, b = lo[:, axis], hi[:, axis]
        q0 = torch.minimum(torch.minimum(a * inv_l, a * inv_h), torch.minimum(b * inv_l, b * inv_h))
        q1 = torch.maximum(torch.maximum(a * inv_l, a * inv_h), torch.maximum(b * inv_l, b * inv_h))
        e0, e1 = f_ * q0 + c_, f_ * q1 + c_
        pmin, pmax = torch.minimum(e0, e1), torch.maximum(e0, e1)
        out = front & ((pmax < border - 1) | (pmin > size - border))
        top = size - 1 - border
        p0 = torch.where(front, torch.floor(pmin - 1).clamp(border, top), float(border))
        p1 = torch.where(front, torch.ceil(pmax + 1).clamp(border, top), float(top))
        bounds.append((out, p0.long(), p1.long()))
    (out_u, c0, c1), (out_v, r0, r1) = bounds
    keep = (zh > 0) & ~out_u & ~out_v
    if pyramid is not None:
        sel = torch.nonzero(keep).flatten()
        pick = lambda x: x.index_select(0, sel)  # noqa: E731
        dmax = pyramid.rect_max(pick(fi), pick(r0), pick(r1), pick(c0), pick(c1)).to(torch.float64)
        limit = dmax * (1.0 + depth_tol) if depth_mode == "relative" else dmax + depth_tol
        hidden = (dmax <= 0) | (pick(zl) > limit * (1.0 + 1e-9) + 1e-9)
        keep[sel[hidden]] = False
    return keep


def _expand(ptr: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR expansion: for each item, the range ``ptr[item] .. ptr[item + 1]``. Returns (rep, pos):
    rep (Q,) the position in ``items`` of every output, pos (Q,) the expanded index."""
    start = ptr.index_select(0, items)
    count = ptr.index_select(0, items + 1) - start
    rep = torch.repeat_interleave(torch.arange(len(items), device=items.device), count)
    pos = torch.arange(len(rep), device=items.device) + (start - (torch.cumsum(count, 0) - count)).index_select(0, rep)
    return rep, pos


class VoxelCuller:
    """Two-level voxel culling of points, so that a frame's mapping only tests the points of the
    voxels that may hold a visible point (exact: the culling is conservative, see
    :func:`_boxes_may_be_visible`).

    points: (N, 3) raw coordinates. voxel_points: aim for about this many points per (fine) voxel;
    ``coarse``: a coarse voxel is ``coarse**3`` fine cells (tested first, for every frame; only the
    fine voxels of coarse voxels that pass are tested). Boxes are the points' bounding boxes.
    backend: how the voxels are built (``auto``: compiled on CPU when numba is installed; ``torch``);
    both build the same arrays.
    """

    def __init__(self, points: torch.Tensor | np.ndarray, voxel_points: int = 16, coarse: int = 4,
                 backend: str = "auto"):
        pts = torch.as_tensor(points).to(torch.float64).reshape(-1, 3)
        device = pts.device
        n = len(pts)
        self.num_points = n
        self._boxes_by_row: list[np.ndarray] | None = None  # numpy (3, V) copies for the compiled kernels
        if n == 0:
            z3 = torch.zeros(0, 3, dtype=torch.float64, device=device)
            zi = torch.zeros(1, dtype=torch.int64, device=device)
            self.order, self.points = zi[:0], z3
            self.ptr, self.coarse_ptr = zi, zi
            self.center = self.half = self.coarse_center = self.coarse_half = self.lo = self.hi = z3
            self.voxel_size = 0.0
            return
        lo_all, hi_all = pts.min(0).values, pts.max(0).values
        if use_kernels(backend, device):  # the same arrays, from two compiled passes around the sort
            size, key = voxel_keys(pts.numpy(), lo_all.numpy(), voxel_points, coarse)
            skey, order = torch.sort(torch.from_numpy(key), stable=True)
            spts, ptr, cptr, lo, hi, clo, chi = (torch.from_numpy(a) for a in voxel_layout(
                pts.numpy(), skey.numpy(), order.numpy(), coarse))
            self.order, self.points, self.ptr, self.coarse_ptr = order, spts, ptr, cptr
            self.lo, self.hi = lo, hi
            self.center, self.half = (lo + hi) / 2, (hi - lo) / 2
            self.coarse_center, self.coarse_half = (clo + chi) / 2, (chi - clo) / 2
            self.voxel_size = size
            return
        extent = max(float((hi_all - lo_all).max()), 1e-6)
        # fine voxel size from the occupancy of a probe grid (points on surfaces: area ~ cells * size^2)
        probe = extent / 32.0
        cell = torch.floor((pts - lo_all) / probe).long().clamp(0, 32)
        occupied = int((torch.bincount((cell[:, 0] * 33 + cell[:, 1]) * 33 + cell[:, 2], minlength=33**3) > 0).sum())
        size = min(max(math.sqrt(occupied * probe * probe * voxel_points / n), probe / 16), extent)
        cell = torch.floor((pts - lo_all) / size).long()
        dims = (cell.max(0).values // coarse + 1).tolist()
        cc = cell // coarse
        sub = cell - cc * coarse
        ckey = (cc[:, 0] * dims[1] + cc[:, 1]) * dims[2] + cc[:, 2]
        key = ckey * coarse**3 + (sub[:, 0] * coarse + sub[:, 1]) * coarse + sub[:, 2]
        skey, order = torch.sort(key, stable=True)
        fine_keys, counts = torch.unique_consecutive(skey, return_counts=True)
        _, coarse_counts = torch.unique_consecutive(fine_keys // coarse**3, return_counts=True)
        self.order = order  # point ids grouped by fine voxel, fine voxels grouped by coarse voxel
        self.points = pts[order]
        self.ptr = torch.nn.functional.pad(torch.cumsum(counts, 0), (1, 0))  # fine voxel -> points
        self.coarse_ptr = torch.nn.functional.pad(torch.cumsum(coarse_counts, 0), (1, 0))  # coarse -> fine
        vox = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
        self.lo, self.hi = _segment_bounds(self.points, vox, len(counts))
        cvox = torch.repeat_interleave(torch.arange(len(coarse_counts), device=device), coarse_counts)
        clo, _ = _segment_bounds(self.lo, cvox, len(coarse_counts))
        _, chi = _segment_bounds(self.hi, cvox, len(coarse_counts))
        self.center, self.half = (self.lo + self.hi) / 2, (self.hi - self.lo) / 2
        self.coarse_center, self.coarse_half = (clo + chi) / 2, (chi - clo) / 2
        self.voxel_size = size

    def _pairs(self, w2c, intr4, finite, image_size, border, depths, depth_mode, depth_tol):
        """Candidate (frame, sorted point position) pairs, frame-major: pos (M,) and starts (F + 1 ints),
        for frames of :func:`_camera_params` ``w2c``, ``intr4`` and ``finite``."""
        device = self.points.device
        num_frames = len(w2c)
        pyramid = _DepthPyramid(torch.as_tensor(depths, device=device)) if depths is not None else None
        args = (intr4, pyramid, image_size, int(border), depth_mode, float(depth_tol))
        n_coarse, n_fine = len(self.coarse_center), len(self.center)
        # coarse voxels, every frame
        c_cam, rad = _camera_boxes(self.coarse_center, self.coarse_half, w2c)
        fi = torch.arange(num_frames, device=device).repeat_interleave(n_coarse)
        ok = _boxes_may_be_visible(c_cam, rad, fi, *args) & finite.repeat_interleave(n_coarse)
        pair = torch.nonzero(ok).flatten()
        fi, ci = pair // max(n_coarse, 1), pair % max(n_coarse, 1)
        # their fine voxels
        rep, vi = _expand(self.coarse_ptr, ci)
        fi = fi.index_select(0, rep)
        flat = fi * n_fine + vi
        c_cam, rad = _camera_boxes(self.center, self.half, w2c)
        ok = torch.nonzero(_boxes_may_be_visible(c_cam.index_select(0, flat), rad.index_select(0, flat), fi,
                                                 *args)).flatten()
        fi, vi = fi.index_select(0, ok), vi.index_select(0, ok)
        # their points
        rep, pos = _expand(self.ptr, vi)
        per_frame = torch.zeros(num_frames, dtype=torch.int64, device=device).index_add_(
            0, fi, self.ptr.index_select(0, vi + 1) - self.ptr.index_select(0, vi))
        starts = [0] + torch.cumsum(per_frame, 0).tolist()
        return pos, starts

    def project(self, poses, intrinsics, depths: torch.Tensor, *, depth_mode: str = "relative",
                depth_tol: float = 0.25, border: int = 10, backend: str = "auto") -> Mapping:
        """The exact depth-tested mapping of the culler's points (DESIGN.md section 5; entries in culling
        order within a frame). poses (F, 4, 4), intrinsics (F, 3, 3), depths
        (F, H, W) metres. Point ids index the ``points`` the culler was built from.

        backend: ``auto`` (the compiled kernels below on CPU when numba is
        installed, else torch), ``torch`` or ``numba``; all give the same mapping."""
        check_mapping_options(depth_mode, depth_tol, border)
        depths = torch.as_tensor(depths, device=self.points.device)
        if depths.dim() == 2:
            depths = depths[None]
        num_frames, height, width = depths.shape
        _check_batch(poses, intrinsics, num_frames)
        w2c, k, intr4, finite = _camera_params(poses, intrinsics, self.points.device)
        if use_kernels(backend, self.points.device):
            return self._project_compiled(w2c, intr4, finite, depths, depth_mode, depth_tol, border)
        pos, starts = self._pairs(w2c, intr4, finite, (width, height), border, depths, depth_mode, depth_tol)
        sel, u, v = _pairs_visible(self.points.index_select(0, pos), starts, w2c, k, depths, depth_mode,
                                   float(depth_tol), int(border))
        ids = self.order.index_select(0, pos.index_select(0, sel))
        return _mapping_from_pairs(sel, ids, u, v, starts, self.points.device)

    def _project_compiled(self, w2c, intr4, finite, depths, depth_mode, depth_tol, border) -> Mapping:
        if self._boxes_by_row is None:  # once per culler: the kernels read box coordinates by row
            self._boxes_by_row = [a.T.contiguous().numpy() for a in (self.center, self.half, self.coarse_center,
                                                                     self.coarse_half)]
        pos, u, v, counts = map_frames(
            self.points.numpy(), self.ptr.numpy(), *self._boxes_by_row, self.coarse_ptr.numpy(), w2c.numpy(),
            intr4.numpy(), depths.numpy(), finite.numpy(), border, depth_mode == "relative", depth_tol,
            threads=torch.get_num_threads())
        offsets = torch.zeros(len(counts) + 1, dtype=torch.int64)
        offsets[1:] = torch.from_numpy(np.cumsum(counts))
        ids = self.order.index_select(0, torch.from_numpy(pos))
        return Mapping(ids, torch.from_numpy(u), torch.from_numpy(v), offsets)



def _segment_bounds(values: torch.Tensor, seg: torch.Tensor, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per segment min and max (num, 3) of (P, 3) ``values`` (segment ``seg`` (P,) of each row)."""
    idx = seg[:, None].expand(-1, values.shape[1])
    lo = torch.full((num, values.shape[1]), float("inf"), dtype=values.dtype, device=values.device)
    hi = torch.full((num, values.shape[1]), float("-inf"), dtype=values.dtype, device=values.device)
    return lo.scatter_reduce_(0, idx, values, "amin"), hi.scatter_reduce_(0, idx, values, "amax")



# ---------------------------------------------------------------------------------------------------
# Compiled twins (numba, CPU)

@njit
def _pyramid(dep, tile):
    """Max-depth pyramid of one (H, W) float32 depth map, as _DepthPyramid: level l
    holds the max of every ``tile * 2**l`` pixel square, up to one tile covering the frame. A NaN
    pixel never wins (it never passes the exact test, like an invalid 0).
    Returns (flat float32, shapes (L, 2) int64, offsets (L,) int64)."""
    height, width = dep.shape
    th, tw = (height + tile - 1) // tile, (width + tile - 1) // tile
    nlev = 1
    t = tile
    while t < max(width, height):
        t *= 2
        nlev += 1
    shapes = np.empty((nlev, 2), dtype=np.int64)
    offsets = np.empty(nlev, dtype=np.int64)
    h, w, total = th, tw, 0
    for lv in range(nlev):
        shapes[lv, 0], shapes[lv, 1], offsets[lv] = h, w, total
        total += h * w
        h, w = (h + 1) // 2, (w + 1) // 2
    flat = np.zeros(total, dtype=np.float32)
    colmax = np.zeros(tw * tile, dtype=np.float32)
    for ty in range(th):
        colmax[:] = 0.0
        for y in range(ty * tile, min(height, (ty + 1) * tile)):
            row = dep[y]
            for x in range(width):  # a select, so that the compiler vectorises it
                v, c = row[x], colmax[x]
                colmax[x] = v if v > c else c
        for tx in range(tw):
            m = colmax[tx * tile]
            for j in range(1, tile):
                m = max(m, colmax[tx * tile + j])
            flat[ty * tw + tx] = m
    for lv in range(1, nlev):
        ph, pw, po = shapes[lv - 1, 0], shapes[lv - 1, 1], offsets[lv - 1]
        h, w, o = shapes[lv, 0], shapes[lv, 1], offsets[lv]
        for i in range(h):
            for j in range(w):
                m = flat[po + (2 * i) * pw + 2 * j]
                if 2 * j + 1 < pw:
                    m = max(m, flat[po + (2 * i) * pw + 2 * j + 1])
                if 2 * i + 1 < ph:
                    m = max(m, flat[po + (2 * i + 1) * pw + 2 * j])
                    if 2 * j + 1 < pw:
                        m = max(m, flat[po + (2 * i + 1) * pw + 2 * j + 1])
                flat[o + i * w + j] = m
    return flat, shapes, offsets


@njit
def _cull_range(cen, hal, a, b, ptr, w2c, fx, fy, cx, cy, width, height, border, flat, shapes, offsets, tile,
                relative, tol, out, n):
    """The boxes k = a .. b-1 (world ``cen[:, k] +- hal[:, k]``, coordinates by row (3, V)) that may hold
    a point passing the exact test of the frame, appended to ``out`` from ``n`` on; returns (new n, the
    number of items ``ptr`` gives them). Branch-free, so that mispredictions do not dominate.

    The test is that of _boxes_may_be_visible, with the same margins: camera-space
    half extents ``sum_j |R_ij| h_j`` widened by ``1e-9 (1 + |c| + r)``; ``zh <= 0`` rejects (no point
    in front); for ``zl > 0`` x / z over the box is extreme at its corners, so a pixel range missing the
    border range by more than 0.5 px rejects; the footprint (grown by 1 px, the whole border range when
    the box straddles z = 0) reads the max depth dmax of the <= 2 x 2 pyramid tiles of the first level
    longer than it, and ``zl > (dmax + tol(dmax)) (1 + 1e-9) + 1e-9`` or no valid depth rejects."""
    r00, r01, r02, t0 = w2c[0, 0], w2c[0, 1], w2c[0, 2], w2c[0, 3]
    r10, r11, r12, t1 = w2c[1, 0], w2c[1, 1], w2c[1, 2], w2c[1, 3]
    r20, r21, r22, t2 = w2c[2, 0], w2c[2, 1], w2c[2, 2], w2c[2, 3]
    a00, a01, a02 = abs(r00), abs(r01), abs(r02)
    a10, a11, a12 = abs(r10), abs(r11), abs(r12)
    a20, a21, a22 = abs(r20), abs(r21), abs(r22)
    left, top = float(border), float(border)
    right, bottom = float(width - 1 - border), float(height - 1 - border)
    top_level = shapes.shape[0] - 1
    tile_bits = 0
    while (1 << tile_bits) < tile:  # tile is a power of two
        tile_bits += 1
    npts = 0
    for k in range(a, b):
        c0, c1, c2 = cen[0, k], cen[1, k], cen[2, k]
        h0, h1, h2 = hal[0, k], hal[1, k], hal[2, k]
        x = r00 * c0 + r01 * c1 + r02 * c2 + t0
        y = r10 * c0 + r11 * c1 + r12 * c2 + t1
        z = r20 * c0 + r21 * c1 + r22 * c2 + t2
        rx = a00 * h0 + a01 * h1 + a02 * h2
        ry = a10 * h0 + a11 * h1 + a12 * h2
        rz = a20 * h0 + a21 * h1 + a22 * h2
        rx += 1e-9 * (1.0 + abs(x) + rx)
        ry += 1e-9 * (1.0 + abs(y) + ry)
        rz += 1e-9 * (1.0 + abs(z) + rz)
        zl, zh = z - rz, z + rz
        front = zl > 0
        il = 1.0 / (zl if front else 1.0)
        ih = 1.0 / (zh if front else 1.0)
        xa, xb, ya, yb = x - rx, x + rx, y - ry, y + ry
        umin = fx * min(xa * il, xa * ih) + cx
        umax = fx * max(xb * il, xb * ih) + cx
        vmin = fy * min(ya * il, ya * ih) + cy
        vmax = fy * max(yb * il, yb * ih) + cy
        out_of_frame = ((umax < border - 1) | (umin > width - border)
                        | (vmax < border - 1) | (vmin > height - border))
        ok = (zh > 0) & ~(front & out_of_frame)
        c_lo = min(max(np.floor(umin - 1), left), right) if front else left
        c_hi = min(max(np.ceil(umax + 1), left), right) if front else right
        r_lo = min(max(np.floor(vmin - 1), top), bottom) if front else top
        r_hi = min(max(np.ceil(vmax + 1), top), bottom) if front else bottom
        ic0, ic1, ir0, ir1 = int(c_lo), int(c_hi), int(r_lo), int(r_hi)
        extent = max(ir1 - ir0, ic1 - ic0)
        lv = 0
        for j in range(top_level):
            lv += (tile << j) <= extent
        sh = tile_bits + lv  # tiles of 2**sh pixels: shifts, not divisions
        w, o = shapes[lv, 1], offsets[lv]
        ra, rb, ca, cb = (ir0 >> sh) * w + o, (ir1 >> sh) * w + o, ic0 >> sh, ic1 >> sh
        dmax = np.float64(max(max(flat[ra + ca], flat[ra + cb]), max(flat[rb + ca], flat[rb + cb])))
        limit = dmax * (1.0 + tol) if relative else dmax + tol
        ok &= (dmax > 0) & ~(zl > limit * (1.0 + 1e-9) + 1e-9)
        out[n] = k
        n += 1 if ok else 0
        npts += (ptr[k + 1] - ptr[k]) if ok else 0
    return n, npts


@njit
def _cull_frame(ccen, chal, cptr, cen, hal, ptr, w2c, k4, dep, border, relative, tol, tile, out_vox, coarse):
    """Fine voxels of one frame that may hold a visible point, in voxel order, into ``out_vox``: the
    coarse voxels first (into ``coarse``), then the fine voxels of those that pass.
    Returns (number of voxels, number of their points)."""
    height, width = dep.shape
    if width <= 2 * border or height <= 2 * border:  # no pixel inside the border
        return 0, 0
    flat, shapes, offsets = _pyramid(dep, tile)
    fx, fy, cx, cy = k4[0], k4[1], k4[2], k4[3]
    n_coarse, _ = _cull_range(ccen, chal, 0, ccen.shape[1], cptr, w2c, fx, fy, cx, cy, width, height,
                              border, flat, shapes, offsets, tile, relative, tol, coarse, 0)
    n_vox, n_pts = 0, 0
    for j in range(n_coarse):
        c = coarse[j]
        n_vox, npts = _cull_range(cen, hal, cptr[c], cptr[c + 1], ptr, w2c, fx, fy, cx, cy, width, height,
                                  border, flat, shapes, offsets, tile, relative, tol, out_vox, n_vox)
        n_pts += npts
    return n_vox, n_pts


@njit
def _exact_frame(points, ptr, vox, n_vox, w2c, k4, dep, border, relative, tol, out_pos, out_u, out_v, start):
    """The exact test of DESIGN.md section 5 on the points of the voxels ``vox[:n_vox]``; writes the
    kept (position, u, v) from ``start`` on and returns the new end."""
    height, width = dep.shape
    fx, fy, cx, cy = k4[0], k4[1], k4[2], k4[3]
    n = start
    for j in range(n_vox):
        vx = vox[j]
        for p in range(ptr[vx], ptr[vx + 1]):
            px, py, pz = points[p, 0], points[p, 1], points[p, 2]
            x = w2c[0, 0] * px + w2c[0, 1] * py + w2c[0, 2] * pz + w2c[0, 3]
            y = w2c[1, 0] * px + w2c[1, 1] * py + w2c[1, 2] * pz + w2c[1, 3]
            z = w2c[2, 0] * px + w2c[2, 1] * py + w2c[2, 2] * pz + w2c[2, 3]
            u = np.rint(fx * x / z + cx)
            v = np.rint(fy * y / z + cy)
            if not (z > 0 and u >= border and u < width - border and v >= border and v < height - border):
                continue
            ui, vi = int(u), int(v)
            d = np.float64(dep[vi, ui])
            if d > 0 and abs(d - z) <= (tol * d if relative else tol):
                out_pos[n] = p
                out_u[n] = ui
                out_v[n] = vi
                n += 1
    return n


@njit
def _map_chunk(points, ptr, cen, hal, ccen, chal, cptr, w2c, k4, depths, finite, border, relative, tol, tile):
    """The mapping of a run of frames: (pos, u, v) int64 of the kept pairs (frame-major) and counts (F,).
    Each frame is culled and then tested at once, while its depth map is still in the cache."""
    nf = w2c.shape[0]
    vox = np.empty(cen.shape[1] + 1, dtype=np.int64)  # + 1: the branch-free compaction writes one past
    coarse = np.empty(ccen.shape[1] + 1, dtype=np.int64)
    cap = 1 << 16
    pos = np.empty(cap, dtype=np.int64)
    u = np.empty(cap, dtype=np.int64)
    v = np.empty(cap, dtype=np.int64)
    counts = np.zeros(nf, dtype=np.int64)
    n = 0
    for f in range(nf):
        if not finite[f]:
            continue
        n_vox, n_pts = _cull_frame(ccen, chal, cptr, cen, hal, ptr, w2c[f], k4[f], depths[f], border,
                                   relative, tol, tile, vox, coarse)
        if n_vox == 0:
            continue
        if n + n_pts > cap:
            cap = max(2 * cap, n + n_pts)
            pos, u, v = _grow(pos, n, cap), _grow(u, n, cap), _grow(v, n, cap)
        end = _exact_frame(points, ptr, vox, n_vox, w2c[f], k4[f], depths[f], border, relative, tol,
                           pos, u, v, n)
        counts[f] = end - n
        n = end
    return pos[:n].copy(), u[:n].copy(), v[:n].copy(), counts


@njit
def _grow(a, n, cap):
    out = np.empty(cap, dtype=a.dtype)
    out[:n] = a[:n]
    return out


_POOL: ThreadPoolExecutor | None = None


def _pool(threads: int) -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None or _POOL._max_workers != threads:  # noqa: SLF001
        _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="featurizer-map")
    return _POOL


def map_frames(points: np.ndarray, ptr: np.ndarray, center: np.ndarray, half: np.ndarray, ccenter: np.ndarray,
               chalf: np.ndarray, cptr: np.ndarray, w2c: np.ndarray, k4: np.ndarray, depths: np.ndarray,
               finite: np.ndarray, border: int, relative: bool, tol: float,
               threads: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Depth-tested mapping of a batch of frames over a voxel hierarchy (arrays of a VoxelCuller).

    points (N, 3) float64 in voxel order; ptr (V + 1,) fine voxel -> points; center, half (3, V) (the
    coordinates by row, the order the culling loop reads them in); ccenter, chalf (3, C) and cptr
    (C + 1,) coarse voxel -> fine voxels; w2c (F, 4, 4) float64;
    k4 (F, 4) float64 ``fx, fy, cx, cy``; depths (F, H, W) float32 metres; finite (F,) bool (frames
    with a non-finite pose get nothing). Returns pos, u, v (M,) int64 (pos: index into ``points``)
    frame after frame, and counts (F,) int64.
    """
    nf = len(w2c)
    depths = np.ascontiguousarray(depths, dtype=np.float32)
    boxes = [np.ascontiguousarray(a, dtype=np.float64) for a in (center, half, ccenter, chalf)]
    args = (np.ascontiguousarray(points, dtype=np.float64), ptr, *boxes, cptr)
    opts = (int(border), bool(relative), float(tol), _DepthPyramid.TILE)
    threads = max(1, min(int(threads), nf))
    bounds = np.linspace(0, nf, threads + 1).round().astype(int)
    chunks = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]

    def run(a: int, b: int):
        return _map_chunk(*args, w2c[a:b], k4[a:b], depths[a:b], finite[a:b], *opts)

    if len(chunks) == 1:
        parts = [run(*chunks[0])]
    else:
        parts = list(_pool(threads).map(lambda ab: run(*ab), chunks))
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))



@njit
def _voxel_keys(pts, lo, voxel_points, coarse):
    """Fine voxel size (from the occupancy of a 33^3 probe grid) and each point's sort key (coarse voxel,
    then fine cell in it), exactly as the torch code of VoxelCuller."""
    n = pts.shape[0]
    extent = 1e-6
    hi = np.empty(3)
    for a in range(3):
        hi[a] = pts[0, a]
        for i in range(n):
            hi[a] = max(hi[a], pts[i, a])
        extent = max(extent, hi[a] - lo[a])
    probe = extent / 32.0
    seen = np.zeros(33 ** 3, dtype=np.bool_)
    for i in range(n):
        c0 = min(max(int(np.floor((pts[i, 0] - lo[0]) / probe)), 0), 32)
        c1 = min(max(int(np.floor((pts[i, 1] - lo[1]) / probe)), 0), 32)
        c2 = min(max(int(np.floor((pts[i, 2] - lo[2]) / probe)), 0), 32)
        seen[(c0 * 33 + c1) * 33 + c2] = True
    occupied = 0
    for j in range(seen.shape[0]):
        occupied += seen[j]
    size = min(max(np.sqrt(occupied * probe * probe * voxel_points / n), probe / 16), extent)
    cell = np.empty((n, 3), dtype=np.int64)
    dims = np.zeros(3, dtype=np.int64)
    for i in range(n):
        for a in range(3):
            c = int(np.floor((pts[i, a] - lo[a]) / size))
            cell[i, a] = c
            dims[a] = max(dims[a], c // coarse + 1)
    key = np.empty(n, dtype=np.int64)
    for i in range(n):
        cc0, cc1, cc2 = cell[i, 0] // coarse, cell[i, 1] // coarse, cell[i, 2] // coarse
        s0, s1, s2 = cell[i, 0] - cc0 * coarse, cell[i, 1] - cc1 * coarse, cell[i, 2] - cc2 * coarse
        ckey = (cc0 * dims[1] + cc1) * dims[2] + cc2
        key[i] = ckey * coarse ** 3 + (s0 * coarse + s1) * coarse + s2
    return size, key


@njit
def _voxel_layout(pts, skey, order, coarse):
    """From the sorted keys: the points in voxel order, fine voxel -> points and coarse -> fine pointers,
    and the bounds (lo, hi) of every fine and coarse voxel."""
    n = skey.shape[0]
    c3 = coarse ** 3
    n_fine, n_coarse = 1, 1
    for i in range(1, n):
        if skey[i] != skey[i - 1]:
            n_fine += 1
            if skey[i] // c3 != skey[i - 1] // c3:
                n_coarse += 1
    spts = np.empty((n, 3))
    ptr = np.zeros(n_fine + 1, dtype=np.int64)
    cptr = np.zeros(n_coarse + 1, dtype=np.int64)
    lo = np.empty((n_fine, 3))
    hi = np.empty((n_fine, 3))
    clo = np.empty((n_coarse, 3))
    chi = np.empty((n_coarse, 3))
    f, c = -1, -1
    for i in range(n):
        p = order[i]
        new_fine = i == 0 or skey[i] != skey[i - 1]
        if new_fine:
            f += 1
            ptr[f] = i
            if i == 0 or skey[i] // c3 != skey[i - 1] // c3:
                c += 1
                cptr[c] = f
        for a in range(3):
            v = pts[p, a]
            spts[i, a] = v
            if new_fine:
                lo[f, a] = v
                hi[f, a] = v
            else:
                lo[f, a] = min(lo[f, a], v)
                hi[f, a] = max(hi[f, a], v)
    ptr[n_fine] = n
    cptr[n_coarse] = n_fine
    for c in range(n_coarse):
        for a in range(3):
            clo[c, a] = lo[cptr[c], a]
            chi[c, a] = hi[cptr[c], a]
            for f in range(cptr[c] + 1, cptr[c + 1]):
                clo[c, a] = min(clo[c, a], lo[f, a])
                chi[c, a] = max(chi[c, a], hi[f, a])
    return spts, ptr, cptr, lo, hi, clo, chi


def voxel_keys(pts: np.ndarray, lo: np.ndarray, voxel_points: int, coarse: int) -> tuple[float, np.ndarray]:
    """(fine voxel size, (N,) int64 sort key) of (N, 3) float64 points whose per-axis minimum is ``lo``."""
    return _voxel_keys(np.ascontiguousarray(pts, dtype=np.float64), np.asarray(lo, dtype=np.float64),
                       float(voxel_points), int(coarse))


def voxel_layout(pts: np.ndarray, skey: np.ndarray, order: np.ndarray, coarse: int):
    """Points in voxel order (N, 3), ptr (V + 1,), coarse ptr (C + 1,), fine lo, hi (V, 3), coarse lo,
    hi (C, 3)."""
    return _voxel_layout(np.ascontiguousarray(pts, dtype=np.float64), np.ascontiguousarray(skey),
                         np.ascontiguousarray(order), int(coarse))
