"""ScanNet++ (v1/v2) reader: the aligned mesh, segments + segGroups instances, iPhone or undistorted DSLR
RGB-D frames with COLMAP poses -> Scene.

Layout (``../shared/reference/datasets.md`` section 1; the scannetpp toolkit's names)::

    <root>/data/<scene>/scans/mesh_aligned_0.05.ply     vertices x y z red green blue (+ normals), faces
    <root>/data/<scene>/scans/segments.json             segIndices: one segment id per vertex
    <root>/data/<scene>/scans/segments_anno.json        segGroups: id, objectId, label, segments
    <root>/data/<scene>/iphone/colmap/cameras.txt       CAMERA_ID MODEL WIDTH HEIGHT PARAMS (1920x1440)
    <root>/data/<scene>/iphone/colmap/images.txt        IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME
    <root>/data/<scene>/iphone/rgb/frame_%06d.jpg       colour, 1920x1440 (extracted from rgb.mkv)
    <root>/data/<scene>/iphone/depth/frame_%06d.png     uint16 mm, 256x192 (extracted from depth.bin)
    <root>/data/<scene>/iphone/render_depth/frame_%06d.png  uint16 mm rendered from the mesh (optional)
    <root>/data/<scene>/dslr/colmap/images.txt          the DSLR's COLMAP poses (names DSC01752.JPG)
    <root>/data/<scene>/dslr/nerfstudio/transforms_undistorted.json  PINHOLE fl_x fl_y cx cy w h
    <root>/data/<scene>/dslr/resized_undistorted_images/DSC01752.JPG  undistorted colour
    <root>/data/<scene>/dslr/render_depth/DSC01752.png  uint16 mm rendered from the mesh, 0 and 65535 invalid
    <root>/metadata/semantic_benchmark/map_benchmark.csv, top100_instance.txt   (labels=benchmark)
    <root>/splits/nvs_sem_train.txt, nvs_sem_val.txt, sem_test.txt

Conventions converted here:

- Frame: the mesh is already aligned and the COLMAP poses are in its frame: ``axis_align`` is identity.
- Poses: ``images.txt`` holds world-to-camera (OpenCV axes) as a unit quaternion ``qw qx qy qz`` and
  ``t``; a Frame's pose is its inverse, camera-to-world. Only the frames listed there have a pose (a
  subset of the extracted ones); names ``iphone/frame_000120.jpg`` / ``video/...`` lose the prefix.
- Intrinsics: from ``cameras.txt`` (pinhole part of PINHOLE, SIMPLE_PINHOLE, SIMPLE_RADIAL, RADIAL,
  OPENCV; the toolkit treats the iPhone as a pinhole), at the camera's WIDTH x HEIGHT with COLMAP's
  pixel centres at +0.5; converted to featurizer's (pixel ``u`` centred at ``u``: ``c - 0.5``) and
  rescaled to the depth image size. Fisheye models are refused.
- DSLR (``frames=dslr``): undistorted frames only (the fisheye ``resized_images/`` are refused). Poses
  from ``dslr/colmap/images.txt`` as for the iPhone, never the nerfstudio ``transform_matrix`` (another
  world frame: rows swapped and negated). Intrinsics from ``transforms_undistorted.json``'s top level
  (the official undistortion puts cx, cy at W/2, H/2 in nerfstudio's +0.5 pixel-centre convention:
  ``c - 0.5`` here, as for the iPhone's COLMAP cameras), rescaled to the depth size. Depth is a
  rendered folder (``dslr_depth``; the toolkit renders DSLR depth only in the fisheye image, so it comes
  from elsewhere, e.g. Pointcept's raycast, which writes misses as 65535): 0 and 65535 are invalid.
  Colour and depth files are matched by name stem (``DSC01752.JPG`` / ``DSC01752.png``: the depth file
  name is Pointcept's, an assumption beyond ``reference/datasets.md``).
- Images: the depth size decides the frame size (native 256x192 for ``frames=iphone``); the colour is
  resized to it (bilinear, as ScanNet's colour), depth / 1000 = metres, 0 = invalid.
  Posed frames without a colour or depth image are skipped with a note.
- Raw iPhone data: without ``iphone/depth/``, ``iphone/depth.bin`` in its zlib forms (float32 metres, one
  stream or per-frame blocks) is decoded with the standard library as the toolkit's extractor decodes it;
  its lz4 form (uint16 mm) needs the lz4 package: the check names the file and the toolkit's command, as
  for an unextracted ``rgb.mkv`` (the colour needs ffmpeg).
- Instances: ``segGroups`` in list order, instance i = segGroups[i] (the toolkit's instance id; its
  ``objectId`` is kept as ``gt_object_id``). Groups overlap in ScanNet++ (a part inside its whole):
  every group keeps all of its vertices, so a vertex may belong to several instances. Labels are the
  raw annotation labels (free text); without ``segments_anno.json`` (the test split) no instances.
  ``labels=benchmark``: each raw label mapped through ``map_benchmark.csv``'s ``instance_map_to``
  ("None": dropped, empty or absent: kept as is), then only the instances whose class is in
  ``top100_instance.txt`` are kept (the instance benchmark's classes), in segGroups order.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import zlib
from pathlib import Path

import numpy as np

from featurizer.dataset.base import SceneReader
from featurizer.dataset.scannet import (_frame_size, _shown, mesh_vertex_count, read_mesh, read_object_groups,
                                        read_ply_header)
from featurizer.errors import ConfigError, DataError
from featurizer.files import read_json, read_lines
from featurizer.scene import Frame, Instance, Scene, scaled_intrinsics

MESH = "scans/mesh_aligned_0.05.ply"
SEGMENTS = "scans/segments.json"
ANNO = "scans/segments_anno.json"
CAMERAS = "iphone/colmap/cameras.txt"
IMAGES = "iphone/colmap/images.txt"
RGB = "iphone/rgb"
DEPTH_DIRS = {"iphone": "iphone/depth", "render": "iphone/render_depth"}
FRAME_MODES = ("iphone", "render", "dslr", "none")
LABEL_MODES = ("raw", "benchmark")
DSLR_IMAGES_TXT = "dslr/colmap/images.txt"
DSLR_TRANSFORMS = "dslr/nerfstudio/transforms_undistorted.json"
FISHEYE_DIRS = ("resized_images", "original_images")  # OPENCV_FISHEYE images: refused
DSLR_INVALID = (0, 65535)  # raw depth values that are no depth (Pointcept writes raycast misses as 65535)
BENCHMARK_MAP = "metadata/semantic_benchmark/map_benchmark.csv"
BENCHMARK_CLASSES = "metadata/semantic_benchmark/top100_instance.txt"
RAW_IPHONE = {RGB: "iphone/rgb.mkv", "iphone/depth": "iphone/depth.bin"}  # what the extraction reads
PREPARE_IPHONE = "python -m iphone.prepare_iphone_data iphone/configs/prepare_iphone_data.yml"
SPLIT_FILES = {"train": "nvs_sem_train", "val": "nvs_sem_val", "test": "sem_test"}
DEPTH_SCALE = 1000.0  # uint16 millimetres
DEPTH_BIN_SIZE = (256, 192)  # (width, height) of the iPhone's depth.bin frames
PINHOLE_PARAMS = {  # COLMAP model -> indices of fx, fy, cx, cy in its params (distortion ignored)
    "PINHOLE": (0, 1, 2, 3), "OPENCV": (0, 1, 2, 3), "FULL_OPENCV": (0, 1, 2, 3),
    "SIMPLE_PINHOLE": (0, 0, 1, 2), "SIMPLE_RADIAL": (0, 0, 1, 2), "RADIAL": (0, 0, 1, 2),
}
FRAME_NAME = re.compile(r"frame_(\d+)")  # iPhone frame_000120
DSLR_NAME = re.compile(r"\D*(\d+)")  # DSLR DSC01752: the number is the name's digits


def quaternion_matrix(q) -> np.ndarray:
    """(3, 3) rotation of the quaternion ``(qw, qx, qy, qz)`` (normalised first, as COLMAP does)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def colmap_pose(q, t) -> np.ndarray:
    """(4, 4) camera-to-world of COLMAP's world-to-camera ``(q, t)``: ``[R^T, -R^T t]``."""
    r = quaternion_matrix(q)
    pose = np.eye(4)
    pose[:3, :3] = r.T
    pose[:3, 3] = -r.T @ np.asarray(t, dtype=np.float64)
    return pose


def read_cameras(path: Path) -> dict[int, tuple[np.ndarray, tuple[int, int]]]:
    """``{camera id: ((3, 3) intrinsics in featurizer's pixel convention, (width, height))}`` of a COLMAP
    ``cameras.txt``; DataError when missing, garbled or of a model without a pinhole part."""
    if not path.is_file():
        raise DataError(path, "COLMAP cameras file not found")
    cameras = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) < 5 or words[1] not in PINHOLE_PARAMS:
            model = words[1] if len(words) > 1 else "?"
            raise DataError(path, f"line {n}: camera model {model} is not a pinhole model "
                                  f"({', '.join(PINHOLE_PARAMS)}; undistort fisheye images first)")
        try:
            cam_id, width, height = int(words[0]), int(words[2]), int(words[3])
            params = [float(x) for x in words[4:]]
            fx, fy, cx, cy = (params[i] for i in PINHOLE_PARAMS[words[1]])
        except (ValueError, IndexError):
            raise DataError(path, f"line {n}: not 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS': "
                                  f"{line[:80]!r}") from None
        if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0 and width > 0 and height > 0):
            raise DataError(path, f"line {n}: invalid intrinsics (fx {fx}, fy {fy}, size {width}x{height})")
        k = np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]])  # COLMAP centres at +0.5
        cameras[cam_id] = (k, (width, height))
    if not cameras:
        raise DataError(path, "no camera")
    return cameras


def read_images(path: Path, name: re.Pattern = FRAME_NAME) -> dict[int, tuple[np.ndarray, int]]:
    """``{frame number: ((4, 4) camera-to-world, camera id)}`` of a COLMAP ``images.txt``.

    Each image is two lines, ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` then its 2D points (maybe
    empty). NAME's folder (``iphone/``, ``video/``) is dropped; its stem, matched by ``name`` (iPhone
    ``frame_<number>``, DSLR ``DSC<number>``), gives the number. DataError naming the file for a line
    that is not that (an unreadable pose)."""
    if not path.is_file():
        raise DataError(path, "COLMAP images file not found")
    lines = path.read_text(errors="replace").splitlines()
    out = {}
    n = 0
    while n < len(lines):
        line = lines[n]
        n += 1
        words = line.split()
        if not words or words[0].startswith("#"):  # comments, empty lines where an image line would be
            continue
        stem = Path(words[-1]).stem if len(words) >= 10 else ""
        match = name.fullmatch(stem)
        try:
            values = [float(x) for x in words[1:8]]
            cam_id = int(words[8])
        except (ValueError, IndexError):
            values, cam_id = [], -1
        if len(words) < 10 or match is None or len(values) != 7 or not np.any(values[:4]):
            raise DataError(path, f"line {n}: not 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME' with NAME "
                                  f"{name.pattern}.<ext> (an unreadable pose): {line[:80]!r}")
        out[int(match.group(1))] = (colmap_pose(values[:4], values[4:]), cam_id)
        n += 1  # the image's 2D points line
    return out


def read_undistorted_camera(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """((3, 3) intrinsics in featurizer's pixel convention, (width, height)) of the DSLR's
    ``transforms_undistorted.json`` (top-level ``fl_x fl_y cx cy w h``; nerfstudio's pixel centres at
    +0.5, as COLMAP's: ``c - 0.5``). DataError when missing, not PINHOLE or distorted, or garbled."""
    if not path.is_file():
        raise DataError(path, "DSLR intrinsics not found (undistort the DSLR images with the ScanNet++ "
                              "toolkit: python -m dslr.undistort dslr/configs/undistort.yml)")
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise DataError(path, "not a JSON object")
    model = meta.get("camera_model", "PINHOLE")
    distorted = [k for k in ("k1", "k2", "k3", "k4", "p1", "p2") if meta.get(k) not in (None, 0, 0.0)]
    if model != "PINHOLE" or distorted:
        raise DataError(path, f"camera_model {model} (distortion {distorted or 'none'}): DSLR frames are "
                              f"read undistorted only (PINHOLE, as the toolkit's dslr/undistort.py writes)")
    try:
        fx, fy, cx, cy = (float(meta[k]) for k in ("fl_x", "fl_y", "cx", "cy"))
        width, height = int(meta["w"]), int(meta["h"])
    except (KeyError, TypeError, ValueError):
        raise DataError(path, "lacks a number among fl_x, fl_y, cx, cy, w, h at the top level") from None
    if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0 and width > 0 and height > 0):
        raise DataError(path, f"invalid intrinsics (fl_x {fx}, fl_y {fy}, size {width}x{height})")
    return np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]]), (width, height)


def read_benchmark(root: Path) -> tuple[dict[str, str | None], set[str]]:
    """(raw label -> benchmark class, None = dropped; the instance classes) of ScanNet++'s
    ``map_benchmark.csv`` (``instance_map_to``: "None" drops, empty keeps the raw label) and
    ``top100_instance.txt``; DataError naming a missing or garbled file."""
    map_path, classes_path = root / BENCHMARK_MAP, root / BENCHMARK_CLASSES
    for path in (map_path, classes_path):
        if not path.is_file():
            raise DataError(path, "not found (dataset.labels=benchmark reads ScanNet++'s metadata/)")
    with open(map_path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        missing = {"class", "instance_map_to"} - set(rows.fieldnames or [])
        if missing:
            raise DataError(map_path, f"no column(s) {', '.join(sorted(missing))} in its header")
        mapping: dict[str, str | None] = {}
        for row in rows:
            target = (row["instance_map_to"] or "").strip()
            mapping.setdefault(row["class"], None if target == "None" else target or row["class"])
    classes = set(read_lines(classes_path))
    if not classes:
        raise DataError(classes_path, "lists no class")
    return mapping, classes


def depth_bin_form(path: Path) -> str:
    """Which of the two ``depth.bin`` encodings of the toolkit's extractor ``path`` looks like (from its
    first bytes): per frame a 4-byte little-endian size and a block (lz4 of uint16 mm, or zlib of float32
    metres as the fallback), or one raw-deflate stream of float32 metres."""
    frame_bytes = DEPTH_BIN_SIZE[0] * DEPTH_BIN_SIZE[1] * 4
    with open(path, "rb") as f:
        head = f.read(frame_bytes + 4)
    block = head[4: 4 + int.from_bytes(head[:4], "little")]
    try:  # a first block that inflates to exactly one float32 frame
        if len(zlib.decompress(block, wbits=-zlib.MAX_WBITS)) == frame_bytes:
            return "per-frame zlib blocks of float32 metres"
    except zlib.error:
        pass
    try:  # the whole file one stream: its first bytes inflate
        zlib.decompressobj(-zlib.MAX_WBITS).decompress(head, frame_bytes)
        return "one zlib stream of float32 metres"
    except zlib.error:
        return ("per-frame lz4 blocks of uint16 mm: decoding them needs the lz4 package, not a featurizer "
                "dependency")


def read_depth_bin(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """``{frame number: (192, 256) uint16 mm}`` of the frames ``wanted`` of an iPhone ``depth.bin`` in a zlib
    form (float32 metres, converted as the toolkit's extractor converts them, ``(depth * 1000)`` truncated to
    uint16; non-finite or negative values 0), with the standard library. Frames past the end are absent.
    DataError for the lz4 form and for bytes that do not decode."""
    (width, height), form = DEPTH_BIN_SIZE, depth_bin_form(path)
    frame_bytes, last, out = width * height * 4, max(wanted, default=-1), {}

    def keep(k: int, data: bytes) -> None:
        if k in wanted:
            mm = np.frombuffer(data, dtype=np.float32).reshape(height, width) * np.float32(1000.0)
            mm[~np.isfinite(mm) | (mm < 0)] = 0
            out[k] = np.minimum(mm, 65535).astype(np.uint16)

    if "zlib" not in form:
        raise DataError(path, form)
    try:
        with open(path, "rb") as f:
            k = 0
            if form.startswith("one zlib stream"):
                stream, buf = zlib.decompressobj(-zlib.MAX_WBITS), bytearray()
                while k <= last and (chunk := f.read(1 << 22)):
                    buf += stream.decompress(chunk)
                    while len(buf) >= frame_bytes and k <= last:
                        keep(k, bytes(buf[:frame_bytes]))
                        del buf[:frame_bytes]
                        k += 1
            else:  # per frame: a 4-byte little-endian size, then the block
                while k <= last and len(head := f.read(4)) == 4:
                    size = int.from_bytes(head, "little")
                    if k in wanted:
                        keep(k, zlib.decompress(f.read(size), wbits=-zlib.MAX_WBITS))
                    else:
                        f.seek(size, 1)
                    k += 1
    except (zlib.error, ValueError) as e:
        raise DataError(path, f"does not decode as {form}: {e}") from None
    return out


class ScanNetPPFrameSource:
    """A picklable ``Frame.source`` for the frames :meth:`Frame.read` cannot read alone: the colour file
    resized to the frame size (bilinear, as there) and the depth in metres, from a PNG whose
    :data:`DSLR_INVALID` values are no depth (the DSLR's rendered depth), or from a (H, W) uint16 mm array
    decoded from ``depth.bin`` (iPhone frames not extracted)."""

    def __init__(self, color_path: Path, depth: Path | np.ndarray):
        self.color_path, self.depth = Path(color_path), depth
        self.path = depth if isinstance(depth, Path) else self.color_path  # the file frames.py checks first

    def __call__(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(self.depth, Path):
            files = dataclasses.replace(frame, source=None, color_path=self.color_path, depth_path=self.depth,
                                        depth_scale=1.0)
            color, raw = files.read()
        else:
            from PIL import Image

            with Image.open(self.color_path) as im:
                color = np.asarray(im.convert("RGB").resize(frame.image_size, Image.BILINEAR), dtype=np.uint8)
            raw = self.depth.astype(np.float32)
        raw[np.isin(raw, DSLR_INVALID)] = 0.0
        return color, raw / np.float32(frame.depth_scale)


def _frame_files(folder: Path, ext: str, name: re.Pattern = FRAME_NAME) -> dict[int, Path]:
    """``{number: file}`` of the ``<name><ext>`` files in ``folder`` ({} when it does not exist)."""
    if not folder.is_dir():
        return {}
    out = {}
    for entry in os.scandir(folder):
        stem, suffix = os.path.splitext(entry.name)
        match = name.fullmatch(stem)
        if match and suffix.lower() == ext:
            out.setdefault(int(match.group(1)), Path(entry.path))
    return out


class ScanNetPPReader(SceneReader):
    """Reads ScanNet++ scenes (mesh, instances, iPhone or DSLR frames) into :class:`featurizer.scene.Scene`.

    root: the ScanNet++ folder (holds ``data/`` and ``splits/``).
    splits: ``train`` / ``val`` / ``test`` read ``splits/nvs_sem_train.txt``, ``nvs_sem_val.txt``,
        ``sem_test.txt``; another name reads ``splits/<name>.txt`` (e.g. ``nvs_test_iphone``).
    scenes: explicit scene ids (win over the split files).
    frames: ``iphone`` (``iphone/depth``, LiDAR depth at 256x192), ``render`` (``iphone/render_depth``,
        the toolkit's mesh-rendered depth, at its own size), ``dslr`` (undistorted DSLR images with a
        rendered depth folder) or ``none``.
    frame_stride, max_frames: keep every k-th posed frame (by number), at most ``max_frames`` of them.
    dslr_images, dslr_depth: the DSLR's undistorted colour and rendered depth folders, relative to the
        scene folder (``frames=dslr``); the fisheye ``resized_images`` / ``original_images`` are refused.
    labels: ``raw`` (every segGroup, its raw label) or ``benchmark`` (the instance benchmark's classes,
        see the module docstring).
    """

    name = "scannetpp"
    title, split_hint = "ScanNet++", "or pass dataset.scenes=[...]"

    def __init__(self, root: str, splits: list[str] | str = ("val",), scenes: list[str] | None = None,
                 frames: str = "iphone", frame_stride: int = 1, max_frames: int | None = None,
                 dslr_images: str = "dslr/resized_undistorted_images", dslr_depth: str = "dslr/render_depth",
                 labels: str = "raw"):
        super().__init__()
        self.root = self.check_options(root, "ScanNet++", frames, FRAME_MODES, frame_stride, max_frames)
        if labels not in LABEL_MODES:
            raise ConfigError("dataset.labels", f"unknown mode {labels!r}; choose one of "
                                                f"{', '.join(LABEL_MODES)}")
        if Path(str(dslr_images)).name in FISHEYE_DIRS:
            raise ConfigError("dataset.dslr_images", f"{dslr_images} holds fisheye (OPENCV_FISHEYE) images, "
                                                     f"which a pinhole projection misplaces: use the "
                                                     f"undistorted dslr/resized_undistorted_images (or run "
                                                     f"the toolkit's python -m dslr.undistort "
                                                     f"dslr/configs/undistort.yml)")
        self.dslr_images, self.dslr_depth, self.labels = str(dslr_images), str(dslr_depth), labels
        self.object_filter = None if labels == "raw" else f"dataset.labels={labels}"
        self._benchmark = None
        self.splits = self.split_names(splits)
        self.frames, self.frame_stride = frames, int(frame_stride)
        self.max_frames = None if max_frames is None else int(max_frames)
        self._split_of = self.assign_splits(scenes)
        self.scene_ids = list(self._split_of)

    def split_file(self, split: str) -> Path:
        return self.root / "splits" / f"{SPLIT_FILES.get(split, split)}.txt"

    def scene_dir(self, scene_id: str) -> Path:
        d = self.root / "data" / scene_id
        if not d.is_dir():
            raise DataError(d, "scene folder not found")
        return d

    def _layout(self) -> tuple[str, str, str, str, re.Pattern]:
        """(images.txt, intrinsics file, colour folder, depth folder, frame-name pattern) of the mode."""
        if self.frames == "dslr":
            return DSLR_IMAGES_TXT, DSLR_TRANSFORMS, self.dslr_images, self.dslr_depth, DSLR_NAME
        return IMAGES, CAMERAS, RGB, DEPTH_DIRS[self.frames], FRAME_NAME

    # ------------------------------------------------------------------ cheap reads
    def input_files(self, scene_id: str, frames: bool = True) -> list[Path]:
        d = self.scene_dir(scene_id)
        files = [d / MESH, d / SEGMENTS, d / ANNO]
        if self.labels == "benchmark":
            files += [self.root / BENCHMARK_MAP, self.root / BENCHMARK_CLASSES]
        if frames and self.frames != "none":
            images, intrinsics, color_dir, depth_dir, name = self._layout()
            files += [d / intrinsics, d / images]
            for sub, ext in ((color_dir, ".jpg"), (depth_dir, ".png")):
                files += sorted(_frame_files(d / sub, ext, name).values())
            files += [path for path in [self._depth_bin(d)] if path is not None]
        return files

    def gt_object_count(self, scene_id: str) -> int:
        path = self.scene_dir(scene_id) / ANNO
        if not path.is_file():
            return 0
        groups = read_json(path)
        groups = groups.get("segGroups") if isinstance(groups, dict) else None
        if not isinstance(groups, list):
            return 0
        if self.labels == "raw":
            return len(groups)
        return sum(self._benchmark_label(g.get("label") if isinstance(g, dict) else None) is not None
                   for g in groups)

    def _benchmark_label(self, raw) -> str | None:
        """The benchmark instance class of the raw label ``raw``, None when the benchmark drops it."""
        if self._benchmark is None:
            self._benchmark = read_benchmark(self.root)
        mapping, classes = self._benchmark
        label = mapping.get(str(raw), str(raw))
        return label if label in classes else None

    def scene_cost(self, scene_id: str) -> float:
        """Thousands of mesh vertices plus the posed frames (lines of ``images.txt`` / 2)."""
        d = self.scene_dir(scene_id)
        counts, _, _ = read_ply_header(d / MESH)
        frames = 0
        images = d / self._layout()[0] if self.frames != "none" else None
        if images is not None and images.is_file():
            with open(images, "rb") as f:
                frames = sum(1 for line in f if not line.startswith(b"#")) // 2 // self.frame_stride
        if self.max_frames is not None:
            frames = min(frames, self.max_frames)
        return counts.get("vertex", 0) / 1000.0 + frames

    # ------------------------------------------------------------------ checks
    def check_global(self) -> None:
        """With ``labels=benchmark``, the benchmark's metadata files (DataError naming a missing one)."""
        if self.labels == "benchmark":
            self._benchmark = read_benchmark(self.root)

    def check_scene(self, scene_id: str) -> int:
        """The ply header, segments length and segGroups (parsed as :meth:`load` parses them), the COLMAP
        files (every pose readable) and the frame folders; returns the vertex count."""
        d = self.scene_dir(scene_id)
        num_points = mesh_vertex_count(d / MESH)
        self._groups(d, num_points)
        if self.frames != "none":
            self._frame_sources(d)
        return num_points

    def _groups(self, d: Path, num_points: int) -> list[tuple[str, int, np.ndarray]]:
        """``(raw label, objectId, vertex ids)`` per segGroup, in list order ([] without annotations)."""
        anno_path, seg_path = d / ANNO, d / SEGMENTS
        if not anno_path.is_file():
            return []
        if not seg_path.is_file():
            raise DataError(seg_path, f"not found, but {anno_path.name} is: instances need both")
        inverse, groups = read_object_groups(seg_path, anno_path, num_points,
                                             f"{MESH} has {num_points} vertices")
        num_segments = int(inverse.max(initial=-1)) + 1
        out = []
        for label, object_id, pos in groups:
            member = np.zeros(num_segments, dtype=bool)
            member[pos] = True
            out.append((label, object_id, np.flatnonzero(member[inverse])))
        return out

    def _frame_sources(self, d: Path):
        """(cameras, posed frames) parsed, and the colour and depth folders present (DataError)."""
        images, intrinsics, color_dir, depth_dir, name = self._layout()
        posed = read_images(d / images, name)
        if self.frames == "dslr":  # one undistorted pinhole camera, whatever COLMAP's (fisheye) camera id
            camera = read_undistorted_camera(d / intrinsics)
            cameras = {cam: camera for _, cam in posed.values()}
        else:
            cameras = read_cameras(d / intrinsics)
        unknown = sorted({cam for _, cam in posed.values()} - cameras.keys())
        if unknown:
            raise DataError(d / images, f"camera id(s) {_shown(unknown)} are not in {Path(intrinsics).name}")
        for sub in (color_dir, depth_dir):
            if not (d / sub).is_dir() and not (sub == depth_dir and self._depth_bin(d)):
                raise DataError(d / sub, self._missing_folder(d, sub))
        return cameras, posed

    def _depth_bin(self, d: Path) -> Path | None:
        """``iphone/depth.bin`` where it stands in for a missing ``iphone/depth/`` (frames=iphone, a zlib form
        the standard library decodes), else None."""
        path = d / RAW_IPHONE[DEPTH_DIRS["iphone"]]
        if self.frames != "iphone" or (d / DEPTH_DIRS["iphone"]).is_dir() or not path.is_file():
            return None
        return path if "zlib" in depth_bin_form(path) else None

    def _missing_folder(self, d: Path, sub: str) -> str:
        """Why a frame folder is missing and what makes it."""
        raw = RAW_IPHONE.get(sub)
        if raw is not None and (d / raw).is_file():
            form = f" ({depth_bin_form(d / raw)})" if raw.endswith(".bin") else ""
            return (f"frame folder not found, but {raw} is{form}: extract it with the ScanNet++ toolkit "
                    f"({PREPARE_IPHONE})")
        if self.frames == "dslr" and sub == self.dslr_depth:
            return ("rendered DSLR depth folder not found (dataset.dslr_depth): uint16 mm PNGs named as the "
                    "images, rendered from the mesh in the undistorted images (e.g. Pointcept's ScanNet++ "
                    "preprocessing with parse_depths)")
        if self.frames == "dslr":
            return ("undistorted DSLR image folder not found (dataset.dslr_images; newer downloads hold "
                    "resized_undistorted_images, else run the toolkit's python -m dslr.undistort "
                    "dslr/configs/undistort.yml)")
        return (f"frame folder not found (frames={self.frames}; extract rgb.mkv and depth.bin with the "
                f"toolkit's {PREPARE_IPHONE}, or render depth with python -m common.render)")

    # ------------------------------------------------------------------ loading
    def load(self, scene_id: str) -> Scene:
        d = self.scene_dir(scene_id)
        points, colors = read_mesh(d / MESH)
        groups = self._groups(d, len(points))
        if self.labels == "benchmark":
            groups = [(self._benchmark_label(label), object_id, ids) for label, object_id, ids in groups]
        instances = [Instance(point_ids=ids, label=label, gt_object_id=object_id)
                     for label, object_id, ids in groups if label is not None]
        frames, notes = ([], []) if self.frames == "none" else self._load_frames(d)
        return self.make_scene(scene_id, points, colors, instances, frames, notes)

    def _load_frames(self, d: Path) -> tuple[list[Frame], list[str]]:
        """The posed frames with both images, every ``frame_stride``-th; colour resized to the depth size."""
        cameras, posed = self._frame_sources(d)
        images, _, color_dir, depth_dir, name = self._layout()
        colors, bin_path = _frame_files(d / color_dir, ".jpg", name), self._depth_bin(d)
        # depth.bin holds a depth for every frame of the video
        depths = _frame_files(d / depth_dir, ".png", name) if bin_path is None else dict.fromkeys(colors)
        notes = []
        incomplete = sorted(k for k in posed if k not in colors or k not in depths)
        if incomplete:
            notes.append(f"skipped {len(incomplete)} posed frame(s) without a colour or depth image: "
                         f"{_shown(incomplete, 10)}")
        unposed = sorted(k for k in depths if k not in posed)
        if unposed and self.frames == "dslr":  # (the iPhone's COLMAP poses cover a subset of its frames)
            notes.append(f"skipped {len(unposed)} depth image(s) without a COLMAP pose in {images}: "
                         f"{_shown(unposed, 10)}")
        ks = sorted(k for k in posed if k in colors and k in depths)[:: self.frame_stride][: self.max_frames]
        if bin_path is not None:
            depths = read_depth_bin(bin_path, set(ks))
            short = [k for k in ks if k not in depths]
            if short:
                notes.append(f"skipped {len(short)} posed frame(s) past the end of {bin_path}: "
                             f"{_shown(short, 10)}")
            ks = [k for k in ks if k in depths]
            size = DEPTH_BIN_SIZE if ks else None
        else:
            size = _frame_size([depths[k] for k in ks], {}) if ks else None
        if size is None:
            notes.append(f"no posed frame with readable images in {d / Path(depth_dir).parent}")
            return [], notes
        frames = []
        for k in ks:
            pose, cam = posed[k]
            k_cam, (w, h) = cameras[cam]
            k_mat = scaled_intrinsics(k_cam, size[0] / w, size[1] / h)
            own = self.frames == "dslr" or bin_path is not None  # 65535 misses, or depth from depth.bin
            files = ({"source": ScanNetPPFrameSource(colors[k], depths[k])} if own
                     else {"color_path": colors[k], "depth_path": depths[k]})
            frames.append(Frame(number=k, pose=pose, intrinsics=k_mat, image_size=size,
                                depth_scale=DEPTH_SCALE, **files))
        return frames, notes
