"""The Scene contract (DESIGN.md section 3): what a reader plus a segmenter hand to the stages.

Coordinates: ``Scene.points`` are in the *raw* mesh frame, the frame of the camera poses, and are
what projection uses. Boxes and the 3D encoder use *aligned* coordinates,
``aligned = (axis_align @ [p, 1]^T)^T[:, :3]``. Mixing the two is the classic bug of this pipeline,
so the aligned coordinates are only ever obtained through :meth:`Scene.aligned_points`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MIN_POINTS_3D = 10  # Uni3D reference: instances with fewer points get no 3D feature.


def object_key(scene_id: str, index: int) -> str:
    """Chat-Scene's feature key of instance ``index`` of ``scene_id``: ``scene0000_00_07``."""
    return f"{scene_id}_{index:02}"


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(T @ [p, 1]^T)^T[:, :3]`` for a (4, 4) ``transform`` and (N, 3) ``points``, in float64."""
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(transform, dtype=np.float64)
    return p @ t[:3, :3].T + t[:3, 3]


def scaled_intrinsics(k: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """(3, 3) float64 intrinsics ``k`` for the image resized by ``sx, sy`` (new size / old size); pixel
    centres sit at integer coordinates (cx = 319.5 centres a 640 row), so x maps to (x + 0.5) * s - 0.5."""
    out = np.array(k, dtype=np.float64)[:3, :3]
    out[0, 0] *= sx
    out[1, 1] *= sy
    out[0, 2] = (out[0, 2] + 0.5) * sx - 0.5
    out[1, 2] = (out[1, 2] + 0.5) * sy - 0.5
    return out


def box_center_size(points: np.ndarray) -> np.ndarray:
    """Axis-aligned box of (N, 3) points as (6,) float32 ``(center xyz, size xyz)``; zeros when empty."""
    if len(points) == 0:
        return np.zeros(6, dtype=np.float32)
    lo = points.min(axis=0).astype(np.float64)
    hi = points.max(axis=0).astype(np.float64)
    return np.concatenate([(lo + hi) / 2.0, hi - lo]).astype(np.float32)


def instance_boxes(instances: list, aligned: np.ndarray) -> np.ndarray:
    """(I, 6) float32 boxes ``(center xyz, size xyz)`` of ``instances`` over (N, 3) ``aligned`` points."""
    if not instances:
        return np.zeros((0, 6), dtype=np.float32)
    return np.stack([box_center_size(aligned[inst.point_ids]) for inst in instances])


def load_npy_depth(path: Path) -> np.ndarray:
    """(H, W) float32 raw depth of a ``.npy`` file (nerfstudio reads ``np.load(path) *
    depth_unit_scale_factor``); ValueError when it is not an (H, W) or (H, W, 1) array of numbers."""
    depth = np.load(path, allow_pickle=False)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.ndim != 2 or depth.dtype.kind not in "iuf":
        raise ValueError(f"not an (H, W) array of numbers: {depth.dtype} {depth.shape}")
    return depth.astype(np.float32)


@dataclass
class Instance:
    """One object instance.

    point_ids: (K,) int64 indices into ``Scene.points``.
    label: class name (ScanNet ``category`` column, or the segmenter's class name).
    score: segmenter confidence (None for ground truth).
    gt_object_id: ScanNet ``objectId`` of the aggregation when the instance is ground truth.
    """

    point_ids: np.ndarray
    label: str
    score: float | None = None
    gt_object_id: int | None = None

    def __post_init__(self) -> None:
        self.point_ids = np.asarray(self.point_ids, dtype=np.int64).reshape(-1)


@dataclass
class Frame:
    """One RGB-D frame of a scene.

    number: the frame's number in the stream (the ``<k>`` of ``color/<k>.jpg``; its position in
        ``scene.frames`` and its slot in a batch of the 2D stage are other numbers).
    pose: (4, 4) float64 camera-to-world, in the raw mesh frame.
    intrinsics: (3, 3) float64 pinhole intrinsics of the colour/depth pair *at* ``image_size``.
    image_size: (width, height) of the images as read (colour and depth share it).
    depth_scale: raw depth value / depth_scale = metres (ScanNet: 1000).
    color_path / depth_path: image files (exported-frame layout), or None when ``source`` reads them.
    source: optional callable ``source(frame) -> (color uint8 (H, W, 3), depth float32 metres (H, W))``
        for streams that are not files per frame (``.sens``).
    undistort: optional callable ``undistort(color, depth) -> (color, depth)``, both at ``image_size``, for
        images stored through a distorting lens: resamples them onto the pinhole grid of ``intrinsics``
        (:class:`featurizer.dataset.undistort.Undistortion`); None: the images are pinhole already.

    A ``.npy`` depth file holds the raw values as an (H, W) (or (H, W, 1)) array; other depth files are
    one-channel images.
    """

    number: int
    pose: np.ndarray
    intrinsics: np.ndarray
    image_size: tuple[int, int] = (640, 480)
    depth_scale: float = 1000.0
    color_path: Path | None = None
    depth_path: Path | None = None
    source: object | None = None
    undistort: object | None = None

    def __post_init__(self) -> None:
        self.pose = np.asarray(self.pose, dtype=np.float64).reshape(4, 4)
        self.intrinsics = np.asarray(self.intrinsics, dtype=np.float64).reshape(3, 3)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    @property
    def pose_is_finite(self) -> bool:
        return bool(np.isfinite(self.pose).all())

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """Colour (H, W, 3) uint8 and depth (H, W) float32 metres (0 = invalid), at ``image_size``.

        Colour is resized to ``image_size`` when its file has another size (ScanNet's colour
        stream is 1296x968, its depth 640x480); the intrinsics are those of ``image_size``.
        """
        if self.source is not None:
            color, depth = self.source(self)  # type: ignore[operator]
        else:
            color, depth = self._read_files()
        if self.undistort is not None:
            color, depth = self.undistort(color, depth)  # type: ignore[operator]
        return color, depth

    def _read_files(self) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        if self.color_path is None or self.depth_path is None:
            raise ValueError(f"frame {self.number} has neither image paths nor a source")
        with Image.open(self.color_path) as im:
            im = im.convert("RGB")
            if im.size != self.image_size:
                im = im.resize(self.image_size, Image.BILINEAR)
            color = np.asarray(im, dtype=np.uint8)
        if Path(self.depth_path).suffix == ".npy":
            depth = load_npy_depth(self.depth_path)
        else:
            with Image.open(self.depth_path) as im:
                depth = np.asarray(im)
        if depth.shape[1::-1] != self.image_size:
            # nearest: never blend depth across an occlusion edge
            depth = np.asarray(Image.fromarray(depth).resize(self.image_size, Image.NEAREST))
        return color, depth.astype(np.float32) / float(self.depth_scale)


@dataclass
class Scene:
    """Everything the stages need about one scene ``sceneXXXX_YY``.

    points: (N, 3) float32 raw mesh-frame coordinates; colors: (N, 3) uint8.
    axis_align: (4, 4) float64; identity when the meta file has no ``axisAlignment`` (test split).
    instances: ordered; index i is object id i in every output key.
    frames: ordered RGB-D frames (possibly empty).
    notes: human-readable warnings gathered while reading (skipped frames, identity alignment, ...).
    """

    scene_id: str
    points: np.ndarray
    colors: np.ndarray
    axis_align: np.ndarray = field(default_factory=lambda: np.eye(4))
    instances: list[Instance] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    split: str = "train"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float32).reshape(-1, 3)
        self.colors = np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)
        self.axis_align = np.asarray(self.axis_align, dtype=np.float64).reshape(4, 4)
        if len(self.points) != len(self.colors):
            raise ValueError(
                f"{self.scene_id}: {len(self.points)} points but {len(self.colors)} colours"
            )

    @property
    def num_points(self) -> int:
        return len(self.points)

    def aligned_points(self) -> np.ndarray:
        """(N, 3) float32 points in the axis-aligned frame (boxes, the 3D encoder, pcd_all)."""
        return apply_transform(self.axis_align, self.points).astype(np.float32)

    def keys(self) -> list[str]:
        return [object_key(self.scene_id, i) for i in range(len(self.instances))]

    def warn(self, message: str) -> None:
        """Record a data problem in ``notes`` and emit it as a warning."""
        self.notes.append(message)
        warnings.warn(f"{self.scene_id}: {message}", stacklevel=2)

    def drop_non_finite_poses(self) -> None:
        """Skip frames whose pose has a non-finite entry (real ScanNet has ``-inf`` poses)."""
        bad = [f.number for f in self.frames if not f.pose_is_finite]
        if bad:
            self.frames = [f for f in self.frames if f.pose_is_finite]
            shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
            self.warn(f"skipped {len(bad)} frame(s) with a non-finite pose: {shown}")
