"""Scan2Cap dense captioning (``prepare_scan2cap_annos.py``) and its location variant
(``prepare_scan2cap_location_annos.py``): ``scanrefer/ScanRefer_filtered_{split}.json``."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from featurizer.annotations.base import SceneMatcher, finish_stats, new_stats
from featurizer.annotations.match import as_locs, capitalize_sentences, location_string, obj_token
from featurizer.annotations.prompts import draw
from featurizer.annotations.scanrefer import ScanRefer

CORPUS_NAME = "scan2cap_val_corpus.json"


class Scan2Cap(ScanRefer):
    """Captions of described GT objects, each GT keeping the predicted instance that matched it best.

    Corpus: ``f"{scene_id}|{object_id}"`` -> ``"sos " + capitalize_sentences(description) + " eos"``
    in file order (written for val as ``scan2cap_val_corpus.json``). Per scene (sorted): each pred
    picks its best described GT (``g < n_gt``, strict ``>``, start -1); that GT keeps the pred if its
    IoU beats the GT's best so far (start -1). Per GT, ascending: train keeps ``iou >= thres`` and
    writes one record per caption; val writes one record per matched GT with the whole corpus list.
    """

    prompt_lists = ("scan2cap_prompt",)

    def output_name(self, seg: str, split: str) -> str:
        return f"scan2cap_{seg}_{split}.json"

    def caption(self, description: str) -> str:
        return "sos " + capitalize_sentences(description) + " eos"

    def corpus(self, records: list[dict]) -> dict[str, list[str]]:
        corpus = defaultdict(list)
        for r in records:
            corpus[f"{r['scene_id']}|{r['object_id']}"].append(self.caption(r["description"]))
        return dict(corpus)

    def extra_files(self, root, split):
        if split != "val":
            return {}
        stats = new_stats(self.name, split)
        return {CORPUS_NAME: self.corpus(self.valid_records(Path(root), split, {}, stats))}

    def prompt(self, prompts, rng, scene, pred, inst_attrs) -> str:
        return draw(rng, prompts, "scan2cap_prompt", obj_token(pred))

    def matches(self, scene: str, match: SceneMatcher, corpus: dict) -> list[tuple[int, float]]:
        """(pred, IoU) kept by each GT of ``scene`` ((-1, -1.0): none), the reference's two passes."""
        ious = match.ious(scene)
        described = np.array([f"{scene}|{g}" in corpus for g in range(ious.shape[1])], dtype=bool)
        kept = [(-1, -1.0)] * ious.shape[1]
        if not described.any():
            return kept
        masked = np.where(described[None], ious, -np.inf)
        for p, g in enumerate(np.argmax(masked, axis=1)):  # first maximum: the lowest g on ties
            if ious[p, g] > kept[g][1]:
                kept[g] = (p, float(ious[p, g]))
        return kept

    def build(self, split, inst_attrs, gt_attrs, root, prompts, rng, train_iou_thres=0.5, max_obj_num=100):
        stats = new_stats(self.name, split)
        records = self.valid_records(Path(root), split, gt_attrs, stats)
        corpus = self.corpus(records)
        match = SceneMatcher(inst_attrs, gt_attrs)
        out = []
        for scene in sorted({r["scene_id"] for r in records}):
            if not match.has(scene):
                stats["skipped"] += sum(r["scene_id"] == scene for r in records)
                continue
            ious = match.ious(scene)
            for g, (p, iou) in enumerate(self.matches(scene, match, corpus)):
                captions = corpus.get(f"{scene}|{g}")
                if captions is None:
                    continue
                stats["_best"] += [float(ious[:, g].max())] * len(captions)
                if p < 0:
                    continue
                if split == "train" and iou < train_iou_thres:
                    stats["dropped_thres"] += len(captions)
                    continue
                head = {"scene_id": scene, "obj_id": g, "pred_id": p}
                if split == "train":
                    out += [{**head, "prompt": self.prompt(prompts, rng, scene, p, inst_attrs),
                             "caption": c, "iou": iou} for c in captions]
                else:
                    out.append({**head, "prompt": self.prompt(prompts, rng, scene, p, inst_attrs),
                                "ref_captions": captions, "iou": iou})
        stats["records_out"] = len(out)
        return out, finish_stats(stats)


class Scan2CapLocation(Scan2Cap):
    """Scan2Cap's matching and filters; captions capitalized without sos/eos, no corpus file, and the
    prompt names the matched PRED box as ``<LOCATION> ... </LOCATION>`` (``<loc>``)."""

    prompt_lists = ("scan2cap_location_prompt",)

    def output_name(self, seg: str, split: str) -> str:
        return f"scan2cap_{seg}_{split}_location.json"

    def caption(self, description: str) -> str:
        return capitalize_sentences(description)

    def extra_files(self, root, split):
        return {}

    def prompt(self, prompts, rng, scene, pred, inst_attrs) -> str:
        loc = location_string(as_locs(inst_attrs[scene]["locs"])[pred])
        return draw(rng, prompts, "scan2cap_location_prompt", loc)
