"""Mesh primitives of the synthetic scenes: planar grids, subdivided boxes and upright cylinders.

Every primitive returns ``(vertices (V, 3) float64, faces (F, 3) int64)`` with cells of about ``step``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Part:
    """A piece of an object: vertices (V, 3) float64, faces (F, 3) int64, a base colour (3,)."""

    vertices: np.ndarray
    faces: np.ndarray
    color: tuple[int, int, int]


def grid(origin, a, b, nu: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
    """A (nu x nv)-cell planar grid spanned by edge vectors a, b from origin: (V, 3), (F, 3)."""
    s = np.linspace(0.0, 1.0, nu + 1)
    t = np.linspace(0.0, 1.0, nv + 1)
    ss, tt = np.meshgrid(s, t, indexing="ij")
    a, b = np.asarray(a, float), np.asarray(b, float)
    verts = np.asarray(origin, float) + ss.reshape(-1, 1) * a + tt.reshape(-1, 1) * b
    idx = np.arange((nu + 1) * (nv + 1)).reshape(nu + 1, nv + 1)
    p, q, r, w = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([p, q, r], 1), np.stack([p, r, w], 1)])
    return verts, faces


def merge(pieces: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    verts, faces, n = [], [], 0
    for v, f in pieces:
        verts.append(v)
        faces.append(f + n)
        n += len(v)
    return np.concatenate(verts), np.concatenate(faces)


def cells(length: float, step: float) -> int:
    return max(1, int(math.ceil(length / step - 1e-9)))


def box(lo, hi, step: float, bottom: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Surface of the box [lo, hi] with cells of about ``step``; no bottom face when it rests on z=0."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    d = hi - lo
    n = [cells(x, step) for x in d]
    ex, ey, ez = np.diag(d)
    pieces = [
        grid([lo[0], lo[1], hi[2]], ex, ey, n[0], n[1]),
        grid(lo, ex, ez, n[0], n[2]),
        grid([lo[0], hi[1], lo[2]], ex, ez, n[0], n[2]),
        grid(lo, ey, ez, n[1], n[2]),
        grid([hi[0], lo[1], lo[2]], ey, ez, n[1], n[2]),
    ]
    if bottom if bottom is not None else lo[2] > 1e-9:
        pieces.append(grid(lo, ex, ey, n[0], n[1]))
    return merge(pieces)


def cylinder(
    cx: float, cy: float, z0: float, radius: float, height: float, step: float
) -> tuple[np.ndarray, np.ndarray]:
    """Side and top cap of an upright cylinder (bottom cap too when it does not rest on z=0)."""
    n_around = max(10, int(math.ceil(2 * math.pi * radius / step)))
    n_h = cells(height, step)
    ang = np.arange(n_around) * (2 * math.pi / n_around)
    zs = z0 + np.linspace(0.0, height, n_h + 1)
    ring = np.stack([cx + radius * np.cos(ang), cy + radius * np.sin(ang)], 1)
    side = np.concatenate([np.column_stack([ring, np.full(n_around, z)]) for z in zs])
    faces = []
    for i in range(n_h):
        a = i * n_around + np.arange(n_around)
        b = i * n_around + (np.arange(n_around) + 1) % n_around
        faces += [np.stack([a, b, b + n_around], 1), np.stack([a, b + n_around, a + n_around], 1)]
    pieces = [(side, np.concatenate(faces))]
    caps = [z0 + height] + ([z0] if z0 > 1e-9 else [])
    n_rings = cells(radius, step)
    for z in caps:
        verts = [np.array([[cx, cy, z]])]
        cap_faces = []
        for k in range(1, n_rings + 1):
            r = radius * k / n_rings
            verts.append(np.column_stack([cx + r * np.cos(ang), cy + r * np.sin(ang), np.full(n_around, z)]))
            cur = 1 + (k - 1) * n_around + np.arange(n_around)
            nxt = 1 + (k - 1) * n_around + (np.arange(n_around) + 1) % n_around
            if k == 1:
                cap_faces.append(np.stack([np.zeros(n_around, int), cur, nxt], 1))
            else:
                pc, pn = cur - n_around, nxt - n_around
                cap_faces += [np.stack([pc, cur, nxt], 1), np.stack([pc, nxt, pn], 1)]
        pieces.append((np.concatenate(verts), np.concatenate(cap_faces)))
    return merge(pieces)

