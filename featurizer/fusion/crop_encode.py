"""Encode crops of the instance in its k best views (OpenMask3D / MaskClustering).

First pass (mapping only, no patch tokens): per instance, the running top ``k`` views by number of
visible points (ties: the earlier frame; at least ``min_points``) and the box of the visible pixels
in each. Second pass: only the frames chosen by some instance are read again; in each chosen view
the box is cropped at ``levels`` scales, level ``l`` widened by ``int(side * expansion) * l`` pixels
on each side and clipped to the image (OpenMask3D's ``mask2box_multi_level``), padded to a square
(centred, ``pad_value``), encoded with ``encoder2d.embed`` in batches of ``embed_batch`` and the
embeddings of all crops of all chosen views are averaged.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from featurizer.errors import ConfigError
from featurizer.fusion.base import Fusion, ViewBatch, ViewTrace
from featurizer.fusion.topk_views import key_positions, merge_topk, ranking_key
from featurizer.geometry.pooling import group_boxes


def crop_boxes(box: tuple[int, int, int, int], levels: int, expansion: float,
               image_size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Multi-level crop boxes ``(x0, y0, x1, y1)`` (half-open) of a pixel box ``(u0, v0, u1, v1)``
    (inclusive) in a frame of ``image_size = (W, H)``."""
    width, height = image_size
    x0, y0, x1, y1 = int(box[0]), int(box[1]), int(box[2]) + 1, int(box[3]) + 1
    out = []
    for level in range(levels):
        ex = int((x1 - x0) * expansion) * level
        ey = int((y1 - y0) * expansion) * level
        out.append((max(0, x0 - ex), max(0, y0 - ey), min(width, x1 + ex), min(height, y1 + ey)))
    return out


def pad_square(image: np.ndarray, value: int = 0) -> np.ndarray:
    """(h, w, 3) -> (s, s, 3) with s = max(h, w), the image centred, the rest ``value``."""
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.full((side, side, image.shape[2]), value, dtype=image.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = image
    return out


class CropEncodeFusion(Fusion):
    """Average of the global embeddings of multi-scale square crops of the instance in its k best views."""

    name = "crop_encode"
    requires_tokens = False

    def __init__(self, k: int = 5, levels: int = 3, expansion: float = 0.1, pad_value: int = 0,
                 embed_batch: int = 32, depth_mode: str = "absolute", depth_tol: float = 0.1,
                 border: int = 10, min_points: int = 3):
        super().__init__(depth_mode=depth_mode, depth_tol=depth_tol, border=border, min_points=min_points)
        for option, value, lo in (("k", k, 1), ("levels", levels, 1), ("embed_batch", embed_batch, 1)):
            if int(value) != value or value < lo:
                raise ConfigError(f"fusion.{option}", f"must be an integer >= {lo}, got {value!r}")
        if not 0 <= expansion < 10:
            raise ConfigError("fusion.expansion", f"must be in [0, 10), got {expansion!r}")
        self.k, self.levels, self.expansion = int(k), int(levels), float(expansion)
        self.pad_value, self.embed_batch = int(pad_value), int(embed_batch)

    def _start(self) -> None:
        n, k = self.num_instances, self.k
        self.best_key = torch.full((n, k), -1, dtype=torch.int64, device=self.device)
        self.best_box = torch.zeros(n, k, 4, dtype=torch.int64, device=self.device)
        self.image_sizes: dict[int, tuple[int, int]] = {}

    def _add(self, batch: ViewBatch, counts: torch.Tensor):
        bsz = batch.size
        n_groups = self.num_instances * bsz
        group = batch.inst * bsz + batch.slot
        box = group_boxes(group, batch.u, batch.v, n_groups)[:, [0, 2, 1, 3]]  # u0, v0, u1, v1
        key = ranking_key(counts, batch.positions, self.min_points)
        self.best_key, self.best_box = merge_topk(self.best_key, key, self.k,
                                                  (self.best_box, box.view(self.num_instances, bsz, 4)))
        for f in batch.positions:
            self.image_sizes[f] = batch.image_size
        return counts

    def describe_view(self, trace: ViewTrace, pooled, batch: ViewBatch, i: int, slot: int) -> ViewTrace:
        return replace(trace, note=f"{int(pooled[i, slot])} points")  # chosen (or not) at the end

    def settle_views(self, i: int, traces: list[ViewTrace]) -> list[ViewTrace]:
        """The chosen views, with the crops encoded in each."""
        chosen = {int(p): tuple(box) for p, box, ok in zip(key_positions(self.best_key[i]).tolist(),
                                                             self.best_box[i].tolist(),
                                                             (self.best_key[i] >= 0).tolist()) if ok}
        out = []
        for t in traces:
            if t.position in chosen:
                size = self.image_sizes[t.position]
                rects = np.asarray(crop_boxes(chosen[t.position], self.levels, self.expansion, size), float)
                t = replace(t, kept=True, weight=1.0, regions=rects, note=f"{len(rects)} crops")
            out.append(t)
        return out

    def _finish(self, read_frames=None):
        ok = (self.best_key >= 0).cpu()
        pos = key_positions(self.best_key).cpu()
        boxes = self.best_box.cpu()
        wanted: dict[int, list[tuple[int, tuple]]] = {}
        for i, slot in torch.nonzero(ok).tolist():
            wanted.setdefault(int(pos[i, slot]), []).append((i, tuple(boxes[i, slot].tolist())))
        views = ok.sum(1)
        sums: torch.Tensor | None = None
        n_crops = torch.zeros(self.num_instances, dtype=torch.int64)
        pending: list[np.ndarray] = []
        owners: list[int] = []

        def flush():
            nonlocal sums
            if not pending:
                return
            with torch.inference_mode():
                emb = self.encoder2d.embed(list(pending)).float().cpu()
            if sums is None:
                sums = torch.zeros(self.num_instances, emb.shape[1], dtype=torch.float64)
            idx = torch.as_tensor(owners, dtype=torch.int64)
            sums.index_add_(0, idx, emb.to(torch.float64))
            n_crops.index_add_(0, idx, torch.ones_like(idx))
            pending.clear()
            owners.clear()

        if wanted:
            if read_frames is None:
                raise RuntimeError("crop_encode needs the frames again: pass read_frames to finish()")
            for positions, colors in read_frames(sorted(wanted)):
                colors = colors.cpu().numpy()
                for j, f in enumerate(positions):
                    size = (colors.shape[2], colors.shape[1])
                    for i, box in wanted.get(f, []):
                        for x0, y0, x1, y1 in crop_boxes(box, self.levels, self.expansion, size):
                            pending.append(pad_square(colors[j, y0:y1, x0:x1], self.pad_value))
                            owners.append(i)
                        if len(pending) >= self.embed_batch:
                            flush()
            flush()
        has = n_crops > 0
        dim = 0 if sums is None else sums.shape[1]
        feats = (sums if sums is not None else torch.zeros(self.num_instances, dim, dtype=torch.float64))
        feats = feats / n_crops.clamp(min=1).to(torch.float64)[:, None]
        return feats, has, views, {}
