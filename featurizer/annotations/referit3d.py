"""ReferIt3D's ``referit3d/{nr3d,sr3d}.csv``: Nr3D captioning (``prepare_nr3dcaption_annos.py``)
and Nr3D / Sr3D grounding on GT boxes (``prepare_nr3d_annos.py``, ``prepare_sr3d_annos.py``).

A row's split is the ScanNet split file (``scannet/scannetv2_{split}.txt``) that lists its scene;
record indices in messages are 0-based data rows of the csv.
"""

from __future__ import annotations

from pathlib import Path

from featurizer.annotations.base import (Builder, SceneMatcher, finish_stats, new_stats, read_csv,
                                         read_scene_list)
from featurizer.annotations.match import obj_token, strip_punctuation
from featurizer.annotations.prompts import draw

VIEW_DEPENDENT = {"front", "behind", "back", "right", "left", "facing", "leftmost", "rightmost", "looking",
                  "across"}


class ReferIt3DBase(Builder):
    """Rows of ``referit3d/<csv_name>.csv`` whose scene the split file of the split lists."""

    required = ("scan_id", "target_id", "utterance")
    csv_name = "nr3d"

    def __init__(self, name: str, csv_name: str = "nr3d"):
        super().__init__(name)
        self.csv_name = csv_name

    def split_inputs(self, root: Path, split: str) -> list[Path]:
        return [root / "referit3d" / f"{self.csv_name}.csv", root / "scannet" / f"scannetv2_{split}.txt"]

    def read(self, root: Path, split: str):
        csv_path, split_path = self.split_inputs(root, split)
        scenes = read_scene_list(split_path)
        rows = [(i, {**row, "scene_id": row.get("scan_id")}) for i, row in enumerate(read_csv(csv_path))]
        return csv_path, [(i, row) for i, row in rows if row["scene_id"] in scenes]

    def object_ids(self, record: dict) -> list[int]:
        return [int(record["target_id"])]


class Nr3DCaption(ReferIt3DBase):
    """Train only: each utterance captions the best predicted instance of its target (no scene0217
    fix); kept when ``iou >= thres``; prompt drawn after matching, before the threshold."""

    splits = ("train",)
    prompt_lists = ("nr3d_caption_prompt",)

    def output_name(self, seg: str, split: str) -> str:
        return f"nr3d_caption_{seg}_{split}.json"

    def build(self, split, inst_attrs, gt_attrs, root, prompts, rng, train_iou_thres=0.5, max_obj_num=100):
        stats = new_stats(self.name, split)
        match = SceneMatcher(inst_attrs, gt_attrs)
        out = []
        for r in self.valid_records(Path(root), split, gt_attrs, stats):
            scene, gt_id = r["scene_id"], int(r["target_id"])
            if not match.has(scene):
                stats["skipped"] += 1
                continue
            pred, iou = match.best(scene, gt_id)
            stats["_best"].append(iou)
            prompt = draw(rng, prompts, "nr3d_caption_prompt", obj_token(pred))
            if iou < train_iou_thres:
                stats["dropped_thres"] += 1
                continue
            out.append({"scene_id": scene, "obj_id": gt_id, "prompt": prompt, "caption": r["utterance"]})
        stats["records_out"] = len(out)
        return out, finish_stats(stats)


def type_info(stimulus_id: str, tokens: str) -> str:
    """``easy|hard`` (at most 2 objects of the class) + ``_`` + ``dep|indep`` (view-dependent words)."""
    easy = int(stimulus_id.split("-")[2]) <= 2
    dep = bool(set(tokens[2:-2].split("', '")) & VIEW_DEPENDENT)
    return ("easy" if easy else "hard") + "_" + ("dep" if dep else "indep")


class ReferIt3D(ReferIt3DBase):
    """Grounding on GT ids (no matching): scene0217_00 ids > 30 lose 31; ids >= max_obj_num are
    skipped in train and kept in val; val records carry ``type_info``."""

    required = ("scan_id", "target_id", "utterance", "stimulus_id", "tokens")
    prompt_lists = ("grounding_prompt",)

    def output_name(self, seg: str, split: str) -> str:
        return f"{self.csv_name}_{split}.json"

    @staticmethod
    def target(record: dict) -> int:
        gt_id = int(record["target_id"])
        return gt_id - 31 if record["scene_id"] == "scene0217_00" and gt_id > 30 else gt_id

    def object_ids(self, record: dict) -> list[int]:
        return [self.target(record)]

    def build(self, split, inst_attrs, gt_attrs, root, prompts, rng, train_iou_thres=0.5, max_obj_num=100):
        stats = new_stats(self.name, split)
        out = []
        for r in self.valid_records(Path(root), split, gt_attrs, stats):
            gt_id = self.target(r)
            info = type_info(r["stimulus_id"], r["tokens"])
            prompt = draw(rng, prompts, "grounding_prompt", strip_punctuation(r["utterance"]))
            if gt_id >= max_obj_num and split == "train":
                stats["skipped"] += 1
                continue
            head = {"scene_id": r["scene_id"], "obj_id": gt_id, "prompt": prompt}
            if split == "train":
                out.append({**head, "caption": f"{obj_token(gt_id)}."})
            else:
                out.append({**head, "ref_captions": [f"{obj_token(gt_id)}."], "type_info": info})
        stats["records_out"] = len(out)
        return out, finish_stats(stats)
