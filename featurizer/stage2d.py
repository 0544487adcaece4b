"""The 2D stage: frames -> patch tokens + depth-tested point -> pixel mapping -> fusion, streamed.

Frames are decoded in a torch DataLoader (``num_workers`` workers) in batches of up to
``frame_batch`` consecutive frames of one image size. Each batch is encoded (when the strategy
needs patch tokens), mapped (only the points that belong to some instance are projected, in raw
coordinates), turned into visible (instance, pixel) pairs through a point -> instance CSR index,
handed to the fusion strategy, and dropped: memory is bounded by one batch plus the strategy's
per-instance accumulators. ``crop_encode`` reads the frames it chose a second time.
"""

from __future__ import annotations

import logging
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from featurizer.dataset.frames import describe_skipped, read_frame_checked
from featurizer.fusion.base import Fusion, PointInstanceIndex, ViewBatch
from featurizer.geometry.mapping import VoxelCuller
from featurizer.scene import Scene

log = logging.getLogger(__name__)


@dataclass
class Stage2DResult:
    """features: instance index -> (D2,) float32 CPU, only instances that got a feature.
    records: every instance index -> {"views": int, "visible_points": int, "reason": None | str}.
    timings: seconds spent in decode, encode, map, fuse."""

    features: dict[int, torch.Tensor]
    records: dict[int, dict]
    timings: dict[str, float] = field(default_factory=dict)
    skipped_frames: dict[int, str] = field(default_factory=dict)  # frame number -> why it was not used


class Stopwatch:
    """Seconds per named section. A section entered inside another pauses the outer one, so every
    second is counted once, in the innermost section (e.g. frames re-read while fusing count as decode)."""

    def __init__(self, *names: str):
        self.seconds = dict.fromkeys(names, 0.0)
        self._open: list[str] = []
        self._since = 0.0

    @contextmanager
    def __call__(self, name: str):
        self._switch()
        self._open.append(name)
        try:
            yield
        finally:
            self._switch()
            self._open.pop()

    def _switch(self) -> None:
        now = time.perf_counter()
        if self._open:
            self.seconds[self._open[-1]] += now - self._since
        self._since = now

    def iterate(self, items, name: str):
        """Yield from ``items``, timing each step of the iteration as ``name``."""
        it = iter(items)
        while True:
            with self(name):
                item = next(it, _END)
            if item is _END:
                return
            yield item


_END = object()


class _TimedEncoder:
    """The 2D encoder as a fusion strategy sees it: calls to ``embed`` are timed as ``encode``."""

    def __init__(self, encoder, watch: Stopwatch):
        self._encoder, self._watch = encoder, watch

    def __getattr__(self, name: str):
        return getattr(self._encoder, name)

    def embed(self, *args, **kwargs):
        with self._watch("encode"):
            return self._encoder.embed(*args, **kwargs)


class _Frames(torch.utils.data.Dataset):
    """Reads frames by position in ``scene.frames``: (position, colour (H, W, 3) uint8, depth (H, W) float32)."""

    def __init__(self, frames: list, with_depth: bool = True):
        self.frames = frames
        self.with_depth = with_depth

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, pos: int):
        """(pos, colour, depth, None) or, for a frame that cannot be used, (pos, None, None, reason)."""
        color, depth, reason = read_frame_checked(self.frames[pos])
        if reason is not None:
            return pos, None, None, reason
        depth_t = torch.from_numpy(np.array(depth, dtype=np.float32)) if self.with_depth else None
        return pos, torch.from_numpy(np.array(color, dtype=np.uint8)), depth_t, None  # copies: may be read-only


def _collate(items):
    """Stacks the usable frames; the others travel back as {position: reason} (workers' warnings do not)."""
    skipped = {it[0]: it[3] for it in items if it[3] is not None}
    good = [it for it in items if it[3] is None]
    positions = [it[0] for it in good]
    colors = torch.stack([it[1] for it in good]) if good else None
    depths = torch.stack([it[2] for it in good]) if good and good[0][2] is not None else None
    return positions, colors, depths, skipped


def _batches(frames: list, positions: list[int], frame_batch: int) -> list[list[int]]:
    """Consecutive runs of at most ``frame_batch`` positions whose frames share one image size."""
    out: list[list[int]] = []
    for pos in positions:
        if out and len(out[-1]) < frame_batch and frames[out[-1][-1]].image_size == frames[pos].image_size:
            out[-1].append(pos)
        else:
            out.append([pos])
    return out


def _loader(frames: list, batches: list[list[int]], num_workers: int, with_depth: bool = True,
            pin: bool = False):
    """Batches of decoded frames; with workers, each prefetches 4 batches while the device encodes, and on
    a GPU (``pin``) the batches arrive in page-locked memory for asynchronous copies."""
    return torch.utils.data.DataLoader(
        _Frames(frames, with_depth), batch_sampler=batches,
        num_workers=num_workers, collate_fn=_collate, pin_memory=pin,
        prefetch_factor=4 if num_workers else None, persistent_workers=False)


class FrameBatches:
    """A scene's frames with a finite pose, in batches (:func:`_batches`), decoded by ``num_workers``
    DataLoader workers. :meth:`start` starts the workers, which decode and prefetch at once: started before
    the scene's 3D stage (``FeaturizerModule.predict_step`` does so when it has workers), the decoding
    overlaps the 3D encoder and the 2D stage finds its first batches ready."""

    def __init__(self, frames: list, frame_batch: int = 8, num_workers: int = 0, pin: bool = False):
        self.frames = frames
        self.positions = [p for p, f in enumerate(frames) if f.pose_is_finite]
        self.batches = _batches(frames, self.positions, frame_batch)
        self.num_workers, self.pin = num_workers, pin
        self._iter = None

    def start(self) -> FrameBatches:
        if self._iter is None:
            self._iter = iter(_loader(self.frames, self.batches, self.num_workers, pin=self.pin))
        return self

    def __iter__(self):
        return self.start()._iter


def run_2d(scene: Scene, encoder2d, fusion: Fusion, *, device: str | torch.device = "cpu",
           num_workers: int = 0, frame_batch: int = 8, progress: bool = False,
           backend: str = "auto", frame_batches: FrameBatches | None = None) -> Stage2DResult:
    """Per-instance 2D features of ``scene`` with ``encoder2d`` (a PatchEncoder) and a fusion strategy.

    Uses ``scene.points`` (raw coordinates) and ``scene.frames``; frames with a non-finite pose are
    skipped with a warning. Returns features (D2,) float32 CPU of the instances that got one, a
    record for every instance and the time spent decoding, encoding, mapping and fusing.
    backend: the mapping and hull code, ``auto`` (compiled kernels on CPU when numba is installed,
    else torch), ``torch`` or ``numba``; the features are the same.
    frame_batches: this scene's :class:`FrameBatches`, maybe started already (their decoding then overlapped
    earlier work); by default made here with ``frame_batch`` and ``num_workers``.
    """
    device = torch.device(device)
    watch = Stopwatch("decode", "encode", "map", "fuse")
    with watch("map"):  # per-scene setup, counted as mapping time
        index = PointInstanceIndex.from_scene(scene)
    fusion.start(len(scene.instances), _TimedEncoder(encoder2d, watch), device, instance_sizes=index.sizes,
                 backend=backend)
    frames = scene.frames
    if frame_batches is None:
        frame_batches = FrameBatches(frames, frame_batch, num_workers, pin=device.type == "cuda")
    positions, batches = frame_batches.positions, frame_batches.batches
    if len(positions) < len(frames):
        warnings.warn(f"{scene.scene_id}: skipping {len(frames) - len(positions)} frame(s) with a non-finite pose",
                      stacklevel=2)
    if not scene.instances or not positions or len(index.points) == 0:
        features, records = fusion.finish(None)
        return Stage2DResult(features, records, watch.seconds)

    with watch("map"):
        points = torch.from_numpy(scene.points[index.points.numpy()]).to(device)
        index.to(device)
        culler = VoxelCuller(points, backend=backend)  # voxels: conservative culling before the exact mapping
    opts = fusion.mapping_options
    skipped: dict[int, str] = {}
    loader = watch.iterate(frame_batches, "decode")
    for n_batch, (pos, colors, depths, bad) in enumerate(loader):
        skipped.update({frames[p].number: reason for p, reason in bad.items()})
        if not pos:
            continue
        tokens = None
        if fusion.requires_tokens:
            with watch("encode"), torch.inference_mode():
                tokens = encoder2d.patch_tokens(colors.to(device, non_blocking=True)).float()
        with watch("map"):
            poses = np.stack([frames[p].pose for p in pos])
            intr = np.stack([frames[p].intrinsics for p in pos])
            # conservative culling by voxels (frustum, max-depth pyramid), then the exact mapping of the rest
            mapping = culler.project(poses, intr, depths.to(device), backend=backend, **opts)
            rep, inst = index.expand(mapping.point_ids)
            slot, u, v = mapping.frame_index(), mapping.u, mapping.v
            if not index.one_each:  # some points belong to several instances: one entry per pair
                slot, u, v = (x.index_select(0, rep) for x in (slot, u, v))
            batch = ViewBatch(positions=list(pos), image_size=frames[pos[0]].image_size, inst=inst, slot=slot,
                              u=u, v=v, tokens=tokens)
        with watch("fuse"):
            fusion.add(batch)
        if progress:
            log.info("%s: 2D batch %d/%d (%d frames)", scene.scene_id, n_batch + 1, len(batches), len(pos))
        del tokens, mapping, batch, colors, depths

    def read_frames(wanted: list[int]):
        """Second pass over some frames (crop_encode): (positions, colour (B, H, W, 3) uint8)."""
        again = _loader(frames, _batches(frames, wanted, frame_batch), num_workers, with_depth=False)
        for pos, colors, _, _ in watch.iterate(again, "decode"):
            if pos:
                yield pos, colors

    with watch("fuse"):
        features, records = fusion.finish(read_frames)
    note = describe_skipped(skipped)
    if note:
        warnings.warn(f"{scene.scene_id}: {note}", stacklevel=2)
    return Stage2DResult(features, records, watch.seconds, skipped_frames=skipped)
