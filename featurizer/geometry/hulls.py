"""Convex hulls of many pixel sets at once (exact integer areas and boxes), with their compiled twin.

:func:`grouped_hull_area2` is the hull step of the ``paper`` fusion (DESIGN.md section 5). Its torch code
(parallel pruning of the two monotone chains) runs on any device; on CPU with numba,
:func:`group_hulls` below (Andrew's monotone chain on each row's leftmost and rightmost pixel) gives
the same exact integers. :func:`convex_hull` is the plain monotone chain of one pixel set (its
vertices, for pictures and the benchmark's reference), :func:`polygon_area` its shoelace area.
"""

from __future__ import annotations

import numpy as np
import torch

from featurizer.geometry.backend import njit, use_kernels
from featurizer.geometry.pooling import group_boxes

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


_ANCHOR_DIRECTIONS = ((1, 0), (1, 1), (1, -1), (2, 1), (2, -1), (1, 2), (1, -2))  # (a, b): minimise a y - b x


def polygon_area(vertices: np.ndarray) -> float:
    """Shoelace area of a (K, 2) polygon (0 when K < 3), e.g. of :func:`convex_hull`'s vertices."""
    p = np.asarray(vertices, dtype=np.float64).reshape(-1, 2)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


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
    backend: ``auto`` (the compiled monotone chain of :func:`group_hulls` on CPU when numba is
    installed), ``torch`` (the parallel pruning below) or ``numba``; all give the same numbers.
    """
    device = row.device
    if use_kernels(backend, device):
        area2, box = group_hulls(group.numpy(), row.numpy(), col.numpy(), num_groups)
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
# Compiled twin (numba, CPU)

@njit
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


@njit
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
    set (``group`` (P,) int64 in 0 .. G-1), as :func:`grouped_hull_area2`."""
    group, row, col = (np.ascontiguousarray(a, dtype=np.int64) for a in (group, row, col))
    return _group_hulls(group, row, col, int(num_groups))

