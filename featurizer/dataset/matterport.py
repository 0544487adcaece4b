"""Matterport3D reader: region meshes with per-face labels + undistorted RGB-D frames -> Scene.

A scene is one region of one house, ``<house>_region<N>`` (OpenScene's and Pointcept's scenes; EmbodiedScan's
``matterport3d/<house>/region<N>``). Layout of a house folder (``<root>/<house>``, or the unzipped download's
``<root>/<house>/<house>``, ``<root>/scans/<house>/<house>``, ``<root>/v1/scans/<house>/<house>``)::

    region_segmentations/region<N>.ply            vertex x y z (nx ny nz tx ty) red green blue; face
                                                  vertex_indices, material_id, segment_id, category_id
    region_segmentations/region<N>.fsegs.json     segIndices: one segment id per FACE
    region_segmentations/region<N>.semseg.json    segGroups: label (raw category), segments
    undistorted_camera_parameters/<house>.conf    intrinsics_matrix lines, each followed by its scan lines
    undistorted_color_images/<pano>_i<cam>_<yaw>.jpg
    undistorted_depth_images/<pano>_d<cam>_<yaw>.png   uint16, 0.25 mm per unit (divide by 4000), z-depth
    house_segmentations/<house>.house             levels, regions, panoramas (with their region), images
    <root>/scenes_<split>.txt                     the official house lists (Matterport's tasks/benchmark/)
    <root>/metadata/category_mapping.tsv          raw_category -> category, mpcat40 (optional)

Conventions converted here:

- ``.conf`` ``scan`` lines hold a row-major camera-to-world of an OpenGL camera (looks down -z, +y up):
  the pose is that matrix times ``diag(1, -1, -1, 1)`` (OpenCV axes). Each scan takes the latest
  ``intrinsics_matrix`` line above it. K is used as stored, on images read top row first (as OpenScene and
  MaskClustering do; the docs' "origin at the bottom-left" would mean ``cy' = H - 1 - cy``, which the
  released data does not need by those loaders' results).
- Depth is ``png / 4000`` metres; colour and depth are both 1280x1024, so K holds for both.
- Labels are per face: a face's instance is the first segGroup listing its segment (``fsegs`` then
  ``semseg``); each vertex takes the instance most of its faces have (faces in no group count as
  "unannotated"). Ties go to an instance over unannotated, then to the lowest segGroup index.
- Points are the region mesh's vertices in the house's frame (the frame of the poses); the house frame
  has z up, so ``axis_align`` is the identity.
- A region's frames are the scans of the panoramas the house's ``house_segmentations/<house>.house`` file puts
  in that region (``P`` lines: panorama -> region; ``I`` lines: image -> panorama; :func:`read_house`), where
  ``region<N>`` of ``region_segmentations`` is the ``.house`` file's region N (its N-th ``R`` line; the
  numbering both folders share, which data_organization.md does not state in words). Without a ``.house``
  file: the scans whose camera centre lies in the region mesh's xy box grown by ``frame_margin`` metres (a
  heuristic, noted: near a doorway it takes the next room's cameras). Frame numbers are the scans' positions
  in the ``.conf``.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np

from featurizer.dataset.base import SceneReader
from featurizer.dataset.scannet import (REQUIRED_VERTEX_PROPS, _frame_size, _shown, read_ply_header,
                                        read_seg_groups)
from featurizer.errors import ConfigError, DataError
from featurizer.files import read_json
from featurizer.scene import Frame, Instance, Scene

DEPTH_SCALE = 4000.0  # undistorted depth pngs: 0.25 mm per unit
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])  # right-multiplied: OpenGL camera axes -> OpenCV camera axes
REGIONS = "region_segmentations"
CONF_DIR = "undistorted_camera_parameters"
HOUSE_DIR = "house_segmentations"
HOUSE_COUNTS = ("images", "panoramas", "vertices", "surfaces", "segments", "objects", "categories", "regions",
                "portals", "levels")  # the H line's counts, in order
FIELDS = {"H": 29, "R": 20, "panorama": 13, "I": 41}  # words per line (the letter included)
TSV = Path("metadata") / "category_mapping.tsv"
SCENE_RE = re.compile(r"(.+)_region(\d+)")


def scene_id_of(house: str, region: int) -> str:
    return f"{house}_region{region}"


def parse_scene_id(scene_id: str) -> tuple[str, int]:
    m = SCENE_RE.fullmatch(scene_id)
    if m is None:
        raise ConfigError("dataset.scenes", f"{scene_id!r} is not <house>_region<N>")
    return m.group(1), int(m.group(2))


def read_conf(path: Path) -> tuple[dict[str, str], list[tuple[str, str, np.ndarray, np.ndarray]]]:
    """The ``.conf`` file: its keyword lines (``depth_directory``, ``n_images``, ...) and per ``scan`` line
    (depth file, colour file, K (3, 3), camera-to-world (4, 4) as stored, OpenGL axes).

    DataError naming the file and line: missing file, a scan before any intrinsics, a line that is not
    9 / 16 numbers, or ``n_images`` not the number of scan lines. Non-finite poses are kept (noted later).
    """
    if not path.is_file():
        raise DataError(path, "camera parameters file not found (undistorted_camera_parameters)")
    keys: dict[str, str] = {}
    scans = []
    k = None
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "intrinsics_matrix":
                if len(words) != 10:
                    raise ValueError
                k = np.array([float(x) for x in words[1:]], dtype=np.float64).reshape(3, 3)
                if not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
                    raise DataError(path, f"line {n}: invalid intrinsics {' '.join(words[1:])}")
            elif words[0] == "scan":
                if len(words) != 19:
                    raise ValueError
                if k is None:
                    raise DataError(path, f"line {n}: scan line before any intrinsics_matrix line")
                pose = np.array([float(x) for x in words[3:]], dtype=np.float64).reshape(4, 4)
                scans.append((words[1], words[2], k, pose))
            else:
                keys[words[0]] = " ".join(words[1:])
        except ValueError:
            what = "9 numbers" if words[0] == "intrinsics_matrix" else "2 file names and 16 numbers"
            raise DataError(path, f"line {n}: '{words[0]}' needs {what}: {line.strip()[:80]!r}") from None
    if "n_images" in keys and keys["n_images"] != str(len(scans)):
        raise DataError(path, f"n_images is {keys['n_images']} but the file has {len(scans)} scan lines")
    return keys, scans


def read_house(path: Path) -> dict[str, int]:
    """The region of every image a ``.house`` file lists: depth image name (``<pano>_d<cam>_<yaw>.png``,
    as the ``.conf`` names it) -> region index (-1: its panorama is in no region).

    Format (niessner/Matterport ``data_organization.md``, "house_segmentations", and the parser it ships,
    ``code/gaps/apps/mpview/mp.cpp`` ``MPHouse::ReadAsciiFile``): a first line ``ASCII 1.1``, then ``H name
    label #images #panoramas #vertices #surfaces #segments #objects #categories #regions #portals #levels
    0 0 0 0 0 xlo ylo zlo xhi yhi zhi 0 0 0 0 0``, then the L, R, P (portal), S, V, P (panorama), I, C, O, E
    lines in that order. Portals and panoramas share the letter P: as mp.cpp reads them, the first #portals
    P lines are portals. ``P name panorama_index region_index 0 px py pz 0 0 0 0 0`` is a panorama; ``I
    image_index panorama_index name camera_index yaw_index e00 .. e33 i00 .. i22 width height px py pz 0 0 0 0
    0`` an image, whose files are ``<name>_d<camera_index>_<yaw_index>.png`` and ``<name>_i<camera_index>_
    <yaw_index>.jpg``. A panorama index is the panorama's position among the panorama lines (mp.cpp's
    ``panoramas.Kth``).

    DataError naming the file (and the line): no ``ASCII`` + ``H`` start, an H, R, panorama or I line with the
    wrong number of fields or a non-integer index, a panorama in a region the H line does not count, an image
    of an unknown panorama, H counts of regions / panoramas / images that disagree with the lines.
    """
    if not path.is_file():
        raise DataError(path, f"not found ({HOUSE_DIR})")
    lines = [(n, line.split()) for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)]
    lines = [(n, w) for n, w in lines if w]
    if len(lines) < 2 or lines[0][1][0] != "ASCII" or lines[1][1][0] != "H":
        raise DataError(path, "not a .house file: it must begin with an 'ASCII 1.1' line and the 'H' line")
    found = dict.fromkeys(("regions", "panoramas", "images"), 0)
    total: dict[str, int] = {}
    panorama_region: list[int] = []
    region_of: dict[str, int] = {}
    portals = 0
    for n, w in lines[1:]:
        kind = w[0]
        if kind == "P":
            if portals < total.get("portals", 0):  # the first #portals P lines are portals
                portals += 1
                continue
            kind = "panorama"
        if kind not in FIELDS:
            continue
        if len(w) != FIELDS[kind]:
            what = f"'{w[0]}'" + (" (panorama)" if kind == "panorama" else "")
            raise DataError(path, f"line {n}: a {what} line has {FIELDS[kind]} fields, this one {len(w)}: "
                                  f"{' '.join(w)[:80]!r}")
        try:
            if kind == "H":
                total = dict(zip(HOUSE_COUNTS, (int(x) for x in w[3:13])))
            elif kind == "R":
                found["regions"] += 1
            elif kind == "panorama":
                region = int(w[3])
                if not -1 <= region < total["regions"]:
                    raise DataError(path, f"line {n}: panorama {w[1]} is in region {region}, but the H line "
                                          f"counts {total['regions']} regions")
                panorama_region.append(region)
                found["panoramas"] += 1
            else:  # I
                pano, cam, yaw = int(w[2]), int(w[4]), int(w[5])
                if not -1 <= pano < len(panorama_region):
                    raise DataError(path, f"line {n}: image {w[1]} ({w[3]}) is of panorama {pano}, but the "
                                          f"file has {len(panorama_region)} panorama line(s) before it")
                region_of[f"{w[3]}_d{cam}_{yaw}.png"] = panorama_region[pano] if pano >= 0 else -1
                found["images"] += 1
        except ValueError:
            raise DataError(path, f"line {n}: '{w[0]}' line with a non-integer count or index: "
                                  f"{' '.join(w)[:80]!r}") from None
    for what, number in found.items():
        if number != total[what]:
            raise DataError(path, f"the H line counts {total[what]} {what}, the file has {number}")
    return region_of


def read_category_tsv(path: Path, column: str) -> dict[str, str]:
    """raw_category -> ``column`` of Matterport's ``category_mapping.tsv``; DataError when unparsable."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    names = [h.strip() for h in rows[0]] if rows else []
    if "raw_category" not in names or column not in names:
        raise DataError(path, f"header must name raw_category and {column}; got {names[:6]}")
    i_raw, i_col = names.index("raw_category"), names.index(column)
    return {r[i_raw].strip(): r[i_col].strip() for r in rows[1:] if len(r) > max(i_raw, i_col)}


def faces_to_vertices(faces: np.ndarray, face_label: np.ndarray, num_vertices: int) -> np.ndarray:
    """(V,) int64 label per vertex, the label most of its incident faces carry (-1: none, unannotated).

    faces (F, 3), face_label (F,) with -1 for unannotated faces. Ties: any label beats -1, then the
    lowest label wins. Vertices in no face get -1.
    """
    big = int(face_label.max(initial=-1)) + 1  # unannotated sorts after every label
    lab = np.repeat(np.where(face_label < 0, big, face_label), faces.shape[1])
    pairs, counts = np.unique(faces.reshape(-1).astype(np.int64) * (big + 1) + lab, return_counts=True)
    vert, label = pairs // (big + 1), pairs % (big + 1)
    order = np.lexsort((label, -counts, vert))
    vert, label = vert[order], label[order]
    first = np.r_[True, vert[1:] != vert[:-1]]
    out = np.full(num_vertices, -1, dtype=np.int64)
    out[vert[first]] = np.where(label[first] == big, -1, label[first])
    return out



class MatterportReader(SceneReader):
    """Reads Matterport3D regions (``<house>_region<N>``) into :class:`featurizer.scene.Scene`.

    root: the folder of house folders (see the module docstring for the layouts found).
    splits: splits of the run; each reads ``<split_dir>/scenes_<split>.txt`` (one house per line), and its
        scenes are every region of those houses (``region_segmentations/region<N>.ply``), in file order.
    scenes: explicit scene ids ``<house>_region<N>`` (win over the split files).
    split_dir: folder of the split files (default ``root``).
    category_tsv: Matterport's ``category_mapping.tsv`` (default ``<root>/metadata/category_mapping.tsv``);
        without it an instance's label is its raw label.
    label_column: the tsv column an instance's label comes from (``mpcat40``, ``category``, ``nyu40class``).
    frames: ``undistorted`` (the undistorted colour/depth images and the ``.conf``) or ``none``.
    frame_margin: without the house's ``.house`` file, the metres around the region's xy box where a frame's
        camera centre must lie (a heuristic; with the file, its panorama -> region assignment is used).
    frame_stride, max_frames: keep every k-th frame of the region, at most this many.
    """

    name = "matterport"
    title, split_unit = "Matterport3D", "houses"

    def __init__(self, root: str, splits: list[str] | str = ("val",), scenes: list[str] | None = None,
                 split_dir: str | None = None, category_tsv: str | None = None, label_column: str = "mpcat40",
                 frames: str = "undistorted", frame_margin: float = 0.5, frame_stride: int = 1,
                 max_frames: int | None = None):
        super().__init__()
        self.root = self.check_options(root, "Matterport3D", frames, ("undistorted", "none"), frame_stride,
                                       max_frames)
        self.split_dir = Path(split_dir) if split_dir is not None else self.root
        self.category_tsv = Path(category_tsv) if category_tsv is not None else self.root / TSV
        self.label_column = label_column
        self.frames, self.frame_margin = frames, float(frame_margin)
        self.frame_stride = int(frame_stride)
        self.max_frames = None if max_frames is None else int(max_frames)
        self.splits = self.split_names(splits)
        if isinstance(scenes, str):
            scenes = scenes.replace(",", " ").split()
        self._labels: dict[str, str] | None = None
        self._split_of = self._assign_splits(None if scenes is None else [str(s) for s in scenes])
        self.scene_ids = list(self._split_of)

    # ------------------------------------------------------------------ splits and paths
    def split_file(self, split: str) -> Path:
        return self.split_dir / f"scenes_{split}.txt"

    def _assign_splits(self, scenes: list[str] | None) -> dict[str, str]:
        house_split = self.listed_splits(required=scenes is None)  # the split files list houses
        if scenes is not None:
            return {s: house_split.get(parse_scene_id(s)[0], self.splits[0]) for s in scenes}
        out = {}
        for house, split in house_split.items():
            for region in self.regions(house):
                out[scene_id_of(house, region)] = split
        return out

    def house_dir(self, house: str) -> Path:
        """The house folder: the first of the layouts above that holds ``region_segmentations``."""
        for d in (self.root / house, self.root / house / house, self.root / "scans" / house / house,
                  self.root / "v1" / "scans" / house / house):
            if (d / REGIONS).is_dir():
                return d
        raise DataError(self.root / house / REGIONS,
                        "house folder not found (no region_segmentations/ in <root>/<house>[/<house>] "
                        "or <root>[/v1]/scans/<house>/<house>)")

    def regions(self, house: str) -> list[int]:
        """The region numbers of ``house`` (its ``region<N>.ply`` files), sorted."""
        d = self.house_dir(house) / REGIONS
        matches = (re.fullmatch(r"region(\d+)\.ply", e.name) for e in os.scandir(d))
        found = sorted(int(m.group(1)) for m in matches if m)
        if not found:
            raise DataError(d, "no region<N>.ply files")
        return found

    def region_path(self, scene_id: str, suffix: str) -> Path:
        house, region = parse_scene_id(scene_id)
        return self.house_dir(house) / REGIONS / f"region{region}{suffix}"

    def conf_path(self, house: str) -> Path:
        return self.house_dir(house) / CONF_DIR / f"{house}.conf"

    def house_path(self, house: str) -> Path:
        return self.house_dir(house) / HOUSE_DIR / f"{house}.house"

    def labels(self) -> dict[str, str] | None:
        if self._labels is None and self.category_tsv.is_file():
            self._labels = read_category_tsv(self.category_tsv, self.label_column)
        return self._labels

    def input_files(self, scene_id: str, frames: bool = True) -> list[Path]:
        """Region ply, fsegs, semseg, the category tsv (those present); with ``frames`` the ``.conf``, the
        ``.house`` (when present) and every image the ``.conf`` names (the house's: a superset of the
        region's)."""
        files = [self.region_path(scene_id, s) for s in (".ply", ".fsegs.json", ".semseg.json")]
        files = [p for p in files + [self.category_tsv] if p.is_file() or p.suffix == ".ply"]
        if frames and self.frames != "none":
            house = parse_scene_id(scene_id)[0]
            conf = self.conf_path(house)
            files += [conf] + [p for p in (self.house_path(house),) if p.is_file()]
            if conf.is_file():
                keys, scans = read_conf(conf)
                dd, cd = self._image_dirs(house, keys)
                files += [p for s in scans for p in (dd / s[0], cd / s[1])]
        return files

    def _image_dirs(self, house: str, keys: dict[str, str]) -> tuple[Path, Path]:
        d = self.house_dir(house)
        return (d / keys.get("depth_directory", "undistorted_depth_images"),
                d / keys.get("color_directory", "undistorted_color_images"))

    def gt_object_count(self, scene_id: str) -> int:
        path = self.region_path(scene_id, ".semseg.json")
        if not path.is_file():
            return 0
        groups = read_json(path).get("segGroups")
        return len(groups) if isinstance(groups, list) else 0

    def scene_cost(self, scene_id: str) -> float:
        """Thousands of region vertices plus the house's scan lines over its region count."""
        counts, _, _ = read_ply_header(self.region_path(scene_id, ".ply"))
        house = parse_scene_id(scene_id)[0]
        frames = 0
        if self.frames != "none" and self.conf_path(house).is_file():
            text = self.conf_path(house).read_bytes()
            frames = text.count(b"\nscan ") // max(len(self.regions(house)), 1) // self.frame_stride
        return counts.get("vertex", 0) / 1000.0 + frames

    # ------------------------------------------------------------------ checks
    def check_global(self) -> None:
        if self.category_tsv.is_file():
            self.labels()

    def check_scene(self, scene_id: str) -> int:
        """The region ply header (vertex and face elements, colours), fsegs length = faces, semseg
        segments present in fsegs, and the house's ``.conf`` and ``.house`` (parsed) and the images the
        ``.conf`` names (listed)."""
        ply = self.region_path(scene_id, ".ply")
        counts, props, _ = read_ply_header(ply)
        missing = [p for p in REQUIRED_VERTEX_PROPS if p not in props]
        if "vertex" not in counts or "face" not in counts or missing:
            raise DataError(ply, f"region ply needs vertex (x y z red green blue) and face elements; "
                                 f"has {list(counts)}, vertex properties {props}")
        self._face_groups(scene_id, counts["face"])
        if self.frames != "none":
            house = parse_scene_id(scene_id)[0]
            keys, scans = read_conf(self.conf_path(house))
            if self.house_path(house).is_file():
                read_house(self.house_path(house))
            listed = ([s[0] for s in scans], [s[1] for s in scans])
            for folder, names in zip(self._image_dirs(house, keys), listed):
                if not folder.is_dir():
                    raise DataError(folder, f"image folder not found ({self.conf_path(house).name} names it)")
                present = {e.name for e in os.scandir(folder)}
                absent = [n for n in names if n not in present]
                if absent:
                    conf = self.conf_path(house).name
                    raise DataError(folder / absent[0], f"not found; {len(absent)} of the {len(names)} "
                                                        f"images {conf} names are missing")
        return counts["vertex"]

    # ------------------------------------------------------------------ loading
    def _face_groups(self, scene_id: str, num_faces: int) -> tuple[np.ndarray, list[str], int]:
        """(F,) segGroup index per face (-1: in none), the groups' raw labels, and how many segments
        several groups name (each face keeps the first). ``(all -1, [], 0)`` without fsegs and semseg."""
        fsegs, semseg = self.region_path(scene_id, ".fsegs.json"), self.region_path(scene_id, ".semseg.json")
        if not fsegs.is_file() and not semseg.is_file():
            return np.full(num_faces, -1, dtype=np.int64), [], 0
        for a, b in ((fsegs, semseg), (semseg, fsegs)):
            if not a.is_file():
                raise DataError(a, f"not found, but {b.name} is: ground truth needs both")
        uniq, inverse, groups = read_seg_groups(fsegs, semseg, num_faces,
                                                f"the region mesh has {num_faces} faces")
        owner = np.full(len(uniq), -1, dtype=np.int64)
        labels, shared = [], 0
        for i, g in enumerate(groups):
            try:
                labels.append(str(g["label"]))
                wanted = np.unique(np.asarray(g["segments"], dtype=np.int64).reshape(-1))
            except (KeyError, TypeError, ValueError):
                raise DataError(semseg, f"segGroups[{i}] lacks a label or integer segments") from None
            pos = np.minimum(np.searchsorted(uniq, wanted), max(len(uniq) - 1, 0))
            found = uniq[pos] == wanted if len(uniq) else np.zeros(len(wanted), bool)
            if not found.all():
                raise DataError(semseg, f"segGroups[{i}] ('{labels[-1]}') names segment(s) absent from "
                                        f"{fsegs.name}: {_shown(wanted[~found].tolist())}")
            shared += int((owner[pos] >= 0).sum())
            owner[pos] = np.where(owner[pos] >= 0, owner[pos], i)
        return owner[inverse.reshape(-1)], labels, shared

    def load(self, scene_id: str) -> Scene:
        from plyfile import PlyData

        ply = self.region_path(scene_id, ".ply")
        read_ply_header(ply)
        try:
            data = PlyData.read(str(ply))
            v, f = data["vertex"].data, data["face"].data
            faces = np.stack(f["vertex_indices"]).astype(np.int64).reshape(-1, 3)
        except Exception as e:  # plyfile raises several types; ragged faces fail the stack / reshape
            raise DataError(ply, f"unreadable region ply (vertex and triangle faces needed): {e}") from None
        missing = [p for p in REQUIRED_VERTEX_PROPS if p not in (v.dtype.names or ())]
        if missing:
            raise DataError(ply, f"ply vertex element lacks properties {', '.join(missing)}")
        points = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float32)
        colors = np.clip(np.stack([v["red"], v["green"], v["blue"]], axis=1), 0, 255).astype(np.uint8)
        notes = []
        face_group, raw_labels, shared = self._face_groups(scene_id, len(faces))
        if shared:
            notes.append(f"{shared} segment(s) named by several segGroups: each face keeps the first group")
        vertex_group = faces_to_vertices(faces, face_group, len(points))
        table = self.labels()
        if table is None and raw_labels:
            notes.append(f"no {self.category_tsv}: instance labels are the raw labels")
        instances = [Instance(point_ids=np.flatnonzero(vertex_group == i),
                              label=(table or {}).get(raw, raw) or raw, gt_object_id=i)
                     for i, raw in enumerate(raw_labels)]
        frames = self._frames(scene_id, points, notes) if self.frames != "none" else []
        return self.make_scene(scene_id, points, colors, instances, frames, notes)

    def _frames(self, scene_id: str, points: np.ndarray, notes: list[str]) -> list[Frame]:
        house, region = parse_scene_id(scene_id)
        conf = self.conf_path(house)
        keys, scans = read_conf(conf)
        depth_dir, color_dir = self._image_dirs(house, keys)
        in_region = self._region_test(house, region, points, [s[0] for s in scans], notes)
        chosen, incomplete = [], []
        for n, (depth_name, color_name, k, c2w_gl) in enumerate(scans):
            if not in_region(depth_name, c2w_gl[:2, 3]):
                continue
            if not (depth_dir / depth_name).is_file() or not (color_dir / color_name).is_file():
                incomplete.append(n)
                continue
            chosen.append((n, depth_dir / depth_name, color_dir / color_name, k, c2w_gl @ GL_TO_CV))
        if incomplete:
            notes.append(f"skipped {len(incomplete)} scan(s) of {conf.name} with a missing image: "
                         f"{_shown(incomplete, 10)}")
        chosen = chosen[:: self.frame_stride][: self.max_frames]
        if not chosen:
            notes.append(f"no frames of {conf.name} have their camera in this region")
            return []
        size = _frame_size([c[1] for c in chosen], {})
        if size is None:
            notes.append(f"no readable depth image among the region's {len(chosen)} frame(s)")
            return []
        return [Frame(number=n, pose=pose, intrinsics=k, image_size=size, depth_scale=DEPTH_SCALE,
                      color_path=cp, depth_path=dp) for n, dp, cp, k, pose in chosen]

    def _region_test(self, house: str, region: int, points: np.ndarray, depth_names: list[str],
                     notes: list[str]):
        """``test(depth image name, camera centre xy) -> bool``: is the scan in ``region``? By the ``.house``
        file's panorama -> region assignment, or (without the file, noted) by the ``frame_margin`` box."""
        path = self.house_path(house)
        if path.is_file():
            region_of = read_house(path)
            unlisted = [n for n, name in enumerate(depth_names) if name not in region_of]
            if unlisted:
                notes.append(f"{len(unlisted)} scan(s) of the .conf have no image line in {path.name} (in "
                             f"no region): {_shown(unlisted, 10)}")
            return lambda name, centre: region_of.get(name) == region
        notes.append(f"no {HOUSE_DIR}/{path.name}: the region's frames are the house's cameras within "
                     f"{self.frame_margin} m of its xy box (a heuristic)")
        lo, hi = points[:, :2].min(0) - self.frame_margin, points[:, :2].max(0) + self.frame_margin
        # a non-finite camera is kept here and dropped, noted, with the other non-finite poses
        return lambda name, c: not np.isfinite(c).all() or bool(((lo <= c) & (c <= hi)).all())
