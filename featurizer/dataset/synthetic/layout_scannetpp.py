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

Optionally (``dslr=True``) DSLR frames as an undistorted download with a rendered depth holds them: its
own views (each iPhone view turned up by :data:`DSLR_TILT_DEG` and moved :data:`DSLR_SHIFT` sideways: the
top rows see over the walls of the ceiling-less room, so the depth has misses), a wider pinhole camera
with cx, cy at W/2, H/2 (nerfstudio's and COLMAP's +0.5 pixel centres) as the official undistortion
forces, ``dslr/colmap/images.txt`` (names ``DSC0xxxx.JPG``) with its own fisheye ``cameras.txt``,
``nerfstudio/transforms.json`` (fisheye) and ``transforms_undistorted.json`` (PINHOLE) whose
``transform_matrix`` is in the nerfstudio world frame (OpenGL camera axes, world rows 0 and 1 swapped,
row 2 negated, as the toolkit writes it), colour jpgs at :data:`DSLR_COLOR_SIZE` and the depth rendered
at :data:`DSLR_DEPTH_SIZE` in uint16 mm with misses written as 65535 (as Pointcept writes them); one
posed image has no depth and one depth image has no pose. Optionally (``benchmark=True``) the
benchmark's ``metadata/semantic_benchmark`` files (:func:`write_benchmark`).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np

from featurizer.dataset.render import render_mesh
from featurizer.dataset.scannetpp import (ANNO, BENCHMARK_CLASSES, BENCHMARK_MAP, CAMERAS, DEPTH_DIRS,
                                          DSLR_IMAGES_TXT, DSLR_TRANSFORMS, IMAGES, MESH, RGB, SEGMENTS,
                                          SPLIT_FILES)
from featurizer.dataset.synthetic.furniture import RAW_LABELS
from featurizer.dataset.synthetic.layout import JPEG_QUALITY, write_ply
from featurizer.dataset.synthetic.scene import SceneModel, scaled_intrinsics

OVERLAP_LABEL = "furniture set"  # the extra segGroup: the union of the first two objects
DSLR_COLOR_SIZE = (384, 256)  # ScanNet++'s undistorted DSLR aspect (1752x1168), smaller
DSLR_DEPTH_SIZE = (192, 128)  # the rendered depth: half the colour size
DSLR_FOCAL = 0.55  # fx = fy = DSLR_FOCAL * width: wider than the iPhone's (about 0.9 width)
DSLR_TILT_DEG, DSLR_SHIFT = 10.0, 0.05  # a DSLR view: the iPhone's turned up, moved along camera x (m)
DSLR_FIRST = 1000  # DSC01000.JPG is the first DSLR image
DSLR_COLOR, DSLR_DEPTH = "dslr/resized_undistorted_images", "dslr/render_depth"
DSLR_MISS = 65535  # rendered DSLR depth where the ray hits nothing


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
                color_size: tuple[int, int], render_depth: bool = False, dslr: bool = False,
                benchmark: bool = False) -> dict:
    """Write ``model`` as ``<root>/data/<scene_id>/`` in the ScanNet++ layout.

    depth_size: the model's image size (that of ``model.k_image``), the depth pngs' size; the colour
    jpgs have ``color_size`` (and the ``render_depth`` pngs too, when asked). Returns ``groups``
    (:func:`ground_truth`), ``poses`` (the aligned-frame camera-to-world of ``model.frame_ids``),
    ``vertices`` (V, 3) float32 as written, ``k_color`` (3, 3) at ``color_size`` and ``scene_dir``;
    with ``dslr`` also ``dslr`` (:func:`write_dslr`), with ``benchmark`` also ``benchmark``
    (:func:`write_benchmark`, written under ``root``).
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
    out = {"groups": groups, "poses": poses, "vertices": vertices, "k_color": k_color, "scene_dir": d}
    if dslr:
        out["dslr"] = write_dslr(d, model, vertices, poses)
    if benchmark:
        out["benchmark"] = write_benchmark(root, groups)
    return out


def nerfstudio_transform(c2w: np.ndarray) -> np.ndarray:
    """(4, 4) ``transform_matrix`` of a DSLR ``transforms.json`` for the COLMAP camera-to-world ``c2w`` (mesh
    frame, OpenCV axes), as the toolkit writes it: OpenGL camera axes (columns 1 and 2 negated), then
    nerfstudio's world (rows 0 and 1 swapped, row 2 negated). Not in the mesh frame."""
    m = np.asarray(c2w, dtype=np.float64) @ np.diag([1.0, -1.0, -1.0, 1.0])
    m = m[[1, 0, 2, 3]]
    m[2] *= -1.0
    return m


def write_dslr(d: Path, model: SceneModel, vertices: np.ndarray, iphone_poses: list[np.ndarray]) -> dict:
    """The DSLR frames of one view per iPhone view under ``d / "dslr"`` (see the module docstring).

    Returns ``poses`` (the aligned-frame camera-to-world of the frames with depth), ``numbers`` (their
    DSC numbers), ``k_color`` (3, 3) at :data:`DSLR_COLOR_SIZE` and ``k_depth`` at :data:`DSLR_DEPTH_SIZE`
    (featurizer's pixel centres), ``no_depth`` (the posed image without depth) and ``no_pose`` (the
    depth image without a pose)."""
    from PIL import Image

    (w, h), (dw, dh) = DSLR_COLOR_SIZE, DSLR_DEPTH_SIZE
    f = DSLR_FOCAL * w
    k_color = np.array([[f, 0.0, w / 2 - 0.5], [0.0, f, h / 2 - 0.5], [0.0, 0.0, 1.0]])
    k_depth = scaled_intrinsics(k_color, dw / w, dh / h)
    a = math.radians(DSLR_TILT_DEG)  # about camera x: forward (+z) turns towards -y, up in OpenCV axes
    offset = np.array([[1, 0, 0, DSLR_SHIFT], [0, math.cos(a), -math.sin(a), 0],
                       [0, math.sin(a), math.cos(a), 0], [0, 0, 0, 1.0]])
    poses = [p @ offset for p in iphone_poses]
    numbers = [DSLR_FIRST + i for i in range(len(poses))]
    no_depth, no_pose = numbers[-1] + 1, numbers[-1] + 2
    for sub in ("colmap", "nerfstudio", DSLR_COLOR[5:], DSLR_DEPTH[5:]):
        (d / "dslr" / sub).mkdir(parents=True, exist_ok=True)
    mesh = (vertices, model.faces, model.colors)
    for n, pose in zip(numbers, poses):
        color, _ = render_mesh(*mesh, pose, k_color, w, h)
        Image.fromarray(color).save(d / DSLR_COLOR / f"DSC{n:05d}.JPG", quality=JPEG_QUALITY)
        _, depth = render_mesh(*mesh, pose, k_depth, dw, dh)
        mm = _mm(depth)
        mm[depth <= 0] = DSLR_MISS
        Image.fromarray(mm).save(d / DSLR_DEPTH / f"DSC{n:05d}.png")
    shutil.copy(d / DSLR_COLOR / f"DSC{numbers[0]:05d}.JPG", d / DSLR_COLOR / f"DSC{no_depth:05d}.JPG")
    shutil.copy(d / DSLR_DEPTH / f"DSC{numbers[0]:05d}.png", d / DSLR_DEPTH / f"DSC{no_pose:05d}.png")

    named = list(zip(numbers + [no_depth], poses + [poses[0]]))
    (d / "dslr" / "colmap" / "cameras.txt").write_text(  # the fisheye camera the reader must not use
        f"# Camera list with one line of data per camera:\n1 OPENCV_FISHEYE {w} {h} {0.6 * w:.6f} "
        f"{0.6 * w:.6f} {w / 2 + 3.25:.6f} {h / 2 - 2.5:.6f} 0.05 -0.02 0.004 -0.001\n")
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME"]
    for i, (n, pose) in enumerate(named):
        w2c = np.linalg.inv(pose)
        numbers_txt = (f"{x:.17g}" for x in (*rotation_quaternion(w2c[:3, :3]), *w2c[:3, 3]))
        lines += [" ".join([str(i + 1), *numbers_txt, "1", f"DSC{n:05d}.JPG"]), ""]
    (d / DSLR_IMAGES_TXT).write_text("\n".join(lines) + "\n")
    frames = [{"file_path": f"DSC{n:05d}.JPG", "mask_path": f"DSC{n:05d}.png",
               "transform_matrix": nerfstudio_transform(pose).tolist()} for n, pose in named]
    fisheye = {"camera_model": "OPENCV_FISHEYE", "fl_x": 0.6 * w, "fl_y": 0.6 * w, "cx": w / 2 + 3.25,
               "cy": h / 2 - 2.5, "w": w, "h": h, "k1": 0.05, "k2": -0.02, "k3": 0.004, "k4": -0.001,
               "frames": frames[:-1], "test_frames": frames[-1:]}
    undistorted = dict(fisheye, camera_model="PINHOLE", fl_x=k_color[0, 0], fl_y=k_color[1, 1], cx=w / 2,
                       cy=h / 2, k1=0.0, k2=0.0, k3=0.0, k4=0.0)
    (d / "dslr" / "nerfstudio" / "transforms.json").write_text(json.dumps(fisheye, indent=1))
    (d / DSLR_TRANSFORMS).write_text(json.dumps(undistorted, indent=1))
    return {"poses": poses, "numbers": numbers, "k_color": k_color, "k_depth": k_depth,
            "no_depth": no_depth, "no_pose": no_pose}


def write_benchmark(root: Path, groups: list[dict]) -> list[tuple[int, str]]:
    """``<root>/metadata/semantic_benchmark/map_benchmark.csv`` and ``top100_instance.txt`` for the raw
    labels of ``groups``; returns the (segGroup index, class) the benchmark keeps, in order.

    The map sends each furniture raw label to its ScanNet category where they differ ("office chair" ->
    "chair"; empty ``instance_map_to`` where equal: kept as is), the overlapping group to "None"
    (dropped), "wall" to itself (empty) and lists no "floor" (absent: kept as is); the class list holds
    the furniture classes only, so walls and floor are dropped there, as the real top100_instance drops
    them."""
    folder = Path(root) / Path(BENCHMARK_MAP).parent
    folder.mkdir(parents=True, exist_ok=True)
    furniture = {g["raw_label"]: RAW_LABELS[g["raw_label"]][0] for g in groups
                 if g["raw_label"] in RAW_LABELS and g["raw_label"] not in ("wall", "floor")}
    rows = [["class", "semantic_map_to", "instance_map_to"], ["ceiling light", "lamp", "lamp"],
            ["wall", "", ""], [OVERLAP_LABEL, "None", "None"]]
    rows += [[raw, cls if cls != raw else "", cls if cls != raw else ""] for raw, cls in furniture.items()]
    with open(Path(root) / BENCHMARK_MAP, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    (Path(root) / BENCHMARK_CLASSES).write_text("\n".join(sorted(set(furniture.values()))) + "\n")
    return [(i, furniture[g["raw_label"]]) for i, g in enumerate(groups) if g["raw_label"] in furniture]


def _mm(depth: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(depth * 1000.0), 0, 65535).astype(np.uint16)


def write_splits(root: Path, splits: dict[str, list[str]]) -> None:
    """``<root>/splits/<file>.txt`` of each split (``train``, ``val``, ``test``: ScanNet++'s file names)."""
    (Path(root) / "splits").mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        (Path(root) / "splits" / f"{SPLIT_FILES.get(split, split)}.txt").write_text("\n".join(ids) + "\n")
