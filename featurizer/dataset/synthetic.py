"""Synthetic scenes written to disk in exactly the ScanNet layout, then read by ScanNetReader.

Each scene is a room (floor and four walls) with furniture of ScanNet categories (chair, table,
bed, sofa, cabinet, lamp, bookshelf, toilet, bathtub, desk, refrigerator, trash can, nightstand),
each built from subdivided boxes and cylinders with a class-typical shape, size and colour, placed
without overlap. The room is built axis-aligned and written in a *raw* frame: the mesh, the poses
and the meta's ``axisAlignment`` are such that ``axisAlignment @ raw = aligned``, as in ScanNet.
RGB-D frames are rendered from the mesh (:func:`featurizer.dataset.render.render_mesh`) along an
ellipse inside the room, looking at its middle: z-buffer depth as uint16 millimetre pngs, colour
jpgs, camera-to-world poses, exported every 20th frame (k = 0, 20, 40, ...) in OpenScene's
``scannet_2d`` layout.

Everything is deterministic for a seed (the rng is seeded per scene from ``(seed, scene index)``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featurizer.dataset.labels import TSV_NAME
from featurizer.dataset.render import look_at, render_mesh
from featurizer.dataset.scannet import AGG_SUFFIX, PLY_SUFFIX, SEGS_SUFFIX, ScanNetReader
from featurizer.errors import ConfigError
from featurizer.files import remove_stale, temporary_path

GENERATOR_VERSION = 2
DONE_MARKER = ".done"
FRAME_STEP = 20  # exported frames are every 20th frame of the stream
JPEG_QUALITY = 92  # exported colour jpgs and the .sens colour stream use the same encoder settings
SCANNET_FX_640 = 577.870605  # ScanNet's typical depth focal length at 640x480

# raw label (what the annotators typed, in the aggregation) -> (category, nyu40 id, nyu40 class).
# Several raw labels differ from their category, so the tsv mapping is exercised.
RAW_LABELS: dict[str, tuple[str, int, str]] = {
    "wall": ("wall", 1, "wall"),
    "floor": ("floor", 2, "floor"),
    "kitchen cabinet": ("cabinet", 3, "cabinet"),
    "bed": ("bed", 4, "bed"),
    "office chair": ("chair", 5, "chair"),
    "chair": ("chair", 5, "chair"),
    "couch": ("sofa", 6, "sofa"),
    "dining table": ("table", 7, "table"),
    "bookshelf": ("bookshelf", 10, "bookshelf"),
    "desk": ("desk", 14, "desk"),
    "refrigerator": ("refrigerator", 24, "refridgerator"),
    "nightstand": ("nightstand", 32, "night stand"),
    "toilet": ("toilet", 33, "toilet"),
    "lamp": ("lamp", 35, "lamp"),
    "bathtub": ("bathtub", 36, "bathtub"),
    "trash can": ("trash can", 39, "otherprop"),
}
TSV_HEADER = ["id", "raw_category", "category", "count", "nyu40id", "eigen13id", "nyuClass", "nyu40class"]


# --------------------------------------------------------------------------- mesh primitives
@dataclass
class Part:
    """A piece of an object: vertices (V, 3) float64, faces (F, 3) int64, a base colour (3,)."""

    vertices: np.ndarray
    faces: np.ndarray
    color: tuple[int, int, int]


def _grid(origin, a, b, nu: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
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


def _merge(pieces: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    verts, faces, n = [], [], 0
    for v, f in pieces:
        verts.append(v)
        faces.append(f + n)
        n += len(v)
    return np.concatenate(verts), np.concatenate(faces)


def _cells(length: float, step: float) -> int:
    return max(1, int(math.ceil(length / step - 1e-9)))


def box(lo, hi, step: float, bottom: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Surface of the box [lo, hi] with cells of about ``step``; no bottom face when it rests on z=0."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    d = hi - lo
    n = [_cells(x, step) for x in d]
    ex, ey, ez = np.diag(d)
    pieces = [
        _grid([lo[0], lo[1], hi[2]], ex, ey, n[0], n[1]),
        _grid(lo, ex, ez, n[0], n[2]),
        _grid([lo[0], hi[1], lo[2]], ex, ez, n[0], n[2]),
        _grid(lo, ey, ez, n[1], n[2]),
        _grid([hi[0], lo[1], lo[2]], ey, ez, n[1], n[2]),
    ]
    if bottom if bottom is not None else lo[2] > 1e-9:
        pieces.append(_grid(lo, ex, ey, n[0], n[1]))
    return _merge(pieces)


def cylinder(
    cx: float, cy: float, z0: float, radius: float, height: float, step: float
) -> tuple[np.ndarray, np.ndarray]:
    """Side and top cap of an upright cylinder (bottom cap too when it does not rest on z=0)."""
    n_around = max(10, int(math.ceil(2 * math.pi * radius / step)))
    n_h = _cells(height, step)
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
    n_rings = _cells(radius, step)
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
    return _merge(pieces)


# --------------------------------------------------------------------------- object classes
# raw label -> (nominal size (width x, depth y, height z) in metres, colour palette)
CLASSES: dict[str, tuple[tuple[float, float, float], list[tuple[int, int, int]]]] = {
    "office chair": ((0.5, 0.5, 0.9), [(150, 40, 40), (40, 60, 120), (50, 50, 55)]),
    "dining table": ((1.4, 0.8, 0.75), [(160, 110, 60), (120, 80, 45)]),
    "bed": ((1.5, 2.0, 1.0), [(225, 222, 215), (200, 210, 230)]),
    "couch": ((2.0, 0.9, 0.85), [(70, 90, 130), (110, 110, 105), (130, 70, 50)]),
    "kitchen cabinet": ((0.8, 0.5, 1.0), [(200, 190, 170), (235, 235, 230)]),
    "lamp": ((0.4, 0.4, 1.6), [(240, 230, 190)]),
    "bookshelf": ((0.9, 0.35, 1.8), [(120, 80, 50), (90, 60, 40)]),
    "toilet": ((0.4, 0.7, 0.8), [(238, 238, 238)]),
    "bathtub": ((1.6, 0.75, 0.55), [(228, 228, 232)]),
    "desk": ((1.2, 0.6, 0.75), [(140, 100, 70), (90, 90, 95)]),
    "refrigerator": ((0.7, 0.7, 1.8), [(210, 210, 215), (180, 180, 185)]),
    "trash can": ((0.3, 0.3, 0.4), [(80, 120, 80), (60, 60, 60)]),
    "nightstand": ((0.5, 0.4, 0.55), [(150, 100, 60)]),
}
WOOD, METAL, WHITE = (100, 70, 45), (60, 60, 65), (240, 240, 240)


def _parts(raw: str, s: np.ndarray, color, step: float, rng) -> list[Part]:
    """The parts of an object of class ``raw`` with size s = (sx, sy, sz), in a local frame:
    x in [-sx/2, sx/2], y in [-sy/2, sy/2] (+y is the back), z in [0, sz]."""
    sx, sy, sz = s
    hx, hy = sx / 2, sy / 2
    parts: list[Part] = []

    def add(mesh, c):
        parts.append(Part(mesh[0], mesh[1], tuple(int(x) for x in c)))

    def legs(thick, top, c):
        for x in (-hx, hx - thick):
            for y in (-hy, hy - thick):
                add(box([x, y, 0], [x + thick, y + thick, top], step), c)

    if raw == "office chair":
        seat = 0.47 * sz
        legs(0.05, seat - 0.05, METAL)
        add(box([-hx, -hy, seat - 0.05], [hx, hy, seat + 0.03], step), color)
        add(box([-hx, hy - 0.07, seat + 0.03], [hx, hy, sz], step), color)
    elif raw == "dining table":
        legs(0.07, sz - 0.04, np.asarray(color) * 0.8)
        add(box([-hx, -hy, sz - 0.04], [hx, hy, sz], step), color)
    elif raw == "desk":
        add(box([-hx, -hy, sz - 0.04], [hx, hy, sz], step), color)
        add(box([-hx, -hy, 0], [-hx + 0.04, hy, sz - 0.04], step), np.asarray(color) * 0.85)
        add(box([hx - 0.04, -hy, 0], [hx, hy, sz - 0.04], step), np.asarray(color) * 0.85)
        add(box([-hx + 0.04, hy - 0.03, 0.3], [hx - 0.04, hy, sz - 0.04], step), np.asarray(color) * 0.7)
    elif raw == "bed":
        add(box([-hx, -hy, 0], [hx, hy - 0.08, 0.3], step), WOOD)
        add(box([-hx + 0.03, -hy + 0.03, 0.3], [hx - 0.03, hy - 0.1, 0.52], step), color)
        add(box([-hx, hy - 0.08, 0], [hx, hy, sz], step), WOOD)
        add(box([-hx + 0.2, hy - 0.55, 0.52], [hx - 0.2, hy - 0.15, 0.64], step), WHITE)
    elif raw == "couch":
        add(box([-hx + 0.16, -hy, 0], [hx - 0.16, hy - 0.2, 0.45], step), color)
        add(box([-hx, hy - 0.2, 0], [hx, hy, sz], step), color)
        for x in (-hx, hx - 0.16):
            add(box([x, -hy, 0], [x + 0.16, hy - 0.2, 0.62], step), np.asarray(color) * 0.9)
    elif raw == "kitchen cabinet":
        add(box([-hx, -hy + 0.02, 0], [hx, hy, sz], step), color)
        add(box([-hx + 0.02, -hy, 0.05], [-0.01, -hy + 0.02, sz - 0.05], step), np.asarray(color) * 0.92)
        add(box([0.01, -hy, 0.05], [hx - 0.02, -hy + 0.02, sz - 0.05], step), np.asarray(color) * 0.92)
    elif raw == "nightstand":
        add(box([-hx, -hy + 0.02, 0], [hx, hy, sz], step), color)
        add(box([-hx + 0.03, -hy, 0.3], [hx - 0.03, -hy + 0.02, sz - 0.04], step), np.asarray(color) * 1.15)
        add(box([-hx + 0.03, -hy, 0.05], [hx - 0.03, -hy + 0.02, 0.27], step), np.asarray(color) * 1.15)
    elif raw == "refrigerator":
        add(box([-hx, -hy + 0.04, 0], [hx, hy, sz], step), color)
        add(box([-hx, -hy + 0.01, 0.02], [hx, -hy + 0.04, sz * 0.62], step), np.asarray(color) * 0.95)
        add(box([-hx, -hy + 0.01, sz * 0.64], [hx, -hy + 0.04, sz - 0.02], step), np.asarray(color) * 0.95)
        add(box([hx - 0.1, -hy, sz * 0.3], [hx - 0.07, -hy + 0.01, sz * 0.55], step), METAL)
    elif raw == "bookshelf":
        t = 0.03
        add(box([-hx, -hy, 0], [-hx + t, hy, sz], step), color)
        add(box([hx - t, -hy, 0], [hx, hy, sz], step), color)
        add(box([-hx + t, hy - t, 0], [hx - t, hy, sz], step), np.asarray(color) * 0.85)
        levels = np.linspace(0.0, sz - t, 5)
        for z in levels:
            add(box([-hx + t, -hy, z], [hx - t, hy - t, z + t], step), color)
        for z0, z1 in zip(levels[:-1], levels[1:]):  # a row of books on each shelf
            x = -hx + t + 0.02
            while x < hx - t - 0.1:
                w = rng.uniform(0.04, 0.09)
                h = rng.uniform(0.55, 0.9) * (z1 - z0 - t)
                book = rng.integers(40, 220, size=3)
                add(box([x, -hy + 0.05, z0 + t], [x + w, hy - t - 0.02, z0 + t + h], step), book)
                x += w + 0.01
    elif raw == "lamp":
        add(cylinder(0, 0, 0, 0.15, 0.03, step), METAL)
        add(cylinder(0, 0, 0.03, 0.015, sz - 0.33, step), METAL)
        add(cylinder(0, 0, sz - 0.3, hx, 0.3, step), color)
    elif raw == "toilet":
        add(cylinder(0, -hy + hx, 0, hx * 0.95, 0.4, step), color)
        add(box([-hx, hy - 0.2, 0], [hx, hy, sz], step), color)
        add(box([-0.12, hy - 0.3, 0], [0.12, hy - 0.2, 0.35], step), np.asarray(color) * 0.95)
    elif raw == "bathtub":
        t = 0.07
        add(box([-hx, -hy, 0], [hx, hy, 0.08], step), color)
        add(box([-hx, -hy, 0.08], [hx, -hy + t, sz], step), color)
        add(box([-hx, hy - t, 0.08], [hx, hy, sz], step), color)
        add(box([-hx, -hy + t, 0.08], [-hx + t, hy - t, sz], step), color)
        add(box([hx - t, -hy + t, 0.08], [hx, hy - t, sz], step), color)
    elif raw == "trash can":
        add(cylinder(0, 0, 0, min(hx, hy), sz, step), color)
    else:  # pragma: no cover - CLASSES and this switch are kept in sync
        raise KeyError(raw)
    return parts


def _build_object(raw: str, rng, target_vertices: int) -> tuple[list[Part], np.ndarray]:
    """Parts of one object of class ``raw`` (local frame) with about ``target_vertices`` vertices."""
    size0, palette = CLASSES[raw]
    s = np.asarray(size0) * rng.uniform(0.9, 1.1, size=3)
    color = np.asarray(palette[int(rng.integers(len(palette)))], float)
    state = rng.bit_generator.state
    step = math.sqrt(2 * (s[0] * s[1] + s[0] * s[2] + s[1] * s[2]) / target_vertices)
    for _ in range(4):  # the parts' areas differ from the box's: adjust the cell size
        rng.bit_generator.state = state  # same books each try
        parts = _parts(raw, s, color, step, rng)
        count = sum(len(p.vertices) for p in parts)
        if 0.7 * target_vertices <= count <= 1.5 * target_vertices:
            break
        step *= math.sqrt(count / target_vertices)
    return parts, s


def _split_segments(vertices: np.ndarray, first_index: int, size: int) -> np.ndarray:
    """Segment ids for one part: chunks of about ``size`` vertices along its longest extent; each
    segment is named, as in ScanNet, by one of its vertex indices (its first)."""
    n = len(vertices)
    pieces = max(1, int(round(n / size)))
    seg = np.empty(n, dtype=np.int64)
    if pieces == 1:
        seg[:] = first_index
        return seg
    axis = int(np.argmax(np.ptp(vertices, axis=0)))
    order = np.argsort(vertices[:, axis], kind="stable")
    for chunk in np.array_split(order, pieces):
        seg[chunk] = first_index + int(chunk.min())
    return seg


# --------------------------------------------------------------------------- writers
def write_ply(path: Path, vertices: np.ndarray, colors: np.ndarray, faces: np.ndarray) -> None:
    """Binary little-endian ply like ScanNet's: vertex x y z (float) red green blue alpha (uchar),
    face vertex_indices (uchar count, int indices)."""
    n, f = len(vertices), len(faces)
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment featurizer synthetic ScanNet scene\n"
        f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty uchar alpha\n"
        f"element face {f}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    vdt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4")] + [(c, "u1") for c in "rgba"])
    v = np.empty(n, dtype=vdt)
    v["x"], v["y"], v["z"] = vertices[:, 0], vertices[:, 1], vertices[:, 2]
    v["r"], v["g"], v["b"] = colors[:, 0], colors[:, 1], colors[:, 2]
    v["a"] = 255
    fdt = np.dtype([("n", "u1"), ("i", "<i4", (3,))])
    fa = np.empty(f, dtype=fdt)
    fa["n"] = 3
    fa["i"] = faces
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(v.tobytes())
        fh.write(fa.tobytes())


def write_labels_tsv(path: Path) -> None:
    rows = ["\t".join(TSV_HEADER)]
    for i, (raw, (cat, nyu, nyu_class)) in enumerate(RAW_LABELS.items(), start=1):
        rows.append("\t".join([str(i), raw, cat, str(100 * i), str(nyu), "", cat, nyu_class]))
    path.write_text("\n".join(rows) + "\n")


def _fmt(m: np.ndarray) -> str:
    return "\n".join(" ".join(f"{x:.9g}" for x in row) for row in m) + "\n"


def _fmt_exact(m: np.ndarray) -> str:
    """Like ``_fmt`` but with 17 significant digits: parsing gives back the same float64 values."""
    return "\n".join(" ".join(f"{x:.17g}" for x in row) for row in m) + "\n"


def _f32(m: np.ndarray) -> np.ndarray:
    """float64 array holding exactly the float32 values of ``m`` (what a ``.sens`` stores)."""
    return np.asarray(m, dtype=np.float32).astype(np.float64)


def _stream_poses(views: list, poses: list, to_raw: np.ndarray) -> list[np.ndarray]:
    """(4, 4) camera-to-world of every stream frame, ``len(views) * FRAME_STEP`` of them.

    Stream frame ``i * FRAME_STEP`` is exported frame ``i`` (its pose exactly); the frames in between
    look from and at points interpolated linearly towards the next exported view (the last one
    towards the first: the camera goes round the room). float32 values, as a ``.sens`` stores them.
    """
    out = []
    for i, ((eye, target), pose) in enumerate(zip(views, poses)):
        eye1, target1 = views[(i + 1) % len(views)]
        out.append(_f32(pose))
        for j in range(1, FRAME_STEP):
            t = j / FRAME_STEP
            out.append(_f32(to_raw @ look_at(eye + t * (eye1 - eye), target + t * (target1 - target))))
    return out


class _RenderedStream:
    """Lazy colour / depth sequences of a rendered stream, so ``write_sens`` never holds them all.

    ``colors[i]`` (H, W, 3) uint8 and ``depths[i]`` (H, W) uint16 millimetres share one render
    (the last one is cached), so writing frame i renders it once.
    """

    def __init__(self, vertices, faces, colors, poses, k, width, height):
        self._mesh = (vertices, faces, colors)
        self._poses, self._k, self._size = poses, k, (width, height)
        self._cached: tuple[int, np.ndarray, np.ndarray] | None = None
        self.colors = _StreamView(self, 0)
        self.depths = _StreamView(self, 1)

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cached is None or self._cached[0] != i:
            color, depth = render_mesh(*self._mesh, self._poses[i], self._k, *self._size)
            mm = np.clip(np.rint(depth * 1000.0), 0, 65535).astype(np.uint16)
            self._cached = (i, color, mm)
        return self._cached[1], self._cached[2]

    def __len__(self) -> int:
        return len(self._poses)


class _StreamView:
    def __init__(self, stream: _RenderedStream, which: int):
        self._stream, self._which = stream, which

    def __len__(self) -> int:
        return len(self._stream)

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self._stream):
            raise IndexError(i)
        return self._stream.frame(i)[self._which]


# --------------------------------------------------------------------------- one scene
def generate_scene(
    out_root: Path,
    scene_id: str,
    rng: np.random.Generator,
    num_frames: int = 24,
    image_size: tuple[int, int] = (640, 480),
    num_objects: int = 10,
    split: str = "val",
    intrinsics_size: tuple[int, int] | None = None,
    object_vertices: int = 1000,
    write_sens: bool = False,
) -> dict:
    """Write one scene under ``out_root`` in the ScanNet layout; return the ground truth written.

    out_root: the ScanNet root (``scans/`` or ``scans_test/`` and ``scannet_2d/`` are created in it).
    num_frames: exported frames (numbers 0, 20, 40, ...); image_size: (width, height) of colour and depth.
    intrinsics_size: the (width, height) the written intrinsics (``intrinsic_depth.txt``, meta
        ``fx_depth``.., ``depthWidth``/``depthHeight``) refer to; default ``image_size``. Images are
        always rendered at ``image_size``, so a reader must rescale when the two differ.
    split: ``test`` writes a test-split scan (``scans_test/``, no aggregation, segs or alignment).
    write_sens: also write the RGB-D stream ``<scan folder>/<scene>.sens`` (version 4, JPEG colour,
        zlib depth): ``num_frames * FRAME_STEP`` stream frames, the exported frame ``k`` being stream
        frame ``k`` (the frames in between are rendered from poses interpolated between consecutive
        exported ones, around the loop). The stream's frame ``k`` holds exactly the exported data:
        the same JPEG bytes (same encoder and quality), the same uint16 depth, and the same pose and
        intrinsics: with ``write_sens`` poses and intrinsics are float32 values (what a ``.sens``
        stores) and the text files print them exactly, so both readers produce equal frames.
        The header's intrinsics are those at ``image_size`` (equal to the written ones bit for bit
        when ``intrinsics_size`` is ``image_size``). Costs ``FRAME_STEP`` renders per exported frame.

    Returned dict: ``scene_id``, ``axis_align`` (4, 4), ``vertices_raw`` (V, 3) float32 as written,
    ``vertices_aligned`` (V, 3) float64, ``colors`` (V, 3) uint8, ``faces`` (F, 3), ``seg_indices``
    (V,), ``objects`` (list of dicts: object_id, raw_label, label, point_ids, segments, box (6,) of
    aligned vertices), ``structure`` (wall/floor groups, same keys), ``room_size`` (3,),
    ``intrinsics`` (3, 3) at image_size, ``intrinsics_written`` (3, 3) at intrinsics_size,
    ``frame_ids``, ``poses`` (list of (4, 4) camera-to-world, raw frame), ``scene_dir``, ``frames_dir``,
    ``sens_path`` (None unless ``write_sens``).
    """
    out_root = Path(out_root)
    width, height = int(image_size[0]), int(image_size[1])
    isize = image_size if intrinsics_size is None else intrinsics_size
    iw, ih = int(isize[0]), int(isize[1])
    is_test = split == "test"
    room = np.array([rng.uniform(7.0, 8.5), rng.uniform(6.0, 7.5), rng.uniform(2.6, 3.0)])
    hx, hy, hz = room[0] / 2, room[1] / 2, room[2]

    # ---- room: floor + 4 walls (aligned frame, floor at z = 0, centred on the origin)
    groups = []  # (raw label, list of Parts)
    nfx, nfy = _cells(room[0], 0.15), _cells(room[1], 0.15)
    floor = _grid([-hx, -hy, 0.0], [room[0], 0, 0], [0, room[1], 0], nfx, nfy)
    wall_specs = [
        ([-hx, -hy, 0], [room[0], 0, 0]),
        ([-hx, hy, 0], [room[0], 0, 0]),
        ([-hx, -hy, 0], [0, room[1], 0]),
        ([hx, -hy, 0], [0, room[1], 0]),
    ]
    wall_color = np.array([205, 198, 185]) + rng.integers(-15, 16, size=3)
    floor_color = np.array([150, 115, 80]) + rng.integers(-20, 21, size=3)
    for origin, a in wall_specs:
        mesh = _grid(origin, a, [0, 0, hz], _cells(np.linalg.norm(a), 0.2), _cells(hz, 0.2))
        groups.append(("wall", [Part(mesh[0], mesh[1], tuple(wall_color + rng.integers(-6, 7, size=3)))]))
    groups.append(("floor", [Part(floor[0], floor[1], tuple(floor_color))]))
    n_structure = len(groups)

    # ---- objects: distinct classes first (big ones placed first), then repeats of small ones
    names = list(CLASSES)
    order = [names[i] for i in rng.permutation(len(names))]
    distinct = order[: min(num_objects, len(order))]
    repeats = ["office chair", "trash can", "office chair", "nightstand"]
    extra = [repeats[i % 4] for i in range(num_objects - len(distinct))]
    wanted = sorted(distinct, key=lambda r: -CLASSES[r][0][0] * CLASSES[r][0][1]) + extra
    margin, gap = 0.9, 0.15
    placed_boxes: list[np.ndarray] = []
    for raw in wanted:
        parts, _ = _build_object(raw, rng, object_vertices)
        turn = int(rng.integers(4))
        c, s = [1, 0, -1, 0][turn], [0, 1, 0, -1][turn]
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], float)
        allv = np.concatenate([p.vertices for p in parts]) @ rot.T
        lo, hi = allv.min(0), allv.max(0)
        for _ in range(300):
            t = np.array([rng.uniform(-hx + margin - lo[0], hx - margin - hi[0]),
                          rng.uniform(-hy + margin - lo[1], hy - margin - hi[1]), 0.0])
            blo, bhi = lo + t, hi + t
            apart = [
                blo[0] >= q[3] + gap or bhi[0] <= q[0] - gap or blo[1] >= q[4] + gap or bhi[1] <= q[1] - gap
                for q in placed_boxes
            ]
            if all(apart):
                break
        else:
            continue  # no room for this one
        placed_boxes.append(np.concatenate([blo, bhi]))
        groups.append((raw, [Part(p.vertices @ rot.T + t, p.faces, p.color) for p in parts]))

    # ---- one mesh, per-vertex colours (class colour + noise), segments per part
    verts, faces, cols, segs, group_of = [], [], [], [], []
    n = 0
    for gi, (raw, parts) in enumerate(groups):
        for p in parts:
            verts.append(p.vertices)
            faces.append(p.faces + n)
            noise = rng.normal(0.0, 5.0, size=(len(p.vertices), 3))
            cols.append(np.clip(np.rint(np.asarray(p.color, float) + noise), 0, 255).astype(np.uint8))
            seg_size = 400 if gi < n_structure else 150
            segs.append(_split_segments(p.vertices, n, seg_size))
            group_of.append(np.full(len(p.vertices), gi))
            n += len(p.vertices)
    aligned = np.concatenate(verts)
    faces = np.concatenate(faces).astype(np.int64)
    colors = np.concatenate(cols)
    seg = np.concatenate(segs)
    group_of = np.concatenate(group_of)

    # ---- raw frame: aligned = A @ raw, A = rotation about z + translation
    theta = rng.uniform(math.radians(15), math.radians(345))
    off = theta % (math.pi / 2)
    if min(off, math.pi / 2 - off) < math.radians(10):  # keep the raw room visibly rotated
        theta += math.radians(30)
    ct, st = math.cos(theta), math.sin(theta)
    tx, ty, tz = rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(-0.1, 0.1)
    align = np.array([[ct, -st, 0, tx], [st, ct, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]])
    if is_test:
        align_written = None
    else:
        align_written = align
    to_raw = np.linalg.inv(align)
    raw_v = (aligned @ to_raw[:3, :3].T + to_raw[:3, 3]).astype(np.float32)
    # what a reader recomputes from the written float32 mesh (the ground truth it must match)
    aligned_read = raw_v.astype(np.float64) @ align[:3, :3].T + align[:3, 3]

    # ---- ground-truth groups
    def group_dict(gi, object_id):
        raw = groups[gi][0]
        ids = np.flatnonzero(group_of == gi)
        return {
            "object_id": object_id,
            "raw_label": raw,
            "label": RAW_LABELS[raw][0],
            "point_ids": ids,
            "segments": sorted(int(x) for x in np.unique(seg[ids])),
            "box": np.concatenate([(aligned_read[ids].min(0) + aligned_read[ids].max(0)) / 2,
                                   aligned_read[ids].max(0) - aligned_read[ids].min(0)]),
        }

    # objects first (aggregation order), then walls and floor, as annotated later in ScanNet
    gt_objects = [group_dict(gi, k) for k, gi in enumerate(range(n_structure, len(groups)))]
    gt_structure = [group_dict(gi, len(gt_objects) + k) for k, gi in enumerate(range(n_structure))]

    # ---- files: scan folder
    scan_dir = out_root / ("scans_test" if is_test else "scans") / scene_id
    scan_dir.mkdir(parents=True, exist_ok=True)
    write_ply(scan_dir / f"{scene_id}{PLY_SUFFIX}", raw_v, colors, faces)
    fx = SCANNET_FX_640 * (iw / 640.0) * rng.uniform(0.99, 1.01)
    fy = fx * rng.uniform(0.998, 1.002)
    px, py = iw / 2 - 0.5 + rng.uniform(-1, 1), ih / 2 - 0.5 + rng.uniform(-1, 1)
    k_written = np.array([[fx, 0, px], [0, fy, py], [0, 0, 1]])
    if write_sens:
        if num_frames < 1:
            raise ValueError("write_sens needs num_frames >= 1")
        k_written = _f32(k_written)  # what a .sens header can hold
    k_img = k_written.copy()  # pixel centres at integer coordinates: x -> (x + 0.5) * s - 0.5
    k_img[0, 0] *= width / iw
    k_img[1, 1] *= height / ih
    k_img[0, 2] = (k_written[0, 2] + 0.5) * width / iw - 0.5
    k_img[1, 2] = (k_written[1, 2] + 0.5) * height / ih - 0.5
    meta = [
        f"colorHeight = {height}",
        f"colorWidth = {width}",
        f"depthHeight = {ih}",
        f"depthWidth = {iw}",
        f"fx_color = {k_written[0, 0]:.6f}",
        f"fx_depth = {k_written[0, 0]:.6f}",
        f"fy_color = {k_written[1, 1]:.6f}",
        f"fy_depth = {k_written[1, 1]:.6f}",
        f"mx_color = {k_written[0, 2]:.6f}",
        f"mx_depth = {k_written[0, 2]:.6f}",
        f"my_color = {k_written[1, 2]:.6f}",
        f"my_depth = {k_written[1, 2]:.6f}",
        f"numColorFrames = {num_frames * FRAME_STEP}",
        f"numDepthFrames = {num_frames * FRAME_STEP}",
        "numIMUmeasurements = 0",
        "sceneType = Synthetic",
    ]
    if align_written is not None:
        meta.insert(0, "axisAlignment = " + " ".join(f"{x:.9g}" for x in align_written.ravel()))
    (scan_dir / f"{scene_id}.txt").write_text("\n".join(meta) + "\n")
    if not is_test:
        (scan_dir / f"{scene_id}{SEGS_SUFFIX}").write_text(json.dumps({
            "params": {"kThresh": "0.0001", "segMinVerts": "20", "minPoints": "0", "maxPoints": "0",
                       "thinThresh": "0", "flatThresh": "0", "minLength": "0", "maxLength": "0"},
            "sceneId": scene_id,
            "segIndices": seg.tolist(),
        }))
        seg_groups = [
            {"id": g["object_id"], "objectId": g["object_id"], "segments": g["segments"],
             "label": g["raw_label"]}
            for g in gt_objects + gt_structure
        ]
        (scan_dir / f"{scene_id}{AGG_SUFFIX}").write_text(json.dumps({
            "sceneId": f"scannet.{scene_id}",
            "appId": f"featurizer.synthetic.v{GENERATOR_VERSION}",
            "segGroups": seg_groups,
            "segmentsFile": f"scannet.{scene_id}{SEGS_SUFFIX}",
        }, indent=1))

    # ---- frames: camera on an ellipse 0.5 m inside the walls, 1.5 m high, looking at the middle
    frames_dir = out_root / "scannet_2d" / scene_id
    for sub in ("color", "depth", "pose", "intrinsic"):
        (frames_dir / sub).mkdir(parents=True, exist_ok=True)
    fmt = _fmt_exact if write_sens else _fmt
    m4 = np.eye(4)
    m4[:3, :3] = k_written
    (frames_dir / "intrinsic" / "intrinsic_depth.txt").write_text(fmt(m4))
    (frames_dir / "intrinsic" / "intrinsic_color.txt").write_text(fmt(m4))
    (frames_dir / "intrinsic" / "extrinsic_depth.txt").write_text(_fmt(np.eye(4)))
    (frames_dir / "intrinsic" / "extrinsic_color.txt").write_text(_fmt(np.eye(4)))
    frame_ids, poses, views = [], [], []
    phase = rng.uniform(0, 2 * math.pi)
    for i in range(num_frames):
        phi = phase + 2 * math.pi * i / max(num_frames, 1) + rng.uniform(-0.1, 0.1)
        eye = np.array([(hx - 0.5) * math.cos(phi), (hy - 0.5) * math.sin(phi), 1.5])
        eye += rng.uniform(-0.1, 0.1, 3)
        target = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(0.4, 0.8)])
        pose_raw = to_raw @ look_at(eye, target)
        if write_sens:
            pose_raw = _f32(pose_raw)
        k = i * FRAME_STEP
        frame_ids.append(k)
        poses.append(pose_raw)
        views.append((eye, target))
    from PIL import Image

    for k, pose_raw in zip(frame_ids, poses):
        color, depth = render_mesh(raw_v, faces, colors, pose_raw, k_img, width, height)
        Image.fromarray(color).save(frames_dir / "color" / f"{k}.jpg", quality=JPEG_QUALITY)
        mm = np.clip(np.rint(depth * 1000.0), 0, 65535).astype(np.uint16)
        Image.fromarray(mm).save(frames_dir / "depth" / f"{k}.png")
        (frames_dir / "pose" / f"{k}.txt").write_text(fmt(pose_raw))

    sens_path = None
    if write_sens:
        from featurizer.dataset.sens import write_sens as write_sens_file

        stream_poses = _stream_poses(views, poses, to_raw)
        stream = _RenderedStream(raw_v, faces, colors, stream_poses, k_img, width, height)
        k_sens = k_written if (iw, ih) == (width, height) else _f32(k_img)
        sens_path = scan_dir / f"{scene_id}.sens"
        write_sens_file(sens_path, stream.colors, stream.depths, np.stack(stream_poses), k_sens, k_sens,
                        depth_shift=1000.0, jpeg_quality=JPEG_QUALITY, sensor_name="featurizer-synthetic")

    return {
        "scene_id": scene_id,
        "split": split,
        "axis_align": align,
        "vertices_raw": raw_v,
        "vertices_aligned": aligned,
        "vertices_aligned_read": aligned_read,
        "colors": colors,
        "faces": faces,
        "seg_indices": seg,
        "objects": gt_objects,
        "structure": gt_structure,
        "room_size": room,
        "intrinsics": k_img,
        "intrinsics_written": k_written,
        "frame_ids": frame_ids,
        "poses": poses,
        "scene_dir": scan_dir,
        "frames_dir": frames_dir,
        "sens_path": sens_path,
    }


def generate_dataset(
    root: Path,
    num_scenes: int,
    frames_per_scene: int,
    seed: int,
    split: str = "val",
    image_size: tuple[int, int] = (640, 480),
    num_objects: int = 10,
    write_sens: bool = False,
) -> list[dict]:
    """Write ``num_scenes`` scenes plus the labels tsv and the split file under ``root``.

    write_sens: also write each scene's ``<scene>.sens`` stream (see :func:`generate_scene`)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_labels_tsv(root / TSV_NAME)
    truths, ids = [], []
    for i in range(num_scenes):
        scene_id = f"scene{i:04d}_00"
        rng = np.random.default_rng([int(seed), i])
        truths.append(generate_scene(root, scene_id, rng, num_frames=frames_per_scene, image_size=image_size,
                                     num_objects=num_objects, split=split, write_sens=write_sens))
        ids.append(scene_id)
    (root / f"scannetv2_{split}.txt").write_text("\n".join(ids) + "\n")
    return truths


class SyntheticScanNet(ScanNetReader):
    """Synthetic ScanNet-layout scenes, generated once under ``data_dir``, read by ScanNetReader.

    data_dir: where generated datasets live; each parameter set gets its own folder
        (``scannet_synth_v<version>_...``), generated in a temporary folder, completed by a done-marker
        and renamed into place, so a crash never leaves a half dataset that looks finished.
    num_scenes, frames_per_scene, seed, image_size (width, height), num_objects: the generator's parameters.
    split, frame_stride, frames, max_frames, scenes: as for :class:`ScanNetReader`.
    write_sens: also write each scene's ``<scene>.sens`` (:func:`generate_scene`); None (default)
        writes it exactly when ``frames`` is ``sens``. A dataset with streams lives in its own folder.
    ``name`` stays ``scannet``: the data is ScanNet-format and the Chat-Scene files are named so.
    """

    def __init__(
        self,
        data_dir: str,
        num_scenes: int = 3,
        frames_per_scene: int = 24,
        seed: int = 0,
        split: str = "val",
        image_size: tuple[int, int] = (640, 480),
        frame_stride: int = 1,
        num_objects: int = 10,
        frames: str = "exported",
        max_frames: int | None = None,
        scenes: list[str] | None = None,
        write_sens: bool | None = None,
    ):
        if data_dir is None or str(data_dir) in ("", "???"):
            raise ConfigError("dataset.data_dir", "not set")
        if int(num_scenes) < 1:
            raise ConfigError("dataset.num_scenes", f"must be >= 1, got {num_scenes}")
        if int(frames_per_scene) < 0:
            raise ConfigError("dataset.frames_per_scene", f"must be >= 0, got {frames_per_scene}")
        try:
            size = (int(image_size[0]), int(image_size[1]))
        except (TypeError, ValueError, IndexError):
            raise ConfigError("dataset.image_size", f"must be [width, height], got {image_size!r}") from None
        if min(size) < 16:
            raise ConfigError("dataset.image_size", f"too small: {size}")
        if int(num_objects) < 1:
            raise ConfigError("dataset.num_objects", f"must be >= 1, got {num_objects}")
        write_sens = (frames == "sens") if write_sens is None else bool(write_sens)
        if write_sens and int(frames_per_scene) < 1:
            raise ConfigError("dataset.frames_per_scene", "must be >= 1 to write .sens streams")
        self.data_dir = Path(data_dir)
        self.generator_params = dict(
            num_scenes=int(num_scenes), frames_per_scene=int(frames_per_scene), seed=int(seed),
            split=str(split), image_size=size, num_objects=int(num_objects),
        )
        if write_sens:  # only when set, so that existing datasets keep their folder names
            self.generator_params["write_sens"] = True
        name = (f"scannet_synth_v{GENERATOR_VERSION}_n{num_scenes}_f{frames_per_scene}_s{seed}_"
                f"{size[0]}x{size[1]}_o{num_objects}_{split}" + ("_sens" if write_sens else ""))
        self.dataset_root = self.data_dir / name
        self.ensure_generated()
        super().__init__(root=str(self.dataset_root), split=split, scenes=scenes, frame_stride=frame_stride,
                         frames=frames, max_frames=max_frames)

    def ensure_generated(self) -> Path:
        """Generate the dataset unless a finished one (with its done-marker) is already there."""
        final = self.dataset_root
        if (final / DONE_MARKER).is_file():
            return final
        self.data_dir.mkdir(parents=True, exist_ok=True)
        remove_stale(self.data_dir)  # half-generated folders of killed runs
        tmp = temporary_path(final)
        try:
            generate_dataset(tmp, **self.generator_params)
            done = {**self.generator_params, "version": GENERATOR_VERSION}
            (tmp / DONE_MARKER).write_text(json.dumps(done) + "\n")
            if final.exists() and not (final / DONE_MARKER).is_file():
                shutil.rmtree(final)  # an unfinished leftover (never produced by this code's rename)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / DONE_MARKER).is_file():  # lost a race only if the winner finished
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final
