"""The k views that see the most of the instance (OpenMask3D-style), then mask pooling over them.

Views are ranked by the instance's number of depth-tested visible points (ties: the earlier frame);
only views with at least ``min_points`` are eligible. The running top k is kept per instance while
the frames stream (k tokens sums per instance, never all views). The feature is mask pooling
(``featurizer.fusion.mask_pool``) over the chosen views, views weighted by their pooled points.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from featurizer.errors import ConfigError
from featurizer.fusion.base import Fusion, ViewBatch, ViewTrace
from featurizer.fusion.mask_pool import describe_mask_view, point_weighted_sums

_POS_BITS = 24  # frame positions below 2**24 make (count, -position) one int64 ranking key


def merge_topk(best_key: torch.Tensor, new_key: torch.Tensor, k: int, *payload: tuple[torch.Tensor, torch.Tensor]):
    """Merge running (I, k) ranking keys with a batch's (I, B) keys; keep the k largest per row.

    payload: pairs (running (I, k, ...), new (I, B, ...)) gathered along with the keys.
    Returns the new keys (I, k) and the merged payloads.
    """
    keys = torch.cat([best_key, new_key], 1)
    top = torch.topk(keys, k, dim=1, sorted=True).indices
    out = [torch.gather(keys, 1, top)]
    for old, new in payload:
        both = torch.cat([old, new], 1)
        idx = top.view(*top.shape, *([1] * (both.dim() - 2))).expand(-1, -1, *both.shape[2:])
        out.append(torch.gather(both, 1, idx))
    return out


def ranking_key(counts: torch.Tensor, positions: list[int], min_points: int) -> torch.Tensor:
    """(I, B) int64 key: visible points first, then the earlier frame; -1 for ineligible views."""
    pos = torch.as_tensor(positions, dtype=torch.int64, device=counts.device)
    key = (counts << _POS_BITS) + ((1 << _POS_BITS) - 1 - pos)[None, :]
    return torch.where(counts >= min_points, key, torch.full_like(key, -1))


def key_positions(key: torch.Tensor) -> torch.Tensor:
    """The frame positions encoded in ranking keys (meaningful where ``key >= 0``)."""
    return (1 << _POS_BITS) - 1 - (key & ((1 << _POS_BITS) - 1))


class TopKViewsFusion(Fusion):
    """Mask pooling over the ``k`` views with the most visible points of the instance."""

    name = "topk_views"

    def __init__(self, k: int = 5, depth_mode: str = "absolute", depth_tol: float = 0.1, border: int = 10,
                 min_points: int = 3):
        super().__init__(depth_mode=depth_mode, depth_tol=depth_tol, border=border, min_points=min_points)
        if int(k) != k or k < 1:
            raise ConfigError("fusion.k", f"must be an integer >= 1, got {k!r}")
        self.k = int(k)

    def _start(self) -> None:
        n, k = self.num_instances, self.k
        self.best_key = torch.full((n, k), -1, dtype=torch.int64, device=self.device)
        self.best_pooled = torch.zeros(n, k, dtype=torch.int64, device=self.device)
        self.best_sums: torch.Tensor | None = None

    def _add(self, batch: ViewBatch, counts: torch.Tensor):
        sums, pooled, weights = point_weighted_sums(self, batch, counts)
        if self.best_sums is None:
            self.best_sums = torch.zeros(self.num_instances, self.k, sums.shape[2], dtype=torch.float32,
                                         device=self.device)
        key = ranking_key(counts, batch.positions, self.min_points)
        self.best_key, self.best_pooled, self.best_sums = merge_topk(
            self.best_key, key, self.k, (self.best_pooled, pooled), (self.best_sums, sums))
        return weights, pooled

    def describe_view(self, trace: ViewTrace, pooled, batch: ViewBatch, i: int, slot: int) -> ViewTrace:
        return describe_mask_view(self, trace, *pooled, batch, i, slot)

    def settle_views(self, i: int, traces: list[ViewTrace]) -> list[ViewTrace]:
        """Only the chosen views are kept."""
        chosen = self.chosen_frames()[i]
        return [t if t.kept and t.position in chosen else replace(t, kept=False, weight=0.0) for t in traces]

    def chosen_frames(self) -> dict[int, list[int]]:
        """Frame positions chosen for each instance, best first."""
        pos = key_positions(self.best_key)
        ok = self.best_key >= 0
        return {i: pos[i][ok[i]].tolist() for i in range(self.num_instances)}

    def _finish(self, read_frames=None):
        ok = self.best_key >= 0
        pooled = torch.where(ok, self.best_pooled, torch.zeros_like(self.best_pooled))
        weight = pooled.sum(1)
        has = weight > 0
        if self.best_sums is None:
            feats = torch.zeros(self.num_instances, 0, dtype=torch.float64)
        else:
            sums = (self.best_sums.to(torch.float64) * ok[:, :, None]).sum(1)
            feats = sums / weight.clamp(min=1).to(torch.float64)[:, None]
        reasons = {i: "no visible point inside the encoded region" for i in range(self.num_instances)}
        return feats, has, (pooled > 0).sum(1), reasons
