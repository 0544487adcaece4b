"""Multi3DRefer grounding of zero, one or many objects (``prepare_multi3dref_annos.py``) and its
location variant (``prepare_multi3dref_location_annos.py``): ``multi3drefer/multi3drefer_{split}.json``."""

from __future__ import annotations

from pathlib import Path

from featurizer.annotations.base import Builder, SceneMatcher, finish_stats, new_stats
from featurizer.annotations.match import as_locs, id_answer, location_string, obj_token, strip_punctuation
from featurizer.annotations.prompts import draw

EVAL_TYPES = ("zt_w_d", "zt_wo_d", "st_w_d", "st_wo_d", "mt")


class Multi3DRef(Builder):
    """Per record (file order; scenes without instances skipped before the prompt is drawn): each GT
    id's best pred. Train drops the whole record if any IoU < thres or a pred repeats; val keeps all.
    Answer (train): ``No.`` / ``Yes. <OBJa>.`` / ``... and ...`` / ``..., and ...`` of the sorted
    preds; val ``ref_captions`` = the GT ids. Stats add ``count_all`` / ``count_used`` per eval_type."""

    prompt_lists = ("multi3dref_prompt",)
    required = ("scene_id", "object_ids", "description", "eval_type")

    def split_inputs(self, root: Path, split: str) -> list[Path]:
        return [root / "multi3drefer" / f"multi3drefer_{split}.json"]

    def output_name(self, seg: str, split: str) -> str:
        return f"multi3dref_{seg}_{split}.json"

    def object_ids(self, record: dict) -> list[int]:
        ids = record["object_ids"]
        if not isinstance(ids, list):
            raise TypeError("object_ids is not a list")
        return [int(i) for i in ids]

    def build(self, split, inst_attrs, gt_attrs, root, prompts, rng, train_iou_thres=0.5, max_obj_num=100):
        stats = new_stats(self.name, split)
        stats["count_all"], stats["count_used"] = dict.fromkeys(EVAL_TYPES, 0), dict.fromkeys(EVAL_TYPES, 0)
        match = SceneMatcher(inst_attrs, gt_attrs)
        out = []
        for r in self.valid_records(Path(root), split, gt_attrs, stats):
            scene, kind = r["scene_id"], r["eval_type"]
            stats["count_all"][kind] = stats["count_all"].get(kind, 0) + 1
            if not match.has(scene):
                stats["skipped"] += 1
                continue
            prompt = draw(rng, prompts, "multi3dref_prompt", strip_punctuation(r["description"]))
            preds, keep = [], True
            for gt_id in self.object_ids(r):
                pred, iou = match.best(scene, gt_id)
                stats["_best"].append(iou)
                if split == "train" and (iou < train_iou_thres or pred in preds):
                    keep = False
                    break
                preds.append(pred)
            if not keep:
                stats["dropped_thres"] += 1
                continue
            stats["count_used"][kind] = stats["count_used"].get(kind, 0) + 1
            head = {"scene_id": scene, "obj_id": 0, "prompt": prompt}
            if split == "train":
                out.append({**head, "caption": id_answer([obj_token(p) for p in sorted(preds)]),
                            "eval_type": kind})
            else:
                out.append({**head, "ref_captions": self.object_ids(r), "eval_type": kind})
        stats["records_out"] = len(out)
        return out, finish_stats(stats)


class Multi3DRefLocation(Multi3DRef):
    """No matching or filtering: the GT boxes' location strings, sorted as strings, in the same
    Yes/No answer; val ``ref_captions`` = the GT ids."""

    prompt_lists = ("multi3dref_location_prompt",)

    def output_name(self, seg: str, split: str) -> str:
        return f"multi3dref_{seg}_{split}_location.json"

    def build(self, split, inst_attrs, gt_attrs, root, prompts, rng, train_iou_thres=0.5, max_obj_num=100):
        stats = new_stats(self.name, split)
        out = []
        for r in self.valid_records(Path(root), split, gt_attrs, stats):
            scene = r["scene_id"]
            if scene not in gt_attrs:
                stats["skipped"] += 1
                continue
            prompt = draw(rng, prompts, "multi3dref_location_prompt", strip_punctuation(r["description"]))
            head = {"scene_id": scene, "obj_id": 0, "prompt": prompt}
            if split == "train":
                locs = as_locs(gt_attrs[scene]["locs"])
                answer = id_answer(sorted(location_string(locs[g]) for g in self.object_ids(r)))
                out.append({**head, "caption": answer, "eval_type": r["eval_type"]})
            else:
                out.append({**head, "ref_captions": self.object_ids(r), "eval_type": r["eval_type"]})
        stats["records_out"] = len(out)
        return out, finish_stats(stats)
