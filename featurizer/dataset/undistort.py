"""Resampling frames taken through a distorting lens onto the pinhole grid of their intrinsics.

A frame whose camera has distortion coefficients (nerfstudio's ``transforms.json``: ``camera_model`` with
``k1 k2 k3 k4 p1 p2``) is read as stored and then resampled: every pixel ``(u, v)`` of the pinhole image
with the same ``fx, fy, cx, cy`` takes the stored image's value at the distorted position of its ray,
computed with the forward model (no iteration):

- radial-tangential (OpenCV; nerfstudio's ``OPENCV``, COLMAP's ``RADIAL`` / ``SIMPLE_RADIAL``), on
  ``x = (u - cx) / fx``, ``y = (v - cy) / fy``, ``r2 = x^2 + y^2``:
  ``d = 1 + k1 r2 + k2 r2^2 + k3 r2^3 + k4 r2^4``, ``xd = d x + 2 p1 x y + p2 (r2 + 2 x^2)``,
  ``yd = d y + 2 p2 x y + p1 (r2 + 2 y^2)``;
- equidistant fisheye (``OPENCV_FISHEYE``): ``theta = atan(r)``, ``r = sqrt(x^2 + y^2)``,
  ``theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)``,
  ``(xd, yd) = (x, y) theta_d / r``;

then ``(us, vs) = (fx xd + cx, fy yd + cy)`` (nerfstudio ``nerfstudio/cameras/camera_utils.py``,
``_compute_residual_and_jacobian`` and ``_compute_residual_and_jacobian_fisheye`` state these models;
``k3, k4`` of the radial polynomial as nerfstudio has them, not OpenCV's rational ``k4..k6``). Colour is
sampled bilinearly, depth at the nearest pixel (depths are never blended across an edge); pixels whose ray
leaves the stored image get black and depth 0 (invalid). The sampling tables are computed once per camera
(one :class:`Undistortion`) and process, and cached.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

FISHEYE = "fisheye"
RADTAN = "radtan"


@dataclass(frozen=True)
class Undistortion:
    """The ``Frame.undistort`` of the frames of one camera (picklable, hashable: it keys the table cache).

    model: ``radtan`` or ``fisheye``. coeffs: ``(k1, k2, k3, k4, p1, p2)`` (fisheye: ``p1 = p2 = 0``).
    intrinsics: ``(fx, fy, cx, cy)`` of the image at ``size`` (pixel centres at integer coordinates).
    size: (width, height) of the images as read (the frame's ``image_size``).
    """

    model: str
    coeffs: tuple[float, float, float, float, float, float]
    intrinsics: tuple[float, float, float, float]
    size: tuple[int, int]

    def source_pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) float64 ``us, vs``: where pixel ``(u, v)`` of the pinhole image lies in the stored one."""
        fx, fy, cx, cy = self.intrinsics
        width, height = self.size
        v, u = np.mgrid[0:height, 0:width].astype(np.float64)
        xd, yd = distort(self.model, self.coeffs, (u - cx) / fx, (v - cy) / fy)
        return fx * xd + cx, fy * yd + cy

    def __call__(self, color: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Colour (H, W, 3) uint8 and depth (H, W) float32, as stored -> on the pinhole grid."""
        corners, weights, nearest = _tables(self)
        flat = color.reshape(-1, color.shape[-1]).astype(np.float32)
        out = sum(flat[c] * w[:, None] for c, w in zip(corners, weights))
        color = np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(color.shape)
        depth = np.where(nearest >= 0, depth.reshape(-1)[np.maximum(nearest, 0)], 0).astype(depth.dtype)
        return color, depth.reshape(self.size[1], self.size[0])


def distort(model: str, coeffs, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pinhole coordinates -> distorted ones by ``model`` (the module docstring's formulas)."""
    k1, k2, k3, k4, p1, p2 = coeffs
    if model == FISHEYE:
        r = np.hypot(x, y)
        theta = np.arctan(r)
        t2 = theta * theta
        theta_d = theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
        scale = np.divide(theta_d, r, out=np.ones_like(r), where=r > 1e-12)
        return x * scale, y * scale
    r2 = x * x + y * y
    d = 1.0 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
    return d * x + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), d * y + 2 * p2 * x * y + p1 * (r2 + 2 * y * y)


@functools.lru_cache(maxsize=16)
def _tables(und: Undistortion) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Bilinear corner indices and weights (4 of each, (H * W,)) and the nearest pixel's flat index of
    ``und``'s source pixels; weights 0 and index -1 where the nearest pixel is outside the stored image."""
    width, height = und.size
    us, vs = (a.reshape(-1) for a in und.source_pixels())
    ui, vi = np.rint(us).astype(np.int64), np.rint(vs).astype(np.int64)
    inside = (ui >= 0) & (ui < width) & (vi >= 0) & (vi < height)
    nearest = np.where(inside, vi * width + ui, -1).astype(np.int32)
    us, vs = np.clip(us, 0, width - 1), np.clip(vs, 0, height - 1)  # the outer half pixel: edge values
    u0 = np.minimum(np.floor(us), max(width - 2, 0)).astype(np.int64)
    v0 = np.minimum(np.floor(vs), max(height - 2, 0)).astype(np.int64)
    fu, fv = us - u0, vs - v0
    u1, v1 = np.minimum(u0 + 1, width - 1), np.minimum(v0 + 1, height - 1)
    corners = [(a * width + b).astype(np.int32) for a, b in ((v0, u0), (v0, u1), (v1, u0), (v1, u1))]
    weights = [(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv]
    weights = [np.where(inside, w, 0.0).astype(np.float32) for w in weights]
    return corners, weights, nearest
