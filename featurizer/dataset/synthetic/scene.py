"""The model of one synthetic scene: a room with furniture, its raw frame, segments and cameras.

The room (floor and four walls) is built axis-aligned, centred on the origin with the floor at z = 0,
and furnished with objects of :mod:`.furniture` placed without overlap. The scene is then given a
*raw* frame such that ``align @ raw = aligned``, as in ScanNet. Cameras go round an ellipse inside the
room, looking at its middle. Nothing here touches the disk (:mod:`.layout` writes a model).

Every random draw comes from the one generator passed to :func:`make_scene`, in a fixed order (room,
structure colours, furniture, vertex colours, alignment, intrinsics, cameras): the same seed gives
the same scene, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from featurizer.dataset.render import look_at
from featurizer.dataset.synthetic.furniture import CLASSES, RAW_LABELS, build_object, split_segments
from featurizer.dataset.synthetic.mesh import Part, cells, grid

FRAME_STEP = 20  # exported frames are every 20th frame of the stream
SCANNET_FX_640 = 577.870605  # ScanNet's typical depth focal length at 640x480


@dataclass
class SceneModel:
    """One generated scene. Vertices index one mesh; ``aligned`` and ``raw_vertices`` are its two frames.

    groups: (raw label, parts) of the walls and floor (the first ``n_structure``), then the furniture.
    vertices_aligned (V, 3) float64; raw_vertices (V, 3) float32 (as written); vertices_aligned_read
    (V, 3) float64 recomputed from the float32 raw vertices (what a reader sees); colors (V, 3) uint8;
    faces (F, 3) int64; seg (V,) segment ids; group_of (V,) group index; align (4, 4) aligned <- raw;
    objects / structure: ground-truth groups (:func:`ground_truth_groups`); k_written (3, 3) the
    intrinsics at the written size, k_image (3, 3) at the image size; frame_ids, poses ((4, 4)
    camera-to-world, raw frame), views ((eye, target) in the aligned frame) of the exported frames.
    """

    room: np.ndarray
    groups: list
    n_structure: int
    vertices_aligned: np.ndarray
    raw_vertices: np.ndarray
    vertices_aligned_read: np.ndarray
    colors: np.ndarray
    faces: np.ndarray
    seg: np.ndarray
    group_of: np.ndarray
    align: np.ndarray
    objects: list[dict]
    structure: list[dict]
    k_written: np.ndarray
    k_image: np.ndarray
    frame_ids: list[int]
    poses: list[np.ndarray]
    views: list[tuple[np.ndarray, np.ndarray]]

    @property
    def to_raw(self) -> np.ndarray:
        return np.linalg.inv(self.align)


def f32(m: np.ndarray) -> np.ndarray:
    """float64 array holding exactly the float32 values of ``m`` (what a ``.sens`` stores)."""
    return np.asarray(m, dtype=np.float32).astype(np.float64)


def build_room(rng: np.random.Generator, room: np.ndarray) -> list[tuple[str, list[Part]]]:
    """Four walls and the floor of a room of size ``room`` (x, y, height): (raw label, parts) each."""
    hx, hy, hz = room[0] / 2, room[1] / 2, room[2]
    nfx, nfy = cells(room[0], 0.15), cells(room[1], 0.15)
    floor = grid([-hx, -hy, 0.0], [room[0], 0, 0], [0, room[1], 0], nfx, nfy)
    wall_specs = [
        ([-hx, -hy, 0], [room[0], 0, 0]),
        ([-hx, hy, 0], [room[0], 0, 0]),
        ([-hx, -hy, 0], [0, room[1], 0]),
        ([hx, -hy, 0], [0, room[1], 0]),
    ]
    wall_color = np.array([205, 198, 185]) + rng.integers(-15, 16, size=3)
    floor_color = np.array([150, 115, 80]) + rng.integers(-20, 21, size=3)
    groups = []
    for origin, a in wall_specs:
        mesh = grid(origin, a, [0, 0, hz], cells(np.linalg.norm(a), 0.2), cells(hz, 0.2))
        groups.append(("wall", [Part(mesh[0], mesh[1], tuple(wall_color + rng.integers(-6, 7, size=3)))]))
    groups.append(("floor", [Part(floor[0], floor[1], tuple(floor_color))]))
    return groups


def place_furniture(rng: np.random.Generator, room: np.ndarray, num_objects: int,
                    object_vertices: int) -> list[tuple[str, list[Part]]]:
    """``num_objects`` objects (fewer when one finds no room): distinct classes first, big ones placed
    first, then repeats of small ones; each turned by a multiple of 90 degrees and placed at least
    ``gap`` from the others and ``margin`` from the walls (300 tries, else left out)."""
    hx, hy = room[0] / 2, room[1] / 2
    names = list(CLASSES)
    order = [names[i] for i in rng.permutation(len(names))]
    distinct = order[: min(num_objects, len(order))]
    repeats = ["office chair", "trash can", "office chair", "nightstand"]
    extra = [repeats[i % 4] for i in range(num_objects - len(distinct))]
    wanted = sorted(distinct, key=lambda r: -CLASSES[r][0][0] * CLASSES[r][0][1]) + extra
    margin, gap = 0.9, 0.15
    placed_boxes: list[np.ndarray] = []
    groups = []
    for raw in wanted:
        parts, _ = build_object(raw, rng, object_vertices)
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
    return groups


def assemble_mesh(rng: np.random.Generator, groups: list, n_structure: int):
    """One mesh of every group's parts: vertices (V, 3), faces (F, 3) int64, per-vertex colours (V, 3)
    uint8 (part colour + noise), segment ids (V,) (structure cut coarser than furniture), group (V,)."""
    verts, faces, cols, segs, group_of = [], [], [], [], []
    n = 0
    for gi, (_, parts) in enumerate(groups):
        for p in parts:
            verts.append(p.vertices)
            faces.append(p.faces + n)
            noise = rng.normal(0.0, 5.0, size=(len(p.vertices), 3))
            cols.append(np.clip(np.rint(np.asarray(p.color, float) + noise), 0, 255).astype(np.uint8))
            seg_size = 400 if gi < n_structure else 150
            segs.append(split_segments(p.vertices, n, seg_size))
            group_of.append(np.full(len(p.vertices), gi))
            n += len(p.vertices)
    return (np.concatenate(verts), np.concatenate(faces).astype(np.int64), np.concatenate(cols),
            np.concatenate(segs), np.concatenate(group_of))


def random_alignment(rng: np.random.Generator) -> np.ndarray:
    """(4, 4) ``align`` (aligned = align @ raw): a rotation about z, kept at least 10 degrees away from
    a multiple of 90, and a translation."""
    theta = rng.uniform(math.radians(15), math.radians(345))
    off = theta % (math.pi / 2)
    if min(off, math.pi / 2 - off) < math.radians(10):  # keep the raw room visibly rotated
        theta += math.radians(30)
    ct, st = math.cos(theta), math.sin(theta)
    tx, ty, tz = rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(-0.1, 0.1)
    return np.array([[ct, -st, 0, tx], [st, ct, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]])


def ground_truth_groups(groups: list, n_structure: int, group_of: np.ndarray, seg: np.ndarray,
                        aligned_read: np.ndarray) -> tuple[list[dict], list[dict]]:
    """The annotated groups: furniture first (object ids 0..), then walls and floor, as annotated later
    in ScanNet. Each: object_id, raw_label, label, point_ids, segments, box (6,) of aligned vertices."""
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

    objects = [group_dict(gi, k) for k, gi in enumerate(range(n_structure, len(groups)))]
    structure = [group_dict(gi, len(objects) + k) for k, gi in enumerate(range(n_structure))]
    return objects, structure


def scaled_intrinsics(k: np.ndarray, scale_x: float, scale_y: float) -> np.ndarray:
    """``k`` (featurizer's pixel centres at integer coordinates) for an image resized by the scales. The
    generator's own copy of :func:`featurizer.scene.scaled_intrinsics`: what it writes does not rest on
    the readers' code, so a wrong formula there fails the readers' round trips."""
    out = np.array(k, dtype=np.float64)
    out[0, 0] *= scale_x
    out[1, 1] *= scale_y
    out[0, 2] = (out[0, 2] + 0.5) * scale_x - 0.5
    out[1, 2] = (out[1, 2] + 0.5) * scale_y - 0.5
    return out


def camera_intrinsics(rng: np.random.Generator, intrinsics_size: tuple[int, int],
                      image_size: tuple[int, int], exact_f32: bool) -> tuple[np.ndarray, np.ndarray]:
    """(k_written at ``intrinsics_size``, k_image at ``image_size``): ScanNet-like focal length and
    centre with small random offsets; float32 values when ``exact_f32`` (what a ``.sens`` holds)."""
    (iw, ih), (width, height) = intrinsics_size, image_size
    fx = SCANNET_FX_640 * (iw / 640.0) * rng.uniform(0.99, 1.01)
    fy = fx * rng.uniform(0.998, 1.002)
    px, py = iw / 2 - 0.5 + rng.uniform(-1, 1), ih / 2 - 0.5 + rng.uniform(-1, 1)
    k_written = np.array([[fx, 0, px], [0, fy, py], [0, 0, 1]])
    if exact_f32:
        k_written = f32(k_written)
    k_img = k_written.copy()  # pixel centres at integer coordinates: x -> (x + 0.5) * s - 0.5
    k_img[0, 0] *= width / iw
    k_img[1, 1] *= height / ih
    k_img[0, 2] = (k_written[0, 2] + 0.5) * width / iw - 0.5
    k_img[1, 2] = (k_written[1, 2] + 0.5) * height / ih - 0.5
    return k_written, k_img


def camera_path(rng: np.random.Generator, room: np.ndarray, num_frames: int, to_raw: np.ndarray,
                exact_f32: bool) -> tuple[list[int], list[np.ndarray], list]:
    """Exported frames on an ellipse 0.5 m inside the walls, 1.5 m high, looking at the middle:
    (frame numbers 0, 20, ..., raw camera-to-world poses, (eye, target) views in the aligned frame)."""
    hx, hy = room[0] / 2, room[1] / 2
    frame_ids, poses, views = [], [], []
    phase = rng.uniform(0, 2 * math.pi)
    for i in range(num_frames):
        phi = phase + 2 * math.pi * i / max(num_frames, 1) + rng.uniform(-0.1, 0.1)
        eye = np.array([(hx - 0.5) * math.cos(phi), (hy - 0.5) * math.sin(phi), 1.5])
        eye += rng.uniform(-0.1, 0.1, 3)
        target = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(0.4, 0.8)])
        pose_raw = to_raw @ look_at(eye, target)
        frame_ids.append(i * FRAME_STEP)
        poses.append(f32(pose_raw) if exact_f32 else pose_raw)
        views.append((eye, target))
    return frame_ids, poses, views


def make_scene(rng: np.random.Generator, num_frames: int, image_size: tuple[int, int],
               intrinsics_size: tuple[int, int], num_objects: int, object_vertices: int,
               exact_f32: bool) -> SceneModel:
    """One scene model from ``rng`` (see :mod:`.generate` for the parameters)."""
    room = np.array([rng.uniform(7.0, 8.5), rng.uniform(6.0, 7.5), rng.uniform(2.6, 3.0)])
    groups = build_room(rng, room)
    n_structure = len(groups)
    groups += place_furniture(rng, room, num_objects, object_vertices)
    aligned, faces, colors, seg, group_of = assemble_mesh(rng, groups, n_structure)
    align = random_alignment(rng)
    to_raw = np.linalg.inv(align)
    raw_v = (aligned @ to_raw[:3, :3].T + to_raw[:3, 3]).astype(np.float32)
    # what a reader recomputes from the written float32 mesh (the ground truth it must match)
    aligned_read = raw_v.astype(np.float64) @ align[:3, :3].T + align[:3, 3]
    objects, structure = ground_truth_groups(groups, n_structure, group_of, seg, aligned_read)
    k_written, k_img = camera_intrinsics(rng, intrinsics_size, image_size, exact_f32)
    frame_ids, poses, views = camera_path(rng, room, num_frames, to_raw, exact_f32)
    return SceneModel(room, groups, n_structure, aligned, raw_v, aligned_read, colors, faces, seg, group_of,
                      align, objects, structure, k_written, k_img, frame_ids, poses, views)
