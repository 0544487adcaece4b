"""Compiled CPU kernels (numba) for the hot loops of the 2D stage.

- :func:`map_frames`: the culled, depth-tested point -> pixel mapping of a batch of frames
  (:meth:`featurizer.geometry.VoxelCuller.project` on CPU);
- :func:`group_hulls`: twice the convex hull area and the box of many pixel sets
  (:func:`featurizer.geometry.grouped_hull_area2` on CPU);
- :func:`voxel_keys`, :func:`voxel_layout`: the voxel hierarchy of :class:`featurizer.geometry.VoxelCuller`.

They give exactly what the torch code of :mod:`featurizer.geometry` gives (that code stays the path
for GPUs and for machines without numba, and the tests hold the two equal):

- the mapping uses the same float64 operations in the same order, ``x = ((r00 px + r01 py) + r02 pz)
  + t0`` and ``u = rint(fx x / z + cx)``, compiled without fast-math, so without fused multiply-adds;
  the culling is the same conservative voxel test (a frame's coarse voxels, then the fine voxels of
  the coarse ones that pass, against the frustum and a max-depth pyramid, see
  :func:`featurizer.geometry._boxes_may_be_visible`), so it never drops a visible point; entries come
  frame by frame in the culler's point order, as there;
- the hull areas are exact integers (Andrew's monotone chain on each row's leftmost and rightmost pixel);
- the voxel build computes the same keys (float64, same operations), sorts them with torch's stable sort
  and takes the same bounds.

A batch's frames are split over ``threads`` threads; the kernels release the GIL. Compiled on first
use and cached next to this file (about 9 s once on 2 cores; numba falls back to a per-user cache directory
where the package folder is read-only).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    import numba
except ImportError:  # the torch code in featurizer.geometry is used instead
    numba = None

TILE = 8  # pixels per side of the finest depth-pyramid tile (a power of two)


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


@_njit
def _cull_range(cen, hal, a, b, ptr, w2c, fx, fy, cx, cy, width, height, border, flat, shapes, offsets, tile,
                relative, tol, out, n):
    """The boxes k = a .. b-1 (world ``cen[:, k] +- hal[:, k]``, coordinates by row (3, V)) that may hold
    a point passing the exact test of the frame, appended to ``out`` from ``n`` on; returns (new n, the
    number of items ``ptr`` gives them). Branch-free, so that mispredictions do not dominate.

    The test is that of featurizer.geometry._boxes_may_be_visible, with the same margins: camera-space
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


@_njit
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
    rows = np.empty(group.shape[0], dtype=np.int64)  # the pixels sorted by group (a counting sort)
    cols = np.empty(group.shape[0], dtype=np.int64)
    fill = count[:-1].copy()
    for i in range(group.shape[0]):
        j = fill[group[i]]
        rows[j] = row[i]
        cols[j] = col[i]
        fill[group[i]] = j + 1
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
            r0, r1 = min(r0, rows[j]), max(r1, rows[j])
            c0, c1 = min(c0, cols[j]), max(c1, cols[j])
        box[g, 0], box[g, 1], box[g, 2], box[g, 3] = r0, r1, c0, c1
        if b - a < 3 or r0 == r1:
            continue
        h = r1 - r0 + 1
        left[:h] = big
        right[:h] = -big
        for j in range(a, b):
            k = rows[j] - r0
            left[k] = min(left[k], cols[j])
            right[k] = max(right[k], cols[j])
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


def group_hulls(group: np.ndarray, row: np.ndarray, col: np.ndarray,
                num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Twice the convex hull area (G,) int64 and the box (G, 4) int64 ``(r0, r1, c0, c1)`` of each pixel
    set (``group`` (P,) int64 in 0 .. G-1), as :func:`featurizer.geometry.grouped_hull_area2`."""
    group, row, col = (np.ascontiguousarray(a, dtype=np.int64) for a in (group, row, col))
    return _group_hulls(group, row, col, int(num_groups))



@_njit
def _voxel_keys(pts, lo, voxel_points, coarse):
    """Fine voxel size (from the occupancy of a 33^3 probe grid) and each point's sort key (coarse voxel,
    then fine cell in it), exactly as the torch code of featurizer.geometry.VoxelCuller."""
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


@_njit
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
