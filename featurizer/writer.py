"""The Lightning callback that saves each scene's stage shards, and the merge into Chat-Scene's files.

Shards live in the stage cache (:mod:`featurizer.store`). After the predict loop, rank 0 merges every
scene's shards into the run folder (DESIGN.md section 3):

    <output_dir>/
        pcd_all/<scene>.pth
        <dataset>_<split>_attributes.pt                  GT instances (<dataset>: the reader's name, scannet)
        <dataset>_<segmenter>_<split>_attributes.pt      predicted instances (segmenter != gt)
        <dataset>_<segmenter>_<encoder3d>_feats.pt
        <dataset>_<segmenter>_videofeats.pt
        records.json                                   per key: why a feature is missing, views, points
        summary.json                                   counts, reasons, choices, file names (no times)
        timings.json                                   seconds per stage, start time (differs run to run)

Every file but ``timings.json`` has the same bytes when the same configuration runs twice on the same
inputs, so users can compare runs and downloads by checksum.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from featurizer.errors import FeaturizerError
from featurizer.files import atomic_save, atomic_write_json, atomic_write_text
from featurizer.store import StageStore


@dataclass
class OutputNames:
    """Chat-Scene's file names, from the parts' names: the reader's (``scannet``), the segmenter's and the
    3D encoder's (DESIGN.md sections 3 and 8). Features cover the train and val scenes in one file; the
    ``_all`` files add the test scenes; attributes are per split (``all``: every split)."""

    dataset: str
    segmenter: str
    encoder3d: str
    ground_truth: bool

    def gt_attributes(self, split: str) -> str:
        return f"{self.dataset}_{split}_attributes.pt"

    def attributes(self, split: str) -> str:
        if self.ground_truth:
            return self.gt_attributes(split)
        return f"{self.dataset}_{self.segmenter}_{split}_attributes.pt"

    def feats3d(self, with_test: bool = False) -> str:
        return f"{self.dataset}_{self.segmenter}_{self.encoder3d}_feats{'_all' if with_test else ''}.pt"

    def feats2d(self, with_test: bool = False) -> str:
        return f"{self.dataset}_{self.segmenter}_videofeats{'_all' if with_test else ''}.pt"


class ShardWriter(BasePredictionWriter):
    """Saves each scene's freshly computed stage shards at the end of its predict batch.

    Prediction (from ``FeaturizerModule.predict_step``): ``{"scene_id": str, "inputs": {stage:
    fingerprint}, "shards": {stage: payload}}``. The merge is not done here: after the loop, rank 0
    calls :func:`merge` (``run.py``), once, whatever the strategy.
    """

    def __init__(self, store: StageStore):
        super().__init__(write_interval="batch")
        self.store = store

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for stage, payload in prediction["shards"].items():
            self.store.save(stage, prediction["scene_id"], payload, prediction["inputs"][stage])

    def on_predict_end(self, trainer, pl_module):
        trainer.strategy.barrier()  # every rank's shards are on disk before rank 0 merges


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


@dataclass
class RunResult:
    """What one run produced, kept in memory from the merge to the probe, the pictures and the logger.

    summary: counts, reasons, choices, file names and ``timings`` (written by :func:`write_summary`);
    records: per key, why a feature is missing, views, points (``records.json``);
    feats3d / feats2d: ``{key: (D,) float32}`` (feats2d None without a 2D stage);
    attributes / gt_attributes: ``{scene: {"objects": [labels], "locs": (I, 6)}}`` of the instances
    (the first ``max_instances``) and of every GT object; gt_attributes None when the scenes have no GT
    (test split).
    splits: each scene's split.
    """

    summary: dict
    records: dict
    feats3d: dict
    feats2d: dict | None
    attributes: dict
    gt_attributes: dict | None
    splits: dict[str, str]


def merge(store: StageStore, output_dir: Path, scene_ids: list[str], split_of: dict[str, str],
          names: OutputNames, run_info: dict | None = None, started_at: float = 0.0,
          primary: bool = True) -> RunResult:
    """Merge the shards of ``scene_ids`` into the run's Chat-Scene files and the records file.

    split_of: each scene's split. Writes the features of the non-test scenes (one file for train and
    val, as Chat-Scene uses), with test scenes also the ``_all`` feature and attribute files, the
    instances' attributes per split, and (``primary``) ``pcd_all/`` and the GT attributes per split.
    The extra ground-truth instance set of a run (``gt_features``) is merged with ``primary=False``:
    its features and ``records_gt.json`` only.
    Returns the result; its summary holds the ``timings`` (:func:`write_summary` writes both).
    Every output is written atomically: an interrupted merge leaves the earlier files intact.
    started_at: the run's start (a Unix time); time per stage counts the shards created since.
    """
    output_dir = Path(output_dir)
    run_info = dict(run_info or {})
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
            raise FeaturizerError(f"{store.root}: scene {scene_id} has no finished shard for its current "
                                  f"input files (was the run interrupted, or did its files change during "
                                  f"the run? rerun to resume)")
        if primary:
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

    files = _write_files(output_dir, names, scene_ids, split_of, attributes, gt_attributes, feats3d,
                         feats2d if has_2d else None, primary)
    missing_3d = Counter(r["3d"]["reason"] for r in records.values() if not r["3d"]["ok"])
    missing_2d = Counter(r["2d"]["reason"] for r in records.values()
                         if "2d" in r and r["2d"].get("reason"))
    views = [float(r["2d"]["views"]) for r in records.values() if "2d" in r]
    splits = sorted({split_of[s] for s in scene_ids})
    summary = {
        "status": "ok",
        "error": None,
        **run_info,
        "scenes": len(scene_ids),
        "scenes_per_split": {sp: sum(split_of[s] == sp for s in scene_ids) for sp in splits},
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
    summary["timings"]["started_at"] = started_at
    records_file = "records.json" if primary else f"records_{names.segmenter}.json"
    atomic_write_text(json.dumps(records, indent=1, sort_keys=True), output_dir / records_file)
    files["records"] = records_file
    return RunResult(summary, records, feats3d, feats2d if has_2d else None, attributes, gt_attributes or None,
                     {s: split_of[s] for s in scene_ids})


def _write_files(output_dir: Path, names: OutputNames, scene_ids: list[str], split_of: dict[str, str],
                 attributes: dict, gt_attributes: dict, feats3d: dict, feats2d: dict | None,
                 primary: bool) -> dict:
    """Write the feature and attribute files; returns ``summary["files"]``: role -> file name, or
    split -> file name for the attributes."""
    output_dir.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[str]] = {}
    for scene_id in scene_ids:
        by_split.setdefault(split_of[scene_id], []).append(scene_id)
    test = set(by_split.get("test", []))

    def keys_of(feats: dict, scenes: set) -> dict:
        return {k: v for k, v in feats.items() if k.rsplit("_", 1)[0] in scenes}

    files: dict = {"feats3d": None, "feats2d": None, "feats3d_all": None, "feats2d_all": None,
                   "attributes": {}, "gt_attributes": {}, "pcd_all": "pcd_all" if primary else None}
    for feats, role in ((feats3d, "feats3d"), (feats2d, "feats2d")):
        if feats is None:
            continue
        name_of = names.feats3d if role == "feats3d" else names.feats2d
        if len(test) < len(scene_ids):
            files[role] = name_of()
            atomic_save(keys_of(feats, set(scene_ids) - test) if test else feats, output_dir / files[role])
        if test:
            files[f"{role}_all"] = name_of(with_test=True)
            atomic_save(feats, output_dir / files[f"{role}_all"])
    if not primary:
        return files
    for split, scenes in by_split.items():
        has_gt = [s for s in scenes if s in gt_attributes]
        if has_gt:  # every GT object (a ground-truth run's attributes file too: Chat-Scene's hold them all)
            files["gt_attributes"][split] = names.gt_attributes(split)
            atomic_save({s: gt_attributes[s] for s in has_gt}, output_dir / names.gt_attributes(split))
        if not (names.ground_truth and has_gt):
            files["attributes"][split] = names.attributes(split)
            atomic_save({s: attributes[s] for s in scenes}, output_dir / names.attributes(split))
        else:
            files["attributes"][split] = names.gt_attributes(split)
    if test and not names.ground_truth:
        files["attributes"]["all"] = names.attributes("all")
        atomic_save(attributes, output_dir / names.attributes("all"))
    return files


def write_summary(summary: dict, output_dir: Path) -> None:
    """``summary.json`` (everything but the times: the same bytes when a run is repeated) and
    ``timings.json`` (seconds per stage, the start time)."""
    output_dir = Path(output_dir)
    rest = {k: v for k, v in summary.items() if k != "timings"}
    atomic_write_json(rest, output_dir / "summary.json")
    atomic_write_json(summary.get("timings", {}), output_dir / "timings.json")
