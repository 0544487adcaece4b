"""The furniture of the synthetic scenes: ScanNet classes, their raw labels, sizes, colours and shapes.

Each object is built in a local frame from boxes and cylinders (:mod:`.mesh`) with a class-typical
shape, and cut into ScanNet-like segments.
"""

from __future__ import annotations

import math

import numpy as np

from featurizer.dataset.synthetic.mesh import Part, box, cylinder


# raw label (what the annotators typed, in the aggregation) -> (category, nyu40 id, nyu40 class).
# Several raw labels differ from their category, so the tsv mapping is exercised. Every raw label is a
# ScanNet200 class name: the synthetic tsv's id of a raw label is its ScanNet200 id (as in ScanNet's tsv), and
# each category is also a raw label whose row names it, so class ids written for categories (the synthetic
# Mask3D export) are ScanNet200 ids named alike by the tsv and by ScanNet200. "cabinet" and "table" are not
# furniture of the model: their rows name the categories of "kitchen cabinet" and "dining table".
RAW_LABELS: dict[str, tuple[str, int, str]] = {
    "wall": ("wall", 1, "wall"),
    "floor": ("floor", 2, "floor"),
    "kitchen cabinet": ("cabinet", 3, "cabinet"),
    "bed": ("bed", 4, "bed"),
    "office chair": ("chair", 5, "chair"),
    "chair": ("chair", 5, "chair"),
    "couch": ("couch", 6, "sofa"),
    "dining table": ("table", 7, "table"),
    "bookshelf": ("bookshelf", 10, "bookshelf"),
    "desk": ("desk", 14, "desk"),
    "refrigerator": ("refrigerator", 24, "refridgerator"),
    "nightstand": ("nightstand", 32, "night stand"),
    "toilet": ("toilet", 33, "toilet"),
    "lamp": ("lamp", 35, "lamp"),
    "bathtub": ("bathtub", 36, "bathtub"),
    "trash can": ("trash can", 39, "otherfurniture"),
    "cabinet": ("cabinet", 3, "cabinet"),
    "table": ("table", 7, "table"),
}

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


def build_object(raw: str, rng, target_vertices: int) -> tuple[list[Part], np.ndarray]:
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


def split_segments(vertices: np.ndarray, first_index: int, size: int) -> np.ndarray:
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

