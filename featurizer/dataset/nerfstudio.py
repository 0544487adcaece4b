"""nerfstudio reader: captures in nerfstudio's ``transforms.json`` format (Record3D, Polycam, COLMAP via
``ns-process-data``) with a point cloud or mesh -> Scene.

Layout (facts: ``reference/datasets.md`` section 5)::

    <capture>/transforms.json     fl_x fl_y cx cy w h [camera_model k1..k4 p1 p2] at the top level and/or
                                  per frame (a frame's keys win); frames[]: file_path, transform_matrix
                                  (camera-to-world, OpenGL camera axes), depth_file_path; optional
                                  depth_unit_scale_factor (default 1e-3: millimetres), ply_file_path,
                                  applied_transform (3x4: original data frame -> this file's frame)
    <capture>/<file_path>         colour images
    <capture>/<depth_file_path>   depth: 16-bit PNGs or ``.npy`` arrays (raw value * depth_unit_scale_factor
                                  = metres; nerfstudio ``data/utils/data_utils.py`` get_depth_image_from_path)
    <capture>/<ply_file_path>     the point cloud or mesh (vertices x y z [red green blue])
    <capture>/instances.npz       optional ground-truth instances (the ``instance_npz`` format)

``root`` is one capture (``<root>/transforms.json`` exists: one scene named after the folder) or a folder
of captures (each sub-folder holding a ``transforms.json`` is a scene, named after the sub-folder, in
sorted order). nerfstudio has no scene split files: every scene is in the one split of ``splits`` (default
``[val]``).

Conventions converted here: OpenGL camera axes -> OpenCV (c2w columns 1 and 2 negated); nerfstudio's
pixel centres at ``u + 0.5`` (COLMAP's) -> featurizer's at ``u`` (cx, cy - 0.5); intrinsics given at the
colour size ``w x h`` rescaled to the depth images' size (colour is resized to it, as for ScanNet);
depth scale = 1 / depth_unit_scale_factor; frames whose camera has distortion coefficients (``OPENCV``,
``RADIAL``, ``SIMPLE_RADIAL``, any perspective model with non-zero ``k1..k4 p1 p2``) or is
``OPENCV_FISHEYE`` are read as stored and resampled onto the pinhole grid of their ``fx fy cx cy``
(:mod:`featurizer.dataset.undistort`), so the frame's intrinsics hold for the pixels the stages see
(``EQUIRECTANGULAR`` and ``FISHEYE624`` are refused). Points are in the frame of the poses (the file's frame;
``ply_frame=original`` moves a cloud in the original data frame by ``applied_transform``). The world
is +Z up by nerfstudio's convention, so ``axis_align`` is the identity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featurizer.dataset.base import SceneReader
from featurizer.dataset.scannet import _frame_size, _shown, read_ply_header
from featurizer.dataset.undistort import FISHEYE, RADTAN, Undistortion
from featurizer.errors import ConfigError, DataError
from featurizer.files import read_json
from featurizer.scene import Frame, Instance, Scene

TRANSFORMS = "transforms.json"
DEFAULT_DEPTH_UNIT = 1e-3  # nerfstudio's default depth_unit_scale_factor (depth PNGs in millimetres)
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
PIXEL_OFFSET = 0.5  # nerfstudio (and COLMAP) put pixel u's centre at image coordinate u + 0.5
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")  # the order of Undistortion.coeffs
NOT_PINHOLE = ("EQUIRECTANGULAR", "FISHEYE624")  # no pinhole grid holds them: refused
FISHEYE_MODELS = ("OPENCV_FISHEYE",)  # equidistant; every other model: radial-tangential
PLY_FRAMES = ("transforms", "original")


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """(4, 4) camera-to-world with OpenCV camera axes from one with OpenGL axes (negate columns 1, 2)."""
    return np.asarray(c2w, dtype=np.float64) @ OPENGL_TO_OPENCV


class NerfstudioReader(SceneReader):
    """Reads nerfstudio captures (``transforms.json`` + point cloud or mesh) into Scenes.

    root: one capture folder, or a folder of capture folders (see the module docstring).
    splits: ``[<split>]``, the one split every scene is in (nerfstudio has no split files); a list, as
        every reader's. The old option ``split`` is refused with a ConfigError naming its replacement.
    scenes: explicit scene ids (capture folder names) to read; default all captures under ``root``.
    ply: the point cloud or mesh, relative to the capture folder (or absolute); default the file's
        ``ply_file_path``.
    ply_frame: ``transforms`` (the cloud is in the frame of transforms.json, as ``ns-process-data``
        writes ``ply_file_path``) or ``original`` (in the original data frame, e.g. a COLMAP
        reconstruction: moved into the file's frame by its ``applied_transform``).
    instances: ground-truth instances file relative to the capture folder (``instance_npz`` format:
        ``instance_ids`` or ``point_ids`` + ``offsets``, and ``labels``); absent: no GT instances.
    frame_stride, max_frames: keep every k-th frame of ``frames[]``, at most ``max_frames``.
    """

    name = "nerfstudio"

    def __init__(
        self,
        root: str,
        splits: list[str] | str = ("val",),
        scenes: list[str] | str | None = None,
        ply: str | None = None,
        ply_frame: str = "transforms",
        instances: str = "instances.npz",
        frame_stride: int = 1,
        max_frames: int | None = None,
        split: str | None = None,
    ):
        super().__init__()
        if split is not None:
            raise ConfigError("dataset.split", f"renamed: pass dataset.splits=[{split}] (a list, as every "
                                               f"reader takes)")
        self.root = self.check_options(root, "capture", frame_stride=frame_stride, max_frames=max_frames)
        if ply_frame not in PLY_FRAMES:
            choices = ", ".join(PLY_FRAMES)
            raise ConfigError("dataset.ply_frame", f"unknown {ply_frame!r}; choose one of {choices}")
        self.splits = self.split_names(splits)
        if len(self.splits) != 1:
            raise ConfigError("dataset.splits", f"nerfstudio has no split files: every capture is in one "
                                                f"split; give one, not {self.splits}")
        self.ply, self.ply_frame, self.instances = ply, ply_frame, instances
        self.frame_stride = int(frame_stride)
        self.max_frames = None if max_frames is None else int(max_frames)
        if isinstance(scenes, str):
            scenes = scenes.replace(",", " ").split()
        self._dirs = self._captures()
        if scenes is not None:
            unknown = [s for s in scenes if str(s) not in self._dirs]
            if unknown:
                raise DataError(self.root, f"no capture (folder with {TRANSFORMS}) named {_shown(unknown)}")
            self._dirs = {str(s): self._dirs[str(s)] for s in scenes}
        self.scene_ids = list(self._dirs)

    def _captures(self) -> dict[str, Path]:
        """Scene id -> capture folder: ``root`` itself when it holds transforms.json, else its sub-folders
        that hold one (sorted)."""
        if (self.root / TRANSFORMS).is_file():
            return {self.root.resolve().name: self.root}
        if not self.root.is_dir():
            raise DataError(self.root, "capture folder not found (dataset.root)")
        dirs = {d.name: d for d in sorted(self.root.iterdir()) if (d / TRANSFORMS).is_file()}
        if not dirs:
            raise DataError(self.root / TRANSFORMS, f"not found, nor in any sub-folder of {self.root}")
        return dirs

    def split_of(self, scene_id: str) -> str:
        if scene_id not in self._dirs:
            raise ConfigError("dataset.scenes", f"{scene_id} is not a scene of this run")
        return self.splits[0]

    def capture_dir(self, scene_id: str) -> Path:
        self.split_of(scene_id)
        return self._dirs[scene_id]

    # ------------------------------------------------------------------ transforms.json
    def _meta(self, scene_id: str) -> tuple[Path, dict]:
        path = self.capture_dir(scene_id) / TRANSFORMS
        meta = read_json(path, "not found")
        if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
            raise DataError(path, "no 'frames' list")
        return path, meta

    def _ply_path(self, scene_id: str, meta: dict, path: Path) -> Path:
        name = self.ply if self.ply is not None else meta.get("ply_file_path")
        if not name:
            raise DataError(path, "no ply_file_path and no dataset.ply: a point cloud or mesh is needed")
        return self.capture_dir(scene_id) / str(name)

    def _applied(self, meta: dict, path: Path) -> np.ndarray:
        """(4, 4) ``applied_transform`` (original data frame -> the file's frame)."""
        if "applied_transform" not in meta:
            raise DataError(path, "no applied_transform, but dataset.ply_frame=original needs it")
        try:
            m = np.asarray(meta["applied_transform"], dtype=np.float64)
        except (TypeError, ValueError):
            m = np.zeros(0)
        if m.shape not in ((3, 4), (4, 4)) or not np.isfinite(m).all():
            raise DataError(path, "applied_transform is not a finite 3x4 (or 4x4) matrix")
        out = np.eye(4)
        out[:3] = m[:3]
        return out

    def _frame_entries(self, meta: dict, path: Path, d: Path) -> list[tuple[int, dict, np.ndarray]]:
        """(number, merged camera keys, OpenGL c2w) of every kept frame; DataError on a bad entry."""
        rows = []
        for i, fr in enumerate(meta["frames"]):
            if not isinstance(fr, dict) or "file_path" not in fr:
                raise DataError(path, f"frames[{i}] has no file_path")
            try:
                m = np.asarray(fr["transform_matrix"], dtype=np.float64)
            except (KeyError, TypeError, ValueError):
                m = np.zeros(0)
            if m.shape not in ((3, 4), (4, 4)):
                raise DataError(path, f"frames[{i}] ({fr['file_path']}): transform_matrix is not a 4x4 "
                                      f"(or 3x4) matrix of numbers")
            c2w = np.eye(4)
            c2w[:3] = m[:3]
            cam = {k: meta[k] for k in (*INTRINSIC_KEYS, *DISTORTION_KEYS, "camera_model") if k in meta}
            cam.update({k: fr[k] for k in (*INTRINSIC_KEYS, *DISTORTION_KEYS, "camera_model") if k in fr})
            missing = [k for k in INTRINSIC_KEYS[:4] if k not in cam]
            if missing:
                raise DataError(path, f"frames[{i}] ({fr['file_path']}): no {', '.join(missing)} "
                                      f"(neither per frame nor at the top level)")
            try:
                for k in (*INTRINSIC_KEYS, *DISTORTION_KEYS):
                    if k in cam:
                        cam[k] = float(cam[k])
            except (TypeError, ValueError):
                raise DataError(path, f"frames[{i}] ({fr['file_path']}): intrinsics not numbers") from None
            if str(cam.get("camera_model", "PINHOLE")).upper() in NOT_PINHOLE:
                raise DataError(path, f"camera_model {cam['camera_model']} has no pinhole grid to resample "
                                      f"onto: convert the frames to a perspective camera first")
            cam["file_path"] = d / str(fr["file_path"])
            cam["depth"] = d / str(fr["depth_file_path"]) if fr.get("depth_file_path") else None
            rows.append((i, cam, c2w))
        rows = rows[:: self.frame_stride]
        return rows if self.max_frames is None else rows[: self.max_frames]

    # ------------------------------------------------------------------ contract
    def input_files(self, scene_id: str, frames: bool = True) -> list[Path]:
        path, meta = self._meta(scene_id)
        d = self.capture_dir(scene_id)
        files = [path, self._ply_path(scene_id, meta, path)]
        if (d / self.instances).is_file():
            files.append(d / self.instances)
        if frames:
            for _, cam, _ in self._frame_entries(meta, path, d):
                files += [p for p in (cam["file_path"], cam["depth"]) if p is not None and p.is_file()]
        return files

    def gt_object_count(self, scene_id: str) -> int:
        path = self.capture_dir(scene_id) / self.instances
        if not path.is_file():
            return 0
        try:
            with np.load(path, allow_pickle=False) as npz:
                return len(npz["labels"])
        except Exception as e:  # np.load raises several types for a bad file
            raise DataError(path, f"not a readable .npz with a 'labels' array: {e}") from None

    def scene_cost(self, scene_id: str) -> float:
        """Thousands of points (ply header) plus the kept frames."""
        path, meta = self._meta(scene_id)
        counts, _, _ = read_ply_header(self._ply_path(scene_id, meta, path))
        n = len(meta["frames"][:: self.frame_stride])
        return counts.get("vertex", 0) / 1000.0 + (n if self.max_frames is None else min(n, self.max_frames))

    def check_scene(self, scene_id: str) -> int:
        """transforms.json parsed as :meth:`load` parses it (poses, intrinsics), the ply header, the GT
        instances file, and every kept frame's colour and depth file present; returns the point count."""
        path, meta = self._meta(scene_id)
        d = self.capture_dir(scene_id)
        ply = self._ply_path(scene_id, meta, path)
        counts, props, _ = read_ply_header(ply)
        if not counts.get("vertex") or not {"x", "y", "z"} <= set(props):
            raise DataError(ply, "ply has no vertices with x, y, z")
        if self.ply_frame == "original":
            self._applied(meta, path)
        self._depth_unit(meta, path)
        entries = self._frame_entries(meta, path, d)
        for _, cam, _ in entries:
            for p in (cam["file_path"], cam["depth"]):
                if p is not None and not p.is_file():
                    raise DataError(p, f"not found (named by {path.name})")
        if (d / self.instances).is_file():
            self._read_instances(d / self.instances, counts["vertex"])
        return counts["vertex"]

    @staticmethod
    def _depth_unit(meta: dict, path: Path) -> float:
        try:
            unit = float(meta.get("depth_unit_scale_factor", DEFAULT_DEPTH_UNIT))
        except (TypeError, ValueError):
            unit = float("nan")
        if not np.isfinite(unit) or unit <= 0:
            raise DataError(path, f"depth_unit_scale_factor must be a positive number, got "
                                  f"{meta.get('depth_unit_scale_factor')!r}")
        return unit

    @staticmethod
    def _read_instances(path: Path, num_points: int) -> list[Instance]:
        from featurizer.segmenter.instance_npz import read_instance_npz

        return [Instance(point_ids=inst.point_ids, label=inst.label, gt_object_id=i)
                for i, inst in enumerate(read_instance_npz(path, num_points))]

    # ------------------------------------------------------------------ loading
    def load(self, scene_id: str) -> Scene:
        path, meta = self._meta(scene_id)
        d = self.capture_dir(scene_id)
        points, colors, notes = self._read_points(self._ply_path(scene_id, meta, path))
        if self.ply_frame == "original":
            a = self._applied(meta, path)
            points = (points.astype(np.float64) @ a[:3, :3].T + a[:3, 3]).astype(np.float32)
        inst_path = d / self.instances
        instances = self._read_instances(inst_path, len(points)) if inst_path.is_file() else []
        frames = self._frames(meta, path, d, notes)
        return self.make_scene(scene_id, points, colors, instances, frames, notes)

    @staticmethod
    def _read_points(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(N, 3) float32 xyz and (N, 3) uint8 rgb of the ply's vertices (grey, noted, without colours)."""
        from plyfile import PlyData

        if not path.is_file():
            raise DataError(path, "point cloud / mesh file not found")
        try:
            data = PlyData.read(str(path))["vertex"].data
        except Exception as e:  # plyfile raises several types for corrupt files
            raise DataError(path, f"unreadable ply (or no vertex element): {e}") from None
        names = data.dtype.names or ()
        if not {"x", "y", "z"} <= set(names):
            raise DataError(path, f"ply vertices lack x, y, z (have {', '.join(names)})")
        points = np.stack([data["x"], data["y"], data["z"]], axis=1).astype(np.float32)
        if {"red", "green", "blue"} <= set(names):
            rgb = np.stack([data["red"], data["green"], data["blue"]], axis=1)
            return points, np.clip(rgb, 0, 255).astype(np.uint8), []
        return points, np.full((len(points), 3), 128, np.uint8), [f"{path.name} has no vertex colours: grey"]

    def _frames(self, meta: dict, path: Path, d: Path, notes: list[str]) -> list[Frame]:
        """The kept frames with a depth file: OpenCV c2w, intrinsics at the depth size (pixel centres at
        integer coordinates), depth scale 1 / depth_unit_scale_factor, and an ``undistort`` for frames of a
        camera with distortion."""
        entries = self._frame_entries(meta, path, d)
        scale = 1.0 / self._depth_unit(meta, path)
        no_depth = [i for i, cam, _ in entries if cam["depth"] is None]
        if no_depth:
            notes.append(f"skipped {len(no_depth)} frame(s) without depth_file_path: {_shown(no_depth, 10)}")
        entries = [e for e in entries if e[1]["depth"] is not None]
        size = _frame_size([cam["depth"] for _, cam, _ in entries], {}) if entries else None
        if size is None:
            notes.append(f"no readable depth image in {path.name}: no frames")
            return []
        frames, cameras = [], {}
        for i, cam, c2w in entries:
            w, h = cam.get("w"), cam.get("h")
            if w is None or h is None:  # nerfstudio reads the size from the image then
                from PIL import Image

                with Image.open(cam["file_path"]) as im:
                    w, h = im.size
            sx, sy = size[0] / w, size[1] / h
            k = np.array([[cam["fl_x"] * sx, 0.0, cam["cx"] * sx - PIXEL_OFFSET],
                          [0.0, cam["fl_y"] * sy, cam["cy"] * sy - PIXEL_OFFSET], [0.0, 0.0, 1.0]])
            frames.append(Frame(number=i, pose=opengl_to_opencv(c2w), intrinsics=k, image_size=size,
                                depth_scale=scale, color_path=cam["file_path"], depth_path=cam["depth"],
                                undistort=self._undistortion(cam, k, size, cameras)))
        return frames

    @staticmethod
    def _undistortion(cam: dict, k: np.ndarray, size: tuple[int, int], cameras: dict) -> Undistortion | None:
        """The frame's resampling onto its pinhole grid (None for a pinhole camera), one per camera:
        ``cameras`` holds those made so far, so frames of one camera share it (and its cached tables)."""
        fisheye = str(cam.get("camera_model", "")).upper() in FISHEYE_MODELS
        coeffs = tuple(float(cam.get(key, 0.0)) for key in DISTORTION_KEYS)
        if fisheye:
            coeffs = coeffs[:4] + (0.0, 0.0)  # the equidistant model has no tangential terms
        elif not any(coeffs):
            return None
        pinhole = (float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]))
        und = Undistortion(FISHEYE if fisheye else RADTAN, coeffs, pinhole, size)
        return cameras.setdefault(und, und)
