"""Object alignment (``prepare_objalign_annos.py``): every GT object's best predicted instance named
by its label. Reads only the attributes."""

from __future__ import annotations

from pathlib import Path

from featurizer.annotations.base import Builder, SceneMatcher, finish_stats, new_stats
from featurizer.annotations.match import as_locs, obj_token

SKIPPED_WORDS = ("wall", "ceiling", "floor", "object", "item")


class ObjAlign(Builder):
    """Per GT scene (sorted) and GT id (ascending), labels holding ``wall``, ``ceiling``, ``floor``,
    ``object`` or ``item`` skipped: prompt ``What is the <OBJp>?``, caption ``<OBJp> is a {label}.``
    with p = best_pred. Train keeps ``iou >= thres``; val keeps all."""

    def split_inputs(self, root: Path, split: str) -> list[Path]:
        return []

    def output_name(self, seg: str, split: str) -> str:
        return f"obj_align_{seg}_{split}.json"

    def build(self, split, inst_attrs, gt_attrs, root, prompts, rng, train_iou_thres=0.5, max_obj_num=100):
        stats = new_stats(self.name, split)
        match = SceneMatcher(inst_attrs, gt_attrs)
        out = []
        for scene in sorted(gt_attrs):
            labels = list(gt_attrs[scene]["objects"])[: len(as_locs(gt_attrs[scene]["locs"]))]
            for g, label in enumerate(labels):
                if any(w in label for w in SKIPPED_WORDS):
                    continue
                stats["records_in"] += 1
                if not match.has(scene):
                    stats["skipped"] += 1
                    continue
                pred, iou = match.best(scene, g)
                stats["_best"].append(iou)
                prompt, caption = f"What is the {obj_token(pred)}?", f"{obj_token(pred)} is a {label}."
                if split == "train":
                    if iou < train_iou_thres:
                        stats["dropped_thres"] += 1
                        continue
                    out.append({"scene_id": scene, "obj_id": g, "prompt": prompt, "caption": caption})
                else:
                    out.append({"scene_id": scene, "obj_id": g, "prompt": prompt, "ref_captions": [caption]})
        stats["records_out"] = len(out)
        return out, finish_stats(stats)
