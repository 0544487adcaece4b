"""ScanQA question answering (``prepare_scanqa_annos.py``): ``scanqa/ScanQA_v1.0_{split}.json``.
No matching; the output name has no segmenter."""

from __future__ import annotations

from pathlib import Path

from featurizer.annotations.base import Builder, finish_stats, new_stats
from featurizer.annotations.match import QA_SUFFIX


def answer_caption(answer: str) -> str:
    """``str.capitalize()`` plus a ``.`` unless it already ends with one."""
    answer = answer.capitalize()
    return answer if answer.endswith(".") else answer + "."


class ScanQA(Builder):
    """Prompt = question + the single-word suffix; ``obj_id`` = ``object_ids[0]`` (default [0]).
    Train: one record per answer, an answer equal to the one just before it skipped; val:
    ``ref_captions`` = the raw answers (default [])."""

    required = ("scene_id", "question")

    def split_inputs(self, root: Path, split: str) -> list[Path]:
        return [root / "scanqa" / f"ScanQA_v1.0_{split}.json"]

    def output_name(self, seg: str, split: str) -> str:
        return f"scanqa_{split}.json"

    def object_ids(self, record: dict) -> list[int]:
        return [int(i) for i in record.get("object_ids", [0])]

    def build(self, split, inst_attrs, gt_attrs, root, prompts, rng, train_iou_thres=0.5, max_obj_num=100):
        stats = new_stats(self.name, split)
        out = []
        for r in self.valid_records(Path(root), split, gt_attrs, stats):
            answers, obj_id = r.get("answers", []), self.object_ids(r)[0]
            head = {"scene_id": r["scene_id"], "obj_id": obj_id, "prompt": r["question"] + QA_SUFFIX}
            if split != "train":
                out.append({**head, "ref_captions": answers})
                continue
            for i, answer in enumerate(answers):
                if i > 0 and answer == answers[i - 1]:
                    continue
                out.append({**head, "caption": answer_caption(answer)})
        stats["records_out"] = len(out)
        return out, finish_stats(stats)
