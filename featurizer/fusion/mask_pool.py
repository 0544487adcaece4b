"""Mask pooling (featurizer's default): tokens weighted by the instance's projected points.

Per instance and frame with at least ``min_points`` visible points: each visible point's pixel is
mapped to the patch that encodes it (``pixel_to_patch``, the encoder's exact resize/crop; pixels the
crop drops are ignored); the view feature is the mean of the patch tokens weighted by how many of
the instance's points fall in each patch; views are weighted by their number of pooled points.
So the instance feature is ``sum_{views, points} token(patch(point)) / number of pooled points``.
Unlike box pooling, occluders and background inside the instance's box do not contribute.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from featurizer.fusion.base import Fusion, ViewBatch, ViewTrace
from featurizer.geometry.pooling import cell_rects


def point_weighted_sums(fusion: Fusion, batch: ViewBatch, counts: torch.Tensor):
    """Per (instance, frame) sums of the tokens of the patches of the visible points.

    Only (instance, frame) pairs with at least ``fusion.min_points`` visible points count.
    Returns sums (I, B, D) float32, pooled (I, B) int64 (points inside the encoded region), and the
    per-pair patch weights (I, B, R*C) float32 (a bounded per-batch array, not kept).
    """
    tokens = batch.tokens.float()
    bsz, rows, cols, dim = tokens.shape
    n_inst = fusion.num_instances
    cand = (counts >= fusion.min_points).reshape(-1)
    pr, pc, valid = fusion.patch_pairs(batch)
    group = batch.inst * bsz + batch.slot
    sel = cand[group] & valid
    cells = rows * cols
    key = (group[sel] * cells) + pr[sel] * cols + pc[sel]
    weights = torch.bincount(key, minlength=n_inst * bsz * cells).view(n_inst, bsz, cells).to(tokens.dtype)
    # (B, I, RC) @ (B, RC, D) -> (B, I, D)
    sums = torch.bmm(weights.transpose(0, 1), tokens.reshape(bsz, cells, dim)).transpose(0, 1)
    pooled = weights.sum(2).round().to(torch.int64)
    return sums, pooled, weights


def describe_mask_view(fusion: Fusion, trace: ViewTrace, weights: torch.Tensor, pooled: torch.Tensor,
                       batch: ViewBatch, i: int, slot: int) -> ViewTrace:
    """The patch cells mask pooling used for instance ``i`` in frame ``slot``, weighted by their points
    (``weights``, ``pooled``: as :func:`point_weighted_sums` returns them)."""
    rows, cols = batch.tokens.shape[1:3]
    w = weights[i, slot].cpu().numpy()
    cells = np.flatnonzero(w)
    n = int(pooled[i, slot])
    region = fusion.encoder2d.encoded_region(batch.image_size)
    return replace(trace, kept=n > 0, weight=float(n), region_weights=w[cells], note=f"{n} pooled points",
                   regions=cell_rects(region, (rows, cols), cells // cols, cells % cols))


class MaskPoolFusion(Fusion):
    """Point-count-weighted patch tokens, views weighted by their pooled points (the default)."""

    name = "mask_pool"

    def _start(self) -> None:
        self.acc: torch.Tensor | None = None
        self.weight = torch.zeros(self.num_instances, dtype=torch.int64, device=self.device)
        self.views = torch.zeros(self.num_instances, dtype=torch.int64, device=self.device)

    def _add(self, batch: ViewBatch, counts: torch.Tensor):
        sums, pooled, weights = point_weighted_sums(self, batch, counts)
        if self.acc is None:
            self.acc = torch.zeros(self.num_instances, sums.shape[2], dtype=torch.float64, device=self.device)
        self.acc += sums.sum(1).to(torch.float64)
        self.weight += pooled.sum(1)
        self.views += (pooled > 0).sum(1)
        return weights, pooled

    def describe_view(self, trace: ViewTrace, pooled, batch: ViewBatch, i: int, slot: int) -> ViewTrace:
        return describe_mask_view(self, trace, *pooled, batch, i, slot)

    def _finish(self, read_frames=None):
        has = self.weight > 0
        feats = self.averaged(self.acc, self.weight)
        reasons = {i: "no visible point inside the encoded region" for i in range(self.num_instances)}
        return feats, has, self.views, reasons
