"""Writing a synthetic scene model (:mod:`.scene`) in the ScanNet layout, byte for byte like ScanNet's files.

Scan folder (``scans/`` or ``scans_test/``): the binary ply, the meta ``<scene>.txt``, the segs and the
aggregation (not for test scans); exported frames in OpenScene's ``scannet_2d`` layout (colour jpg,
uint16 millimetre depth png, pose and intrinsics text files); optionally the ``.sens`` RGB-D stream.
See DESIGN.md section 4 for the formats.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from featurizer.dataset.label_sets import SCANNET200
from featurizer.dataset.render import look_at, render_mesh
from featurizer.dataset.scannet import AGG_SUFFIX, SEGS_SUFFIX
from featurizer.dataset.synthetic.furniture import RAW_LABELS
from featurizer.dataset.synthetic.scene import FRAME_STEP, SceneModel, f32

GENERATOR_VERSION = 4  # 3: split files, annotation inputs, a Mask3D export; 4: the tsv with ScanNet200 ids
JPEG_QUALITY = 92  # exported colour jpgs and the .sens colour stream use the same encoder settings
TSV_HEADER = ["id", "raw_category", "category", "count", "nyu40id", "eigen13id", "nyuClass", "nyu40class"]


def write_ply(path: Path, vertices: np.ndarray, colors: np.ndarray, faces: np.ndarray) -> None:
    """Binary little-endian ply like ScanNet's: vertex x y z (float) red green blue alpha (uchar),
    face vertex_indices (uchar count, int indices)."""
    n, f = len(vertices), len(faces)
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment featurizer synthetic ScanNet scene\n"
        f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty uchar alpha\n"
        f"element face {f}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    vdt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4")] + [(c, "u1") for c in "rgba"])
    v = np.empty(n, dtype=vdt)
    v["x"], v["y"], v["z"] = vertices[:, 0], vertices[:, 1], vertices[:, 2]
    v["r"], v["g"], v["b"] = colors[:, 0], colors[:, 1], colors[:, 2]
    v["a"] = 255
    fdt = np.dtype([("n", "u1"), ("i", "<i4", (3,))])
    fa = np.empty(f, dtype=fdt)
    fa["n"] = 3
    fa["i"] = faces
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(v.tobytes())
        fh.write(fa.tobytes())


def write_labels_tsv(path: Path) -> None:
    """ScanNet's labels tsv for the raw labels of :data:`RAW_LABELS`, by id: a raw label's id is its
    ScanNet200 id (ScanNet's tsv numbers its rows so), the nyu40 columns are its NYU40 class."""
    ids = {name: i for i, name in SCANNET200.items()}
    rows = ["\t".join(TSV_HEADER)]
    for raw, (cat, nyu, nyu_class) in sorted(RAW_LABELS.items(), key=lambda item: ids[item[0]]):
        i = ids[raw]
        rows.append("\t".join([str(i), raw, cat, str(10000 // i), str(nyu), "", cat, nyu_class]))
    path.write_text("\n".join(rows) + "\n")


def _fmt(m: np.ndarray) -> str:
    return "\n".join(" ".join(f"{x:.9g}" for x in row) for row in m) + "\n"


def _fmt_exact(m: np.ndarray) -> str:
    """Like ``_fmt`` but with 17 significant digits: parsing gives back the same float64 values."""
    return "\n".join(" ".join(f"{x:.17g}" for x in row) for row in m) + "\n"



def stream_poses(views: list, poses: list, to_raw: np.ndarray) -> list[np.ndarray]:
    """(4, 4) camera-to-world of every stream frame, ``len(views) * FRAME_STEP`` of them.

    Stream frame ``i * FRAME_STEP`` is exported frame ``i`` (its pose exactly); the frames in between
    look from and at points interpolated linearly towards the next exported view (the last one
    towards the first: the camera goes round the room). float32 values, as a ``.sens`` stores them.
    """
    out = []
    for i, ((eye, target), pose) in enumerate(zip(views, poses)):
        eye1, target1 = views[(i + 1) % len(views)]
        out.append(f32(pose))
        for j in range(1, FRAME_STEP):
            t = j / FRAME_STEP
            out.append(f32(to_raw @ look_at(eye + t * (eye1 - eye), target + t * (target1 - target))))
    return out


class RenderedStream:
    """Lazy colour / depth sequences of a rendered stream, so ``write_sens`` never holds them all.

    ``colors[i]`` (H, W, 3) uint8 and ``depths[i]`` (H, W) uint16 millimetres share one render
    (the last one is cached), so writing frame i renders it once.
    """

    def __init__(self, vertices, faces, colors, poses, k, width, height):
        self._mesh = (vertices, faces, colors)
        self._poses, self._k, self._size = poses, k, (width, height)
        self._cached: tuple[int, np.ndarray, np.ndarray] | None = None
        self.colors = StreamView(self, 0)
        self.depths = StreamView(self, 1)

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cached is None or self._cached[0] != i:
            color, depth = render_mesh(*self._mesh, self._poses[i], self._k, *self._size)
            mm = np.clip(np.rint(depth * 1000.0), 0, 65535).astype(np.uint16)
            self._cached = (i, color, mm)
        return self._cached[1], self._cached[2]

    def __len__(self) -> int:
        return len(self._poses)


class StreamView:
    def __init__(self, stream: RenderedStream, which: int):
        self._stream, self._which = stream, which

    def __len__(self) -> int:
        return len(self._stream)

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self._stream):
            raise IndexError(i)
        return self._stream.frame(i)[self._which]



def write_meta(path: Path, model: SceneModel, image_size: tuple[int, int], intrinsics_size: tuple[int, int],
               num_frames: int, with_alignment: bool) -> None:
    """The meta ``<scene>.txt``: sizes, intrinsics at ``intrinsics_size``, frame counts and, unless a
    test scan, ``axisAlignment``."""
    (width, height), (iw, ih), k = image_size, intrinsics_size, model.k_written
    meta = [
        f"colorHeight = {height}",
        f"colorWidth = {width}",
        f"depthHeight = {ih}",
        f"depthWidth = {iw}",
        f"fx_color = {k[0, 0]:.6f}",
        f"fx_depth = {k[0, 0]:.6f}",
        f"fy_color = {k[1, 1]:.6f}",
        f"fy_depth = {k[1, 1]:.6f}",
        f"mx_color = {k[0, 2]:.6f}",
        f"mx_depth = {k[0, 2]:.6f}",
        f"my_color = {k[1, 2]:.6f}",
        f"my_depth = {k[1, 2]:.6f}",
        f"numColorFrames = {num_frames * FRAME_STEP}",
        f"numDepthFrames = {num_frames * FRAME_STEP}",
        "numIMUmeasurements = 0",
        "sceneType = Synthetic",
    ]
    if with_alignment:
        meta.insert(0, "axisAlignment = " + " ".join(f"{x:.9g}" for x in model.align.ravel()))
    path.write_text("\n".join(meta) + "\n")


def write_annotation(scan_dir: Path, scene_id: str, model: SceneModel) -> None:
    """The segs (one segment id per vertex) and the aggregation (objects, then walls and floor)."""
    (scan_dir / f"{scene_id}{SEGS_SUFFIX}").write_text(json.dumps({
        "params": {"kThresh": "0.0001", "segMinVerts": "20", "minPoints": "0", "maxPoints": "0",
                   "thinThresh": "0", "flatThresh": "0", "minLength": "0", "maxLength": "0"},
        "sceneId": scene_id,
        "segIndices": model.seg.tolist(),
    }))
    seg_groups = [
        {"id": g["object_id"], "objectId": g["object_id"], "segments": g["segments"], "label": g["raw_label"]}
        for g in model.objects + model.structure
    ]
    (scan_dir / f"{scene_id}{AGG_SUFFIX}").write_text(json.dumps({
        "sceneId": f"scannet.{scene_id}",
        "appId": f"featurizer.synthetic.v{GENERATOR_VERSION}",
        "segGroups": seg_groups,
        "segmentsFile": f"scannet.{scene_id}{SEGS_SUFFIX}",
    }, indent=1))


def write_exported_frames(frames_dir: Path, model: SceneModel, image_size: tuple[int, int],
                          exact: bool) -> None:
    """``color/<k>.jpg``, ``depth/<k>.png``, ``pose/<k>.txt`` rendered from the model's cameras, and
    ``intrinsic/``; ``exact`` prints matrices with 17 digits (they then parse back to the same floats)."""
    for sub in ("color", "depth", "pose", "intrinsic"):
        (frames_dir / sub).mkdir(parents=True, exist_ok=True)
    fmt = _fmt_exact if exact else _fmt
    m4 = np.eye(4)
    m4[:3, :3] = model.k_written
    (frames_dir / "intrinsic" / "intrinsic_depth.txt").write_text(fmt(m4))
    (frames_dir / "intrinsic" / "intrinsic_color.txt").write_text(fmt(m4))
    (frames_dir / "intrinsic" / "extrinsic_depth.txt").write_text(_fmt(np.eye(4)))
    (frames_dir / "intrinsic" / "extrinsic_color.txt").write_text(_fmt(np.eye(4)))
    from PIL import Image

    for k, pose_raw in zip(model.frame_ids, model.poses):
        color, depth = render_mesh(model.raw_vertices, model.faces, model.colors, pose_raw, model.k_image,
                                   *image_size)
        Image.fromarray(color).save(frames_dir / "color" / f"{k}.jpg", quality=JPEG_QUALITY)
        mm = np.clip(np.rint(depth * 1000.0), 0, 65535).astype(np.uint16)
        Image.fromarray(mm).save(frames_dir / "depth" / f"{k}.png")
        (frames_dir / "pose" / f"{k}.txt").write_text(fmt(pose_raw))


def write_stream(path: Path, model: SceneModel, image_size: tuple[int, int],
                 intrinsics_size: tuple[int, int]) -> None:
    """The ``.sens`` stream: ``FRAME_STEP`` frames per exported one (see :func:`stream_poses`)."""
    from featurizer.dataset.sens import write_sens

    poses = stream_poses(model.views, model.poses, model.to_raw)
    stream = RenderedStream(model.raw_vertices, model.faces, model.colors, poses, model.k_image, *image_size)
    k_sens = model.k_written if tuple(intrinsics_size) == tuple(image_size) else f32(model.k_image)
    write_sens(path, stream.colors, stream.depths, np.stack(poses), k_sens, k_sens,
               depth_shift=1000.0, jpeg_quality=JPEG_QUALITY, sensor_name="featurizer-synthetic")
