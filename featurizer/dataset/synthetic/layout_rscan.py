"""Writing a synthetic scene model (:mod:`.scene`) in the 3RScan layout, with 3RScan's conventions.

One scan folder ``<root>/<scan_id>/`` as :mod:`featurizer.dataset.rscan` documents it:

- ``mesh.refined.v2.obj`` (the model's raw vertices, one UV per vertex, triangles ``f v/vt``), its
  ``mesh.refined.mtl`` and the texture ``mesh.refined_0.png``: one texel per vertex holding its colour
  (OBJ's v axis points up: texel row = (1 - v) * height);
- ``labels.instances.annotated.v2.ply`` (ASCII, the same vertices, objectId = object id + 1, 0 never
  used) whose RGB is a label visualisation colour, deliberately unlike the real colours, and whose
  ``NYU40``, ``Eigen13`` and ``RIO27`` columns hold each vertex's object's classes as 3RScan's mapping
  gives them for its raw label (:data:`RSCAN_CLASSES`; 0 for vertices of no object);
- ``semseg.v2.json`` (segGroups, furniture then walls and floor, as the ScanNet layout writes them) and
  ``mesh.refined.0.010000.segs.v2.json``;
- ``sequence/``: ``_info.txt`` (colour 960x540 and depth 224x172 by default, each with its own
  intrinsics: the depth pixels non-square, as 3RScan's), ``frame-%06d.color.jpg`` rendered at the
  colour size, ``frame-%06d.depth.pgm`` (16-bit binary PGM, millimetres) and ``frame-%06d.pose.txt``
  (row-major camera-to-world, OpenCV axes). The sensor is rolled 90 degrees about its optical axis
  against the model's upright cameras, so the stored images look rotated, as 3RScan's do; the poses
  include the roll, so the frames project correctly in their stored orientation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from featurizer.dataset.render import render_mesh
from featurizer.dataset.rscan import (INFO, LABELS_PLY, OBJ_NAME, SEMSEG, SEQUENCE, color_name, depth_name,
                                      pose_name)
from featurizer.dataset.synthetic.layout import JPEG_QUALITY, _fmt_exact
from featurizer.dataset.synthetic.scene import SceneModel, scaled_intrinsics

COLOR_SIZE = (960, 540)
DEPTH_SIZE = (224, 172)
DEPTH_FX, DEPTH_FY = 176.6, 240.8  # the example _info.txt's depth focal lengths at 224x172
# raw label -> (NYU40, Eigen13, RIO27 id): the rows of these labels in 3RScan's "3RScan.v2 Semantic
# Classes - Mapping.csv" (columns NYU40_ID, Eigen_ID, RIO27_ID; copy: yanx27/CLEVR3D
# data_generation/3RScan.v2_Mapping.csv). 3RScan maps "trash can" to NYU40 40 (otherprop), ScanNet to 39.
RSCAN_CLASSES = {
    "wall": (1, 12, 1), "floor": (2, 5, 2), "kitchen cabinet": (3, 6, 3), "bed": (4, 1, 4),
    "office chair": (5, 4, 5), "chair": (5, 4, 5), "couch": (6, 9, 6), "dining table": (7, 10, 7),
    "bookshelf": (10, 6, 11), "desk": (14, 10, 7), "refrigerator": (24, 6, 16), "nightstand": (32, 6, 21),
    "toilet": (33, 6, 22), "lamp": (35, 7, 24), "bathtub": (36, 6, 25), "trash can": (40, 7, 26),
    "cabinet": (3, 6, 3), "table": (7, 10, 7),
}
# stored sensor camera <- upright camera: stored x = upright y, stored y = -upright x (np.rot90(img, 3),
# 90 degrees clockwise, turns a stored image upright)
ROLL = np.array([[0.0, -1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def rscan_intrinsics(depth_size=DEPTH_SIZE, color_size=COLOR_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(depth K at ``depth_size``, colour K at ``color_size``), registered: the colour K is the depth K
    resized (pixel centres at integer coordinates), so colour resized to the depth size fits depth K."""
    (dw, dh), (cw, ch) = depth_size, color_size
    k_depth = np.array([[DEPTH_FX * dw / 224, 0, dw / 2 - 0.5 + 1.3],
                        [0, DEPTH_FY * dh / 172, dh / 2 - 0.5 - 0.7], [0, 0, 1.0]])
    return k_depth, scaled_intrinsics(k_depth, cw / dw, ch / dh)


def write_pgm16(path: Path, depth_mm: np.ndarray) -> None:
    """A binary 16-bit PGM (P5, maxval 65535, big-endian samples, as the format requires)."""
    h, w = depth_mm.shape
    with open(path, "wb") as f:
        f.write(f"P5\n{w} {h}\n65535\n".encode("ascii"))
        f.write(np.asarray(depth_mm, dtype=">u2").tobytes())


def _k16(k: np.ndarray) -> str:
    m = np.eye(4)
    m[:3, :3] = k
    return " ".join(f"{x:.17g}" for x in m.reshape(-1))


def label_colors(n: int) -> np.ndarray:
    """(n, 3) uint8 saturated visualisation colours (``ply_color``), unlike any real colour of the model."""
    hues = np.arange(n) * 0.618034 % 1.0
    out = []
    for h in hues:
        i, f = int(h * 6), h * 6 % 1
        out.append([(1, f, 0), (1 - f, 1, 0), (0, 1, f), (0, 1 - f, 1), (f, 0, 1), (1, 0, 1 - f)][i % 6])
    return np.rint(np.array(out).reshape(-1, 3) * 255).astype(np.uint8)


def write_mesh(scan_dir: Path, model: SceneModel) -> None:
    """The OBJ, its MTL and the one-texel-per-vertex texture."""
    from PIL import Image

    v = model.raw_vertices
    side = int(math.ceil(math.sqrt(len(v))))
    idx = np.arange(len(v))
    col, row = idx % side, idx // side
    texture = np.zeros((side, side, 3), dtype=np.uint8)
    texture[row, col] = model.colors
    Image.fromarray(texture).save(scan_dir / "mesh.refined_0.png")
    uv = np.stack([(col + 0.5) / side, 1.0 - (row + 0.5) / side], axis=1)
    f1 = model.faces + 1
    lines = ["# featurizer synthetic 3RScan scan", "mtllib mesh.refined.mtl"]
    lines += [f"v {x:.9g} {y:.9g} {z:.9g}" for x, y, z in v]
    lines += [f"vt {a:.9g} {b:.9g}" for a, b in uv]
    lines.append("usemtl material_0")
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in f1]
    (scan_dir / OBJ_NAME).write_text("\n".join(lines) + "\n")
    mtl = "newmtl material_0\nKa 1 1 1\nKd 1 1 1\nmap_Kd mesh.refined_0.png\n"
    (scan_dir / "mesh.refined.mtl").write_text(mtl)


def write_labels(scan_dir: Path, scan_id: str, model: SceneModel) -> np.ndarray:
    """The ASCII labels PLY, ``semseg.v2.json`` and the segs json; returns the (V,) objectId per vertex."""
    groups = model.objects + model.structure
    object_id = np.zeros(len(model.raw_vertices), dtype=np.int64)
    classes = np.zeros((len(model.raw_vertices), 3), dtype=np.int64)  # NYU40, Eigen13, RIO27
    for g in groups:
        object_id[g["point_ids"]] = g["object_id"] + 1
        classes[g["point_ids"]] = RSCAN_CLASSES[g["raw_label"]]
    palette = label_colors(len(groups) + 1)
    rgb = palette[object_id]
    header = (f"ply\nformat ascii 1.0\nelement vertex {len(object_id)}\nproperty float x\nproperty float y\n"
              "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
              "property ushort objectId\nproperty ushort globalId\nproperty uchar NYU40\n"
              f"property uchar Eigen13\nproperty uchar RIO27\nelement face {len(model.faces)}\n"
              "property list uchar int vertex_indices\n"
              "end_header\n")
    rows = [f"{x:.9g} {y:.9g} {z:.9g} {r} {g} {b} {o} {o} {n} {e} {c}"
            for (x, y, z), (r, g, b), o, (n, e, c) in zip(model.raw_vertices, rgb, object_id, classes)]
    faces = [f"3 {a} {b} {c}" for a, b, c in model.faces]
    (scan_dir / LABELS_PLY).write_text(header + "\n".join(rows + faces) + "\n")
    seg_groups = [{
        "id": g["object_id"] + 1, "objectId": g["object_id"] + 1, "label": g["raw_label"],
        "segments": g["segments"],
        "obb": {"centroid": g["box"][:3].tolist(), "axesLengths": g["box"][3:].tolist(),
                "normalizedAxes": [1, 0, 0, 0, 1, 0, 0, 0, 1]},
    } for g in groups]
    segs_name = "mesh.refined.0.010000.segs.v2.json"
    (scan_dir / SEMSEG).write_text(json.dumps({"scan_id": scan_id, "segGroups": seg_groups,
                                               "segmentsFile": segs_name}, indent=1))
    (scan_dir / segs_name).write_text(json.dumps({"sceneId": scan_id, "segIndices": model.seg.tolist()}))
    return object_id


def write_sequence(seq: Path, model: SceneModel, depth_size=DEPTH_SIZE, color_size=COLOR_SIZE) -> dict:
    """``_info.txt`` and the frames of the model's cameras, rolled to the sensor's stored orientation."""
    from PIL import Image

    seq.mkdir(parents=True, exist_ok=True)
    k_depth, k_color = rscan_intrinsics(depth_size, color_size)
    info = {
        "m_versionNumber": 4, "m_sensorName": "featurizer-synthetic",
        "m_colorWidth": color_size[0], "m_colorHeight": color_size[1],
        "m_depthWidth": depth_size[0], "m_depthHeight": depth_size[1], "m_depthShift": 1000,
        "m_calibrationColorIntrinsic": _k16(k_color),
        "m_calibrationColorExtrinsic": _k16(np.eye(3)),
        "m_calibrationDepthIntrinsic": _k16(k_depth),
        "m_calibrationDepthExtrinsic": _k16(np.eye(3)),
        "m_frames.size": len(model.poses),
    }
    (seq / INFO).write_text("".join(f"{key} = {value}\n" for key, value in info.items()))
    poses = []
    for i, upright in enumerate(model.poses):
        pose = upright @ ROLL
        mesh = (model.raw_vertices, model.faces, model.colors, pose)
        color, _ = render_mesh(*mesh, k_color, *color_size)
        _, depth = render_mesh(*mesh, k_depth, *depth_size)
        Image.fromarray(color).save(seq / color_name(i), quality=JPEG_QUALITY)
        write_pgm16(seq / depth_name(i), np.clip(np.rint(depth * 1000.0), 0, 65535))
        (seq / pose_name(i)).write_text(_fmt_exact(pose))
        poses.append(pose)
    return {"k_depth": k_depth, "k_color": k_color, "poses": poses, "depth_size": tuple(depth_size),
            "color_size": tuple(color_size)}


def write_scan(root: Path, scan_id: str, model: SceneModel, depth_size=DEPTH_SIZE,
               color_size=COLOR_SIZE) -> dict:
    """Write ``model`` as the 3RScan scan ``<root>/<scan_id>/``; returns what was written: ``scan_dir``,
    ``object_id`` (V,) per vertex, ``k_depth``, ``k_color``, ``poses`` (camera-to-world as written,
    rolled), ``depth_size``, ``color_size``."""
    scan_dir = Path(root) / scan_id
    scan_dir.mkdir(parents=True, exist_ok=True)
    write_mesh(scan_dir, model)
    object_id = write_labels(scan_dir, scan_id, model)
    truth = write_sequence(scan_dir / SEQUENCE, model, depth_size, color_size)
    return {"scan_dir": scan_dir, "object_id": object_id, **truth}


def write_splits(root: Path, splits: dict[str, list[str]]) -> None:
    """``<root>/splits/<split>.txt``, one scan id a line."""
    (Path(root) / "splits").mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        (Path(root) / "splits" / f"{split}.txt").write_text("".join(f"{s}\n" for s in ids))
