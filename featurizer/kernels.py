"""Compiled CPU kernels (numba) for the two hot loops of the 2D stage.

- :func:`map_frames`: the culled, depth-tested point -> pixel mapping of a batch of frames
  (:meth:`featurizer.geometry.VoxelCuller.project` on CPU);
- :func:`group_hulls`: twice the convex hull area and the box of many pixel sets
  (:func:`featurizer.geometry.grouped_hull_area2` on CPU).

Both give exactly what the torch code of :mod:`featurizer.geometry` gives (that code stays the path
for GPUs and for machines without numba, and the tests hold the two equal):

- the mapping uses the same float64 operations in the same order, ``x = ((r00 px + r01 py) + r02 pz)
  + t0`` and ``u = rint(fx x / z + cx)``, compiled without fast-math, so without fused multiply-adds;
  the culling is the same conservative voxel test (a frame's coarse voxels, then the fine voxels of
  the coarse ones that pass, against the frustum and a max-depth pyramid, see
  :func:`featurizer.geometry._boxes_may_be_visible`), so it never drops a visible point; entries come
  frame by frame in the culler's point order, as there;
- the hull areas are exact integers (Andrew's monotone chain on each row's leftmost and rightmost pixel).

A batch's frames are split over ``threads`` threads; the kernels release the GIL. Compiled on first
use and cached next to this file (a few seconds once).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    import numba
except ImportError:  # the torch code in featurizer.geometry is used instead
    numba = None

TILE = 8  # pixels per side of the finest depth-pyramid tile
_BIG = np.iinfo(np.int64).max


def available() -> bool:
    """Whether numba is installed (else callers use the torch code)."""
    return numba is not None


def _njit(fn):
    if numba is None:
        return fn
    # error_model="numpy": x / 0 gives inf or nan as in torch, not ZeroDivisionError; no fastmath
    return numba.njit(cache=True, nogil=True, error_model="numpy")(fn)


@_njit
def _pyramid(dep, tile):
    """Max-depth pyramid of one (H, W) float32 depth map, as featurizer.geometry._DepthPyramid: level l
    holds the max of every ``tile * 2**l`` pixel square, up to one tile covering the frame.
    Returns (flat float32, shapes (L, 2) int64, offsets (L,) int64, has_nan)."""
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
    has_nan = False
    for ty in range(th):
        colmax[:] = 0.0
        for y in range(ty * tile, min(height, (ty + 1) * tile)):
            for x in range(width):
                v = dep[y, x]
                has_nan |= v != v
                colmax[x] = max(colmax[x], v)
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
    return flat, shapes, offsets, has_nan


@_njit
def _box_may_be_visible(ctr, half, i, w2c, fx, fy, cx, cy, width, height, border, flat, shapes, offsets,
                        tile, use_depth, relative, tol):
    """False only if no point of the world box ``ctr[i] +- half[i]`` can pass the exact test of the
    frame: the test of featurizer.geometry._boxes_may_be_visible (same margins), for one box."""
    if width <= 2 * border or height <= 2 * border:
        return False
    c0, c1, c2 = ctr[i, 0], ctr[i, 1], ctr[i, 2]
    h0, h1, h2 = half[i, 0], half[i, 1], half[i, 2]
    x = w2c[0, 0] * c0 + w2c[0, 1] * c1 + w2c[0, 2] * c2 + w2c[0, 3]
    y = w2c[1, 0] * c0 + w2c[1, 1] * c1 + w2c[1, 2] * c2 + w2c[1, 3]
    z = w2c[2, 0] * c0 + w2c[2, 1] * c1 + w2c[2, 2] * c2 + w2c[2, 3]
    rx = abs(w2c[0, 0]) * h0 + abs(w2c[0, 1]) * h1 + abs(w2c[0, 2]) * h2
    ry = abs(w2c[1, 0]) * h0 + abs(w2c[1, 1]) * h1 + abs(w2c[1, 2]) * h2
    rz = abs(w2c[2, 0]) * h0 + abs(w2c[2, 1]) * h1 + abs(w2c[2, 2]) * h2
    rx += 1e-9 * (1.0 + abs(x) + rx)
    ry += 1e-9 * (1.0 + abs(y) + ry)
    rz += 1e-9 * (1.0 + abs(z) + rz)
    zl, zh = z - rz, z + rz
    if not zh > 0:
        return False
    left, top = border, border
    right, bottom = width - 1 - border, height - 1 - border
    c_lo, c_hi, r_lo, r_hi = left, right, top, bottom
    if zl > 0:
        il, ih = 1.0 / zl, 1.0 / zh
        a, b = x - rx, x + rx
        umin = fx * min(a * il, a * ih) + cx
        umax = fx * max(b * il, b * ih) + cx
        a, b = y - ry, y + ry
        vmin = fy * min(a * il, a * ih) + cy
        vmax = fy * max(b * il, b * ih) + cy
        if umax < border - 1 or umin > width - border or vmax < border - 1 or vmin > height - border:
            return False
        c_lo = int(min(max(math.floor(umin - 1), left), right))
        c_hi = int(min(max(math.ceil(umax + 1), left), right))
        r_lo = int(min(max(math.floor(vmin - 1), top), bottom))
        r_hi = int(min(max(math.ceil(vmax + 1), top), bottom))
    if not use_depth:
        return True
    # the max depth over the footprint: the <= 2 x 2 tiles of the first level longer than the rectangle
    extent = max(r_hi - r_lo, c_hi - c_lo)
    lv, t = 0, tile
    while t <= extent and lv < shapes.shape[0] - 1:
        lv += 1
        t *= 2
    w, o = shapes[lv, 1], offsets[lv]
    ra, rb, ca, cb = (r_lo // t) * w, (r_hi // t) * w, c_lo // t, c_hi // t
    dmax = np.float64(max(max(flat[o + ra + ca], flat[o + ra + cb]), max(flat[o + rb + ca], flat[o + rb + cb])))
    if not dmax > 0:
        return False
    limit = dmax * (1.0 + tol) if relative else dmax + tol
    return not (zl > limit * (1.0 + 1e-9) + 1e-9)


@_njit
def _cull_frame(ccenter, chalf, cptr, center, half, ptr, w2c, k4, dep, border, relative, tol, tile, out_vox):
    """Fine voxels of one frame that may hold a visible point, in voxel order, into ``out_vox``.
    Returns (number of voxels, number of their points)."""
    height, width = dep.shape
    flat, shapes, offsets, has_nan = _pyramid(dep, tile)
    use_depth = not has_nan  # a NaN depth: no depth culling for the frame (conservative)
    fx, fy, cx, cy = k4[0], k4[1], k4[2], k4[3]
    n_vox, n_pts = 0, 0
    for c in range(ccenter.shape[0]):
        if not _box_may_be_visible(ccenter, chalf, c, w2c, fx, fy, cx, cy, width, height, border, flat, shapes,
                                   offsets, tile, use_depth, relative, tol):
            continue
        for v in range(cptr[c], cptr[c + 1]):
            if _box_may_be_visible(center, half, v, w2c, fx, fy, cx, cy, width, height, border, flat, shapes,
                                   offsets, tile, use_depth, relative, tol):
                out_vox[n_vox] = v
                n_vox += 1
                n_pts += ptr[v + 1] - ptr[v]
    return n_vox, n_pts


@_njit
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


@_njit
def _map_chunk(points, ptr, center, half, ccenter, chalf, cptr, w2c, k4, depths, finite, border, relative, tol,
               tile):
    """The mapping of a run of frames: (pos, u, v) int64 of the kept pairs (frame-major) and counts (F,).
    Each frame is culled and then tested at once, while its depth map is still in the cache."""
    nf = w2c.shape[0]
    vox = np.empty(center.shape[0], dtype=np.int64)
    cap = 1 << 16
    pos = np.empty(cap, dtype=np.int64)
    u = np.empty(cap, dtype=np.int64)
    v = np.empty(cap, dtype=np.int64)
    counts = np.zeros(nf, dtype=np.int64)
    n = 0
    for f in range(nf):
        if not finite[f]:
            continue
        n_vox, n_pts = _cull_frame(ccenter, chalf, cptr, center, half, ptr, w2c[f], k4[f], depths[f], border,
                                   relative, tol, tile, vox)
        if n_vox == 0:
            continue
        if n + n_pts > cap:
            cap = max(2 * cap, n + n_pts)
            pos, u, v = _grow(pos, n, cap), _grow(u, n, cap), _grow(v, n, cap)
        end = _exact_frame(points, ptr, vox, n_vox, w2c[f], k4[f], depths[f], border, relative, tol, pos, u, v, n)
        counts[f] = end - n
        n = end
    return pos[:n].copy(), u[:n].copy(), v[:n].copy(), counts


@_njit
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

    points (N, 3) float64 in voxel order; ptr (V + 1,) fine voxel -> points; center, half (V, 3);
    ccenter, chalf (C, 3) and cptr (C + 1,) coarse voxel -> fine voxels; w2c (F, 4, 4) float64;
    k4 (F, 4) float64 ``fx, fy, cx, cy``; depths (F, H, W) float32 metres; finite (F,) bool (frames
    with a non-finite pose get nothing). Returns pos, u, v (M,) int64 (pos: index into ``points``)
    frame after frame, and counts (F,) int64.
    """
    nf = len(w2c)
    depths = np.ascontiguousarray(depths, dtype=np.float32)
    args = (np.ascontiguousarray(points, dtype=np.float64), ptr, center, half, ccenter, chalf, cptr)
    opts = (int(border), bool(relative), float(tol), TILE)
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


@_njit
def _chain_integral2(xs, ys, n, stack_x, stack_y):
    """Twice the integral of the convex minorant of points (xs[i], ys[i]), i < n, xs increasing."""
    m = 0
    for i in range(n):
        x, y = xs[i], ys[i]
        while m >= 2 and ((stack_x[m - 1] - stack_x[m - 2]) * (y - stack_y[m - 2])
                          - (stack_y[m - 1] - stack_y[m - 2]) * (x - stack_x[m - 2])) <= 0:
            m -= 1
        stack_x[m] = x
        stack_y[m] = y
        m += 1
    s = 0
    for i in range(m - 1):
        s += (stack_x[i + 1] - stack_x[i]) * (stack_y[i] + stack_y[i + 1])
    return s


@_njit
def _group_hulls(group, row, col, num_groups):
    big = np.iinfo(np.int64).max
    count = np.zeros(num_groups + 1, dtype=np.int64)
    for i in range(group.shape[0]):
        count[group[i] + 1] += 1
    for g in range(num_groups):
        count[g + 1] += count[g]
    order = np.empty(group.shape[0], dtype=np.int64)
    fill = count[:-1].copy()
    for i in range(group.shape[0]):
        order[fill[group[i]]] = i
        fill[group[i]] += 1
    area2 = np.zeros(num_groups, dtype=np.int64)
    box = np.empty((num_groups, 4), dtype=np.int64)
    span = 1
    if group.shape[0]:
        span = row.max() - row.min() + 1
    left = np.empty(span, dtype=np.int64)
    right = np.empty(span, dtype=np.int64)
    xs = np.empty(span, dtype=np.int64)
    ys = np.empty(span, dtype=np.int64)
    sx = np.empty(span, dtype=np.int64)
    sy = np.empty(span, dtype=np.int64)
    for g in range(num_groups):
        a, b = count[g], count[g + 1]
        r0, r1, c0, c1 = big, -big, big, -big
        for j in range(a, b):
            i = order[j]
            r0, r1 = min(r0, row[i]), max(r1, row[i])
            c0, c1 = min(c0, col[i]), max(c1, col[i])
        box[g, 0], box[g, 1], box[g, 2], box[g, 3] = r0, r1, c0, c1
        if b - a < 3 or r0 == r1:
            continue
        h = r1 - r0 + 1
        left[:h] = big
        right[:h] = -big
        for j in range(a, b):
            i = order[j]
            k = row[i] - r0
            left[k] = min(left[k], col[i])
            right[k] = max(right[k], col[i])
        n = 0
        for k in range(h):
            if left[k] != big:
                xs[n] = k
                ys[n] = left[k]
                n += 1
        lower = _chain_integral2(xs, ys, n, sx, sy)
        for k in range(n):
            ys[k] = -right[xs[k]]
        upper = -_chain_integral2(xs, ys, n, sx, sy)
        area2[g] = upper - lower
    return area2, box


def group_hulls(group: np.ndarray, row: np.ndarray, col: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Twice the convex hull area (G,) int64 and the box (G, 4) int64 ``(r0, r1, c0, c1)`` of each pixel
    set (``group`` (P,) int64 in 0 .. G-1), as :func:`featurizer.geometry.grouped_hull_area2`."""
    return _group_hulls(np.ascontiguousarray(group, dtype=np.int64), np.ascontiguousarray(row, dtype=np.int64),
                        np.ascontiguousarray(col, dtype=np.int64), int(num_groups))

