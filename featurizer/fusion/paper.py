"""The reference 2D fusion of Chat-Scene (DESIGN.md section 5), reproduced exactly, defects included.

Per instance and frame: the pixels (row v, column u) of the instance's visible points; at least
``min_points`` (3) of them; their 2D convex hull (monotone chain, exact integer area); a degenerate
hull (zero area) or an area below ``(H // R) * (W // C)`` px^2 (480 // 16 * 640 // 16 = 1200 for
DINOv2's 16 x 16 grid) skips the view; the box ``r0..r1, c0..c1`` of the hull vertices (= of the
pixels); the view feature is the mean of the patch tokens
``[r0 // cell_h : ceil(r1 / cell_h), c0 // cell_w : ceil(c1 / cell_w)]`` with ``cell_h = H // R = 30``
and ``cell_w = W // C = 40``, which treats the grid as if it covered the whole frame (the grid of
the ``processor`` mode covers only the centre crop: section 6, defect 1, kept on purpose). The
instance feature is ``sum_views (area / total area) * view feature``.

Empty slices: the reference takes ``tokens[a:b, c:d].mean()``, which is NaN for an empty slice.
A slice is empty only if ``r0 // cell_h >= ceil(r1 / cell_h)``, i.e. ``r0 == r1`` on a multiple of
``cell_h`` (or the same for columns), and then the pixels lie on one row (column), the hull has
zero area and the view was already skipped; so it cannot happen for a kept view. Should it ever
(a frame taller than ``R * cell_h`` by more than a cell), the view feature is NaN as in the
reference, and the instance feature with it. Slice ends past the grid are clamped, as Python slicing does.

Arithmetic as the reference's, so that the features are bit-identical to its loop given the same tokens
on the same device (torch's float32 reductions depend on the op, the shape and the device): each kept
view's feature is ``tokens[b, r0:r1, c0:c1].flatten(0, 1).mean(0)`` in the tokens' float32, one call per
view; at the end each instance's views are added in frame order to float32 zeros,
``acc += float32(area / total area) * view feature`` (torch's type promotion rounds the reference's
float64 weight to float32 before the product). The areas are half-integers, so their float64 total is
exact in any order. Memory: one D-vector per kept view.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from featurizer.fusion.base import Fusion, ViewBatch, ViewTrace
from featurizer.geometry.hulls import convex_hull, grouped_hull_area2


class PaperFusion(Fusion):
    """Chat-Scene's box pooling with hull-area view weights (use with the encoder's ``processor`` mode)."""

    name = "paper"

    def __init__(self, depth_mode: str = "relative", depth_tol: float = 0.25, border: int = 10,
                 min_points: int = 3):
        super().__init__(depth_mode=depth_mode, depth_tol=depth_tol, border=border, min_points=min_points)

    def _start(self) -> None:
        n = self.num_instances
        self.kept: list[tuple[torch.Tensor, ...]] = []  # per batch: instance, area, feature of the kept views
        self.area_sum = torch.zeros(n, dtype=torch.float64, device=self.device)
        self.views = torch.zeros(n, dtype=torch.int64, device=self.device)

    def _add(self, batch: ViewBatch, counts: torch.Tensor):
        tokens = batch.tokens
        bsz, rows, cols, dim = tokens.shape
        width, height = batch.image_size
        cell_h, cell_w = height // rows, width // cols
        min_area2 = 2 * cell_h * cell_w
        n_groups = self.num_instances * bsz
        cand = (counts >= self.min_points).reshape(-1)
        group = batch.inst * bsz + batch.slot
        # hulls of every (instance, frame) pixel set (fewer than 3 pixels: area 0, not kept)
        area2, box = grouped_hull_area2(group, batch.v, batch.u, n_groups, backend=self.backend)
        kept = cand & (area2 >= min_area2)
        gk = torch.nonzero(kept).flatten()  # by instance, then frame
        r0, r1, c0, c1 = box[gk].unbind(1)
        # the reference's slices (ends past the grid clamped by Python slicing); an empty one's mean is NaN
        spans = torch.stack([gk % bsz, r0 // cell_h, -((-r1) // cell_h), c0 // cell_w, -((-c1) // cell_w)], 1)
        feat = [tokens[b, rs:re, cs:ce].flatten(0, 1).mean(0) for b, rs, re, cs, ce in spans.tolist()]
        feat = torch.stack(feat) if feat else tokens.new_zeros(0, dim)
        area = area2[gk].to(torch.float64) / 2.0
        inst = gk // bsz
        self.kept.append((inst, area, feat))
        self.area_sum.index_add_(0, inst, area)
        self.views.index_add_(0, inst, torch.ones_like(inst))
        return cand, area2, box, kept, (cell_h, cell_w), (rows, cols)

    def describe_view(self, trace: ViewTrace, pooled, batch: ViewBatch, i: int, slot: int) -> ViewTrace:
        """The hull of the view's pixels, its area and the grid box the reference pooled."""
        cand, area2, box, kept, (cell_h, cell_w), (rows, cols) = pooled
        g = i * batch.size + slot
        r0, r1, c0, c1 = box[g].tolist()
        rs, re = min(r0 // cell_h, rows), min(-(-r1 // cell_h), rows)
        cs, ce = min(c0 // cell_w, cols), min(-(-c1 // cell_w), cols)
        area = float(area2[g]) / 2.0
        hull = convex_hull(np.stack([trace.u, trace.v], 1)) if len(trace.u) >= 3 else np.zeros((0, 2))
        return replace(trace, kept=bool(kept[g]), weight=area if bool(kept[g]) else 0.0,
                       regions=np.array([[cs * cell_w, rs * cell_h, ce * cell_w, re * cell_h]], float),
                       hull=hull,
                       note=f"hull area {area:.0f} px^2" if bool(cand[g]) else "too few points")

    def _finish(self, read_frames=None):
        has = self.area_sum > 0
        reasons = {i: "no view passed the area cut" for i in range(self.num_instances)}
        if not self.kept:
            return torch.zeros(self.num_instances, 0), has, self.views, reasons
        inst, area, feat = (torch.cat(x) for x in zip(*self.kept))
        order = torch.argsort(inst, stable=True)  # each instance's views in frame order
        inst, area, feat = inst[order], area[order], feat[order]
        weighted = (area / self.area_sum[inst]).to(feat.dtype)[:, None] * feat
        rank = torch.arange(len(inst), device=inst.device) - (torch.cumsum(self.views, 0) - self.views)[inst]
        feats = torch.zeros(self.num_instances, feat.shape[1], dtype=feat.dtype, device=feat.device)
        for k in range(int(self.views.max())):  # round k adds every instance's k-th view
            sel = rank == k
            feats[inst[sel]] += weighted[sel]
        return feats, has, self.views, reasons
