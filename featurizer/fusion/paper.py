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
"""

from __future__ import annotations

import numpy as np
import torch

from featurizer.fusion.base import Fusion, ViewBatch
from featurizer.geometry import box_sums, convex_hull, grouped_hull_area2


class PaperFusion(Fusion):
    """Chat-Scene's box pooling with hull-area view weights (use with the encoder's ``processor`` mode)."""

    name = "paper"

    def __init__(self, depth_mode: str = "relative", depth_tol: float = 0.25, border: int = 10,
                 min_points: int = 3):
        super().__init__(depth_mode=depth_mode, depth_tol=depth_tol, border=border, min_points=min_points)

    def _start(self) -> None:
        n = self.num_instances
        self.acc: torch.Tensor | None = None
        self.area_sum = torch.zeros(n, dtype=torch.float64, device=self.device)
        self.views = torch.zeros(n, dtype=torch.int64, device=self.device)

    def _add(self, batch: ViewBatch, counts: torch.Tensor) -> None:
        tokens = batch.tokens
        bsz, rows, cols, dim = tokens.shape
        width, height = batch.image_size
        cell_h, cell_w = height // rows, width // cols
        min_area2 = 2 * cell_h * cell_w
        n_groups = self.num_instances * bsz
        if self.acc is None:
            self.acc = torch.zeros(self.num_instances, dim, dtype=torch.float64, device=self.device)
        cand = (counts >= self.min_points).reshape(-1)
        group = batch.inst * bsz + batch.b
        # hulls of every (instance, frame) pixel set (fewer than 3 pixels: area 0, not kept)
        area2, box = grouped_hull_area2(group, batch.v, batch.u, n_groups, backend=self.backend)
        kept = cand & (area2 >= min_area2)
        gk = torch.nonzero(kept).flatten()
        r0, r1, c0, c1 = box[gk].unbind(1)
        rs = torch.clamp(r0 // cell_h, max=rows)
        re = torch.clamp(-((-r1) // cell_h), max=rows)  # ceil(r1 / cell_h), sliced like Python
        cs = torch.clamp(c0 // cell_w, max=cols)
        ce = torch.clamp(-((-c1) // cell_w), max=cols)
        re, ce = torch.maximum(re, rs), torch.maximum(ce, cs)
        sums = box_sums(tokens, gk % bsz, rs, re, cs, ce)
        count = ((re - rs) * (ce - cs)).to(torch.float64)
        feat = sums / count[:, None]  # 0 / 0 = NaN for an empty slice, like the reference's mean
        area = area2[gk].to(torch.float64) / 2.0
        inst = gk // bsz
        self.acc.index_add_(0, inst, area[:, None] * feat)
        self.area_sum.index_add_(0, inst, area)
        self.views.index_add_(0, inst, torch.ones_like(inst))
        if self.trace:
            self._trace(batch, cand, area2, box, kept, cell_h, cell_w, rows, cols)

    def _trace(self, batch, cand, area2, box, kept, cell_h, cell_w, rows, cols) -> None:
        bsz = batch.size
        for i, bb, sel in self.traced_pairs(batch):
            g = i * bsz + bb
            u, v = batch.u[sel].cpu().numpy(), batch.v[sel].cpu().numpy()
            r0, r1, c0, c1 = box[g].tolist()
            hull = convex_hull(np.stack([u, v], 1)) if len(u) >= 3 else np.zeros((0, 2))
            rs, re = min(r0 // cell_h, rows), min(-(-r1 // cell_h), rows)
            cs, ce = min(c0 // cell_w, cols), min(-(-c1 // cell_w), cols)
            self.traces[i].append({
                "frame": batch.frames[bb], "u": u, "v": v, "kept": bool(kept[g]),
                "weight": float(area2[g]) / 2.0 if bool(kept[g]) else 0.0,
                "hull": hull, "pixel_box": (c0, r0, c1, r1),
                "pooled_rects": np.array([[cs * cell_w, rs * cell_h, ce * cell_w, re * cell_h]], float),
                "note": f"hull area {float(area2[g]) / 2:.0f} px^2" if bool(cand[g]) else "too few points",
            })

    def _finish(self, read_frames=None):
        has = self.area_sum > 0
        feats = self.averaged(self.acc, self.area_sum)
        reasons = {i: "no view passed the area cut" for i in range(self.num_instances)}
        return feats, has, self.views, reasons
