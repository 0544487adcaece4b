"""Point -> pixel mapping with a depth test, convex hulls of pixel sets, patch-grid helpers.

The mapping is DESIGN.md section 5: ``p_cam = inv(pose) @ [p_raw, 1]`` in float64,
``u = fx * x / z + cx``, ``v = fy * y / z + cy`` rounded half to even (``torch.round``), keep
``z > 0``, ``border <= u < W - border``, ``border <= v < H - border`` and
``|depth[v, u] - z| <= tol`` with ``tol = depth_tol * depth[v, u]`` (``relative``, the paper's 0.25)
or ``tol = depth_tol`` metres (``absolute``); depth 0 is invalid. Projection uses the *raw*
coordinates (``Scene.points``), never the axis-aligned ones.

Everything is vectorised over points and batched over frames in torch, on the device of the inputs.
On CPU, when numba is installed, the culled mapping (:meth:`VoxelCuller.project`), the voxel build
and the hull areas (:func:`grouped_hull_area2`) run as the compiled kernels of
:mod:`featurizer.kernels` instead, which give the same numbers (``backend`` arguments choose).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from featurizer import kernels
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
        if self.offsets.device.type == "cpu":  # numpy's repeat is several times faster than torch's on CPU
            frames = np.arange(self.num_frames, dtype=np.int64)
            return torch.from_numpy(np.repeat(frames, self.counts().numpy()))
        frames = torch.arange(self.num_frames, device=self.offsets.device)
        return torch.repeat_interleave(frames, self.counts())

    def frame(self, f: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(point_ids, u, v) of frame ``f``, each (M_f,)."""
        a, b = int(self.offsets[f]), int(self.offsets[f + 1])
        return self.point_ids[a:b], self.u[a:b], self.v[a:b]


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
    _check_batch(poses, intrinsics, num_frames)
    world_to_cam, k, _, finite = _camera_params(poses, intrinsics, device)
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
        x, y, z = _to_camera(pts, world_to_cam[f0:f1, None])  # (f, N) each
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


def _to_camera(pts: torch.Tensor, w2c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Camera coordinates x, y, z of (N, 3) float64 points under world-to-camera ``w2c`` (..., 4, 4):
    ``x = ((r00 px + r01 py) + r02 pz) + t0`` elementwise, in this order and without fused
    multiply-adds (no matmul), so that every path (this one on CPU or GPU, the compiled kernels of
    :mod:`featurizer.kernels`) gives the same bits. Shapes broadcast: (N,) for one frame, (F, N)
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


def _project_sparse(pts, world_to_cam, k, depths, finite, candidates, depth_mode, depth_tol, border) -> Mapping:
    device = pts.device
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    sels = [candidates[f].to(device) if bool(finite[f]) else empty for f in range(len(depths))]
    counts = [len(s) for s in sels]
    ids = torch.cat(sels) if sels else empty
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64).tolist()
    sel, u, v = _pairs_visible(pts[ids], starts, world_to_cam, k, depths, depth_mode, depth_tol, border)
    return _mapping_from_pairs(sel, ids[sel], u, v, starts, device)


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
        if _use_kernels(backend, device):  # the same arrays, from two compiled passes around the sort
            size, key = kernels.voxel_keys(pts.numpy(), lo_all.numpy(), voxel_points, coarse)
            skey, order = torch.sort(torch.from_numpy(key), stable=True)
            spts, ptr, cptr, lo, hi, clo, chi = (torch.from_numpy(a) for a in kernels.voxel_layout(
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

    def candidates(self, poses, intrinsics, image_size: tuple[int, int], border: int = 0,
                   depths: torch.Tensor | None = None, depth_mode: str = "relative",
                   depth_tol: float = 0.25) -> list[torch.Tensor]:
        """Per frame, the (M_f,) int64 ids of the points whose voxel may be in the frustum and, given
        the (F, H, W) depth maps, may pass the depth test (see :func:`_boxes_may_be_visible`)."""
        w2c, _, intr4, finite = _camera_params(poses, intrinsics, self.points.device)
        pos, starts = self._pairs(w2c, intr4, finite, image_size, border, depths, depth_mode, depth_tol)
        ids = self.order[pos]
        return [ids[starts[f]:starts[f + 1]] for f in range(len(starts) - 1)]

    def project(self, poses, intrinsics, depths: torch.Tensor, *, depth_mode: str = "relative",
                depth_tol: float = 0.25, border: int = 10, backend: str = "auto") -> Mapping:
        """The exact depth-tested mapping of the culler's points, as :func:`project_points` gives it
        (entries in culling order within a frame). poses (F, 4, 4), intrinsics (F, 3, 3), depths
        (F, H, W) metres. Point ids index the ``points`` the culler was built from.

        backend: ``auto`` (the compiled kernels of :mod:`featurizer.kernels` on CPU when numba is
        installed, else torch), ``torch`` or ``numba``; all give the same mapping."""
        check_mapping_options(depth_mode, depth_tol, border)
        depths = torch.as_tensor(depths, device=self.points.device)
        if depths.dim() == 2:
            depths = depths[None]
        num_frames, height, width = depths.shape
        _check_batch(poses, intrinsics, num_frames)
        w2c, k, intr4, finite = _camera_params(poses, intrinsics, self.points.device)
        if _use_kernels(backend, self.points.device):
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
        pos, u, v, counts = kernels.map_frames(
            self.points.numpy(), self.ptr.numpy(), *self._boxes_by_row, self.coarse_ptr.numpy(), w2c.numpy(),
            intr4.numpy(), depths.numpy(), finite.numpy(), border, depth_mode == "relative", depth_tol,
            threads=torch.get_num_threads())
        offsets = torch.zeros(len(counts) + 1, dtype=torch.int64)
        offsets[1:] = torch.from_numpy(np.cumsum(counts))
        ids = self.order.index_select(0, torch.from_numpy(pos))
        return Mapping(ids, torch.from_numpy(u), torch.from_numpy(v), offsets)


BACKENDS = ("auto", "torch", "numba")


def check_backend(backend: str, option: str = "backend") -> None:
    """Raise :class:`ConfigError` for an unknown backend, or ``numba`` where numba is not installed."""
    if backend not in BACKENDS:
        raise ConfigError(option, f"unknown backend '{backend}' (one of {BACKENDS})")
    if backend == "numba" and not kernels.available():
        raise ConfigError(option, "numba is not installed (pip install numba), use auto or torch")


def _use_kernels(backend: str, device: torch.device) -> bool:
    """Whether to run the compiled CPU kernels (:mod:`featurizer.kernels`) rather than the torch code."""
    check_backend(backend)
    if backend == "torch":
        return False
    if backend == "numba":
        if device.type != "cpu":
            raise ConfigError("backend", f"the numba kernels run on CPU, not {device}")
        return True
    return device.type == "cpu" and kernels.available()


def _segment_bounds(values: torch.Tensor, seg: torch.Tensor, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per segment min and max (num, 3) of (P, 3) ``values`` (segment ``seg`` (P,) of each row)."""
    idx = seg[:, None].expand(-1, values.shape[1])
    lo = torch.full((num, values.shape[1]), float("inf"), dtype=values.dtype, device=values.device)
    hi = torch.full((num, values.shape[1]), float("-inf"), dtype=values.dtype, device=values.device)
    return lo.scatter_reduce_(0, idx, values, "amin"), hi.scatter_reduce_(0, idx, values, "amax")


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


_ANCHOR_DIRECTIONS = ((1, 0), (1, 1), (1, -1), (2, 1), (2, -1), (1, 2), (1, -2))  # (a, b): minimise a y - b x


def _minorant_candidates(group: torch.Tensor, x: torch.Tensor, y: torch.Tensor, num_groups: int) -> torch.Tensor:
    """(Q,) int64 positions of the points that may be strict vertices of their group's convex minorant
    (same arguments as :func:`_minorant_integral2`), found without iterating.

    Anchors: each group's first and last point and, for a few integer directions (a, b), the points
    minimising ``a y - b x`` (exact in int64): all lie on the minorant. Between two consecutive
    anchors the minorant lies on or below their chord, so a point on or above that chord is no
    strict vertex, and the remaining points (the anchors and the points strictly below the chords)
    have the same minorant as the whole set.
    """
    n = len(x)
    device = x.device
    pos = torch.arange(n, device=device)
    anchor = torch.ones(n, dtype=torch.bool, device=device)
    anchor[1:-1] = (group[1:-1] != group[:-2]) | (group[1:-1] != group[2:])
    big = torch.iinfo(torch.int64).max
    for a, b in _ANCHOR_DIRECTIONS:
        val = a * y - b * x
        low = torch.full((num_groups,), big, dtype=torch.int64, device=device).scatter_reduce_(0, group, val, "amin")
        anchor |= val == low.index_select(0, group)
    marks = torch.where(anchor, pos, -1)
    prev = torch.cummax(marks, 0).values
    nxt = n - 1 - torch.cummax(torch.where(anchor, n - 1 - pos, -1).flip(0), 0).values.flip(0)
    xa, ya, xb, yb = x.index_select(0, prev), y.index_select(0, prev), x.index_select(0, nxt), y.index_select(0, nxt)
    above = (y - ya) * (xb - xa) >= (yb - ya) * (x - xa)
    return torch.nonzero(anchor | ~above).flatten()


def _minorant_integral2(group: torch.Tensor, x: torch.Tensor, y: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Twice the integral of each group's convex minorant (lower monotone chain) of points (x, y).

    group, x, y: (P,) int64, sorted by (group, x) with x strictly increasing within a group.
    The chain is found by parallel pruning: a point on or above the chord of its two neighbours is
    never a strict vertex of the lower chain, so every such point is removed at once; repeat on the
    groups that changed until none does. Endpoints are never removed. Returns (G,) int64.
    """
    device = x.device
    done: list[torch.Tensor] = []
    cur = _minorant_candidates(group, x, y, num_groups) if len(x) >= 3 else torch.arange(len(x), device=device)
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


def group_boxes(group: torch.Tensor, row: torch.Tensor, col: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Box of each of many pixel sets: (G, 4) int64 ``(r0, r1, c0, c1)`` = min/max ``row`` and ``col``
    over the pixels of set g (``group`` (P,) int64 in 0 .. G-1); undefined (+-int64 max) for empty sets."""
    big = torch.iinfo(torch.int64).max
    box = torch.empty(num_groups, 4, dtype=torch.int64, device=row.device)
    box[:, 0::2] = big
    box[:, 1::2] = -big
    box[:, 0].scatter_reduce_(0, group, row, "amin")
    box[:, 1].scatter_reduce_(0, group, row, "amax")
    box[:, 2].scatter_reduce_(0, group, col, "amin")
    box[:, 3].scatter_reduce_(0, group, col, "amax")
    return box


def grouped_hull_area2(
    group: torch.Tensor, row: torch.Tensor, col: torch.Tensor, num_groups: int, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Convex hull of many pixel sets at once: twice the area (exact) and the box of each set.

    group, row, col: (P,) int64 (pixel p belongs to set ``group[p]`` in 0 .. G-1).
    The hull of a pixel set is bounded by the convex minorant of each row's leftmost pixel and the
    concave majorant of each row's rightmost pixel (the two monotone chains of Andrew's algorithm
    with the points sorted by row), so the area is the integral of their difference.
    Returns area2 (G,) int64 (0 for empty, single-row, single-column or otherwise collinear sets)
    and box (G, 4) int64 ``(r0, r1, c0, c1)`` = min/max row and column (undefined for empty sets).
    backend: ``auto`` (the compiled monotone chain of :mod:`featurizer.kernels` on CPU when numba is
    installed), ``torch`` (the parallel pruning below) or ``numba``; all give the same numbers.
    """
    device = row.device
    if _use_kernels(backend, device):
        area2, box = kernels.group_hulls(group.numpy(), row.numpy(), col.numpy(), num_groups)
        return torch.from_numpy(area2), torch.from_numpy(box)
    big = torch.iinfo(torch.int64).max
    box = group_boxes(group, row, col, num_groups)
    if len(row) == 0:
        return torch.zeros(num_groups, dtype=torch.int64, device=device), box
    row_lo = int(row.min())
    height = int(row.max()) - row_lo + 1
    # each row's leftmost and rightmost pixel: a dense (used group, row) table when it is small (no
    # sort), else a sort of the keys
    used = torch.zeros(num_groups, dtype=torch.bool, device=device)
    used[group] = True
    used_ids = torch.nonzero(used).flatten()
    if len(used_ids) * height <= max(4 * len(row), 1 << 16):
        rank = torch.cumsum(used, 0) - 1
        key = rank.index_select(0, group) * height + (row - row_lo)
        size = len(used_ids) * height
        left = torch.full((size,), big, dtype=torch.int64, device=device).scatter_reduce_(0, key, col, "amin")
        right = torch.full((size,), -big, dtype=torch.int64, device=device).scatter_reduce_(0, key, col, "amax")
        cells = torch.nonzero(left != big).flatten()  # sorted: group, then row
        left, right = left.index_select(0, cells), right.index_select(0, cells)
        g, r = used_ids.index_select(0, cells // height), cells % height + row_lo
    else:
        key, inv = torch.unique(group * height + (row - row_lo), return_inverse=True)  # sorted: group, then row
        left = torch.full((len(key),), big, dtype=torch.int64, device=device).scatter_reduce_(0, inv, col, "amin")
        right = torch.full((len(key),), -big, dtype=torch.int64, device=device).scatter_reduce_(0, inv, col, "amax")
        g, r = key // height, key % height + row_lo
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
