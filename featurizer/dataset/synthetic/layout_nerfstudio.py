"""Writing a synthetic scene model (:mod:`.scene`) as a nerfstudio capture, with nerfstudio's conventions.

``transforms.json`` (intrinsics at the colour size with pixel centres at ``u + 0.5``, camera-to-world
``transform_matrix`` with OpenGL camera axes, ``depth_unit_scale_factor``, ``ply_file_path``,
``applied_transform``), ``images/frame_XXXXX.jpg`` rendered at the colour size, ``depth/frame_XXXXX.png``
uint16 (raw * depth_unit = metres) rendered at the depth size (smaller, like Record3D's, when asked),
the point cloud ``sparse_pc.ply`` and the ground truth ``instances.npz`` (the ``instance_npz`` format:
objects, then walls and floor, as the ScanNet layout's aggregation orders them). Optionally the depth is
written as ``depth/frame_XXXXX.npy`` float32 arrays (raw * depth_unit = metres), and the camera has lens
distortion: colour and depth are then rendered through the distorted model (:func:`render_distorted`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from featurizer.dataset.nerfstudio import (DISTORTION_KEYS, FISHEYE_MODELS, OPENGL_TO_OPENCV, PIXEL_OFFSET,
                                           TRANSFORMS)
from featurizer.dataset.render import render_mesh
from featurizer.dataset.undistort import FISHEYE, RADTAN, distort
from featurizer.dataset.synthetic.layout import JPEG_QUALITY, write_ply
from featurizer.dataset.synthetic.scene import SceneModel, make_scene

# nerfstudio's applied_transform for COLMAP data (x <-> y, -z): original data frame -> the file's frame
APPLIED = np.array([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0]])


def nerfstudio_intrinsics(k: np.ndarray, scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """featurizer intrinsics (pixel u centred at u) -> nerfstudio's (centred at u + 0.5), scaled by
    ``scale`` = (new width / width, new height / height)."""
    out = np.asarray(k, dtype=np.float64).copy()
    out[0, 2] += PIXEL_OFFSET
    out[1, 2] += PIXEL_OFFSET
    out[0] *= scale[0]
    out[1] *= scale[1]
    return out


def undistort_points(model: str, coeffs, xd: np.ndarray, yd: np.ndarray, iterations: int = 100):
    """Distorted normalised coordinates -> pinhole ones: the inverse of
    :func:`featurizer.dataset.undistort.distort`, by fixed-point iteration (the generator's side only;
    residuals below 1e-12 asserted)."""
    x, y = xd.copy(), yd.copy()
    for _ in range(iterations):
        dx, dy = distort(model, coeffs, x, y)
        x, y = x + (xd - dx), y + (yd - dy)
    dx, dy = distort(model, coeffs, x, y)
    assert max(np.abs(dx - xd).max(), np.abs(dy - yd).max()) < 1e-12, "distortion not invertible here"
    return x, y


def render_distorted(vertices, faces, colors, pose, k_ns, size, model: str, coeffs, supersample: int = 4):
    """Colour (H, W, 3) and depth (H, W) of a camera with lens distortion (``k_ns``: nerfstudio intrinsics,
    pixel u centred at u + 0.5): each pixel's ray (the inverse model, :func:`undistort_points`) sampled,
    nearest, from a pinhole render ``supersample`` times finer over a canvas that holds every ray."""
    (w, h), s = size, supersample
    fx, fy, cx, cy = k_ns[0, 0], k_ns[1, 1], k_ns[0, 2], k_ns[1, 2]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) + PIXEL_OFFSET
    x, y = undistort_points(model, coeffs, (u - cx) / fx, (v - cy) / fy)
    pu, pv = s * (fx * x + cx), s * (fy * y + cy)  # image coordinates on the fine pinhole grid
    ox, oy = 1 - np.floor(min(pu.min(), 0)), 1 - np.floor(min(pv.min(), 0))
    k_fine = np.array([[s * fx, 0, s * cx + ox], [0, s * fy, s * cy + oy], [0, 0, 1]])
    fine_w, fine_h = int(np.ceil(pu.max() + ox)) + 1, int(np.ceil(pv.max() + oy)) + 1
    color, depth = render_mesh(vertices, faces, colors, pose, k_fine, fine_w, fine_h,
                               pixel_center=PIXEL_OFFSET)
    iu, iv = np.floor(pu + ox).astype(np.int64), np.floor(pv + oy).astype(np.int64)
    return color[iv, iu], depth[iv, iu]


def write_capture(out_dir: Path, model: SceneModel, image_size: tuple[int, int],
                  depth_size: tuple[int, int] | None = None, depth_unit: float = 1e-3,
                  per_frame_intrinsics: bool = False, ply_frame: str = "transforms",
                  depth_format: str = "png", distortion: dict | None = None) -> dict:
    """Write ``model`` as a nerfstudio capture in ``out_dir``; return what was written.

    image_size / depth_size: (width, height) of colour and depth (depth default: the colour size).
    depth_unit: ``depth_unit_scale_factor`` (raw depth value * depth_unit = metres).
    per_frame_intrinsics: intrinsics in every frame entry instead of the top level.
    ply_frame: ``transforms`` writes the points in the poses' frame (the model's raw frame);
        ``original`` writes them in the original data frame, ``inverse(APPLIED) @ raw``.
    depth_format: ``png`` (uint16) or ``npy`` (float32 raw values).
    distortion: the camera's ``camera_model`` and coefficients (``k1`` .. ``p2``, absent ones 0), e.g.
        ``{"camera_model": "OPENCV", "k1": -0.2}``; colour and depth rendered through them. Default: a
        pinhole camera written as ``OPENCV`` with zero coefficients.
    Returns ``k_color`` (3, 3) nerfstudio intrinsics at image_size, ``k_depth`` at depth_size,
    ``poses_opengl`` (the transform matrices written), ``points`` (V, 3) as written.
    """
    from PIL import Image

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "depth").mkdir(parents=True, exist_ok=True)
    lens = dict(distortion or {})
    fisheye = str(lens.get("camera_model", "")).upper() in FISHEYE_MODELS
    coeffs = tuple(float(lens.get(key, 0.0)) for key in DISTORTION_KEYS)
    (w, h) = image_size
    (dw, dh) = depth_size if depth_size is not None else image_size
    k_color = nerfstudio_intrinsics(model.k_image)
    k_depth = nerfstudio_intrinsics(model.k_image, (dw / w, dh / h))
    cam = {"fl_x": k_color[0, 0], "fl_y": k_color[1, 1], "cx": k_color[0, 2], "cy": k_color[1, 2], "w": w,
           "h": h, "camera_model": "OPENCV", "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0, **lens}

    def render(pose, k, size):
        if not lens:
            return render_mesh(model.raw_vertices, model.faces, model.colors, pose, k, *size,
                               pixel_center=PIXEL_OFFSET)
        return render_distorted(model.raw_vertices, model.faces, model.colors, pose, k, size,
                                FISHEYE if fisheye else RADTAN, coeffs)

    frames, poses_gl = [], []
    for i, pose in enumerate(model.poses):
        # OpenCV-axis render (pixel u sampled at u + 0.5 in nerfstudio's image coordinates)
        color, _ = render(pose, k_color, (w, h))
        _, depth = render(pose, k_depth, (dw, dh))
        name = f"frame_{i + 1:05d}"
        Image.fromarray(color).save(out_dir / "images" / f"{name}.jpg", quality=JPEG_QUALITY)
        if depth_format == "npy":
            np.save(out_dir / "depth" / f"{name}.npy", (depth / depth_unit).astype(np.float32))
        else:
            raw = np.clip(np.rint(depth / depth_unit), 0, 65535).astype(np.uint16)
            Image.fromarray(raw).save(out_dir / "depth" / f"{name}.png")
        gl = np.asarray(pose, dtype=np.float64) @ OPENGL_TO_OPENCV  # its own inverse
        poses_gl.append(gl)
        entry = {"file_path": f"images/{name}.jpg", "depth_file_path": f"depth/{name}.{depth_format}",
                 "transform_matrix": gl.tolist()}
        frames.append({**entry, **cam} if per_frame_intrinsics else entry)
    points = model.raw_vertices
    if ply_frame == "original":
        a = np.vstack([APPLIED, [0, 0, 0, 1]])
        inv = np.linalg.inv(a)
        points = (points.astype(np.float64) @ inv[:3, :3].T + inv[:3, 3]).astype(np.float32)
    write_ply(out_dir / "sparse_pc.ply", points, model.colors, model.faces)
    meta = {} if per_frame_intrinsics else dict(cam)
    meta.update({"depth_unit_scale_factor": depth_unit, "ply_file_path": "sparse_pc.ply",
                 "applied_transform": APPLIED.tolist(), "frames": frames})
    (out_dir / TRANSFORMS).write_text(json.dumps(meta, indent=1))
    groups = model.objects + model.structure
    ids = np.full(len(model.raw_vertices), -1, dtype=np.int64)
    for i, g in enumerate(groups):
        ids[g["point_ids"]] = i
    np.savez(out_dir / "instances.npz", instance_ids=ids, labels=np.array([g["label"] for g in groups]))
    return {"k_color": k_color, "k_depth": k_depth, "poses_opengl": poses_gl, "points": points}


def generate_capture(out_dir: Path, rng: np.random.Generator, num_frames: int = 3,
                     image_size: tuple[int, int] = (640, 480), num_objects: int = 10,
                     object_vertices: int = 1000, **kwargs) -> tuple[SceneModel, dict]:
    """A scene model from ``rng`` (as :func:`featurizer.dataset.synthetic.generate.generate_scene`
    makes it from the same rng and sizes) written by :func:`write_capture` (``kwargs``)."""
    model = make_scene(rng, num_frames, image_size, image_size, num_objects, object_vertices, exact_f32=False)
    return model, write_capture(out_dir, model, image_size, **kwargs)
