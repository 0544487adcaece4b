"""3RScan reader: the textured OBJ, the labels PLY's objectId per vertex, semseg.v2.json, ``sequence/``.

Layout (``../shared/reference/datasets.md`` section 2; the module name cannot start with a digit, the
option is ``conf/dataset/3rscan.yaml``)::

    <root>/<scan_id>/
        mesh.refined.v2.obj                    vertices (metres, +Z up), UVs, faces; mtllib
        mesh.refined.mtl, mesh.refined_0.png   the texture (map_Kd): the real colours
        labels.instances.annotated.v2.ply      ASCII, same vertices as the OBJ: objectId per vertex
                                               (its RGB is the label visualisation colour, not used)
        semseg.v2.json                         segGroups: id, objectId, label, segments, obb
        sequence/_info.txt                     m_depthWidth/Height, m_depthShift, m_calibrationDepthIntrinsic
        sequence/frame-%06d.{color.jpg, depth.pgm, pose.txt}
    <split_dir>/{train,val,test}.txt           the official splits (default <root>/splits)

Conventions converted here:

- points are the OBJ's vertices; colours are sampled from the texture at the vertices' UVs (nearest
  texel, row = (1 - v) * height; a vertex on a seam gets the mean of its corners' texels), or the
  OBJ's per-vertex colours (``v x y z r g b``) when present. The labels PLY's colours are never used.
- ``axis_align`` is identity: the OBJ is already gravity-aligned (+Z up), in the frame of the poses.
- instances: one per segGroup, in file order, the vertices whose ``objectId`` is the group's; the
  instance label is the group's raw 3RScan label (``labels=raw``), or its class in one of the benchmark
  label sets the labels PLY stores per vertex (``labels=nyu40|eigen13|rio27``: the PLY's ``NYU40``,
  ``Eigen13`` or ``RIO27`` column, the most frequent value over the instance's vertices, named by
  :mod:`featurizer.dataset.label_sets`); an instance whose class is 0 (3RScan's "-", not in the set) is
  left out, with a note.
- frames are used in their stored orientation (the sensor's landscape images, whose content looks
  rotated by 90 degrees): the depth intrinsics of ``_info.txt`` refer to that orientation, so no image
  is rotated and no intrinsics are changed. The intrinsics are the depth ones (non-square pixels, fx
  about 177, fy about 241 at 224x172); the colour (960x540) is resized to the depth size, as the
  official backprojection does. Depth is a 16-bit PGM, value / ``m_depthShift`` (1000) = metres.
- ``frame-%06d.pose.txt``: row-major 4x4 camera-to-world, OpenCV camera axes, metres (used as is).
  Frames with a non-finite pose are skipped with a note.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from featurizer.dataset.base import SceneReader
from featurizer.dataset.label_sets import label_table
from featurizer.dataset.scannet import _read_pose, _shown, read_meta, read_ply_header
from featurizer.errors import ConfigError, DataError
from featurizer.files import read_json
from featurizer.scene import Frame, Instance, Scene

OBJ_NAME = "mesh.refined.v2.obj"
DEFAULT_TEXTURE = "mesh.refined_0.png"
LABELS_PLY = "labels.instances.annotated.v2.ply"
SEMSEG = "semseg.v2.json"
SEQUENCE = "sequence"
INFO = "_info.txt"
FRAME_RE = re.compile(r"frame-(\d+)\.pose\.txt")
SPLITS = ("train", "val", "test")
FRAME_MODES = ("sequence", "none")
# labels= option -> the labels PLY's vertex property holding that label set's class id
LABEL_COLUMNS = {"nyu40": "NYU40", "eigen13": "Eigen13", "rio27": "RIO27"}
# labels PLY vertices farther than this from the OBJ's (metres) mean the two files are not one scan
VERTEX_TOL = 1e-3


def color_name(k: int) -> str:
    return f"frame-{k:06d}.color.jpg"


def depth_name(k: int) -> str:
    return f"frame-{k:06d}.depth.pgm"


def pose_name(k: int) -> str:
    return f"frame-{k:06d}.pose.txt"


class RScanFrameSource:
    """A picklable ``Frame.source``: the depth PGM (stored orientation) in metres (raw / the frame's
    ``depth_scale``, ``m_depthShift``), and the colour jpg resized (bilinear) to the depth size, as 3RScan's
    own backprojection does."""

    def __init__(self, color_path: Path, depth_path: Path):
        self.color_path, self.path = Path(color_path), Path(depth_path)

    def __call__(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        with Image.open(self.path) as im:
            im.load()
            depth = np.asarray(im)
        with Image.open(self.color_path) as im:
            im = im.convert("RGB")
            if im.size != frame.image_size:
                im = im.resize(frame.image_size, Image.BILINEAR)
            color = np.asarray(im, dtype=np.uint8)
        return color, depth.astype(np.float32) / float(frame.depth_scale)


def _obj_vertex_count(path: Path) -> int:
    """Number of ``v`` lines of an OBJ (one pass, nothing parsed); DataError when missing."""
    if not path.is_file():
        raise DataError(path, "mesh OBJ not found")
    with open(path, "rb") as f:
        return sum(1 for line in f if line.startswith(b"v "))


def _rows(path: Path, rows: list[bytes], what: str, widths: tuple[int, ...]) -> np.ndarray:
    """(R, width) float64 of the ``rows`` of one OBJ statement (all of one width among ``widths``)."""
    if not rows:
        return np.zeros((0, widths[0]))
    width = len(rows[0].split())
    try:
        values = np.array(b" ".join(rows).split(), dtype=np.float64)
    except ValueError:
        raise DataError(path, f"'{what}' lines hold something that is not a number") from None
    if width not in widths or values.size != width * len(rows):
        raise DataError(path, f"'{what}' lines must all have one of {widths} numbers")
    return values.reshape(len(rows), width)


def read_obj(path: Path) -> dict:
    """The parts of an OBJ the reader needs: ``vertices`` (V, 3), ``vertex_colors`` (V, 3) uint8 or None,
    ``uvs`` (T, 2), per face corner ``corner_v`` / ``corner_uv`` (0-based; -1 without a UV), ``mtllib``."""
    if not path.is_file():
        raise DataError(path, "mesh OBJ not found")
    v_rows, vt_rows, f_rows, mtllib = [], [], [], None
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"v "):
                v_rows.append(line[2:])
            elif line.startswith(b"vt "):
                vt_rows.append(line[3:])
            elif line.startswith(b"f "):
                f_rows.append(line[2:])
            elif line.startswith(b"mtllib "):
                mtllib = line[7:].strip().decode("utf-8", errors="replace")
    v = _rows(path, v_rows, "v", (3, 4, 6, 7))
    if len(v) == 0:
        raise DataError(path, "OBJ has no vertices ('v' lines)")
    colors = None
    if v.shape[1] in (6, 7):  # x y z r g b [a]: per-vertex colours in [0, 1] (or 0..255)
        rgb = v[:, 3:6]
        colors = np.clip(np.rint(rgb * (255.0 if rgb.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    uvs = _rows(path, vt_rows, "vt", (2, 3))[:, :2]
    corners = b" ".join(f_rows).split()
    try:
        pairs = [c.split(b"/") for c in corners]
        cv = np.array([int(p[0]) for p in pairs], dtype=np.int64)
        cuv = np.array([int(p[1]) if len(p) > 1 and p[1] else 0 for p in pairs], dtype=np.int64)
    except ValueError:
        raise DataError(path, "'f' lines hold a corner that is not v[/vt[/vn]] integers") from None

    def zero_based(i: np.ndarray, n: int) -> np.ndarray:  # OBJ: 1-based, negative = relative to the end
        return np.where(i > 0, i - 1, np.where(i < 0, i + n, -1))

    cv, cuv = zero_based(cv, len(v)), zero_based(cuv, len(uvs))
    if ((cv < 0) | (cv >= len(v))).any() or (cuv >= len(uvs)).any():
        raise DataError(path, f"a face names a vertex or UV index out of range ({len(v)} v, {len(uvs)} vt)")
    return {"vertices": v[:, :3], "vertex_colors": colors, "uvs": uvs, "corner_v": cv, "corner_uv": cuv,
            "mtllib": mtllib}


def texture_path(obj_path: Path, mtllib: str | None) -> Path:
    """The texture of the OBJ: the first ``map_Kd`` of its mtllib, else ``mesh.refined_0.png``."""
    d = obj_path.parent
    if mtllib and (d / mtllib).is_file():
        for line in (d / mtllib).read_text(errors="replace").splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "map_Kd":
                return d / words[-1]
    return d / DEFAULT_TEXTURE


def sample_texture(texture: np.ndarray, obj: dict, notes: list[str]) -> np.ndarray:
    """(V, 3) uint8 colours of the OBJ's vertices from ``texture`` (H, W, 3): the nearest texel of each
    face corner's UV (row = (1 - v) * H, OBJ's v axis points up), averaged over a vertex's corners."""
    h, w = texture.shape[:2]
    n = len(obj["vertices"])
    ok = obj["corner_uv"] >= 0
    uv = obj["uvs"][obj["corner_uv"][ok]]
    col = np.clip(np.floor(uv[:, 0] * w), 0, w - 1).astype(np.int64)
    row = np.clip(np.floor((1.0 - uv[:, 1]) * h), 0, h - 1).astype(np.int64)
    texel = texture[row, col].astype(np.float64)
    vid = obj["corner_v"][ok]
    count = np.bincount(vid, minlength=n)
    total = np.stack([np.bincount(vid, weights=texel[:, c], minlength=n) for c in range(3)], axis=1)
    if (count == 0).any():
        notes.append(f"{int((count == 0).sum())} vertices have no UV in any face: coloured black")
    return np.clip(np.rint(total / np.maximum(count, 1)[:, None]), 0, 255).astype(np.uint8)


class RScanReader(SceneReader):
    """Reads 3RScan scans into :class:`featurizer.scene.Scene` (conventions in the module docstring).

    root: the 3RScan folder (one sub-folder per scan id, ``sequence.zip`` unzipped to ``sequence/``).
    splits: the splits of the run (``train``, ``val``, ``test``), each read from ``<split_dir>/<split>.txt``.
    scenes: explicit scan ids (win over the split files); each gets the split whose file lists it,
        else the first of ``splits``.
    split_dir: the folder of the split files (default ``<root>/splits``; the 3RScan repository's
        ``splits/`` folder).
    frames: ``sequence`` (the RGB-D frames of ``<scan>/sequence/``) or ``none``.
    frame_stride, max_frames: keep every k-th frame (by number), then at most this many.
    labels: the instances' labels: ``raw`` (semseg.v2.json's label), or ``nyu40``, ``eigen13``, ``rio27``
        (the labels PLY's per-vertex benchmark class; instances outside the set are left out).
    """

    name = "3rscan"
    title, split_unit = "3RScan", "scans"

    def __init__(self, root: str, splits: list[str] | str = ("val",), scenes: list[str] | str | None = None,
                 split_dir: str | None = None, frames: str = "sequence", frame_stride: int = 1,
                 max_frames: int | None = None, labels: str = "raw"):
        super().__init__()
        if labels != "raw":
            label_table(labels, "dataset.labels", ("raw", *LABEL_COLUMNS))
        self.labels = labels
        self.object_filter = None if labels == "raw" else f"dataset.labels={labels}"
        self.root = self.check_options(root, "3RScan", frames, FRAME_MODES, frame_stride, max_frames)
        self.splits = self.split_names(splits)
        unknown = [s for s in self.splits if s not in SPLITS]
        if not self.splits or unknown:
            raise ConfigError("dataset.splits", f"choose among {', '.join(SPLITS)}, got {self.splits}")
        self.split_dir = Path(split_dir) if split_dir is not None else self.root / "splits"
        self.frames = frames
        self.frame_stride = int(frame_stride)
        self.max_frames = None if max_frames is None else int(max_frames)
        self._split_of = self.assign_splits(scenes)
        self.scene_ids = list(self._split_of)

    def split_file(self, split: str) -> Path:
        return self.split_dir / f"{split}.txt"

    # ------------------------------------------------------------------ paths and cheap reads
    def scene_dir(self, scene_id: str) -> Path:
        d = self.root / scene_id
        if not d.is_dir():
            raise DataError(d, "scan folder not found")
        return d

    def sequence_dir(self, scene_id: str) -> Path:
        seq = self.scene_dir(scene_id) / SEQUENCE
        if not seq.is_dir():
            zipped = seq.with_suffix(".zip")
            if zipped.is_file():
                raise DataError(zipped, f"not unzipped: unzip it into {seq} (frames=sequence reads it)")
            raise DataError(seq, "frame folder not found (frames=sequence)")
        return seq

    def _pose_files(self, seq: Path) -> dict[int, Path]:
        """``{frame number: pose file}`` of the sequence folder, by number."""
        out = {}
        for entry in os.scandir(seq):
            m = FRAME_RE.fullmatch(entry.name)
            if m:
                out[int(m.group(1))] = Path(entry.path)
        return dict(sorted(out.items()))

    def _info(self, seq: Path) -> tuple[tuple[int, int], np.ndarray, float, int | None]:
        """(depth size (w, h), depth intrinsics (3, 3), depth shift, m_frames.size or None) of _info.txt."""
        path = seq / INFO
        if not path.is_file():
            raise DataError(path, "sequence info file not found")
        info = read_meta(path)
        try:
            size = (int(info["m_depthWidth"]), int(info["m_depthHeight"]))
            shift = float(info["m_depthShift"])
            k16 = np.array([float(x) for x in info["m_calibrationDepthIntrinsic"].split()])
            count = int(info["m_frames.size"]) if "m_frames.size" in info else None
        except KeyError as e:
            raise DataError(path, f"no {e.args[0]} line") from None
        except ValueError:
            raise DataError(path, "m_depthWidth/Height, m_depthShift, m_calibrationDepthIntrinsic or "
                                  "m_frames.size is not a number") from None
        if k16.size != 16 or not np.isfinite(k16).all():
            raise DataError(path, f"m_calibrationDepthIntrinsic must be 16 finite numbers, got {k16.size}")
        k = k16.reshape(4, 4)[:3, :3].copy()  # row-major: fx=[0], cx=[2], fy=[5], cy=[6]
        if k[0, 0] <= 0 or k[1, 1] <= 0 or min(size) <= 0 or shift <= 0:
            raise DataError(path, f"invalid depth camera (fx {k[0, 0]}, fy {k[1, 1]}, size {size}, "
                                  f"shift {shift})")
        return size, k, shift, count

    def _semseg_groups(self, d: Path) -> list[tuple[int, str]] | None:
        """(objectId, label) per segGroup of ``semseg.v2.json``; None without ground truth (neither it nor
        the labels PLY); DataError when only one of the two exists or the json is malformed."""
        semseg, ply = d / SEMSEG, d / LABELS_PLY
        if semseg.is_file() != ply.is_file():
            present, absent = (semseg, ply) if semseg.is_file() else (ply, semseg)
            raise DataError(absent, f"not found, but {present.name} is: ground truth needs both")
        if not semseg.is_file():
            return None
        groups = read_json(semseg, expect=dict).get("segGroups")
        if not isinstance(groups, list):
            raise DataError(semseg, "no 'segGroups' list")
        out = []
        for i, g in enumerate(groups):
            try:
                out.append((int(g["objectId"]), str(g["label"])))
            except (KeyError, TypeError, ValueError):
                raise DataError(semseg, f"segGroups[{i}] lacks an integer objectId or a label") from None
        ids = [o for o, _ in out]
        if len(set(ids)) != len(ids):
            raise DataError(semseg, "two segGroups share an objectId")
        return out

    def gt_object_count(self, scene_id: str) -> int:
        """The number of segGroups of ``semseg.v2.json`` (0 without ground truth)."""
        return len(self._semseg_groups(self.scene_dir(scene_id)) or [])

    def input_files(self, scene_id: str, frames: bool = True) -> list[Path]:
        d = self.scene_dir(scene_id)
        obj = d / OBJ_NAME
        files = [obj, d / "mesh.refined.mtl", d / LABELS_PLY, d / SEMSEG]
        if obj.is_file():
            files.append(texture_path(obj, "mesh.refined.mtl"))
        if frames and self.frames == "sequence" and (d / SEQUENCE).is_dir():
            files.extend(sorted(Path(e.path) for e in os.scandir(d / SEQUENCE) if e.is_file()))
        return files

    def scene_cost(self, scene_id: str) -> float:
        """Thousands of vertices (the labels PLY header's count) plus the frames kept."""
        d = self.scene_dir(scene_id)
        vertices = read_ply_header(d / LABELS_PLY)[0].get("vertex", 0) if (d / LABELS_PLY).is_file() else 0
        frames = 0
        if self.frames == "sequence" and (d / SEQUENCE).is_dir():
            frames = len(self._pose_files(d / SEQUENCE)) // self.frame_stride
            if self.max_frames is not None:
                frames = min(frames, self.max_frames)
        return vertices / 1000.0 + frames

    # ------------------------------------------------------------------ checks
    def check_global(self) -> None:
        if not self.root.is_dir():
            raise DataError(self.root, "3RScan root folder not found (dataset.root)")

    def check_scene(self, scene_id: str) -> int:
        """The OBJ's vertex count, equal to the labels PLY's (with its objectId), semseg parsed, and the
        sequence: ``_info.txt`` parsed, its ``m_frames.size`` equal to the pose files, each a 4x4 matrix."""
        d = self.scene_dir(scene_id)
        n = _obj_vertex_count(d / OBJ_NAME)
        if n == 0:
            raise DataError(d / OBJ_NAME, "OBJ has no vertices ('v' lines)")
        if self._semseg_groups(d) is not None:
            counts, props, _ = read_ply_header(d / LABELS_PLY)
            for prop in ("objectId", LABEL_COLUMNS.get(self.labels)):
                if prop is not None and prop not in props:
                    raise DataError(d / LABELS_PLY, f"vertex element has no {prop} (has {', '.join(props)})")
            if counts.get("vertex") != n:
                raise DataError(d / LABELS_PLY, f"{counts.get('vertex')} vertices but {OBJ_NAME} has {n}")
        if self.frames == "sequence":
            seq = self.sequence_dir(scene_id)
            _, _, _, count = self._info(seq)
            poses = self._pose_files(seq)
            if not poses:
                raise DataError(seq, "no frame-%06d.pose.txt files")
            if count is not None and count != len(poses):
                raise DataError(seq / INFO,
                                f"m_frames.size = {count} but {seq.name}/ has {len(poses)} pose files")
            bad = [p for p in poses.values() if _read_pose(p) is None]
            if bad:
                raise DataError(bad[0], f"not a 4x4 matrix of numbers; {len(bad)} of {len(poses)} pose "
                                        f"files: {_shown(p.name for p in bad)}")
        return n

    # ------------------------------------------------------------------ loading
    def load(self, scene_id: str) -> Scene:
        d = self.scene_dir(scene_id)
        notes: list[str] = []
        obj = read_obj(d / OBJ_NAME)
        points = obj["vertices"].astype(np.float32)
        colors = obj["vertex_colors"]
        if colors is None:
            colors = sample_texture(self._texture(d / OBJ_NAME, obj["mtllib"]), obj, notes)
        instances = self._instances(d, obj["vertices"], notes)
        frames = self._frames(scene_id, notes) if self.frames == "sequence" else []
        return self.make_scene(scene_id, points, colors, instances, frames, notes)

    @staticmethod
    def _texture(obj_path: Path, mtllib: str | None) -> np.ndarray:
        from PIL import Image

        path = texture_path(obj_path, mtllib)
        if not path.is_file():
            raise DataError(path, f"texture not found, and {obj_path.name} has no per-vertex colours")
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except OSError as e:
            raise DataError(path, f"unreadable texture image: {e}") from None

    def _instances(self, d: Path, vertices: np.ndarray, notes: list[str]) -> list[Instance]:
        groups = self._semseg_groups(d)
        if groups is None:
            return []
        from plyfile import PlyData

        path = d / LABELS_PLY
        try:
            data = PlyData.read(str(path))["vertex"].data
        except Exception as e:  # plyfile raises several types for corrupt files
            raise DataError(path, f"unreadable ply: {e}") from None
        for prop in ("objectId", LABEL_COLUMNS.get(self.labels)):
            if prop is not None and prop not in (data.dtype.names or ()):
                raise DataError(path, f"vertex element has no {prop}")
        if len(data) != len(vertices):
            raise DataError(path, f"{len(data)} vertices but {OBJ_NAME} has {len(vertices)}")
        xyz = np.stack([data["x"], data["y"], data["z"]], axis=1).astype(np.float64)
        if np.abs(xyz - vertices).max() > VERTEX_TOL:
            raise DataError(path, f"its vertices are not {OBJ_NAME}'s (another scan, or an aligned one?)")
        object_id = np.asarray(data["objectId"], dtype=np.int64)
        order = np.argsort(object_id, kind="stable")
        sorted_ids = object_id[order]
        instances = []
        for oid, label in groups:
            lo, hi = np.searchsorted(sorted_ids, [oid, oid + 1])
            instances.append(Instance(point_ids=np.sort(order[lo:hi]), label=label, gt_object_id=oid))
        if self.labels != "raw":
            instances = self._benchmark_labels(instances, np.asarray(data[LABEL_COLUMNS[self.labels]]), notes)
        return instances

    def _benchmark_labels(self, instances: list[Instance], column: np.ndarray,
                          notes: list[str]) -> list[Instance]:
        """The instances relabelled by their most frequent ``column`` value (V,), those of class 0 (or no
        vertices) left out with a note."""
        names = label_table(self.labels, "dataset.labels")
        kept, left = [], []
        for inst in instances:
            values = column[inst.point_ids].astype(np.int64)
            class_id = int(np.bincount(values).argmax()) if len(values) else 0
            if class_id in names:
                inst.label = names[class_id]
                kept.append(inst)
            else:
                left.append(f"{inst.label!r} ({class_id})")
        if left:
            notes.append(f"labels={self.labels}: left out {len(left)} instance(s) of no {self.labels} class: "
                         f"{_shown(left, 5)}")
        return kept

    def _frames(self, scene_id: str, notes: list[str]) -> list[Frame]:
        seq = self.sequence_dir(scene_id)
        size, k, shift, _ = self._info(seq)
        numbers = list(self._pose_files(seq))[:: self.frame_stride]
        if self.max_frames is not None:
            numbers = numbers[: self.max_frames]
        frames, bad, incomplete = [], [], []
        for n in numbers:
            color, depth = seq / color_name(n), seq / depth_name(n)
            if not (color.is_file() and depth.is_file()):
                incomplete.append(n)
                continue
            pose = _read_pose(seq / pose_name(n))
            if pose is None:
                bad.append(n)
                continue
            frames.append(Frame(number=n, pose=pose, intrinsics=k, image_size=size, depth_scale=shift,
                                source=RScanFrameSource(color, depth)))
        if incomplete:
            notes.append(f"skipped {len(incomplete)} frame(s) with a pose but no colour or depth image: "
                         f"{_shown(incomplete, 10)}")
        if bad:
            notes.append(f"skipped {len(bad)} frame(s) whose pose file is not a 4x4 matrix: "
                         f"{_shown(bad, 10)}")
        if not frames:
            notes.append(f"no usable frames in {seq}")
        return frames
