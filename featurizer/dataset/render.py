"""A small, vectorised z-buffer rasteriser for coloured triangle meshes (numpy, CPU).

Used by the synthetic ScanNet generator to render RGB-D frames and by tests that need depth maps
with known geometry. Triangles are clipped against a near plane in camera space, projected with a
pinhole model, and rasterised without Python loops over triangles: for every (triangle, row of its
bounding box) the exact span of covered pixel centres is solved from the three edge functions, the
spans are expanded into pixels in vectorised chunks, 1/z is interpolated (it is affine in screen
space, so a planar surface gets its exact depth) and a scatter-max of 1/z over pixel indices keeps
the nearest surface. Colours are interpolated perspective-correctly for the winning pixels only.

Conventions: OpenCV camera (x right, y down, z forward), ``pose`` is camera-to-world, pixel ``(u, v)``
(column, row) is sampled at image coordinates ``(u + pixel_center, v + pixel_center)`` where image
coordinates are ``x = fx * X / Z + cx``, ``y = fy * Y / Z + cy``. The default ``pixel_center=0``
is ScanNet's convention (and the projection's, ``u = round(fx * X / Z + cx)``): pixel ``u`` is centred
at image coordinate ``u``, so ``cx = 319.5`` is the middle of a 640-pixel row. Depth is the camera-space ``z``
(ScanNet's depth convention), not the ray length.
"""

from __future__ import annotations

import numpy as np

NEAR = 0.05  # metres: surfaces closer to the camera plane are clipped away
_CHUNK = 1 << 21  # covered pixels per vectorised chunk (bounds peak memory)
_EPS = 1e-9  # barycentric tolerance: pixel centres on a shared edge belong to both triangles


def _clip_near(p: np.ndarray, c: np.ndarray, near: float) -> tuple[np.ndarray, np.ndarray]:
    """Clip triangles against the plane z = near.

    p: (F, 3, 3) camera-space corners, c: (F, 3, 3) float colours.
    Returns the triangles wholly in front of the plane plus the pieces of the crossing ones.
    """
    inside = p[:, :, 2] > near
    n_in = inside.sum(axis=1)
    keep_p, keep_c = [p[n_in == 3]], [c[n_in == 3]]
    for count in (1, 2):
        sel = np.flatnonzero(n_in == count)
        if len(sel) == 0:
            continue
        # roll each triangle so that its odd vertex (the lone inside / lone outside one) comes first;
        # a cyclic roll keeps the winding
        odd = inside[sel] if count == 1 else ~inside[sel]
        first = np.argmax(odd, axis=1)
        order = (first[:, None] + np.arange(3)[None, :]) % 3
        tp = np.take_along_axis(p[sel], order[:, :, None], axis=1)
        tc = np.take_along_axis(c[sel], order[:, :, None], axis=1)
        a, b, d = tp[:, 0], tp[:, 1], tp[:, 2]
        ca, cb, cd = tc[:, 0], tc[:, 1], tc[:, 2]
        tb = ((near - a[:, 2]) / (b[:, 2] - a[:, 2]))[:, None]
        td = ((near - a[:, 2]) / (d[:, 2] - a[:, 2]))[:, None]
        ab, ad = a + tb * (b - a), a + td * (d - a)
        cab, cad = ca + tb * (cb - ca), ca + td * (cd - ca)
        if count == 1:  # a inside, b and d outside: one smaller triangle
            keep_p.append(np.stack([a, ab, ad], axis=1))
            keep_c.append(np.stack([ca, cab, cad], axis=1))
        else:  # a outside, b and d inside: the quad ab, b, d, ad as two triangles
            keep_p.append(np.stack([ab, b, d], axis=1))
            keep_p.append(np.stack([ab, d, ad], axis=1))
            keep_c.append(np.stack([cab, cb, cd], axis=1))
            keep_c.append(np.stack([cab, cd, cad], axis=1))
    return np.concatenate(keep_p), np.concatenate(keep_c)


def render_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_colors: np.ndarray,
    pose: np.ndarray,
    intrinsics: np.ndarray,
    width: int,
    height: int,
    *,
    near: float = NEAR,
    pixel_center: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a coloured triangle mesh into a colour image and a z-buffer depth map.

    vertices: (V, 3) float world coordinates; faces: (F, 3) int vertex indices;
    vertex_colors: (V, 3) uint8; pose: (4, 4) camera-to-world (OpenCV camera: x right, y down,
    z forward); intrinsics: (3, 3) pinhole matrix at ``width`` x ``height``.
    near: clipping distance in metres; pixel_center: sub-pixel position of the sample of pixel
    ``u`` (0.5: pixel ``u`` spans image coordinates [u, u + 1)).

    Returns colour (H, W, 3) uint8 (black where no surface) and depth (H, W) float32 metres, the
    camera-space z of the nearest surface (0 where no surface). Colours are interpolated
    perspective-correctly from the vertex colours.
    """
    width, height = int(width), int(height)
    verts = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    cols = np.asarray(vertex_colors, dtype=np.float64).reshape(-1, 3)
    pose = np.asarray(pose, dtype=np.float64).reshape(4, 4)
    k = np.asarray(intrinsics, dtype=np.float64).reshape(3, 3)
    if len(cols) != len(verts):
        raise ValueError(f"{len(verts)} vertices but {len(cols)} vertex colours")

    color = np.zeros((height, width, 3), dtype=np.uint8)
    if len(faces) == 0 or width <= 0 or height <= 0:
        return color, np.zeros((height, width), dtype=np.float32)

    world_to_cam = np.linalg.inv(pose)
    cam = verts @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    z = cam[faces, 2]
    # drop triangles wholly behind the near plane before doing any per-triangle work
    faces = faces[(z > near).any(axis=1)]
    if len(faces) == 0:
        return color, np.zeros((height, width), dtype=np.float32)
    tri_p, tri_c = _clip_near(cam[faces], cols[faces], near)

    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    zc = tri_p[:, :, 2]
    # image coordinates shifted so that pixel u's sample sits at integer u
    xs = fx * tri_p[:, :, 0] / zc + cx - pixel_center
    ys = fy * tri_p[:, :, 1] / zc + cy - pixel_center
    u0 = np.clip(np.ceil(xs.min(axis=1)), 0, width).astype(np.int64)
    u1 = np.clip(np.floor(xs.max(axis=1)), -1, width - 1).astype(np.int64)
    v0 = np.clip(np.ceil(ys.min(axis=1)), 0, height).astype(np.int64)
    v1 = np.clip(np.floor(ys.max(axis=1)), -1, height - 1).astype(np.int64)
    x0, y0 = xs[:, 0], ys[:, 0]
    e1x, e1y = xs[:, 1] - x0, ys[:, 1] - y0
    e2x, e2y = xs[:, 2] - x0, ys[:, 2] - y0
    area = e1x * e2y - e2x * e1y
    ok = (u1 >= u0) & (v1 >= v0) & (np.abs(area) > 1e-12)
    if not ok.any():
        return color, np.zeros((height, width), dtype=np.float32)

    sel = np.flatnonzero(ok)
    x0, y0, e1x, e1y, e2x, e2y, area = (a[sel] for a in (x0, y0, e1x, e1y, e2x, e2y, area))
    u0, u1, v0, v1 = u0[sel], u1[sel], v0[sel], v1[sel]
    inv_z = 1.0 / zc[sel]  # (T, 3)
    c_over_z = tri_c[sel] * inv_z[:, :, None]  # (T, 3 corners, 3 channels)
    # barycentrics as affine functions of the pixel (u, v): l_i = a_i u + b_i v + d_i
    a1, b1 = e2y / area, -e2x / area
    d1 = -(a1 * x0 + b1 * y0)
    a2, b2 = -e1y / area, e1x / area
    d2 = -(a2 * x0 + b2 * y0)
    a0, b0, d0 = -a1 - a2, -b1 - b2, 1.0 - d1 - d2
    bary = np.stack([a0, b0, d0, a1, b1, d1, a2, b2, d2], axis=1)  # (T, 9)
    # 1/z is affine in (u, v) too (perspective-correct): invz = al u + be v + ga
    al = a0 * inv_z[:, 0] + a1 * inv_z[:, 1] + a2 * inv_z[:, 2]
    be = b0 * inv_z[:, 0] + b1 * inv_z[:, 1] + b2 * inv_z[:, 2]
    ga = d0 * inv_z[:, 0] + d1 * inv_z[:, 1] + d2 * inv_z[:, 2]

    # one entry per (triangle, bounding-box row): the exact span of covered pixel centres on it
    nrows = v1 - v0 + 1
    rt = np.repeat(np.arange(len(sel)), nrows)
    rv = v0[rt] + (np.arange(len(rt)) - np.repeat(np.cumsum(nrows) - nrows, nrows))
    lo = u0[rt].astype(np.float64)
    hi = u1[rt].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(3):
            a_i = bary[rt, 3 * i]
            c_i = bary[rt, 3 * i + 1] * rv + bary[rt, 3 * i + 2] + _EPS  # a_i u + c_i >= 0
            bound = -c_i / a_i
            lo = np.where(a_i > 0, np.maximum(lo, np.ceil(bound)), lo)
            hi = np.where(a_i < 0, np.minimum(hi, np.floor(bound)), hi)
            hi = np.where((a_i == 0) & (c_i < 0), -1.0, hi)
    count = np.clip(hi - lo + 1, 0, width).astype(np.int64)
    keep = count > 0
    rt, rv, lo, count = rt[keep], rv[keep], lo[keep].astype(np.int64), count[keep]
    row_al = al[rt]
    row_q = be[rt] * rv + ga[rt]
    row_pix = rv * width + lo

    ends = np.cumsum(count)
    win_tri, win_pix, win_iz = [], [], []
    izbuf = np.zeros(height * width)  # 1/z of the nearest surface so far (0: none)
    start = 0
    while start < len(count):
        base = ends[start] - count[start]
        stop = max(int(np.searchsorted(ends, base + _CHUNK, side="right")), start + 1)
        cnt = count[start:stop]
        du = np.arange(int(cnt.sum())) - np.repeat(ends[start:stop] - cnt - base, cnt)
        u = np.repeat(lo[start:stop], cnt) + du
        invz = np.repeat(row_al[start:stop], cnt) * u + np.repeat(row_q[start:stop], cnt)
        pix = np.repeat(row_pix[start:stop], cnt) + du
        t = np.repeat(rt[start:stop], cnt)
        front = invz > 0
        if not front.all():
            invz, pix, t = invz[front], pix[front], t[front]
        np.maximum.at(izbuf, pix, invz)
        win = invz >= izbuf[pix]
        win_tri.append(t[win])
        win_pix.append(pix[win])
        win_iz.append(invz[win])
        start = stop

    # a candidate that won its chunk may have lost to a later one: keep only the final winners
    t = np.concatenate(win_tri)
    pix = np.concatenate(win_pix)
    invz = np.concatenate(win_iz)
    final = invz >= izbuf[pix]
    t, pix, invz = t[final], pix[final], invz[final]
    u = (pix % width).astype(np.float64)
    v = (pix // width).astype(np.float64)
    bt = bary[t]
    l1 = bt[:, 3] * u + bt[:, 4] * v + bt[:, 5]
    l2 = bt[:, 6] * u + bt[:, 7] * v + bt[:, 8]
    cz = c_over_z[t]  # (M, 3 corners, 3 channels)
    rgb = cz[:, 0] + l1[:, None] * (cz[:, 1] - cz[:, 0]) + l2[:, None] * (cz[:, 2] - cz[:, 0])
    rgb /= invz[:, None]
    color.reshape(-1, 3)[pix] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    depth = np.zeros(height * width)
    hit = izbuf > 0
    depth[hit] = 1.0 / izbuf[hit]
    return color, depth.astype(np.float32).reshape(height, width)


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """(4, 4) camera-to-world of an OpenCV camera (x right, y down, z forward) at ``eye`` looking at
    ``target``, ``up`` the world's up direction (another axis is used when they are parallel)."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        x = np.cross(z, [0.0, 1.0, 0.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
    return pose


def box_mesh(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (8, 3) and faces (12, 3) of the axis-aligned box [lo, hi]."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    v = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    return v, np.array([f for a, b, c, d in quads for f in ((a, b, c), (a, c, d))])
