"""Writing a synthetic scene model (:mod:`.scene`) in the ScanNet++ layout and conventions.

What differs from the ScanNet layout (:mod:`.layout`), as ScanNet++ stores it (see
:mod:`featurizer.dataset.scannetpp`): the mesh and the poses in the *aligned* frame (no alignment file);
poses as COLMAP world-to-camera quaternions in ``iphone/colmap/images.txt`` (names with ``iphone/`` or
``video/`` prefixes, 2D point lines, empty or not) with the intrinsics of the colour size in
``cameras.txt`` (COLMAP pixel centres at +0.5); colour jpgs larger than the depth (rendered at
``color_size``), uint16 millimetre depth pngs at the model's image size; an extracted frame without a
pose (``images.txt`` covers a subset); ``segments.json`` + ``segments_anno.json`` with one extra
segGroup overlapping two objects (a part-whole pair as ScanNet++ annotates them); optionally the
toolkit's ``render_depth`` at the colour size.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from featurizer.dataset.render import render_mesh
from featurizer.dataset.scannetpp import ANNO, CAMERAS, DEPTH_DIRS, IMAGES, MESH, RGB, SEGMENTS, SPLIT_FILES
from featurizer.dataset.synthetic.layout import JPEG_QUALITY, write_ply
from featurizer.dataset.synthetic.scene import SceneModel

OVERLAP_LABEL = "furniture set"  # the extra segGroup: the union of the first two objects


def rotation_quaternion(r: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion ``(qw, qx, qy, qz)`` of the (3, 3) rotation ``r``, ``qw >= 0`` (Shepperd)."""
    m = np.asarray(r, dtype=np.float64)
    tr = np.trace(m)
    i = int(np.argmax([tr, m[0, 0], m[1, 1], m[2, 2]]))
    if i == 0:
        s = 2 * np.sqrt(1 + tr)
        q = [s / 4, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        a, b, c = (i - 1, i % 3, (i + 1) % 3)
        s = 2 * np.sqrt(1 + m[a, a] - m[b, b] - m[c, c])
        q = np.zeros(4)
        q[0] = (m[c, b] - m[b, c]) / s
        q[1 + a], q[1 + b], q[1 + c] = s / 4, (m[a, b] + m[b, a]) / s, (m[a, c] + m[c, a]) / s
    q = np.asarray(q, dtype=np.float64)
    return q if q[0] >= 0 else -q


def scaled_intrinsics(k: np.ndarray, scale_x: float, scale_y: float) -> np.ndarray:
    """``k`` (featurizer's pixel centres at integer coordinates) for an image resized by the scales."""
    out = np.array(k, dtype=np.float64)
    out[0, 0] *= scale_x
    out[1, 1] *= scale_y
    out[0, 2] = (out[0, 2] + 0.5) * scale_x - 0.5
    out[1, 2] = (out[1, 2] + 0.5) * scale_y - 0.5
    return out


def ground_truth(model: SceneModel) -> list[dict]:
    """The segGroups written, in order: objects, walls and floor, then the overlapping group; each with
    ``object_id``, ``raw_label``, ``segments`` and ``point_ids`` (what the reader must give)."""
    groups = [{k: g[k] for k in ("object_id", "raw_label", "segments", "point_ids")}
              for g in model.objects + model.structure]
    a, b = model.objects[0], model.objects[1]
    groups.append({"object_id": len(groups), "raw_label": OVERLAP_LABEL,
                   "segments": sorted(set(a["segments"]) | set(b["segments"])),
                   "point_ids": np.union1d(a["point_ids"], b["point_ids"])})
    return groups


def write_scene(root: Path, scene_id: str, model: SceneModel, depth_size: tuple[int, int],
                color_size: tuple[int, int], render_depth: bool = False) -> dict:
    """Write ``model`` as ``<root>/data/<scene_id>/`` in the ScanNet++ layout.

    depth_size: the model's image size (that of ``model.k_image``), the depth pngs' size; the colour
    jpgs have ``color_size`` (and the ``render_depth`` pngs too, when asked). Returns ``groups``
    (:func:`ground_truth`), ``poses`` (the aligned-frame camera-to-world of ``model.frame_ids``),
    ``vertices`` (V, 3) float32 as written, ``k_color`` (3, 3) at ``color_size`` and ``scene_dir``.
    """
    d = Path(root) / "data" / scene_id
    subs = ("scans", "iphone/colmap", RGB, DEPTH_DIRS["iphone"]) + ((DEPTH_DIRS["render"],) * render_depth)
    for sub in subs:
        (d / sub).mkdir(parents=True, exist_ok=True)
    vertices = model.vertices_aligned.astype(np.float32)
    write_ply(d / MESH, vertices, model.colors, model.faces)
    groups = ground_truth(model)
    (d / SEGMENTS).write_text(json.dumps({"sceneId": scene_id, "segIndices": model.seg.tolist()}))
    (d / ANNO).write_text(json.dumps({"sceneId": scene_id, "segGroups": [
        {"id": g["object_id"], "objectId": g["object_id"], "label": g["raw_label"], "segments": g["segments"]}
        for g in groups]}, indent=1))

    k_color = scaled_intrinsics(model.k_image, color_size[0] / depth_size[0], color_size[1] / depth_size[1])
    fx, fy, cx, cy = k_color[0, 0], k_color[1, 1], k_color[0, 2] + 0.5, k_color[1, 2] + 0.5  # COLMAP +0.5
    (d / CAMERAS).write_text(
        "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        f"# Number of cameras: 1\n1 OPENCV {color_size[0]} {color_size[1]} "
        f"{fx:.17g} {fy:.17g} {cx:.17g} {cy:.17g} 0 0 0 0\n")
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)",
             f"# Number of images: {len(model.frame_ids)}, mean observations per image: 0"]
    from PIL import Image

    poses = [model.align @ p for p in model.poses]
    for i, (k, pose) in enumerate(zip(model.frame_ids, poses)):
        w2c = np.linalg.inv(pose)
        q, t = rotation_quaternion(w2c[:3, :3]), w2c[:3, 3]
        prefix = ("iphone", "video")[i % 2]
        numbers = (f"{x:.17g}" for x in (*q, *t))
        lines.append(" ".join([str(i + 1), *numbers, "1", f"{prefix}/frame_{k:06d}.jpg"]))
        lines.append("" if i % 2 else "12.5 40.25 -1 100.0 7.5 -1")
        mesh = (vertices, model.faces, model.colors)
        color, _ = render_mesh(*mesh, pose, k_color, *color_size)
        Image.fromarray(color).save(d / RGB / f"frame_{k:06d}.jpg", quality=JPEG_QUALITY)
        _, depth = render_mesh(*mesh, pose, model.k_image, *depth_size)
        Image.fromarray(_mm(depth)).save(d / DEPTH_DIRS["iphone"] / f"frame_{k:06d}.png")
        if render_depth:
            _, depth = render_mesh(*mesh, pose, k_color, *color_size)
            Image.fromarray(_mm(depth)).save(d / DEPTH_DIRS["render"] / f"frame_{k:06d}.png")
    (d / IMAGES).write_text("\n".join(lines) + "\n")
    # an extracted frame COLMAP did not register: images and no pose
    first = model.frame_ids[0]
    shutil.copy(d / RGB / f"frame_{first:06d}.jpg", d / RGB / f"frame_{first + 1:06d}.jpg")
    shutil.copy(d / DEPTH_DIRS["iphone"] / f"frame_{first:06d}.png",
                d / DEPTH_DIRS["iphone"] / f"frame_{first + 1:06d}.png")
    return {"groups": groups, "poses": poses, "vertices": vertices, "k_color": k_color, "scene_dir": d}


def _mm(depth: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(depth * 1000.0), 0, 65535).astype(np.uint16)


def write_splits(root: Path, splits: dict[str, list[str]]) -> None:
    """``<root>/splits/<file>.txt`` of each split (``train``, ``val``, ``test``: ScanNet++'s file names)."""
    (Path(root) / "splits").mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        (Path(root) / "splits" / f"{SPLIT_FILES.get(split, split)}.txt").write_text("\n".join(ids) + "\n")
