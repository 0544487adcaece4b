"""ScanRefer grounding (``prepare_scanrefer_annos.py``) and its location variant
(``prepare_scanrefer_location_annos.py``): ``scanrefer/ScanRefer_filtered_{split}.json``."""

from __future__ import annotations

from pathlib import Path

from featurizer.annotations.base import Builder, SceneMatcher, finish_stats, new_stats
from featurizer.annotations.match import as_locs, location_string, obj_token, strip_punctuation
from featurizer.annotations.prompts import draw


class ScanRefer(Builder):
    """Each description matched to the best predicted instance of its GT object.

    Records are sorted (stably) by ``f"{scene_id}_{object_id:03}"``; a prompt is drawn for every
    record, before any skip. Train keeps ``max_iou >= train_iou_thres`` with ``obj_id`` = the pred
    index; val keeps all, ``obj_id`` = the GT id and ``ref_captions`` = the best pred's token.
    """

    prompt_lists = ("grounding_prompt",)
    required = ("scene_id", "object_id", "description")

    def split_inputs(self, root: Path, split: str) -> list[Path]:
        return [root / "scanrefer" / f"ScanRefer_filtered_{split}.json"]

    def output_name(self, seg: str, split: str) -> str:
        return f"scanrefer_{seg}_{split}.json"

    def object_ids(self, record: dict) -> list[int]:
        return [int(record["object_id"])]

    def sorted_records(self, root, split, gt_attrs, stats) -> list[dict]:
        records = self.valid_records(Path(root), split, gt_attrs, stats)
        return sorted(records, key=lambda r: f"{r['scene_id']}_{int(r['object_id']):03}")

    def build(self, split, inst_attrs, gt_attrs, root, prompts, rng, train_iou_thres=0.5, max_obj_num=100):
        stats = new_stats(self.name, split)
        match = SceneMatcher(inst_attrs, gt_attrs)
        out = []
        for r in self.sorted_records(root, split, gt_attrs, stats):
            scene, gt_id = r["scene_id"], int(r["object_id"])
            prompt = draw(rng, prompts, "grounding_prompt", strip_punctuation(r["description"]))
            if not match.has(scene):
                stats["skipped"] += 1
                continue
            pred, iou = match.best(scene, gt_id)
            stats["_best"].append(iou)
            if split == "train":
                if iou < train_iou_thres:
                    stats["dropped_thres"] += 1
                    continue
                out.append({"scene_id": scene, "obj_id": pred, "caption": f"{obj_token(pred)}.",
                            "prompt": prompt})
            else:
                out.append({"scene_id": scene, "obj_id": gt_id, "ref_captions": [f"{obj_token(pred)}."],
                            "prompt": prompt})
        stats["records_out"] = len(out)
        return out, finish_stats(stats)


class ScanReferLocation(ScanRefer):
    """The GT box as ``<LOCATION> ... </LOCATION>`` tokens: no matching, no train filter,
    ``obj_id`` = the GT id; train ``caption`` / val ``ref_captions`` = the location string."""

    prompt_lists = ("grounding_location_prompt",)

    def output_name(self, seg: str, split: str) -> str:
        return f"scanrefer_{seg}_{split}_location.json"

    def build(self, split, inst_attrs, gt_attrs, root, prompts, rng, train_iou_thres=0.5, max_obj_num=100):
        stats = new_stats(self.name, split)
        out = []
        for r in self.sorted_records(root, split, gt_attrs, stats):
            scene, gt_id = r["scene_id"], int(r["object_id"])
            prompt = draw(rng, prompts, "grounding_location_prompt", strip_punctuation(r["description"]))
            if scene not in gt_attrs:
                stats["skipped"] += 1
                continue
            loc = location_string(as_locs(gt_attrs[scene]["locs"])[gt_id])
            key = "caption" if split == "train" else "ref_captions"
            out.append({"scene_id": scene, "obj_id": gt_id, key: loc if split == "train" else [loc],
                        "prompt": prompt})
        stats["records_out"] = len(out)
        return out, finish_stats(stats)
