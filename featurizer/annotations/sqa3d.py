"""SQA3D situated question answering (``prepare_sqa3d_annos.py``): ``sqa3d/v1_balanced_questions_
{split}_scannetv2.json`` (``questions``) joined by ``question_id`` to ``sqa3d/v1_balanced_sqa_
annotations_{split}_scannetv2.json`` (``annotations``), in annotation order. No matching."""

from __future__ import annotations

from pathlib import Path

from featurizer.annotations.base import Builder, finish_stats, new_stats, read_input
from featurizer.annotations.match import QA_SUFFIX
from featurizer.annotations.scanqa import answer_caption
from featurizer.errors import DataError

TYPE_PREFIXES = ("what", "is", "how", "can", "which")  # sqa_type 0..4; anything else is 5


def sqa_type(question: str) -> int:
    q = question.lstrip().lower()
    return next((i for i, p in enumerate(TYPE_PREFIXES) if q.startswith(p)), 5)


class SQA3D(Builder):
    """Prompt = a random one of ``[situation] + alternative_situation``, a space, the question and the
    ScanQA suffix. Train: a random answer, capitalized with a ``.``; val: all raw answers. Both carry
    ``sqa_type`` (question prefix what/is/how/can/which -> 0..4, else 5) and ``obj_id`` 0."""

    required = ("scene_id", "question_id", "answers")

    def split_inputs(self, root: Path, split: str) -> list[Path]:
        d = root / "sqa3d"
        return [d / f"v1_balanced_sqa_annotations_{split}_scannetv2.json",
                d / f"v1_balanced_questions_{split}_scannetv2.json"]

    def output_name(self, seg: str, split: str) -> str:
        return f"sqa3d_{split}.json"

    def read(self, root: Path, split: str):
        anno_path, question_path = self.split_inputs(root, split)
        annos, questions = read_input(anno_path), read_input(question_path)
        for path, data, key in ((anno_path, annos, "annotations"), (question_path, questions, "questions")):
            if not isinstance(data, dict) or not isinstance(data.get(key), list):
                raise DataError(path, f"expected a JSON object with a '{key}' list")
        by_id = {q.get("question_id"): q for q in questions["questions"] if isinstance(q, dict)}
        records = []
        for i, a in enumerate(annos["annotations"]):
            q = by_id.get(a.get("question_id")) if isinstance(a, dict) else None
            records.append((i, a if q is None else {**a, "_question": q}))
        return anno_path, records

    def problem(self, record, n_gt):
        text = super().problem(record, n_gt)
        if text is None and "_question" not in record:
            return f"question_id {record['question_id']} not in the questions file"
        if text is None and not all(k in record["_question"] for k in ("situation", "question")):
            return f"question {record['question_id']} lacks 'situation' or 'question'"
        return text

    def build(self, split, inst_attrs, gt_attrs, root, prompts, rng, train_iou_thres=0.5, max_obj_num=100):
        stats = new_stats(self.name, split)
        out = []
        for r in self.valid_records(Path(root), split, gt_attrs, stats):
            q = r["_question"]
            situation = rng.choice([q["situation"]] + list(q.get("alternative_situation", [])))
            head = {"scene_id": r["scene_id"], "obj_id": 0,
                    "prompt": situation + " " + q["question"] + QA_SUFFIX}
            answers = [a["answer"] for a in r["answers"]]
            if split == "train":
                out.append({**head, "caption": answer_caption(rng.choice(answers)),
                            "sqa_type": sqa_type(q["question"])})
            else:
                out.append({**head, "ref_captions": answers, "sqa_type": sqa_type(q["question"])})
        stats["records_out"] = len(out)
        return out, finish_stats(stats)
