"""The builder interface and what every builder shares: reading inputs, checking records, stats."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np

from featurizer.annotations.match import best_pred, iou_matrix
from featurizer.errors import DataError
from featurizer.files import read_json, read_lines

SPLITS = ("train", "val")


def read_input(path: Path):
    """An annotation input JSON file's content (DataError naming the file when missing or not JSON)."""
    return read_json(path, "input file not found")


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(path, "input file not found")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_scene_list(path: Path) -> set[str]:
    """The scene ids of a ScanNet split file (``scannetv2_<split>.txt``)."""
    if not path.is_file():
        raise DataError(path, "split file not found")
    return set(read_lines(path))


def new_stats(task: str, split: str) -> dict:
    """The stats every builder returns for a (task, split).

    records_in: input records of the split; records_out: records written; dropped_thres: dropped
    by the train IoU threshold; skipped: input records left out for another reason (scene without
    instances, bad record); refs: referred GT objects (one per reference, a record naming two
    objects counts two) matched to predicted instances; iou25 / iou50: the share of them whose best
    predicted instance (max box IoU) reaches 0.25 / 0.5: the grounding upper bound. refs is 0 and
    iou25 / iou50 None for builders that match nothing.
    """
    return {"task": task, "split": split, "records_in": 0, "records_out": 0, "dropped_thres": 0,
            "skipped": 0, "refs": 0, "iou25": None, "iou50": None, "_best": []}


def finish_stats(stats: dict) -> dict:
    best = stats.pop("_best")
    stats["refs"] = len(best)
    if best:
        best = np.asarray(best)
        stats["iou25"] = float((best >= 0.25).mean())
        stats["iou50"] = float((best >= 0.5).mean())
    return stats


class Builder:
    """One Chat-Scene annotation builder (one ``preprocess/prepare_*_annos.py``).

    name: the task name (``scanrefer``, ...): the config file's name and the stats' ``task``.
    splits: the splits it builds (the published script's).
    prompt_lists: the prompt list names it draws from (checked when the prompts are loaded).
    required: fields every input record must have.
    """

    splits: tuple[str, ...] = SPLITS
    prompt_lists: tuple[str, ...] = ()
    required: tuple[str, ...] = ("scene_id",)

    def __init__(self, name: str):
        self.name = name

    # ---------------------------------------------------------------- files
    def split_inputs(self, root: Path, split: str) -> list[Path]:
        """The published input files of ``split`` under ``annotations.root`` (messages name the first)."""
        raise NotImplementedError

    def output_name(self, seg: str, split: str) -> str:
        """The file Chat-Scene reads, e.g. ``scanrefer_mask3d_val.json``."""
        raise NotImplementedError

    def extra_files(self, root: str | Path, split: str) -> dict[str, object]:
        """Other files this builder writes for ``split``: name -> JSON content (scan2cap's corpus)."""
        return {}

    def read(self, root: Path, split: str) -> tuple[Path, list[tuple[int, dict]]]:
        """(the file named in messages, [(record index in that file, record)]) of ``split``."""
        path = self.split_inputs(root, split)[0]
        data = read_input(path)
        if not isinstance(data, list):
            raise DataError(path, "expected a JSON list of records")
        return path, list(enumerate(data))

    # ---------------------------------------------------------------- checks
    def object_ids(self, record: dict) -> list[int]:
        """The GT object ids a record refers to (range-checked against the GT attributes)."""
        return []

    def problem(self, record: dict, n_gt: int | None) -> str | None:
        """What is wrong with one record (None when nothing): a missing field or a bad object id."""
        if not isinstance(record, dict):
            return "not a JSON object"
        for key in self.required:
            if key not in record:
                return f"no field '{key}'"
        try:
            ids = self.object_ids(record)
        except (TypeError, ValueError):
            return "object id is not an integer"
        for i in ids:
            if i < 0 or (n_gt is not None and i >= n_gt):
                return f"object id {i} out of range: {record['scene_id']} has {n_gt} GT objects"
        return None

    def check(self, root: str | Path, scenes_by_split: dict[str, set[str]],
              gt_counts: dict[str, dict[str, int]]) -> list[DataError]:
        """Every problem of the inputs, before long work: one DataError per problem, naming the file,
        the record index and the problem (records whose scene is not in the run: one per file).

        scenes_by_split: the run's scene ids per split; gt_counts: per split, each scene's number of
        GT objects (known before long work, e.g. ``reader.gt_object_count``), for the object id ranges.
        """
        problems: list[DataError] = []
        for split in self.splits:
            inputs = self.split_inputs(Path(root), split)  # none: a builder of attributes only (obj_align)
            if split not in scenes_by_split or not inputs:
                continue
            missing = [p for p in inputs if not p.is_file()]
            if missing:
                problems += [DataError(p, "input file not found") for p in missing]
                continue
            try:
                path, records = self.read(Path(root), split)
            except DataError as e:
                problems.append(e)
                continue
            counts, run = gt_counts.get(split, {}), scenes_by_split[split]
            outside = []
            for i, record in records:
                scene = record.get("scene_id") if isinstance(record, dict) else None
                if scene is not None and scene not in run:
                    outside.append((i, scene))
                    continue
                text = self.problem(record, counts.get(scene))
                if text:
                    problems.append(DataError(path, f"record {i}: {text}"))
            if outside:
                (i, scene), more = outside[0], len(outside) - 1
                problems.append(DataError(path, f"record {i}: scene {scene} is not in the run's {split} split"
                                          + (f" (and {more} more record(s) of scenes not in the run)"
                                             if more else "")))
        return problems

    def valid_records(self, root: Path, split: str, gt_attrs: dict, stats: dict) -> list[dict]:
        """The split's records without a problem (the others counted as ``skipped``)."""
        _, records = self.read(root, split)
        stats["records_in"] = len(records)
        out = []
        for _, record in records:
            scene = record.get("scene_id") if isinstance(record, dict) else None
            n_gt = len(gt_attrs[scene]["locs"]) if scene in gt_attrs else None
            if self.problem(record, n_gt) is None:
                out.append(record)
            else:
                stats["skipped"] += 1
        return out

    # ---------------------------------------------------------------- building
    def build(self, split: str, inst_attrs: dict, gt_attrs: dict, root: str | Path, prompts: dict,
              rng: random.Random, train_iou_thres: float = 0.5,
              max_obj_num: int = 100) -> tuple[list[dict], dict]:
        """(records Chat-Scene reads, stats (:func:`new_stats`)) of ``split``.

        inst_attrs / gt_attrs: ``{scene: {"objects": [labels], "locs": (I, 6)}}`` of the predicted
        and the GT instances of ``split``; prompts: :func:`featurizer.annotations.prompts.load_prompts`;
        rng: every random choice of this (builder, split) (see :func:`featurizer.annotations.rng_for`).
        """
        raise NotImplementedError


class SceneMatcher:
    """IoU of one scene's GT boxes against its predicted boxes, computed once per scene."""

    def __init__(self, inst_attrs: dict, gt_attrs: dict):
        self.inst, self.gt = inst_attrs, gt_attrs
        self._cache: dict[str, np.ndarray] = {}

    def ious(self, scene: str) -> np.ndarray:
        """(P, G) IoU matrix of ``scene``."""
        if scene not in self._cache:
            self._cache[scene] = iou_matrix(self.inst[scene]["locs"], self.gt[scene]["locs"])
        return self._cache[scene]

    def best(self, scene: str, gt_id: int) -> tuple[int, float]:
        """best_pred of GT ``gt_id``: (pred index, IoU)."""
        return best_pred(self.ious(scene)[:, gt_id])

    def has(self, scene: str) -> bool:
        """Whether ``scene`` has GT boxes and at least one predicted box (else its records are
        skipped, as the reference skips scenes missing from the instance attributes)."""
        return scene in self.gt and scene in self.inst and len(self.ious(scene)) > 0
