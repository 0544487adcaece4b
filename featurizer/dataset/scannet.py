"""ScanNet reader: scans (mesh, meta, aggregation, segs) + RGB-D frames (exported or ``.sens``) -> Scene.

Layout (DESIGN.md section 4)::

    <root>/scans/<scene>/            (or <root>/scans_test/<scene>/)
        <scene>_vh_clean_2.ply                    vertices x y z red green blue [alpha], faces
        <scene>.txt                               meta: axisAlignment, fx_depth, ..., depthWidth
        <scene>.aggregation.json                  segGroups (not in the test split)
        <scene>_vh_clean_2.0.010000.segs.json     segIndices (not in the test split)
        <scene>.sens                              the RGB-D stream (frames=sens)
    <root>/scannetv2-labels.combined.tsv
    <root>/scannetv2_<split>.txt
    <frames_root>/<scene>/color/<k>.jpg, depth/<k>.png, pose/<k>.txt, intrinsic/intrinsic_depth.txt

``frames_root`` defaults to ``<root>/scannet_2d`` (OpenScene's export, what Chat-Scene used).

Real-data defects are recorded in ``Scene.notes`` (and warned), never silently used: frames with a
non-finite pose, with an unreadable or truncated pose file, with a pose but no colour/depth image
(or images but no pose), and duplicate frame numbers (``pose/20.txt`` and ``pose/020.txt``: the
shortest name is kept). Image files are only opened when read (:mod:`featurizer.dataset.frames`
checks them then); a test-split scan (no aggregation, segs or alignment) reads with identity
alignment and no instances. Before a run, :meth:`ScanNetReader.check_scene` (the validation pass,
:mod:`featurizer.validate`) refuses a scene with an unparseable pose file or an empty frame folder.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from featurizer.dataset.base import SceneReader
from featurizer.dataset.label_sets import NYU40, SCANNET200, label_table
from featurizer.dataset.labels import TSV_NAME, LabelTable, read_label_table
from featurizer.errors import DataError
from featurizer.files import read_json
from featurizer.scene import Frame, Instance, Scene, scaled_intrinsics

PLY_SUFFIX = "_vh_clean_2.ply"
SEGS_SUFFIX = "_vh_clean_2.0.010000.segs.json"
AGG_SUFFIX = ".aggregation.json"
REQUIRED_VERTEX_PROPS = ("x", "y", "z", "red", "green", "blue")
FRAME_MODES = ("exported", "sens", "none")
DEPTH_SCALE = 1000.0  # exported depth pngs are uint16 millimetres
IMAGE_EXT = (".jpg", ".jpeg", ".png")
# colour intrinsics resized to the depth resolution that differ more than this from the depth
# intrinsics (relative focal, centre in pixels) are noted: the pair is then not registered
INTRINSICS_FOCAL_TOL = 0.02
INTRINSICS_CENTER_TOL = 8.0


def read_ply_header(path: Path) -> tuple[dict[str, int], list[str], str]:
    """Parse a ply header without reading the body.

    Returns ({element: count}, vertex property names in order, format string). DataError when the
    file is missing or the header is not a ply header.
    """
    if not path.is_file():
        raise DataError(path, "mesh file not found")
    counts: dict[str, int] = {}
    props: list[str] = []
    fmt = ""
    current = None
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise DataError(path, "not a ply file (first line is not 'ply')")
        for _ in range(10000):
            raw = f.readline()
            if not raw:
                raise DataError(path, "ply header has no 'end_header' line")
            words = raw.decode("ascii", errors="replace").split()
            if not words:
                continue
            if words[0] == "end_header":
                return counts, props, fmt
            if words[0] == "format" and len(words) >= 2:
                fmt = words[1]
            elif words[0] == "element" and len(words) == 3:
                current = words[1]
                try:
                    counts[current] = int(words[2])
                except ValueError:
                    raise DataError(path, f"ply header: bad element count in {raw.strip()!r}") from None
            elif words[0] == "property" and current == "vertex" and len(words) >= 3:
                props.append(words[-1])
    raise DataError(path, "ply header too long (no 'end_header' within 10000 lines)")


def mesh_vertex_count(path: Path) -> int:
    """The vertex count of a ply mesh's header (what :func:`read_mesh` reads, the body not read); DataError
    when it has no vertex element or its vertices lack one of x y z red green blue."""
    counts, props, _ = read_ply_header(path)
    if "vertex" not in counts:
        raise DataError(path, "ply header has no 'vertex' element")
    missing = [p for p in REQUIRED_VERTEX_PROPS if p not in props]
    if missing:
        raise DataError(path, _missing_props(missing, props))
    return counts["vertex"]


def read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) float32 xyz and (N, 3) uint8 rgb of a ply mesh's vertices, read column-wise (ScanNet,
    ScanNet++)."""
    from plyfile import PlyData

    if not path.is_file():
        raise DataError(path, "mesh file not found")
    try:
        ply = PlyData.read(str(path))
    except Exception as e:  # plyfile raises several types for corrupt files
        raise DataError(path, f"unreadable ply: {e}") from None
    if "vertex" not in ply:
        raise DataError(path, "ply has no 'vertex' element")
    data = ply["vertex"].data
    names = data.dtype.names or ()
    missing = [p for p in REQUIRED_VERTEX_PROPS if p not in names]
    if missing:
        raise DataError(path, _missing_props(missing, names))
    points = np.stack([data["x"], data["y"], data["z"]], axis=1).astype(np.float32)
    colors = np.stack([data["red"], data["green"], data["blue"]], axis=1)
    if colors.dtype != np.uint8:
        colors = np.clip(colors, 0, 255)
    return points, colors.astype(np.uint8)


def read_seg_indices(path: Path, expected: int, of: str) -> np.ndarray:
    """(N,) int64 ``segIndices`` of a segments json (ScanNet, ScanNet++, Matterport's fsegs); DataError
    unless it is a list of ``expected`` integers. of: what they index, e.g. "the mesh has 5 vertices"."""
    data = read_json(path)
    try:
        seg = np.asarray(data["segIndices"], dtype=np.int64).reshape(-1)
    except (KeyError, TypeError, ValueError):
        raise DataError(path, "no 'segIndices' list of integers") from None
    if len(seg) != expected:
        raise DataError(path, f"segIndices has {len(seg)} entries but {of}")
    return seg


def read_seg_groups(seg_path: Path, groups_path: Path, expected: int,
                    of: str) -> tuple[np.ndarray, np.ndarray, list]:
    """A segments json (:func:`read_seg_indices`) and the json of its ``segGroups`` (ScanNet's aggregation,
    ScanNet++'s segments_anno, Matterport's semseg): the sorted unique segment ids, each element's index
    into them, and the ``segGroups`` list (DataError naming ``groups_path`` when it has none)."""
    seg = read_seg_indices(seg_path, expected, of)
    data = read_json(groups_path)
    groups = data.get("segGroups") if isinstance(data, dict) else None
    if not isinstance(groups, list):
        raise DataError(groups_path, "no 'segGroups' list")
    uniq, inverse = np.unique(seg, return_inverse=True)
    return uniq, inverse, groups


def read_object_groups(seg_path: Path, groups_path: Path, expected: int,
                       of: str) -> tuple[np.ndarray, list[tuple[str, int, np.ndarray]]]:
    """:func:`read_seg_groups` with every segGroup checked (ScanNet's aggregation, ScanNet++'s
    segments_anno): ``inverse`` (N,), each element's index into the sorted unique segment ids, and per
    segGroup ``(raw label, objectId, indices of its segments into those unique ids)``. DataError naming
    ``groups_path`` for a group without a label, an integer objectId or integer segments, or naming a
    segment that ``seg_path`` lacks."""
    uniq, inverse, groups = read_seg_groups(seg_path, groups_path, expected, of)
    out = []
    for i, g in enumerate(groups):
        try:
            raw_label = str(g["label"])
            object_id = int(g["objectId"])
            wanted = np.unique(np.asarray(g["segments"], dtype=np.int64).reshape(-1))
        except (KeyError, TypeError, ValueError):
            raise DataError(
                groups_path, f"segGroups[{i}] lacks a label, an integer objectId or integer segments"
            ) from None
        pos = np.searchsorted(uniq, wanted)  # membership through the sorted ids (no re-sort per group)
        inside = pos < len(uniq)
        found = np.zeros(len(wanted), dtype=bool)
        found[inside] = uniq[pos[inside]] == wanted[inside]
        if not found.all():
            absent = wanted[~found]
            raise DataError(
                groups_path,
                f"segGroups[{i}] (objectId {object_id}, '{raw_label}') names {len(absent)} segment id(s) "
                f"absent from {seg_path.name}: {_shown(absent.tolist())}",
            )
        out.append((raw_label, object_id, pos))
    return inverse.reshape(-1), out


def read_meta(path: Path) -> dict[str, str]:
    """``key = value`` lines of a ScanNet meta ``<scene>.txt``; {} when the file does not exist."""
    if not path.is_file():
        return {}
    meta: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            meta[key.strip()] = value.strip()
    return meta


def parse_axis_alignment(meta: dict[str, str], path: Path) -> np.ndarray | None:
    """The (4, 4) row-major ``axisAlignment`` of the meta, None when absent; DataError when unparsable."""
    if "axisAlignment" not in meta:
        return None
    text = meta["axisAlignment"]
    try:
        values = [float(x) for x in text.split()]
    except ValueError:
        raise DataError(path, f"axisAlignment is not 16 numbers: {text[:80]!r}") from None
    if len(values) != 16 or not np.isfinite(values).all():
        raise DataError(path, f"axisAlignment must be 16 finite numbers, got {len(values)}: {text[:80]!r}")
    return np.asarray(values, dtype=np.float64).reshape(4, 4)


def _frame_number(path: Path) -> int | None:
    return int(path.stem) if re.fullmatch(r"\d+", path.stem) else None


def _missing_props(missing: list[str], present) -> str:
    return f"ply vertex element lacks properties {', '.join(missing)} (has {', '.join(present)})"


def _shown(items, n: int = 5) -> str:
    items = list(items)
    return ", ".join(map(str, items[:n])) + (f" and {len(items) - n} more" if len(items) > n else "")


def _numbered_files(folder: Path, extensions: tuple[str, ...], notes: list[str]) -> dict[int, Path]:
    """``{frame number: file}`` of the files named ``<number><ext>`` in ``folder``.

    Two files with one number (``20.txt`` and ``020.txt``, or ``20.jpg`` and ``20.png``): the first in
    (name length, name) order is kept, i.e. the plain spelling, and the others are noted.
    """
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in extensions and _frame_number(p) is not None),
        key=lambda p: (len(p.name), p.name),
    )
    out: dict[int, Path] = {}
    dropped = []
    for p in files:
        k = _frame_number(p)
        if k in out:
            dropped.append(f"{p.name} (kept {out[k].name})")
        else:
            out[k] = p
    if dropped:
        notes.append(
            f"{folder.name}/: {len(dropped)} file(s) repeat a frame number, ignored: {_shown(dropped, 5)}"
        )
    return out


def _has_ground_truth(d: Path, scene_id: str) -> bool:
    """Whether scan folder ``d`` holds the aggregation and segs files; DataError when only one."""
    agg, segs = d / f"{scene_id}{AGG_SUFFIX}", d / f"{scene_id}{SEGS_SUFFIX}"
    if agg.is_file() != segs.is_file():
        present, absent = (agg, segs) if agg.is_file() else (segs, agg)
        raise DataError(absent, f"not found, but {present.name} is: ground truth needs both")
    return agg.is_file()


def _frame_size(depth_files: list[Path], meta: dict[str, str]) -> tuple[int, int] | None:
    """The scene's depth image size (width, height): the size most of its depth images have.

    No single frame decides it: every depth file's header is read (header only, no decoding), and the
    odd frames are skipped later as "size mismatch" with a record. A tie goes to the meta's
    ``depthWidth`` x ``depthHeight`` when it is among the tied sizes, else to the first frame's size.
    None when no depth header is readable.
    """
    from collections import Counter

    from PIL import Image

    sizes = []
    for path in depth_files:
        try:
            if Path(path).suffix == ".npy":  # a depth array (nerfstudio): its header only
                sizes.append(tuple(np.load(path, mmap_mode="r").shape[1::-1]))
                continue
            with Image.open(path) as im:  # header only
                sizes.append(im.size)
        except (OSError, ValueError):  # unreadable: frames.read_frame_checked skips the frame later
            continue
    if not sizes:
        return None
    counts = Counter(sizes)
    best = max(counts.values())
    tied = [s for s in counts if counts[s] == best]  # in first-seen order
    try:
        meta_size = (int(float(meta["depthWidth"])), int(float(meta["depthHeight"])))
    except (KeyError, ValueError):
        meta_size = None
    return meta_size if meta_size in tied else tied[0]


def _read_pose(path: Path) -> np.ndarray | None:
    """(4, 4) float64 camera-to-world of a pose file (``inf``/``nan`` kept); None when unreadable."""
    try:
        with open(path, "rb") as f:  # 10x faster than np.loadtxt, and the same correctly rounded values
            pose = np.array([float(word) for word in f.read().split()], dtype=np.float64)
    except (ValueError, OSError):
        return None
    return pose.reshape(4, 4) if pose.size == 16 else None


def _registration_note(
    k_color: np.ndarray, color_size: tuple[int, int], k_depth: np.ndarray, depth_size: tuple[int, int]
) -> str | None:
    """A note when the colour intrinsics, resized to the depth resolution, are not the depth ones.

    Frames use the depth intrinsics for the colour resized to the depth size, which assumes the two
    streams are registered (ScanNet's are, to < 0.1%).
    """
    k = np.asarray(k_color, dtype=np.float64)
    if not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
        return "colour intrinsics in the header are invalid; using the depth intrinsics for colour"
    k = scaled_intrinsics(k, depth_size[0] / color_size[0], depth_size[1] / color_size[1])
    focal = max(abs(k[0, 0] / k_depth[0, 0] - 1), abs(k[1, 1] / k_depth[1, 1] - 1))
    centre = float(np.abs(k[:2, 2] - k_depth[:2, 2]).max())
    if focal > INTRINSICS_FOCAL_TOL or centre > INTRINSICS_CENTER_TOL:
        return (
            f"colour intrinsics resized to {depth_size[0]}x{depth_size[1]} "
            f"(fx {k[0, 0]:.1f}, cx {k[0, 2]:.1f}) "
            f"differ from the depth intrinsics (fx {k_depth[0, 0]:.1f}, cx {k_depth[0, 2]:.1f}): "
            f"colour and depth may not be registered"
        )
    return None


class ScanNetReader(SceneReader):
    """Reads ScanNet scenes (scans + exported or ``.sens`` frames) into :class:`featurizer.scene.Scene`.

    root: the ScanNet folder (holds ``scans/``, ``scans_test/``, the labels tsv, the split files).
    splits: the splits of the run, e.g. ``[train, val]`` or ``[train, val, test]``; each names its split
        file ``<split_dir>/scannetv2_<split>.txt``. The run's scenes are the union of the split files'
        scenes, in the order of ``splits`` and then of each file (a scene listed twice keeps its first
        split). Test scans live in ``scans_test/`` (see :meth:`scene_dir`).
    scenes: explicit scene ids (win over the split files); each gets the split whose file lists it,
        else the first of ``splits``.
    split_dir: the folder holding the split files (default ``root``).
    frames_root: exported frames folder (default ``<root>/scannet_2d``).
    frame_stride: keep every k-th frame: of the exported frames (sorted by their number) for
        ``exported``, of the stream for ``sens`` (ScanNet's export is every 20th: ``frame_stride=20``
        on the stream gives the exported frames' numbers).
    frames: ``exported`` (files per frame under ``frames_root``), ``sens`` (colour, depth, poses and
        depth intrinsics read from ``<scan folder>/<scene>.sens``; colour resized to the depth
        resolution, frame numbers are stream frame numbers) or ``none``.
    labels_tsv: the labels tsv (default ``<root>/scannetv2-labels.combined.tsv``).
    labels: the GT instances' labels: ``category`` (the tsv's category of the raw label), ``nyu40`` (the NYU40
        class of the tsv's ``nyu40id``) or ``scannet200`` (the ScanNet200 class of the tsv's ``id``); with
        the last two, instances whose raw label has no class in the set are left out, with a note (the
        task annotations index GT objects by aggregation order: a run that builds them refuses the two).
    max_frames: keep at most this many frames per scene (after the stride); None keeps all.
    """

    name = "scannet"
    title = "ScanNet"

    def __init__(
        self,
        root: str,
        splits: list[str] | str = ("val",),
        scenes: list[str] | None = None,
        split_dir: str | None = None,
        frames_root: str | None = None,
        frame_stride: int = 1,
        frames: str = "exported",
        labels_tsv: str | None = None,
        max_frames: int | None = None,
        labels: str = "category",
    ):
        super().__init__()
        self.root = self.check_options(root, "ScanNet", frames, FRAME_MODES, frame_stride, max_frames)
        self.splits = self.split_names(splits)
        self.split_dir = Path(split_dir) if split_dir is not None else self.root
        self.frames = frames
        self.frame_stride = int(frame_stride)
        self.max_frames = None if max_frames is None else int(max_frames)
        self.frames_root = Path(frames_root) if frames_root is not None else self.root / "scannet_2d"
        self.labels_tsv = Path(labels_tsv) if labels_tsv is not None else self.root / TSV_NAME
        if labels != "category":
            label_table(labels, "dataset.labels", ("category", "nyu40", "scannet200"))
        self.label_mode = labels
        self.object_filter = None if labels == "category" else f"dataset.labels={labels}"
        self._labels: LabelTable | None = None
        self._split_of = self.assign_splits(scenes)
        self.scene_ids = list(self._split_of)

    def split_file(self, split: str) -> Path:
        return self.split_dir / f"scannetv2_{split}.txt"

    # ------------------------------------------------------------------ paths
    def scene_dir(self, scene_id: str) -> Path:
        """``<root>/scans/<scene>``, or ``<root>/scans_test/<scene>`` when only that exists."""
        for sub in ("scans", "scans_test"):
            d = self.root / sub / scene_id
            if d.is_dir():
                return d
        raise DataError(
            self.root / "scans" / scene_id, "scene folder not found (looked in scans/ and scans_test/)"
        )

    def frames_dir(self, scene_id: str) -> Path:
        return self.frames_root / scene_id

    def sens_path(self, scene_id: str) -> Path:
        """``<scan folder>/<scene>.sens``."""
        return self.scene_dir(scene_id) / f"{scene_id}.sens"

    def labels(self) -> LabelTable:
        if self._labels is None:
            self._labels = read_label_table(self.labels_tsv)
        return self._labels

    def input_files(self, scene_id: str, frames: bool = True) -> list[Path]:
        """The files a scene's stages read (fingerprinted by the stage cache, :mod:`featurizer.store`):
        mesh, meta, aggregation, segs and the labels tsv, and with ``frames`` every file of the
        scene's exported frames (or its ``.sens``)."""
        d = self.scene_dir(scene_id)
        files = [d / f"{scene_id}{suffix}" for suffix in (PLY_SUFFIX, ".txt", AGG_SUFFIX, SEGS_SUFFIX)]
        files.append(self.labels_tsv)
        if frames and self.frames == "sens":
            files.append(self.sens_path(scene_id))
        elif frames and self.frames == "exported":
            fd = self.frames_dir(scene_id)
            for sub in ("color", "depth", "pose", "intrinsic"):
                if (fd / sub).is_dir():
                    files.extend(Path(e.path) for e in os.scandir(fd / sub) if e.is_file())
        return files

    def scene_cost(self, scene_id: str) -> float:
        """Thousands of mesh vertices (the ply header's count) plus the scene's frames (exported ones
        listed, or the ``.sens`` header's count): both stages' work grows with them."""
        d = self.scene_dir(scene_id)
        counts, _, _ = read_ply_header(d / f"{scene_id}{PLY_SUFFIX}")
        frames = 0
        if self.frames == "exported" and (self.frames_dir(scene_id) / "pose").is_dir():
            frames = sum(1 for _ in os.scandir(self.frames_dir(scene_id) / "pose")) // self.frame_stride
        elif self.frames == "sens" and self.sens_path(scene_id).is_file():
            from featurizer.dataset.sens import SensFile

            frames = SensFile(self.sens_path(scene_id)).header_num_frames // self.frame_stride
        if self.max_frames is not None:
            frames = min(frames, self.max_frames)
        return counts.get("vertex", 0) / 1000.0 + frames

    def gt_object_count(self, scene_id: str) -> int:
        """How many ground-truth objects the scene has (its aggregation's segGroups; 0 without one), read
        cheaply before long work (the annotation inputs' object ids are checked against it)."""
        d = self.scene_dir(scene_id)
        if not _has_ground_truth(d, scene_id):
            return 0
        agg = read_json(d / f"{scene_id}{AGG_SUFFIX}")
        groups = agg.get("segGroups") if isinstance(agg, dict) else None
        return len(groups) if isinstance(groups, list) else 0

    # ------------------------------------------------------------------ checks
    def check_global(self) -> None:
        """Checks of files shared by every scene: the labels tsv, when any scan has an aggregation."""
        if self.labels_tsv.is_file():
            return
        for scene_id in self.scene_ids:
            if any((self.root / sub / scene_id / f"{scene_id}{AGG_SUFFIX}").is_file()
                   for sub in ("scans", "scans_test")):
                raise DataError(
                    self.labels_tsv, "labels tsv not found; the aggregations' raw labels cannot be mapped"
                )

    def check_scene(self, scene_id: str) -> int:
        """Cheap checks of one scene's files (DataError); returns its vertex count (from the ply header).

        The ply header, the meta's alignment, segs length and aggregation segments (parsed as
        :meth:`load` parses them), and the frames: exported folders present and non-empty with every
        pose file a 4x4 matrix of numbers (non-finite entries allowed), or a readable ``.sens`` header.
        """
        d = self.scene_dir(scene_id)
        ply = d / f"{scene_id}{PLY_SUFFIX}"
        num_points = mesh_vertex_count(ply)
        meta_path = d / f"{scene_id}.txt"
        meta = read_meta(meta_path)
        parse_axis_alignment(meta, meta_path)
        self._ground_truth_groups(d, scene_id, num_points)
        self._check_frames(scene_id, meta, meta_path)
        self._check_frame_files(scene_id)
        return num_points

    def _check_frame_files(self, scene_id: str) -> None:
        """Exported frames: colour, depth and pose files present, every pose file parseable; ``.sens``:
        the header readable (its frame index too; a truncation is noted when the scene is loaded)."""
        if self.frames == "exported":
            fd = self.frames_dir(scene_id)
            files = {}
            for sub, ext in (("color", IMAGE_EXT), ("depth", (".png",)), ("pose", (".txt",))):
                files[sub] = _numbered_files(fd / sub, ext, [])
                if not files[sub]:
                    raise DataError(fd / sub, f"no frame files <number>{'|'.join(ext)} (frames=exported)")
            poses = files["pose"]
            bad = [p for _, p in sorted(poses.items()) if _read_pose(p) is None]
            if bad:
                shown = _shown(p.name for p in bad)
                raise DataError(bad[0], f"not a 4x4 matrix of numbers (empty, truncated or garbled); "
                                        f"{len(bad)} of {len(poses)} pose files: {shown}")
        elif self.frames == "sens":
            from featurizer.dataset.sens import SensFile

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                SensFile(self.sens_path(scene_id))

    def _check_frames(self, scene_id: str, meta: dict[str, str], meta_path: Path) -> None:
        if self.frames == "exported":
            fd = self.frames_dir(scene_id)
            for sub in ("color", "depth", "pose"):
                if not (fd / sub).is_dir():
                    raise DataError(fd / sub, "exported frames folder not found (frames=exported)")
            if not (fd / "intrinsic" / "intrinsic_depth.txt").is_file() and "fx_depth" not in meta:
                raise DataError(
                    fd / "intrinsic" / "intrinsic_depth.txt",
                    f"not found, and {meta_path.name} has no fx_depth: no depth intrinsics for this scene",
                )
        elif self.frames == "sens":
            path = self.sens_path(scene_id)
            if not path.is_file():
                raise DataError(path, ".sens file not found (frames=sens reads the RGB-D stream from it)")

    # ------------------------------------------------------------------ loading
    def load(self, scene_id: str) -> Scene:
        """Read one scene: points, colours, alignment, GT instances and frames."""
        d = self.scene_dir(scene_id)
        notes: list[str] = []
        points, colors = read_mesh(d / f"{scene_id}{PLY_SUFFIX}")
        meta_path = d / f"{scene_id}.txt"
        meta = read_meta(meta_path)
        if not meta_path.is_file():
            notes.append(f"no meta file {meta_path.name}")
        align = parse_axis_alignment(meta, meta_path)
        if align is None:
            align = np.eye(4)
            notes.append("no axisAlignment: identity")
        instances = self._read_instances(d, scene_id, len(points), notes)
        frames, frame_notes = self._load_frames(scene_id, meta, meta_path)
        return self.make_scene(scene_id, points, colors, instances, frames, notes + frame_notes,
                               axis_align=align)

    def _read_instances(self, d: Path, scene_id: str, num_points: int, notes: list[str]) -> list[Instance]:
        if not _has_ground_truth(d, scene_id):
            return []
        labels = self.labels()  # DataError when the tsv is missing, before parsing anything big
        inverse, groups = self._ground_truth_groups(d, scene_id, num_points)
        num_segments = int(inverse.max(initial=-1)) + 1
        instances: list[Instance] = []
        left: list[str] = []
        for raw_label, object_id, pos in groups:
            label = self._label(labels, raw_label)
            if label is None:
                left.append(repr(raw_label))
                continue
            member = np.zeros(num_segments, dtype=bool)
            member[pos] = True
            point_ids = np.flatnonzero(member[inverse])
            instances.append(Instance(point_ids=point_ids, label=label, gt_object_id=object_id))
        if left:
            mode = self.label_mode
            notes.append(f"labels={mode}: left out {len(left)} instance(s) of no {mode} class: "
                         f"{_shown(left)}")
        return instances

    def _label(self, labels: LabelTable, raw_label: str) -> str | None:
        """The instance label of ``raw_label`` under ``labels=`` (None: not in that label set)."""
        if self.label_mode == "category":
            return labels.category(raw_label)
        if self.label_mode == "nyu40":
            return NYU40.get(labels.raw_to_nyu40.get(raw_label, 0))
        return SCANNET200.get(labels.raw_to_id.get(raw_label, 0))

    def _ground_truth_groups(
        self, d: Path, scene_id: str, num_points: int
    ) -> tuple[np.ndarray, list[tuple[str, int, np.ndarray]]]:
        """Parse and check the segs and aggregation of a scan (both absent: ``(empty, [])``).

        Returns ``inverse`` (N,), each vertex's index into the sorted unique segment ids, and per
        segGroup ``(raw label, objectId, indices of its segments into those unique ids)``.
        """
        if not _has_ground_truth(d, scene_id):
            return np.zeros(0, dtype=np.int64), []
        return read_object_groups(d / f"{scene_id}{SEGS_SUFFIX}", d / f"{scene_id}{AGG_SUFFIX}", num_points,
                                  f"the mesh has {num_points} vertices")

    # ------------------------------------------------------------------ frames
    def _load_frames(
        self, scene_id: str, meta: dict[str, str], meta_path: Path
    ) -> tuple[list[Frame], list[str]]:
        """The scene's frames (pose-finite or not) and notes about skipped ones."""
        if self.frames == "none":
            return [], []
        elif self.frames == "sens":
            return self._sens_frames(scene_id, meta, meta_path)
        return self._exported_frames(scene_id, meta, meta_path)

    def _sens_frames(
        self, scene_id: str, meta: dict[str, str], meta_path: Path
    ) -> tuple[list[Frame], list[str]]:
        """Frames of ``<scene>.sens``: every ``frame_stride``-th stream frame, at most ``max_frames``.

        Intrinsics are the header's depth intrinsics (at the depth resolution, which the colour is
        resized to); the file's own notes (truncation) become scene notes, warned once.
        """
        from featurizer.dataset.sens import SensFile

        self._check_frames(scene_id, meta, meta_path)
        path = self.sens_path(scene_id)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sens = SensFile(path)
        notes = [f"{path.name}: {note}" for note in sens.notes]
        for w in caught:  # anything that is not one of the file's notes is passed on untouched
            if not any(note in str(w.message) for note in sens.notes):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        k_depth = sens.intrinsic_depth[:3, :3].astype(np.float64)
        if not np.isfinite(k_depth).all() or k_depth[0, 0] <= 0 or k_depth[1, 1] <= 0:
            raise DataError(
                path, f"invalid depth intrinsics in the header (fx {k_depth[0, 0]}, fy {k_depth[1, 1]})"
            )
        note = _registration_note(sens.intrinsic_color[:3, :3], sens.color_size, k_depth, sens.depth_size)
        if note:
            notes.append(f"{path.name}: {note}")
        frames = sens.frames(stride=self.frame_stride, max_frames=self.max_frames)
        if not frames:
            notes.append(f"no frames in {path.name} ({sens.header_num_frames} in its header)")
        return frames, notes

    def _exported_frames(
        self, scene_id: str, meta: dict[str, str], meta_path: Path
    ) -> tuple[list[Frame], list[str]]:
        fd = self.frames_dir(scene_id)
        self._check_frames(scene_id, meta, meta_path)
        notes: list[str] = []
        poses = _numbered_files(fd / "pose", (".txt",), notes)
        colors = _numbered_files(fd / "color", IMAGE_EXT, notes)
        depths = _numbered_files(fd / "depth", (".png",), notes)
        incomplete = sorted(k for k in poses if k not in colors or k not in depths)
        if incomplete:
            notes.append(
                f"skipped {len(incomplete)} frame(s) with a pose but no colour or depth image: "
                f"{_shown(incomplete, 10)}"
            )
        no_pose = sorted(k for k in colors.keys() & depths.keys() if k not in poses)
        if no_pose:
            notes.append(
                f"skipped {len(no_pose)} frame(s) with images but no pose file: {_shown(no_pose, 10)}"
            )
        ks = sorted(k for k in poses if k in colors and k in depths)[:: self.frame_stride]
        if self.max_frames is not None:
            ks = ks[: self.max_frames]
        if not ks:
            notes.append(f"no exported frames in {fd}")
            return [], notes
        size = _frame_size([depths[k] for k in ks], meta)
        if size is None:
            notes.append(f"no readable depth image among the {len(ks)} exported frame(s) in {fd / 'depth'}")
            return [], notes
        k_mat = self._intrinsics(scene_id, meta, meta_path, size, notes)
        frames, bad_poses = [], []
        for k in ks:
            pose = _read_pose(poses[k])
            if pose is None:
                bad_poses.append(k)
                continue
            frames.append(
                Frame(
                    number=k,
                    pose=pose,
                    intrinsics=k_mat,
                    image_size=size,
                    depth_scale=DEPTH_SCALE,
                    color_path=colors[k],
                    depth_path=depths[k],
                )
            )
        if bad_poses:
            notes.append(
                f"skipped {len(bad_poses)} frame(s) whose pose file is not a 4x4 matrix of numbers "
                f"(empty, truncated or garbled): {_shown(bad_poses, 10)}"
            )
        return frames, notes

    def _intrinsics(
        self, scene_id: str, meta: dict[str, str], meta_path: Path, size: tuple[int, int], notes: list[str]
    ) -> np.ndarray:
        """(3, 3) depth intrinsics of this scene rescaled to the depth images' ``size`` (width, height).

        From ``intrinsic/intrinsic_depth.txt`` (4x4) when present, else from the meta's
        ``fx_depth fy_depth mx_depth my_depth``; both refer to the meta's ``depthWidth`` x
        ``depthHeight`` (the sensor's depth size), and are scaled by image size / that size.
        """
        path = self.frames_dir(scene_id) / "intrinsic" / "intrinsic_depth.txt"
        if path.is_file():
            try:
                m = np.loadtxt(path, dtype=np.float64)
            except ValueError as e:
                raise DataError(path, f"not a matrix of numbers: {e}") from None
            if m.shape not in ((4, 4), (3, 3)):
                raise DataError(path, f"expected a 4x4 (or 3x3) matrix, got shape {m.shape}")
            k = m[:3, :3].copy()
            source = path
        else:
            try:
                keys = ("fx_depth", "fy_depth", "mx_depth", "my_depth")
                fx, fy, cx, cy = (float(meta[key]) for key in keys)
            except KeyError as e:
                raise DataError(meta_path, f"no {e.args[0]} and no {path}: no depth intrinsics") from None
            except ValueError:
                raise DataError(meta_path, "fx_depth / fy_depth / mx_depth / my_depth: not numbers") from None
            k = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
            source = meta_path
        if not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
            raise DataError(source, f"invalid intrinsics (fx {k[0, 0]}, fy {k[1, 1]})")
        try:
            ref = (int(float(meta["depthWidth"])), int(float(meta["depthHeight"])))
        except (KeyError, ValueError):
            notes.append(
                f"no depthWidth/depthHeight in {meta_path.name}: "
                f"intrinsics taken as given for {size[0]}x{size[1]}"
            )
            ref = size
        return k if ref == size else scaled_intrinsics(k, size[0] / ref[0], size[1] / ref[1])
