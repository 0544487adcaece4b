"""What every fusion strategy shares: the point -> instance index, the per-batch view data, records.

The 2D stage (``featurizer.stage2d.run_2d``) streams a scene's frames in batches. For each batch it
hands the strategy a :class:`ViewBatch`: the visible (instance, pixel) pairs of every frame of the
batch (from one depth-tested mapping, shared by all strategies) and, when the strategy needs them,
the frames' patch tokens. The strategy accumulates per-instance sums and drops the batch; at the
end :meth:`Fusion.finish` returns one feature per instance that got one and a record for every
instance (views used, visible points, and why it has no feature).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from featurizer.errors import ConfigError, DataError
from featurizer.geometry.mapping import check_mapping_options

# A function that re-reads frames: positions in scene.frames -> batches of (positions, colour (B, H, W, 3) uint8)
FrameReader = Callable[[list[int]], Iterator[tuple[list[int], torch.Tensor]]]


class PointInstanceIndex:
    """CSR map from points to the instances that hold them (Chat-Scene instances may overlap).

    points: (P,) int64 sorted unique scene point ids held by at least one instance: the only points
    the 2D stage needs to project. ``ptr`` (P + 1,) and ``instances`` (pairs,) int64: point k
    (``points[k]``) belongs to ``instances[ptr[k]:ptr[k + 1]]``.
    sizes: (I,) int64 number of distinct points of each instance.
    """

    def __init__(self, point_ids: list[np.ndarray], num_points: int, where: str = "scene"):
        sizes = [len(p) for p in point_ids]
        ids = np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1) for p in point_ids]) if point_ids else \
            np.zeros(0, dtype=np.int64)
        inst = np.repeat(np.arange(len(point_ids), dtype=np.int64), sizes)
        if len(ids) and (ids.min() < 0 or ids.max() >= num_points):
            bad = int(inst[np.flatnonzero((ids < 0) | (ids >= num_points))[0]])
            raise DataError(where, f"instance {bad} has point ids outside 0..{num_points - 1}")
        self.num_instances = len(point_ids)
        per_point = np.bincount(ids, minlength=num_points) if len(ids) else np.zeros(num_points, np.int64)
        if len(ids) == 0 or per_point.max() <= 1:
            # the common case: every point in at most one instance, once (O(N), no sort)
            points = np.flatnonzero(per_point)
            owner = np.empty(num_points, dtype=np.int64)
            owner[ids] = inst
            pair_inst = owner[points]
            counts = np.ones(len(points), dtype=np.int64)
        else:
            n_inst = max(len(point_ids), 1)
            key = np.unique(ids * n_inst + inst)  # sorted by point, then instance; duplicates dropped
            pairs = np.stack([key // n_inst, key % n_inst], axis=1)
            points, counts = np.unique(pairs[:, 0], return_counts=True)
            pair_inst = pairs[:, 1].copy()
        self.points = torch.from_numpy(points.astype(np.int64))
        self.ptr = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        self.instances = torch.from_numpy(pair_inst.astype(np.int64))
        self.sizes = torch.from_numpy(np.bincount(pair_inst, minlength=len(point_ids)).astype(np.int64))
        self.one_each = bool(len(points) == len(pair_inst))  # every point in exactly one instance

    @classmethod
    def from_scene(cls, scene) -> PointInstanceIndex:
        return cls([inst.point_ids for inst in scene.instances], scene.num_points, where=scene.scene_id)

    def to(self, device: torch.device) -> PointInstanceIndex:
        for name in ("points", "ptr", "instances"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def expand(self, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pairs of projected points (local indices into ``points``, (M,)) with their instances.

        Returns rep (M',) int64 position in ``local`` of each pair and inst (M',) int64 instance.
        """
        if self.one_each:
            return torch.arange(len(local), device=local.device), self.instances.index_select(0, local)
        start = self.ptr.index_select(0, local)
        count = self.ptr.index_select(0, local + 1) - start
        rep = torch.repeat_interleave(torch.arange(len(local), device=local.device), count)
        total = len(rep)
        shift = start - (torch.cumsum(count, 0) - count)
        return rep, self.instances.index_select(0, torch.arange(total, device=local.device) + shift.index_select(0, rep))


@dataclass
class ViewBatch:
    """One batch of frames, as a strategy sees it.

    A frame is named by its ``Frame.number`` in the stream, by its *position* in ``scene.frames``, and
    within a batch by its *slot* (0 .. B-1): ``positions[slot]`` is its position.
    positions: (B,) positions of the frames in ``scene.frames``; image_size: (W, H) of all of them.
    inst, slot, u, v: (P,) int64 visible (instance, frame slot, pixel column, pixel row) pairs.
    tokens: (B, R, C, D) patch tokens (None when the strategy does not need them).
    """

    positions: list[int]
    image_size: tuple[int, int]
    inst: torch.Tensor
    slot: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    tokens: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return len(self.positions)


@dataclass
class ViewTrace:
    """What a strategy did with one traced instance in one frame, for pictures (:mod:`featurizer.viz`).

    position: the frame's position in ``scene.frames``. u, v: (P,) int64 pixel columns and rows of the
    instance's visible points there. kept: whether the view contributes to the instance's feature;
    weight: its weight there before normalisation (0 when not kept). regions: (K, 4) float64 frame-pixel
    rectangles ``(x0, y0, x1, y1)`` that were pooled (patch cells, the reference's box, crops);
    region_weights: (K,) their relative weights (None: equal). hull: (H, 2) float64 ``(u, v)`` vertices
    of the hull the strategy used ((0, 2) when none). note: one line for the picture's title.
    """

    position: int
    u: np.ndarray
    v: np.ndarray
    kept: bool = False
    weight: float = 0.0
    regions: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    region_weights: np.ndarray | None = None
    hull: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    note: str = ""


class Fusion:
    """Base of the fusion strategies: mapping options, per-instance bookkeeping and records.

    depth_mode: ``relative`` (tolerance = depth_tol * depth, the paper's 0.25) or ``absolute``
    (tolerance = depth_tol metres). border: pixels dropped at each image edge (paper: 10).
    min_points: a view is a candidate for an instance when at least this many of its points are
    visible in it (paper: 3).

    Subclasses implement ``_start``, ``_add`` and ``_finish`` (their maths) and ``describe_view``.
    ``trace`` (a set of instance indices, default empty) makes the base keep, for those instances, a
    :class:`ViewTrace` of every view that sees them (``self.traces[i]``), for pictures: after each
    ``_add`` it asks the strategy's ``describe_view`` what it pooled there, given what ``_add``
    returned, and after ``_finish`` its ``settle_views`` (for strategies that choose views at the end).
    """

    name = "fusion"
    requires_tokens = True

    def __init__(self, depth_mode: str = "absolute", depth_tol: float = 0.1, border: int = 10,
                 min_points: int = 3):
        check_mapping_options(depth_mode, depth_tol, border, option="fusion")
        if int(min_points) != min_points or min_points < 1:
            raise ConfigError("fusion.min_points", f"must be an integer >= 1, got {min_points!r}")
        self.depth_mode = depth_mode
        self.depth_tol = float(depth_tol)
        self.border = int(border)
        self.min_points = int(min_points)
        self.trace: set[int] = set()
        self.traces: dict[int, list[ViewTrace]] = {}

    @property
    def mapping_options(self) -> dict:
        return {"depth_mode": self.depth_mode, "depth_tol": self.depth_tol, "border": self.border}

    # -- driver interface ------------------------------------------------------------------------

    def start(self, num_instances: int, encoder2d, device: torch.device | str = "cpu",
              instance_sizes: torch.Tensor | None = None, backend: str = "auto") -> None:
        """Reset the state for a new scene of ``num_instances`` instances. backend: the geometry code
        (``auto``, ``torch`` or ``numba``, see :func:`featurizer.geometry.hulls.grouped_hull_area2`)."""
        self.backend = backend
        self.num_instances = int(num_instances)
        self.encoder2d = encoder2d
        self.device = torch.device(device)
        self.sizes = (torch.ones(num_instances, dtype=torch.int64) if instance_sizes is None
                      else instance_sizes.cpu())
        self.frames_seen = 0
        self.visible = torch.zeros(num_instances, dtype=torch.int64, device=self.device)
        self.candidate = torch.zeros(num_instances, dtype=torch.bool, device=self.device)
        self.traces = {i: [] for i in self.trace if i < self.num_instances}
        self._start()

    def add(self, batch: ViewBatch) -> None:
        """Accumulate one batch of frames."""
        self.frames_seen += batch.size
        counts = self.group_counts(batch)
        self.visible += counts.sum(1)
        self.candidate |= (counts >= self.min_points).any(1)
        pooled = self._add(batch, counts)
        for i, slot, sel in self._traced_pairs(batch):
            trace = ViewTrace(batch.positions[slot], batch.u[sel].cpu().numpy(), batch.v[sel].cpu().numpy())
            self.traces[i].append(self.describe_view(trace, pooled, batch, i, slot))

    def finish(self, read_frames: FrameReader | None = None) -> tuple[dict[int, torch.Tensor], dict[int, dict]]:
        """Features {instance: (D,) float32 CPU} of the instances that got one, and a record of every
        instance ``{"views", "visible_points", "reason"}``."""
        feats, has, views, reasons = self._finish(read_frames)
        self.traces = {i: self.settle_views(i, traced) for i, traced in self.traces.items()}
        visible = self.visible.cpu().tolist()
        candidate = self.candidate.cpu().tolist()
        views = [int(x) for x in views.cpu().tolist()]
        has = has.cpu().tolist()
        features: dict[int, torch.Tensor] = {}
        records: dict[int, dict] = {}
        for i in range(self.num_instances):
            reason = None
            if has[i]:
                features[i] = feats[i].detach().to("cpu", torch.float32).clone()
            elif int(self.sizes[i]) == 0:
                reason = "no points"
            elif self.frames_seen == 0:
                reason = "no frames"
            elif visible[i] == 0:
                reason = "no visible points"
            elif not candidate[i]:
                reason = f"fewer than {self.min_points} visible points in every view"
            else:
                reason = reasons.get(i, "no view kept")
            records[i] = {"views": views[i] if has[i] else 0, "visible_points": int(visible[i]),
                          "reason": reason}
        return features, records

    # -- helpers for subclasses -------------------------------------------------------------------

    def group_counts(self, batch: ViewBatch) -> torch.Tensor:
        """(I, B) int64 visible points of each instance in each frame of the batch."""
        key = batch.inst * batch.size + batch.slot
        return torch.bincount(key, minlength=self.num_instances * batch.size).view(self.num_instances, batch.size)

    def averaged(self, acc: torch.Tensor | None, weight: torch.Tensor) -> torch.Tensor:
        """(I, D) float64 ``acc / weight`` per instance (``acc`` unchanged where ``weight`` is 0);
        (I, 0) when no batch was accumulated (``acc`` None)."""
        if acc is None:
            return torch.zeros(self.num_instances, 0, dtype=torch.float64)
        return acc / torch.where(weight > 0, weight, torch.ones_like(weight)).to(torch.float64)[:, None]

    def patch_pairs(self, batch: ViewBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Patch (row, col) of every pair through the encoder's exact preprocessing, and validity."""
        rows, cols, valid = self.encoder2d.pixel_to_patch(batch.u, batch.v, batch.image_size)
        return rows.to(batch.u.device), cols.to(batch.u.device), valid.to(batch.u.device)

    def _traced_pairs(self, batch: ViewBatch):
        """Yield (instance, slot, pair mask) for the traced instances seen in the batch."""
        for i in self.traces:
            sel = batch.inst == i
            if not bool(sel.any()):
                continue
            for slot in torch.unique(batch.slot[sel]).tolist():
                yield i, slot, sel & (batch.slot == slot)

    def _start(self) -> None:
        raise NotImplementedError

    def _add(self, batch: ViewBatch, counts: torch.Tensor):
        """Accumulate a batch; returns what ``describe_view`` needs to describe its views (or None)."""
        raise NotImplementedError

    def describe_view(self, trace: ViewTrace, pooled, batch: ViewBatch, i: int, slot: int) -> ViewTrace:
        """``trace`` (position, u, v filled) completed with what the strategy did for instance ``i`` in
        frame ``slot`` of the batch; ``pooled`` is what ``_add`` returned for it."""
        raise NotImplementedError

    def settle_views(self, i: int, traces: list[ViewTrace]) -> list[ViewTrace]:
        """Instance ``i``'s traces once the feature is made (strategies that choose views at the end
        mark them here); unchanged by default."""
        return traces

    def _finish(self, read_frames: FrameReader | None):
        """Returns feats (I, D), has (I,) bool, views (I,) int, reasons {instance: str}."""
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.mapping_options.items())
        return f"{type(self).__name__}({opts}, min_points={self.min_points})"
