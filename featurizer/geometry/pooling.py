"""Patch-grid helpers of the fusion strategies: boxes of pixel sets, token sums over boxes, cell rectangles."""

from __future__ import annotations

import numpy as np
import torch

def group_boxes(group: torch.Tensor, row: torch.Tensor, col: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Box of each of many pixel sets: (G, 4) int64 ``(r0, r1, c0, c1)`` = min/max ``row`` and ``col``
    over the pixels of set g (``group`` (P,) int64 in 0 .. G-1); undefined (+-int64 max) for empty sets."""
    big = torch.iinfo(torch.int64).max
    box = torch.empty(num_groups, 4, dtype=torch.int64, device=row.device)
    box[:, 0::2] = big
    box[:, 1::2] = -big
    box[:, 0].scatter_reduce_(0, group, row, "amin")
    box[:, 1].scatter_reduce_(0, group, row, "amax")
    box[:, 2].scatter_reduce_(0, group, col, "amin")
    box[:, 3].scatter_reduce_(0, group, col, "amax")
    return box


def box_sums(tokens: torch.Tensor, b: torch.Tensor, r0: torch.Tensor, r1: torch.Tensor,
             c0: torch.Tensor, c1: torch.Tensor) -> torch.Tensor:
    """Sums of tokens over half-open boxes ``[r0, r1) x [c0, c1)`` of the grids.

    tokens: (B, R, C, D); b, r0, r1, c0, c1: (K,) int64 (frame in the batch and box, clamped by the
    caller into 0 .. R / 0 .. C). Returns (K, D) float64 (zero for empty boxes). One batched matmul
    of 0/1 box masks with the tokens, in the tokens' dtype (float32 sums of at most R*C tokens).
    """
    bsz, rows, cols, dim = tokens.shape
    device = tokens.device
    if len(b) == 0:
        return torch.zeros(0, dim, dtype=torch.float64, device=device)
    ar, ac = torch.arange(rows, device=device), torch.arange(cols, device=device)
    in_r = (ar >= r0[:, None]) & (ar < r1[:, None])
    in_c = (ac >= c0[:, None]) & (ac < c1[:, None])
    mask = (in_r[:, :, None] & in_c[:, None, :]).reshape(len(b), rows * cols).to(tokens.dtype)
    order = torch.argsort(b, stable=True)
    per = torch.bincount(b, minlength=bsz)
    slot = torch.empty_like(b)
    slot[order] = torch.arange(len(b), device=device) - (torch.cumsum(per, 0) - per)[b[order]]
    padded = torch.zeros(bsz, int(per.max()), rows * cols, dtype=tokens.dtype, device=device)
    padded[b, slot] = mask
    out = torch.bmm(padded, tokens.reshape(bsz, rows * cols, dim))
    return out[b, slot].to(torch.float64)


def cell_rects(encoded_region: tuple[float, float, float, float], grid: tuple[int, int],
               rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Frame-pixel rectangles (K, 4) ``(x0, y0, x1, y1)`` of patch cells (rows, cols) of a grid
    (R, C) covering ``encoded_region`` uniformly."""
    x0, y0, x1, y1 = encoded_region
    ch, cw = (y1 - y0) / grid[0], (x1 - x0) / grid[1]
    rows = np.asarray(rows, dtype=np.float64)
    cols = np.asarray(cols, dtype=np.float64)
    return np.stack([x0 + cols * cw, y0 + rows * ch, x0 + (cols + 1) * cw, y0 + (rows + 1) * ch], axis=-1)
