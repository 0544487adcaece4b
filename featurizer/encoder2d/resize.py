"""Pillow's 8-bit resampling, reimplemented in torch so it runs batched on any device, bit for bit.

Hugging Face's slow (PIL) image processors resize with ``PIL.Image.resize``. To feed a GPU without a
per-frame PIL call, and still produce *exactly* the model card's ``pixel_values``, this module
reproduces Pillow's ``ImagingResample`` for 8-bit images (``libImaging/Resample.c``):

- separable, two passes, the intermediate image rounded and clipped to uint8 (horizontal pass
  first, except where Pillow 13 runs the vertical one first: :func:`vertical_pass_first`);
- per output index ``xx``: ``center = (xx + 0.5) * scale`` with ``scale = in / out``, a filter
  stretched by ``max(scale, 1)`` (antialiasing when shrinking), taps ``xmin .. xmax`` with
  ``xmin = int(center - support + 0.5)`` clipped to the image, weights normalised to sum 1;
- weights in fixed point with 22 fractional bits, ``out = clip8((2**21 + sum(in * w)) >> 22)``.

Integer arithmetic (int32, like Pillow) makes the result identical on CPU and CUDA. On CPU tensors
:func:`pil_resize` calls Pillow itself by default (faster there than the gathers).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

PRECISION_BITS = 32 - 8 - 2

# Pillow / transformers PILImageResampling codes
NEAREST, LANCZOS, BILINEAR, BICUBIC = 0, 1, 2, 3


def _bilinear(x: float) -> float:
    x = -x if x < 0.0 else x
    return 1.0 - x if x < 1.0 else 0.0


def _bicubic(x: float) -> float:
    a = -0.5
    x = -x if x < 0.0 else x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    if -3.0 <= x < 3.0:
        return _sinc(x) * _sinc(x / 3)
    return 0.0


_FILTERS = {BILINEAR: (_bilinear, 1.0), BICUBIC: (_bicubic, 2.0), LANCZOS: (_lanczos, 3.0)}


@lru_cache(maxsize=256)
def _coefficients(in_size: int, out_size: int, resample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for one axis.

    returns: index (out_size, ksize) int64 source positions (clamped; padded taps have weight 0),
    weight (out_size, ksize) int32 fixed-point weights.
    """
    filt, base_support = _FILTERS[resample]
    scale = float(in_size) / out_size  # Pillow: (double)(in1 - in0) / outSize with in0 = 0
    filterscale = max(scale, 1.0)
    support = base_support * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    index = torch.zeros(out_size, ksize, dtype=torch.int64)
    weight = torch.zeros(out_size, ksize, dtype=torch.int32)
    one = 1 << PRECISION_BITS
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        ks = [filt((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for w in ks:  # sequential sum, as in C
            ww += w
        if ww != 0.0:
            ks = [w / ww for w in ks]
        for x, w in enumerate(ks):
            # C's (int) truncates toward zero
            weight[xx, x] = int(-0.5 + w * one) if w < 0 else int(0.5 + w * one)
            index[xx, x] = xmin + x
        index[xx, xmax:] = xmin
    return index, weight


def _pass(img: torch.Tensor, out_size: int, resample: int, dim: int) -> torch.Tensor:
    """Resample uint8 ``img`` along axis ``dim`` to ``out_size`` (one of Pillow's two passes)."""
    index, weight = _coefficients(int(img.shape[dim]), int(out_size), int(resample))
    index, weight = index.to(img.device), weight.to(img.device)
    src = img.to(torch.int32)
    shape = [1] * img.dim()
    shape[dim] = int(out_size)
    acc = torch.full((), 1 << (PRECISION_BITS - 1), dtype=torch.int32, device=img.device)
    for k in range(index.shape[1]):
        acc = acc + src.index_select(dim, index[:, k]) * weight[:, k].view(shape)
    # Pillow's clip8: <= 0 -> 0, >= 256 << 22 -> 255, else in >> 22 (int32 never overflows here:
    # the positive taps of every filter sum to < 1.3, so |acc| < 255 * 1.3 * 2**22 < 2**31)
    return torch.clamp(acc >> PRECISION_BITS, 0, 255).to(torch.uint8)


def vertical_pass_first(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> bool:
    """Whether the installed Pillow runs the vertical pass before the horizontal one.

    Pillow <= 12 (``ImagingResampleInner``) always runs horizontal first. Pillow 13 runs vertical
    first when it shrinks the height by more than twice what it shrinks the width:
    ``h < H and H - h > 2 * (W - w)`` (measured: 600 random size pairs, all three filters, every
    one bit-exact; the order changes the result because the intermediate image is rounded).
    """
    (in_h, in_w), (out_h, out_w) = in_hw, out_hw
    if _PIL_MAJOR < 13 or in_h == out_h or in_w == out_w:
        return False
    return out_h < in_h and (in_h - out_h) > 2 * (in_w - out_w)


def _pil_major() -> int:
    try:
        import PIL

        return int(PIL.__version__.split(".")[0])
    except Exception:  # pragma: no cover - Pillow is a dependency
        return 0


_PIL_MAJOR = _pil_major()


def _resize_torch(images: torch.Tensor, size: tuple[int, int], resample: int) -> torch.Tensor:
    out_h, out_w = size
    in_h, in_w = int(images.shape[-3]), int(images.shape[-2])
    h_dim, w_dim = images.dim() - 3, images.dim() - 2
    out = images
    if vertical_pass_first((in_h, in_w), (out_h, out_w)):
        out = _pass(out, out_h, resample, dim=h_dim) if in_h != out_h else out
        out = _pass(out, out_w, resample, dim=w_dim) if in_w != out_w else out
    else:
        out = _pass(out, out_w, resample, dim=w_dim) if in_w != out_w else out
        out = _pass(out, out_h, resample, dim=h_dim) if in_h != out_h else out
    return out


def _resize_pil(images: torch.Tensor, size: tuple[int, int], resample: int) -> torch.Tensor:
    from PIL import Image

    out_h, out_w = size
    flat = images.reshape(-1, *images.shape[-3:]).cpu().numpy()
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(flat.shape[-1])
    if mode is None or mode == "RGBA":
        raise ValueError(f"pil_resize needs 1 or 3 channels, got {flat.shape[-1]}")
    res = []
    for img in flat:
        im = Image.fromarray(img[..., 0] if mode == "L" else img, mode=mode)
        arr = np.asarray(im.resize((out_w, out_h), resample=resample))
        res.append(arr.reshape(out_h, out_w, -1))
    out = torch.from_numpy(np.stack(res)) if res else images.new_zeros((0, out_h, out_w, flat.shape[-1]))
    return out.reshape(*images.shape[:-3], out_h, out_w, images.shape[-1]).to(images.device)


def pil_resize(
    images: torch.Tensor, size: tuple[int, int], resample: int = BICUBIC, impl: str = "auto"
) -> torch.Tensor:
    """``PIL.Image.resize`` of each image, bit for bit, batched.

    images: (..., H, W, C) uint8 channels-last (e.g. (B, H, W, 3)), on any device.
    size: (height, width) of the output.
    resample: Pillow filter code (2 bilinear, 3 bicubic, 1 lanczos).
    impl: "pil" (Pillow itself, one image at a time, on the CPU), "torch" (this module's
        reimplementation, batched, on the images' device) or "auto" (Pillow for CPU tensors, which
        is faster there, torch elsewhere).
    returns: (..., height, width, C) uint8 on the same device.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"pil_resize needs uint8 images, got {images.dtype}")
    if images.dim() < 3:
        raise ValueError(f"pil_resize needs (..., H, W, C) images, got shape {tuple(images.shape)}")
    resample = int(resample)
    if resample not in _FILTERS:
        raise ValueError(f"resample filter {resample} is not supported (bilinear 2, bicubic 3, lanczos 1)")
    out_h, out_w = int(size[0]), int(size[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(f"output size must be positive, got {(out_h, out_w)}")
    if (out_h, out_w) == tuple(images.shape[-3:-1]):
        return images.clone()
    if impl == "auto":
        impl = "pil" if images.device.type == "cpu" else "torch"
    if impl == "pil":
        return _resize_pil(images, (out_h, out_w), resample)
    if impl == "torch":
        return _resize_torch(images, (out_h, out_w), resample)
    raise ValueError(f"unknown pil_resize impl {impl!r} (auto, pil, torch)")
