"""Reference code the tests hold the package to (none of it is used by featurizer itself).

- :func:`project_points`: the dense depth-tested mapping of DESIGN.md section 5 (every point tested in
  every frame), or of the given candidates only; :meth:`VoxelCuller.project` must give the same pairs;
- :func:`candidates`: the points a :class:`VoxelCuller` keeps per frame after culling;
- :func:`frame_entries`: one frame's (point ids, u, v) of a :class:`Mapping`.
"""

from __future__ import annotations

import numpy as np
import torch

from featurizer.geometry import mapping

CHUNK_ELEMENTS = 1 << 22  # frames x points handled at once (bounds the float64 temporaries)


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
) -> mapping.Mapping:
    """Depth-tested projection of points into a batch of frames of one size.

    points: (N, 3) raw mesh-frame coordinates. poses: (F, 4, 4) camera-to-world.
    intrinsics: (F, 3, 3) pinhole matrices at the frames' size. depths: (F, H, W) metres, 0 = invalid.
    candidates: optional, the only points tested in each frame (the others are not visible): an
    (F, N) bool mask or a list of F (M_f,) int64 id tensors (e.g. :func:`candidates`);
    a conservative culling leaves the result unchanged, but entries then come in candidate order.
    Frames whose pose has a non-finite entry get no visible point (with a warning).
    Computed on ``depths``' device. Returns a :class:`Mapping`.
    """
    mapping.check_mapping_options(depth_mode, depth_tol, border)
    depths = torch.as_tensor(depths)
    device = depths.device
    if depths.dim() == 2:
        depths = depths[None]
    num_frames, height, width = depths.shape
    pts = torch.as_tensor(points, device=device).to(torch.float64).reshape(-1, 3)
    mapping._check_batch(poses, intrinsics, num_frames)
    world_to_cam, k, _, finite = mapping._camera_params(poses, intrinsics, device)
    if candidates is not None:
        if isinstance(candidates, torch.Tensor):
            candidates = [torch.nonzero(c).flatten() for c in candidates.to(device)]
        return _project_sparse(pts, world_to_cam, k, depths, finite, candidates, depth_mode,
                               float(depth_tol), int(border))
    n = len(pts)
    chunk = max(1, CHUNK_ELEMENTS // max(n, 1))
    ids, us, vs, counts = [], [], [], []
    border = int(border)
    for f0 in range(0, num_frames, chunk):
        f1 = min(num_frames, f0 + chunk)
        x, y, z = mapping._to_camera(pts, world_to_cam[f0:f1, None])  # (f, N) each
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
    return mapping.Mapping(
        point_ids=torch.cat(ids) if ids else empty,
        u=torch.cat(us) if us else empty,
        v=torch.cat(vs) if vs else empty,
        offsets=offsets,
    )


def _project_sparse(pts, world_to_cam, k, depths, finite, candidates, depth_mode, depth_tol,
                    border) -> mapping.Mapping:
    device = pts.device
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    sels = [candidates[f].to(device) if bool(finite[f]) else empty for f in range(len(depths))]
    counts = [len(s) for s in sels]
    ids = torch.cat(sels) if sels else empty
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64).tolist()
    sel, u, v = mapping._pairs_visible(pts[ids], starts, world_to_cam, k, depths, depth_mode, depth_tol,
                                       border)
    return mapping._mapping_from_pairs(sel, ids[sel], u, v, starts, device)


def candidates(culler: mapping.VoxelCuller, poses, intrinsics, image_size: tuple[int, int], border: int = 0,
               depths: torch.Tensor | None = None, depth_mode: str = "relative",
               depth_tol: float = 0.25) -> list[torch.Tensor]:
    """Per frame, the (M_f,) int64 ids of the culler's points whose voxel may be in the frustum and, given
    the (F, H, W) depth maps, may pass the depth test."""
    w2c, _, intr4, finite = mapping._camera_params(poses, intrinsics, culler.points.device)
    pos, starts = culler._pairs(w2c, intr4, finite, image_size, border, depths, depth_mode, depth_tol)
    ids = culler.order[pos]
    return [ids[starts[f]:starts[f + 1]] for f in range(len(starts) - 1)]


def frame_entries(m: mapping.Mapping, f: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(point_ids, u, v) of frame ``f`` of a mapping, each (M_f,)."""
    a, b = int(m.offsets[f]), int(m.offsets[f + 1])
    return m.point_ids[a:b], m.u[a:b], m.v[a:b]
