"""The predict loop: one scene per batch, the 3D stage then the 2D stage, shards out (with frame workers,
the 2D stage's frames are decoded while the 3D encoder runs).

``SceneDataset`` reads a scene (reader + segmenter) only when one of its stages still has to run;
``FeaturizerModule.predict_step`` runs the missing stages and returns their shards, which
``featurizer.writer.ShardWriter`` saves atomically.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from featurizer.scene import MIN_POINTS_3D, Scene, instance_boxes, object_key
from featurizer.store import StageStore


class SceneInputs:
    """The files each stage reads for a scene (what the stage cache fingerprints): the reader's scene
    files, its frames for the 2D stage, and the segmenter's files. Picklable, for spawned workers."""

    def __init__(self, reader, segmenter):
        self.reader = reader
        self.segmenter = segmenter

    def __call__(self, stage: str, scene_id: str) -> list[Path]:
        return (self.reader.input_files(scene_id, frames=stage == "2d")
                + self.segmenter.input_files(scene_id))


class SceneDataset(Dataset):
    """Scenes by index. Item: ``{"scene_id", "inputs": {stage: fingerprint}, "todo": [stages],
    "scene": Scene | None, "gt": list | None, "read_s": seconds}``; the scene is read and segmented
    only when ``todo`` (the stages without a shard for this configuration and these input files)
    is not empty."""

    def __init__(self, reader, segmenter, store: StageStore):
        self.reader = reader
        self.segmenter = segmenter
        self.store = store
        self.scene_ids = list(reader.scene_ids)

    def __len__(self) -> int:
        return len(self.scene_ids)

    def __getitem__(self, index: int) -> dict:
        scene_id = self.scene_ids[index]
        inputs = self.store.fingerprints(scene_id)
        todo = self.store.missing_stages(scene_id, inputs)
        item = {"scene_id": scene_id, "inputs": inputs, "todo": todo, "scene": None, "gt": None,
                "read_s": 0.0}
        if not todo:
            return item
        t0 = time.perf_counter()
        scene = self.reader.load(scene_id)
        # the reader's GT instances, before the segmenter replaces them: all of them (the GT attributes
        # index every object, as Chat-Scene's; only features stop at max_instances)
        gt = list(scene.instances)
        scene = self.segmenter.segment(scene)
        item.update(scene=scene, gt=gt if (gt or scene.split != "test") else None,
                    read_s=time.perf_counter() - t0)
        return item


def _first(batch: list) -> dict:
    return batch[0]


def scene_loader(dataset: SceneDataset, num_workers: int = 0) -> DataLoader:
    """One scene per batch, in order (Lightning adds a distributed sampler under DDP)."""
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers, collate_fn=_first,
                      persistent_workers=False)


def stage3d(scene: Scene, gt: list | None, encoder3d, read_s: float = 0.0) -> dict:
    """3D stage payload of one scene: pcd_all contents, attributes, Uni3D features, records."""
    t0 = time.perf_counter()
    aligned = scene.aligned_points()
    keys = scene.keys()
    records: dict[str, dict] = {}
    xyz, rgb, encoded_keys = [], [], []
    for key, inst in zip(keys, scene.instances):
        n = len(inst.point_ids)
        records[key] = {"label": inst.label, "num_points": n, "score": inst.score,
                        "3d": {"ok": True, "reason": None}}
        if n < MIN_POINTS_3D:
            reason = "empty instance" if n == 0 else f"fewer than {MIN_POINTS_3D} points"
            records[key]["3d"] = {"ok": False, "reason": reason}
            continue
        xyz.append(aligned[inst.point_ids])
        rgb.append(scene.colors[inst.point_ids])
        encoded_keys.append(key)
    t1 = time.perf_counter()
    feats: dict[str, torch.Tensor] = {}
    if encoded_keys:
        out = encoder3d.encode(xyz, rgb).float().cpu()
        if not torch.isfinite(out).all():
            raise FloatingPointError(f"{scene.scene_id}: non-finite 3D features")
        feats = {k: out[i].clone() for i, k in enumerate(encoded_keys)}
    t2 = time.perf_counter()
    gt_payload = None
    if gt is not None:
        gt_payload = {"labels": [g.label for g in gt], "locs": torch.from_numpy(instance_boxes(gt, aligned))}
    return {
        "coords": torch.from_numpy(aligned),
        "colors": torch.from_numpy(np.ascontiguousarray(scene.colors)),
        "labels": [inst.label for inst in scene.instances],
        "point_ids": [torch.from_numpy(inst.point_ids) for inst in scene.instances],
        "locs": torch.from_numpy(instance_boxes(scene.instances, aligned)),
        "gt": gt_payload,
        "feats": feats,
        "records": records,
        "notes": list(scene.notes),
        "timings": {"read": read_s, "prepare_3d": t1 - t0, "encode_3d": t2 - t1},
    }


class FeaturizerModule(L.LightningModule):
    """Runs the stages a scene still needs. Encoders are submodules, so Lightning moves them to the device."""

    def __init__(self, encoder3d: torch.nn.Module, encoder2d: torch.nn.Module | None = None, fusion=None,
                 frame_workers: int = 0, frame_batch: int = 8, token_cache_dir: str | None = None,
                 geometry_backend: str = "auto"):
        super().__init__()
        self.geometry_backend = geometry_backend
        self.token_cache_dir = token_cache_dir
        self.encoder3d = encoder3d
        self.encoder2d = encoder2d
        self.fusion = fusion
        self.frame_workers = frame_workers
        self.frame_batch = frame_batch

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # a Scene of numpy arrays: the stages move what they need

    def predict_step(self, batch: dict, batch_idx: int = 0) -> dict:
        from featurizer.stage2d import FrameBatches

        shards: dict[str, dict] = {}
        scene = batch["scene"]
        frames = None
        if "2d" in batch["todo"] and "3d" in batch["todo"] and self.frame_workers > 0 and scene.instances:
            # the frame workers decode (and prefetch) while the 3D encoder runs: the stages overlap there
            frames = FrameBatches(scene.frames, self.frame_batch, self.frame_workers,
                                  pin=self.device.type == "cuda").start()
        if "3d" in batch["todo"]:
            shards["3d"] = stage3d(scene, batch["gt"], self.encoder3d, read_s=batch["read_s"])
        if "2d" in batch["todo"]:
            shards["2d"] = self.stage2d(scene, frames)
        return {"scene_id": batch["scene_id"], "inputs": batch["inputs"], "shards": shards}

    def stage2d(self, scene: Scene, frames=None) -> dict:
        """The 2D stage of ``scene``; ``frames``: its started :class:`featurizer.stage2d.FrameBatches`, if any."""
        from featurizer.stage2d import run_2d

        t0 = time.perf_counter()
        encoder = self.encoder2d
        if self.token_cache_dir is not None:  # a fusion sweep encodes each frame once
            from featurizer.encoder2d.cache import TokenCache

            encoder = TokenCache(self.encoder2d, Path(self.token_cache_dir) / f"{scene.scene_id}.pt")
        result = run_2d(scene, encoder, self.fusion, device=self.device,
                        num_workers=self.frame_workers, frame_batch=self.frame_batch,
                        backend=self.geometry_backend, frame_batches=frames)
        if encoder is not self.encoder2d:
            encoder.save()
        feats = {object_key(scene.scene_id, i): f.float().cpu().clone() for i, f in result.features.items()}
        records = {object_key(scene.scene_id, i): {"ok": object_key(scene.scene_id, i) in feats, **rec}
                   for i, rec in result.records.items()}
        timings = {f"{k}_2d": float(v) for k, v in result.timings.items()}
        timings["total_2d"] = time.perf_counter() - t0
        if encoder is not self.encoder2d:
            timings["cached_token_frames"] = float(encoder.hits)
        from featurizer.dataset.frames import describe_skipped

        note = describe_skipped(result.skipped_frames)
        return {"feats": feats, "records": records, "timings": timings, "notes": [note] if note else []}
