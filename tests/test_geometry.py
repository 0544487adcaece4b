"""Point -> pixel mapping against a brute-force loop, the depth test on a rendered occluder, hulls."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from featurizer.dataset.render import box_mesh, look_at
from featurizer.errors import ConfigError
from featurizer.geometry.hulls import convex_hull, grouped_hull_area2, polygon_area
from featurizer.geometry.pooling import box_sums
from reference_mapping import candidates, frame_entries, project_points

W, H = 64, 48
# the torch code and the compiled CPU kernels (featurizer.geometry) must give the same numbers
BACKENDS = ["torch", "numba"]  # numba is a dependency: its tests never skip


def brute_force(points, poses, intr, depths, mode, tol, border):
    """One point at a time, in Python floats: the set of visible (frame, point, u, v)."""
    out = set()
    for f in range(len(poses)):
        w2c = np.linalg.inv(poses[f])
        fx, fy, cx, cy = intr[f][0, 0], intr[f][1, 1], intr[f][0, 2], intr[f][1, 2]
        for n, p in enumerate(points.astype(np.float64)):
            x, y, z = (w2c @ np.append(p, 1.0))[:3]
            if not z > 0:
                continue
            u, v = round(fx * x / z + cx), round(fy * y / z + cy)  # Python rounds halves to even
            if not (border <= u < W - border and border <= v < H - border):
                continue
            d = float(depths[f][v, u])
            limit = tol * d if mode == "relative" else tol
            if d > 0 and abs(d - z) <= limit:
                out.add((f, n, u, v))
    return out


@pytest.mark.parametrize("mode,tol,border", [("relative", 0.25, 10), ("absolute", 0.05, 3), ("absolute", 0.3, 0)])
def test_mapping_matches_brute_force(mode, tol, border):
    rng = np.random.default_rng(1)
    n_pts, n_frames = 400, 6
    points = rng.uniform(-2, 2, size=(n_pts, 3)).astype(np.float32)
    poses = np.stack([look_at(rng.uniform(-4, 4, 3) + [0, 0, 0.5], rng.uniform(-0.5, 0.5, 3)) for _ in range(n_frames)])
    poses[2] = look_at([0, 0, 0.2], [0, 0, 5])  # looking away from most points: many z <= 0
    intr = np.stack([np.array([[40.0 + f, 0, 31.5], [0, 41.0 - f, 23.7], [0, 0, 1]]) for f in range(n_frames)])
    depths = rng.uniform(0.0, 6.0, size=(n_frames, H, W)).astype(np.float32)
    depths[depths < 0.5] = 0.0  # invalid depth
    # make about half of the points' pixels consistent with the points (within and beyond tolerance)
    for f in range(n_frames):
        w2c = np.linalg.inv(poses[f])
        cam = points.astype(np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.round(intr[f][0, 0] * cam[:, 0] / z + intr[f][0, 2])
            v = np.round(intr[f][1, 1] * cam[:, 1] / z + intr[f][1, 2])
        ok = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        for n in np.flatnonzero(ok)[::2]:
            depths[f, int(v[n]), int(u[n])] = z[n] * rng.choice([1.0, 1.01, 0.9, 1.2, 1.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mapping = project_points(points, poses, intr, depths, depth_mode=mode, depth_tol=tol, border=border)
    fi = mapping.frame_index().numpy()
    got = set(zip(fi.tolist(), mapping.point_ids.tolist(), mapping.u.tolist(), mapping.v.tolist()))
    want = brute_force(points, poses, intr, depths, mode, tol, border)
    assert len(want) > 50
    assert got == want
    assert mapping.counts().tolist() == [sum(1 for e in want if e[0] == f) for f in range(n_frames)]
    assert [frame_entries(mapping, f)[0].tolist() for f in range(n_frames)] == \
        [sorted(e[1] for e in want if e[0] == f) for f in range(n_frames)]


def test_rounding_halves_to_even_and_border_edges():
    # points placed so that u = fx * x / z + cx lands exactly on .5 and on the border edges
    intr = np.array([[[10.0, 0, 0.0], [0, 10.0, 0.0], [0, 0, 1]]])
    xs = np.array([10.5, 11.5, 12.5, 53.49, 53.5, 54.5, 9.5])  # u after rounding: 10, 12, 12, 53, 54, 54, 10
    points = np.stack([xs / 10.0, np.full(7, 2.0), np.ones(7)], 1).astype(np.float64)
    depth = np.full((1, H, W), 1.0, dtype=np.float32)
    m = project_points(points, np.eye(4)[None], intr, depth, depth_mode="absolute", depth_tol=0.01, border=10)
    got = dict(zip(m.point_ids.tolist(), m.u.tolist()))
    assert got == {0: 10, 1: 12, 2: 12, 3: 53, 6: 10}  # 54 >= W - 10 is outside


def test_non_finite_pose_frame_is_skipped_with_a_warning():
    points = np.array([[0.0, 0.0, 2.0], [0.1, 0.0, 2.0]])
    intr = np.tile(np.array([[20.0, 0, 32], [0, 20.0, 24], [0, 0, 1]]), (2, 1, 1))
    poses = np.stack([np.eye(4), np.full((4, 4), -np.inf)])
    depth = np.full((2, H, W), 2.0, dtype=np.float32)
    with pytest.warns(UserWarning, match="non-finite pose"):
        m = project_points(points, poses, intr, depth)
    assert m.counts().tolist() == [2, 0]


def test_bad_depth_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="depth_mode"):
        project_points(np.zeros((1, 3)), np.eye(4)[None], np.eye(3)[None], np.ones((1, 4, 4)), depth_mode="nearest")


def _surface_points(lo, hi, n, rng):
    """n points uniformly on the surface of a box."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    p = rng.uniform(lo, hi, size=(n, 3))
    axis = rng.integers(0, 3, n)
    side = rng.integers(0, 2, n)
    p[np.arange(n), axis] = np.where(side == 1, hi[axis], lo[axis])
    return p


def test_depth_test_on_rendered_occluder():
    from featurizer.dataset.render import render_mesh

    rng = np.random.default_rng(0)
    occ_lo, occ_hi = (-1.0, -1.0, 0.8), (1.0, 1.0, 1.2)  # a wide slab
    hid_lo, hid_hi = (-0.3, -0.3, -0.5), (0.3, 0.3, 0.1)  # a small box right below it
    v1, f1 = box_mesh(occ_lo, occ_hi)
    v2, f2 = box_mesh(hid_lo, hid_hi)
    verts = np.concatenate([v1, v2])
    faces = np.concatenate([f1, f2 + len(v1)])
    colors = np.full((len(verts), 3), 128, np.uint8)
    p_occ = _surface_points(occ_lo, occ_hi, 3000, rng)
    p_hid = _surface_points(hid_lo, hid_hi, 1500, rng)
    points = np.concatenate([p_occ, p_hid])
    k = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    top = look_at([0, 0, 4.0], [0, 0, 0], up=(0, 1, 0))  # from above: the slab hides the small box
    side = look_at([4.0, 0.3, -0.2], [0, 0, -0.2])  # from the side, below the slab: the small box is seen
    depths = np.stack([render_mesh(verts, faces, colors, pose, k, W, H)[1] for pose in (top, side)])
    m = project_points(points, np.stack([top, side]), np.stack([k, k]), depths,
                       depth_mode="absolute", depth_tol=0.05, border=0)
    hidden = np.arange(len(p_occ), len(points))
    ids0, ids1 = frame_entries(m, 0)[0].numpy(), frame_entries(m, 1)[0].numpy()
    assert np.isin(hidden, ids0).sum() == 0
    assert np.isin(hidden, ids1).sum() > 100
    assert (ids0 < len(p_occ)).sum() > 300  # the slab's top is seen from above
    # without a depth test (tolerance larger than the scene) the hidden box would leak into the top view
    m_loose = project_points(points, top[None], k[None], depths[:1], depth_mode="absolute", depth_tol=100.0, border=0)
    assert np.isin(hidden, frame_entries(m_loose, 0)[0].numpy()).sum() > 100


@pytest.mark.parametrize("backend", BACKENDS)
def test_grouped_hull_matches_monotone_chain(backend):
    rng = np.random.default_rng(3)
    groups, rows, cols = [], [], []
    cases = []
    for g in range(300):
        kind = g % 6
        n = int(rng.integers(1, 200))
        if kind == 0:  # random blob
            r, c = rng.integers(0, 100, n), rng.integers(0, 120, n)
        elif kind == 1:  # one row (degenerate)
            r, c = np.full(n, 7), rng.integers(0, 50, n)
        elif kind == 2:  # a diagonal line (collinear)
            t = rng.integers(0, 40, n)
            r, c = 3 + 2 * t, 5 + 3 * t
        elif kind == 3:  # a convex curve ending in a sharp jut: the slow case for parallel pruning
            t = np.arange(60)
            r, c = np.append(t, 60), np.append(t * t // 30 + 50, 0)
        elif kind == 4:  # a ring (hollow)
            a = rng.uniform(0, 2 * np.pi, n)
            r, c = np.round(50 + 40 * np.sin(a)).astype(int), np.round(60 + 30 * np.cos(a)).astype(int)
        else:  # a few points
            r, c = rng.integers(0, 30, 3), rng.integers(0, 30, 3)
        cases.append((r, c))
        groups.append(np.full(len(r), g))
        rows.append(r)
        cols.append(c)
    perm = rng.permutation(sum(map(len, rows)))
    g_t, r_t, c_t = (torch.from_numpy(np.concatenate(a)[perm].astype(np.int64)) for a in (groups, rows, cols))
    area2, box = grouped_hull_area2(g_t, r_t, c_t, len(cases) + 1, backend=backend)
    for g, (r, c) in enumerate(cases):
        hull = convex_hull(np.stack([r, c], 1))
        assert area2[g].item() == round(2 * polygon_area(hull)), g
        assert box[g].tolist() == [r.min(), r.max(), c.min(), c.max()]
    assert area2[-1].item() == 0  # an empty group
    assert area2.dtype == box.dtype == torch.int64
    assert polygon_area(convex_hull(np.array([[0, 0], [0, 10], [10, 0], [10, 10], [5, 5]]))) == 100.0


def test_box_sums_match_slices():
    rng = np.random.default_rng(0)
    tokens = torch.from_numpy(rng.normal(size=(2, 5, 6, 3)))
    b = torch.tensor([0, 1, 1, 0])
    r0, r1 = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 3, 2, 4])
    c0, c1 = torch.tensor([0, 2, 0, 5]), torch.tensor([6, 4, 3, 6])
    got = box_sums(tokens, b, r0, r1, c0, c1)
    for k in range(4):
        want = tokens[b[k], r0[k]:r1[k], c0[k]:c1[k]].reshape(-1, 3).sum(0)
        assert torch.allclose(got[k], want.double(), atol=1e-12)
    assert math.isclose(float(got[2].abs().sum()), 0.0)  # empty box


@pytest.mark.parametrize("mode,tol", [("relative", 0.25), ("absolute", 0.05)])
def test_voxel_culling_keeps_every_visible_point(mode, tol):
    from featurizer.dataset.render import render_mesh
    from featurizer.geometry.mapping import VoxelCuller

    rng = np.random.default_rng(5)
    verts, faces, points = [], [], []
    for i in range(12):
        lo = np.append(rng.uniform(-2, 1.5, 2), rng.uniform(0, 0.5))
        hi = lo + rng.uniform(0.2, 0.8, 3)
        v, f = box_mesh(lo, hi)
        faces.append(f + 8 * i)
        verts.append(v)
        points.append(_surface_points(lo, hi, 400, rng))
    verts, faces, points = np.concatenate(verts), np.concatenate(faces), np.concatenate(points)
    k = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    poses = np.stack([look_at([3.5 * np.cos(a), 3.5 * np.sin(a), 1.5], [0, 0, 0.3]) for a in np.linspace(0, 6, 6)]
                     + [look_at([0, 0, 5.0], [0, 0, 10.0])])  # the last one sees nothing
    depths = np.stack([render_mesh(verts, faces, np.zeros_like(verts, np.uint8), p, k, W, H)[1] for p in poses])
    intr = np.stack([k] * len(poses))
    pts = torch.from_numpy(points)
    dense = project_points(pts, poses, intr, depths, depth_mode=mode, depth_tol=tol, border=2)
    culler = VoxelCuller(pts, voxel_points=32)
    cand = candidates(culler, poses, intr, (W, H), 2, torch.from_numpy(depths), mode, tol)
    sparse = project_points(pts, poses, intr, depths, depth_mode=mode, depth_tol=tol, border=2, candidates=cand)
    assert sum(len(c) for c in cand) < 0.85 * len(points) * len(poses)  # the culling does cull
    assert len(cand[-1]) == 0
    for f in range(len(poses)):
        a = sorted(zip(*(t.tolist() for t in frame_entries(dense, f))))
        b = sorted(zip(*(t.tolist() for t in frame_entries(sparse, f))))
        assert a == b
    assert dense.counts().sum() > 500


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode,tol,border,seed", [("relative", 0.25, 10, 0), ("absolute", 0.05, 3, 1),
                                                  ("relative", 0.02, 0, 2), ("absolute", 0.3, 7, 3)])
def test_culled_projection_equals_the_full_mapping(mode, tol, border, seed, backend):
    """VoxelCuller.project (two-level voxel culling + depth pyramid, then the exact test) against the
    un-culled mapping: clustered points, depth maps made of the points' own depths (so many points sit
    on the tolerance edge), pixels on the border edges, invalid depth, a non-finite pose, a NaN depth
    pixel, a camera inside the cloud (voxels straddling z = 0); entries in the same order (frame,
    then culling order) with either backend."""
    from featurizer.geometry.mapping import VoxelCuller

    rng = np.random.default_rng(seed)
    centres = rng.uniform(-2, 2, size=(30, 3))
    points = (centres[rng.integers(0, 30, 3000)] + rng.normal(scale=0.15, size=(3000, 3))).astype(np.float32)
    n_frames = 7
    poses = np.stack([look_at(rng.uniform(-4, 4, 3) + [0, 0, 1.0], rng.uniform(-1, 1, 3)) for _ in range(n_frames)])
    poses[3, 0, 0] = np.nan
    poses[6] = look_at(centres[0], centres[1])  # the camera sits in a cluster
    intr = np.stack([np.array([[45.0 + f, 0, 31.5], [0, 44.0, 23.5], [0, 0, 1]]) for f in range(n_frames)])
    depths = np.zeros((n_frames, H, W), dtype=np.float32)
    for f in range(n_frames):
        w2c = np.linalg.inv(poses[f]) if f != 3 else np.eye(4)
        cam = points.astype(np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.round(intr[f][0, 0] * cam[:, 0] / z + intr[f][0, 2])
            v = np.round(intr[f][1, 1] * cam[:, 1] / z + intr[f][1, 2])
        ok = np.flatnonzero((z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H))
        order = ok[np.argsort(-z[ok])]  # nearest last: a z-buffer of the points themselves
        depths[f, v[order].astype(int), u[order].astype(int)] = z[order]
        edge = ok[:: 7]  # depths exactly on the tolerance edge of some points
        scale = (1 / (1 + tol)) if mode == "relative" else 1.0
        depths[f, v[edge].astype(int), u[edge].astype(int)] = (z[edge] * scale - (tol if mode == "absolute" else 0))
    depths[depths < 0] = 0
    depths[:, ::5, ::3] = 0  # invalid pixels
    depths[5, 20, 30] = np.nan  # no depth culling in frame 5; the pixel itself never passes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense = project_points(points, poses, intr, depths, depth_mode=mode, depth_tol=tol, border=border)
        for vp in (4, 32):
            culler = VoxelCuller(torch.from_numpy(points), voxel_points=vp)
            culled = culler.project(poses, intr, torch.from_numpy(depths), depth_mode=mode, depth_tol=tol,
                                    border=border, backend=backend)
            for f in range(n_frames):
                a = sorted(zip(*(t.tolist() for t in frame_entries(dense, f))))
                b = sorted(zip(*(t.tolist() for t in frame_entries(culled, f))))
                assert a == b, (vp, f)
            if backend != "torch":  # the same entries in the same order as the torch code
                ref = culler.project(poses, intr, torch.from_numpy(depths), depth_mode=mode, depth_tol=tol,
                                     border=border, backend="torch")
                for x, y in zip((ref.point_ids, ref.u, ref.v, ref.offsets),
                                (culled.point_ids, culled.u, culled.v, culled.offsets)):
                    assert torch.equal(x, y)
    assert dense.counts()[3] == 0 and dense.counts().sum() > 300


def test_unknown_backend_is_refused():
    from featurizer.geometry.mapping import VoxelCuller

    g = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(ConfigError, match="backend"):
        grouped_hull_area2(g, g, g, 1, backend="cuda-kernels")
    with pytest.raises(ConfigError, match="backend"):
        VoxelCuller(torch.zeros(4, 3)).project(np.eye(4)[None], np.eye(3)[None], torch.ones(1, 8, 8),
                                               backend="fast")


@pytest.mark.parametrize("voxel_points,coarse", [(16, 4), (4, 2), (64, 3)])
def test_compiled_voxel_build_equals_torch(voxel_points, coarse):
    from featurizer.geometry.mapping import VoxelCuller

    rng = np.random.default_rng(voxel_points)
    pts = np.concatenate([rng.normal(size=(3000, 3)) * [2.0, 1.0, 0.5], rng.uniform(-3, 3, size=(500, 3)),
                          np.repeat(rng.normal(size=(1, 3)), 40, 0)])  # a pile of duplicates
    a = VoxelCuller(torch.from_numpy(pts), voxel_points, coarse, backend="numba")
    b = VoxelCuller(torch.from_numpy(pts), voxel_points, coarse, backend="torch")
    for name in ("order", "points", "ptr", "coarse_ptr", "lo", "hi", "center", "half", "coarse_center",
                 "coarse_half"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.voxel_size == b.voxel_size and len(a.ptr) > 10
