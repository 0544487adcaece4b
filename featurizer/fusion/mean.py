"""Box pooling with the correct patch geometry and equal view weights.

Per instance and frame with at least ``min_points`` visible points: the visible pixels are mapped
to the patches that encode them through the encoder's exact resize/crop (``pixel_to_patch``;
pixels the crop drops are ignored); the view feature is the mean of the tokens in the patch box
``[min row .. max row] x [min col .. max col]`` of those patches; the instance feature is the plain
mean of its view features. This is the ``paper`` pooling with defect 1 (DESIGN.md section 6) fixed
and the hull-area weights and cut removed.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from featurizer.fusion.base import Fusion, ViewBatch, ViewTrace
from featurizer.geometry.pooling import box_sums, cell_rects, group_boxes


class MeanFusion(Fusion):
    """Mean of the tokens in the patch box of the instance's visible pixels, views weighted equally."""

    name = "mean"

    def _start(self) -> None:
        self.acc: torch.Tensor | None = None
        self.views = torch.zeros(self.num_instances, dtype=torch.int64, device=self.device)

    def _add(self, batch: ViewBatch, counts: torch.Tensor):
        tokens = batch.tokens
        bsz, rows, cols, dim = tokens.shape
        n_groups = self.num_instances * bsz
        if self.acc is None:
            self.acc = torch.zeros(self.num_instances, dim, dtype=torch.float64, device=self.device)
        cand = (counts >= self.min_points).reshape(-1)
        pr, pc, valid = self.patch_pairs(batch)
        group = batch.inst * bsz + batch.slot
        sel = cand[group] & valid
        g = group[sel]
        box = group_boxes(g, pr[sel], pc[sel], n_groups)
        gk = torch.unique(g)
        r0, r1, c0, c1 = box[gk].unbind(1)
        sums = box_sums(tokens, gk % bsz, r0, r1 + 1, c0, c1 + 1)
        feat = sums / ((r1 - r0 + 1) * (c1 - c0 + 1)).to(torch.float64)[:, None]
        inst = gk // bsz
        self.acc.index_add_(0, inst, feat)
        self.views.index_add_(0, inst, torch.ones_like(inst))
        return box, gk

    def describe_view(self, trace: ViewTrace, pooled, batch: ViewBatch, i: int, slot: int) -> ViewTrace:
        """The patch box pooled in the view (every cell in it, equally)."""
        box, kept_groups = pooled
        g = i * batch.size + slot
        if not bool((kept_groups == g).any()):
            return replace(trace, note="not kept")
        r0, r1, c0, c1 = box[g].tolist()
        rr, cc = np.meshgrid(np.arange(r0, r1 + 1), np.arange(c0, c1 + 1), indexing="ij")
        region = self.encoder2d.encoded_region(batch.image_size)
        return replace(trace, kept=True, weight=1.0, note="patch box",
                       regions=cell_rects(region, batch.tokens.shape[1:3], rr.ravel(), cc.ravel()))

    def _finish(self, read_frames=None):
        has = self.views > 0
        feats = self.averaged(self.acc, self.views)
        reasons = {i: "no visible point inside the encoded region" for i in range(self.num_instances)}
        return feats, has, self.views, reasons
