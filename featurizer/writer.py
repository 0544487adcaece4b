"""Per-scene stage shards (atomic, resumable) and the merged Chat-Scene files.

Layout:
    <cache_dir>/<stage>/<hash>/<scene>.pt   one shard per scene and stage ("3d", "2d"); the hash covers
                                            every config section the stage depends on, so a rerun
                                            reuses a shard only when its configuration matches, and
                                            a fusion sweep shares the 3D shards.
    <output_dir>/                           the run's merged files (DESIGN.md section 3):
        pcd_all/<scene>.pth
        scannet_<split>_attributes.pt                  GT instances
        scannet_<segmenter>_<split>_attributes.pt      predicted instances (segmenter != gt)
        scannet_<segmenter>_<encoder3d>_feats.pt
        scannet_<segmenter>_videofeats.pt
        records.json                                   per key: why a feature is missing, views, points
        summary.json                                   counts, reasons, timings, file names
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
from contextlib import contextmanager
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from featurizer.errors import FeaturizerError

# Bump when a stage's algorithm changes in a way that invalidates cached shards.
STAGE_VERSIONS = {"3d": 1, "2d": 1}


def config_hash(*parts: Any) -> str:
    """Stable 16-hex-digit hash of JSON-serialisable config parts."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def stage_hashes(sections: dict[str, Any], with_2d: bool) -> dict[str, str]:
    """Config hash of each stage from the resolved config sections it depends on.

    3D: dataset, segmenter, encoder3d. 2D: dataset, segmenter, encoder2d, fusion. A fusion sweep
    therefore reuses the 3D shards; changing the segmenter recomputes both.
    """
    base = (sections["dataset"], sections["segmenter"])
    hashes = {"3d": config_hash("3d", STAGE_VERSIONS["3d"], *base, sections["encoder3d"])}
    if with_2d:
        hashes["2d"] = config_hash("2d", STAGE_VERSIONS["2d"], *base, sections["encoder2d"], sections["fusion"])
    return hashes


@contextmanager
def _atomic(path: Path):
    """Yields a temporary path in ``path``'s folder; renamed onto ``path`` only if the body succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: never a half-written file."""
    with _atomic(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(text: str, path: Path) -> None:
    with _atomic(path) as tmp:
        Path(tmp).write_text(text)


class StageStore:
    """Shards of each (stage, scene) under ``<cache_dir>/<stage>/<hash>/<scene>.pt``.

    hashes: stage name -> config hash; a stage absent from ``hashes`` is not run.
    """

    def __init__(self, cache_dir: str | Path, hashes: dict[str, str]):
        self.root = Path(cache_dir)
        self.hashes = dict(hashes)

    @property
    def stages(self) -> list[str]:
        return list(self.hashes)

    def path(self, stage: str, scene_id: str) -> Path:
        return self.root / stage / self.hashes[stage] / f"{scene_id}.pt"

    def load(self, stage: str, scene_id: str) -> dict | None:
        """The shard, or None when absent, unreadable, or recorded under another configuration."""
        path = self.path(stage, scene_id)
        if not path.exists():
            return None
        try:
            shard = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a corrupt shard is recomputed, never trusted
            return None
        if not isinstance(shard, dict) or shard.get("hash") != self.hashes[stage]:
            return None
        return shard

    def missing_stages(self, scene_id: str) -> list[str]:
        """Stages without a shard for this configuration (the hash is part of the path, and shards are
        written atomically, so existence is enough; :meth:`load` still checks the recorded hash)."""
        return [s for s in self.stages if not self.path(s, scene_id).exists()]

    def save(self, stage: str, scene_id: str, payload: dict) -> None:
        atomic_save({**payload, "hash": self.hashes[stage], "scene_id": scene_id, "created": time.time()},
                    self.path(stage, scene_id))


@dataclass
class OutputNames:
    """Chat-Scene's file names for one run."""

    segmenter: str
    encoder3d: str
    split: str
    ground_truth: bool

    @property
    def gt_attributes(self) -> str:
        return f"scannet_{self.split}_attributes.pt"

    @property
    def attributes(self) -> str:
        if self.ground_truth:
            return self.gt_attributes
        return f"scannet_{self.segmenter}_{self.split}_attributes.pt"

    @property
    def feats3d(self) -> str:
        return f"scannet_{self.segmenter}_{self.encoder3d}_feats.pt"

    @property
    def feats2d(self) -> str:
        return f"scannet_{self.segmenter}_videofeats.pt"


class ShardWriter(BasePredictionWriter):
    """Writes each scene's freshly computed stage shards at the end of its predict batch.

    Prediction (from ``FeaturizerModule.predict_step``): ``{"scene_id": str, "shards": {stage: payload}}``.
    At the end of the loop, rank 0 merges every scene's shards into the run's Chat-Scene files.
    """

    def __init__(self, store: StageStore, output_dir: str | Path, scene_ids: list[str], names: OutputNames,
                 run_info: dict | None = None):
        super().__init__(write_interval="batch")
        self.store = store
        self.output_dir = Path(output_dir)
        self.scene_ids = list(scene_ids)
        self.names = names
        self.run_info = dict(run_info or {})

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for stage, payload in prediction["shards"].items():
            self.store.save(stage, prediction["scene_id"], payload)

    def on_predict_end(self, trainer, pl_module):
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            merge(self.store, self.output_dir, self.scene_ids, self.names, self.run_info)
        trainer.strategy.barrier()


def _stats(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "median": None, "min": None, "max": None}
    return {"mean": float(statistics.fmean(values)), "median": float(statistics.median(values)),
            "min": float(min(values)), "max": float(max(values))}


def _feature_stats(feats: dict[str, torch.Tensor]) -> dict | None:
    if not feats:
        return None
    x = torch.stack(list(feats.values())).float()
    norms = x.norm(dim=1)
    return {"dim": int(x.shape[1]), "count": int(x.shape[0]), "norm_mean": float(norms.mean()),
            "norm_std": float(norms.std()) if len(norms) > 1 else 0.0,
            "finite": bool(torch.isfinite(x).all())}


def merge(store: StageStore, output_dir: Path, scene_ids: list[str], names: OutputNames,
          run_info: dict | None = None) -> dict:
    """Merge the shards of ``scene_ids`` into the run's Chat-Scene files; returns the summary.

    Every output is written atomically: an interrupted merge leaves the earlier files intact.
    """
    output_dir = Path(output_dir)
    run_info = dict(run_info or {})
    started_at = float(run_info.get("started_at", 0.0))
    attributes: dict[str, dict] = {}
    gt_attributes: dict[str, dict] = {}
    feats3d: dict[str, torch.Tensor] = {}
    feats2d: dict[str, torch.Tensor] = {}
    records: dict[str, dict] = {}
    timings: Counter = Counter()
    computed = Counter()
    notes: dict[str, list[str]] = {}
    num_instances = 0
    has_2d = "2d" in store.stages
    for scene_id in scene_ids:
        s3 = store.load("3d", scene_id)
        s2 = store.load("2d", scene_id) if has_2d else None
        if s3 is None or (has_2d and s2 is None):
            raise FeaturizerError(f"{store.root}: scene {scene_id} has no finished shard to merge "
                                  f"(was the run interrupted? rerun to resume)")
        pcd = (s3["coords"], s3["colors"], list(s3["labels"]), [ids.tolist() for ids in s3["point_ids"]])
        atomic_save(pcd, output_dir / "pcd_all" / f"{scene_id}.pth")
        attributes[scene_id] = {"objects": list(s3["labels"]), "locs": s3["locs"]}
        if s3.get("gt") is not None:
            gt_attributes[scene_id] = {"objects": list(s3["gt"]["labels"]), "locs": s3["gt"]["locs"]}
        feats3d.update(s3["feats"])
        num_instances += len(s3["labels"])
        for key, rec in s3["records"].items():
            records[key] = {"scene": scene_id, **rec}
        for stage, shard in (("3d", s3), ("2d", s2)):
            # time per stage counts the shards this run computed; older ones were reused
            if shard is None or shard.get("created", 0.0) < started_at:
                continue
            for name, seconds in shard.get("timings", {}).items():
                timings[name] += float(seconds)
            computed[stage] += 1
        if s2 is not None:
            feats2d.update(s2["feats"])
            for key, rec in s2["records"].items():
                records[key]["2d"] = rec
        scene_notes = list(s3.get("notes", [])) + list((s2 or {}).get("notes", []))
        if scene_notes:
            notes[scene_id] = scene_notes

    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_save(feats3d, output_dir / names.feats3d)
    files = {"feats3d": names.feats3d, "feats2d": None, "attributes": names.attributes,
             "gt_attributes": names.gt_attributes if gt_attributes else None, "pcd_all": "pcd_all"}
    atomic_save(attributes, output_dir / names.attributes)
    if not names.ground_truth and gt_attributes:
        atomic_save(gt_attributes, output_dir / names.gt_attributes)
    if has_2d:
        atomic_save(feats2d, output_dir / names.feats2d)
        files["feats2d"] = names.feats2d

    missing_3d = Counter(r["3d"]["reason"] for r in records.values() if not r["3d"]["ok"])
    missing_2d = Counter(r["2d"]["reason"] for r in records.values()
                         if "2d" in r and r["2d"].get("reason"))
    views = [float(r["2d"]["views"]) for r in records.values() if "2d" in r]
    summary = {
        "status": "ok",
        "error": None,
        **run_info,
        "scenes": len(scene_ids),
        "instances": num_instances,
        "keys_3d": len(feats3d),
        "keys_2d": len(feats2d) if has_2d else None,
        "missing_3d": dict(missing_3d),
        "missing_2d": dict(missing_2d) if has_2d else None,
        "views_per_instance": _stats(views),
        "feature_stats": {"3d": _feature_stats(feats3d), "2d": _feature_stats(feats2d)},
        "computed_scenes": {stage: computed.get(stage, 0) for stage in store.stages},
        "reused_scenes": {stage: len(scene_ids) - computed.get(stage, 0) for stage in store.stages},
        "timings": dict(timings),
        "notes": notes,
        "files": files,
    }
    atomic_write_text(json.dumps(records, indent=1, sort_keys=True), output_dir / "records.json")
    atomic_write_text(json.dumps(summary, indent=2), output_dir / "summary.json")
    return summary
