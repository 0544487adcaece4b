"""Chat-Scene annotation inputs and a Mask3D prediction export for generated scenes of any layout.

Given the generated scenes (:mod:`featurizer.dataset.synthetic`), read back through their layout's reader
(a ScanNet-layout folder: :class:`featurizer.dataset.scannet.ScanNetReader`), so the facts come from the
files a user has, in that dataset's frame and with its labels:

- :func:`write_annotation_inputs` writes every published input format with its published name
  under ``<out>/`` in Chat-Scene's ``annotations/`` layout (``scanrefer/``, ``multi3drefer/``,
  ``scanqa/``, ``sqa3d/``, ``referit3d/``, ``scannet/``). Descriptions come from the scene: an
  object's class, its colour (the name nearest its points' mean colour), its size (small / large
  against the scene's median volume) and its direction to the nearest other object (aligned frame:
  x is left/right, y is front/behind).
- :func:`write_mask3d_export` writes ``<out>/<split>/<scene>.txt`` (``pred_mask/<scene>_<k>.txt
  <class_id> <score>``, scores descending) and one 0/1 mask line per mesh vertex, differing from the
  ground truth: one object missed, one split in two, two neighbours merged, one spurious instance
  cut from a wall, some objects' tops cut off; the labels tsv is copied to ``<out>/``. Class ids are
  ScanNet's (a ScanNet-trained Mask3D's, whatever the layout): an instance's label is taken as a ScanNet
  category, else as a raw label of the tsv (ScanNet++, 3RScan), else as the Matterport mpcat40 label
  the generator wrote (:data:`featurizer.dataset.synthetic.layout_matterport.MPCAT40`); an instance
  with none (ScanNet++'s overlapping "furniture set" group) is not predicted.

Splits: the scenes, sorted, are assigned ``val`` when their position k has ``k % 3 == 2`` and
``train`` otherwise (:func:`assign_splits`), whatever split the generator wrote them under.
Everything is deterministic for a seed (one ``numpy`` generator per (seed, scene position, part)).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np

from featurizer.dataset.base import SceneReader
from featurizer.dataset.labels import TSV_NAME, LabelTable, read_label_table
from featurizer.dataset.scannet import ScanNetReader
from featurizer.files import read_lines
from featurizer.scene import Scene, instance_boxes

STRUCTURE = ("wall", "floor", "ceiling")
COLOURS = {"white": (235, 235, 235), "grey": (128, 128, 128), "black": (45, 45, 45), "brown": (130, 85, 50),
           "beige": (205, 190, 160), "red": (160, 40, 40), "blue": (50, 70, 130), "green": (70, 120, 70),
           "yellow": (230, 220, 150)}
ABSENT = ("piano", "sink", "television", "washing machine")  # classes the generator never places


def assign_splits(scene_ids) -> dict[str, str]:
    """Scene id -> ``train`` / ``val``: sorted position k is val when ``k % 3 == 2``."""
    return {s: ("val" if k % 3 == 2 else "train") for k, s in enumerate(sorted(scene_ids))}


def scenes_reader(source: str | Path | SceneReader) -> SceneReader:
    """``source`` when it is a reader (built without frames: they are not used); else the ScanNetReader of
    the ScanNet-layout folder ``source`` over every scene its ``scannetv2_*.txt`` list, without frames."""
    if isinstance(source, SceneReader):
        return source
    root = Path(source)
    ids = sorted({scene for p in root.glob("scannetv2_*.txt") for scene in read_lines(p)})
    return ScanNetReader(root=str(root), scenes=ids, frames="none")


def read_scenes(source: str | Path | SceneReader) -> list[Scene]:
    """Every scene of ``source`` (:func:`scenes_reader`), sorted by id."""
    reader = scenes_reader(source)
    return [reader.load(s) for s in sorted(reader.scene_ids)]


def colour_name(rgb) -> str:
    names = list(COLOURS)
    d = ((np.asarray(list(COLOURS.values()), float) - np.asarray(rgb, float)) ** 2).sum(1)
    return names[int(np.argmin(d))]


def object_facts(scene: Scene) -> list[dict]:
    """Per furniture instance (structure left out): ``id`` (GT index), ``label``, ``colour``,
    ``size`` word, ``box`` (6,), ``neighbour`` (GT index of the nearest other object) and
    ``relation`` (``to the left of`` / ``to the right of`` / ``in front of`` / ``behind``)."""
    boxes = instance_boxes(scene.instances, scene.aligned_points())
    ids = [i for i, inst in enumerate(scene.instances) if inst.label not in STRUCTURE]
    volumes = {i: float(np.prod(boxes[i, 3:])) for i in ids}
    median = float(np.median(list(volumes.values()))) if ids else 0.0
    facts = []
    for i in ids:
        inst = scene.instances[i]
        others = [j for j in ids if j != i]
        near = (min(others, key=lambda j: float(np.linalg.norm(boxes[j, :2] - boxes[i, :2])))
                if others else None)
        relation = "next to"
        if near is not None:
            dx, dy = boxes[i, :2] - boxes[near, :2]
            relation = (("to the right of" if dx > 0 else "to the left of") if abs(dx) >= abs(dy)
                        else ("behind" if dy > 0 else "in front of"))
        colour = colour_name(scene.colors[inst.point_ids].mean(0))
        facts.append({"id": i, "label": inst.label, "colour": colour,
                      "size": "large" if volumes[i] > median else "small", "box": boxes[i],
                      "neighbour": near, "relation": relation})
    return facts


def _dump(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def _near_phrase(f: dict, by_id: dict) -> str:
    return "" if f["neighbour"] is None else f" {f['relation']} the {by_id[f['neighbour']]['label']}"


def write_annotation_inputs(source: str | Path | SceneReader, out_root: str | Path,
                            seed: int = 0) -> dict[str, list[str]]:
    """Write the published annotation inputs for the scenes of ``source`` (a ScanNet-layout folder or a
    reader: :func:`scenes_reader`); returns split -> scene ids."""
    out = Path(out_root)
    scenes = read_scenes(source)
    split_of = assign_splits(s.scene_id for s in scenes)
    per_split: dict[str, dict[str, list]] = {
        sp: {"scanrefer": [], "multi3dref": [], "scanqa": [], "questions": [], "annotations": []}
        for sp in ("train", "val")}
    nr3d, sr3d = [], []
    for k, scene in enumerate(scenes):
        rng = np.random.default_rng([int(seed), k, 1])
        sid, split = scene.scene_id, split_of[scene.scene_id]
        acc = per_split[split]
        facts = object_facts(scene)
        by_id = {f["id"]: f for f in facts}
        by_class: dict[str, list[int]] = {}
        for f in facts:
            by_class.setdefault(f["label"], []).append(f["id"])
        for f in facts:  # ---- ScanRefer: two descriptions per object
            near = _near_phrase(f, by_id)
            texts = [f"this is a {f['colour']} {f['label']}. it is {f['size']} and stands{near}.",
                     f"The {f['size']} {f['label']}{near}. It is {f['colour']}!"]
            for a, text in enumerate(texts):
                acc["scanrefer"].append({"scene_id": sid, "object_id": str(f["id"]),
                                         "object_name": f["label"].replace(" ", "_"), "ann_id": str(a),
                                         "description": text, "token": text.replace(".", " .").split()})
        m3 = acc["multi3dref"]  # ---- Multi3DRefer: zero, single and multiple targets
        def m3_add(desc, ids, kind, name):
            m3.append({"scene_id": sid, "object_name": name, "ann_id": str(len(m3)), "description": desc,
                       "object_ids": sorted(ids), "eval_type": kind, "spatial": "of the" in desc,
                       "color": any(c in desc for c in COLOURS)})
        absent = ABSENT[int(rng.integers(len(ABSENT)))]
        m3_add(f"the {absent} in this room.", [], "zt_wo_d", absent)
        for label, ids in sorted(by_class.items()):
            f = by_id[ids[0]]
            if len(ids) == 1:
                m3_add(f"the {label} in the room.", ids, "st_wo_d", label)
                wrong = next(c for c in COLOURS if c != f["colour"])
                m3_add(f"the {wrong} {label}.", [], "zt_w_d", label)
            else:
                m3_add(f"all the {label}s in the room.", ids, "mt", label)
                for i in ids:
                    m3_add(f"the {label}{_near_phrase(by_id[i], by_id)}.", [i], "st_w_d", label)
        for f in facts:  # ---- ScanQA: colour (a repeated answer) and neighbour questions
            near = _near_phrase(f, by_id)
            qid = f"{split}-{sid}-{len(acc['scanqa'])}"
            acc["scanqa"].append({"question_id": qid, "scene_id": sid,
                                  "question": f"What color is the {f['label']}{near}?",
                                  "answers": [f["colour"], f["colour"], f"{f['colour']} {f['label']}"],
                                  "object_ids": [f["id"]], "object_names": [f["label"]]})
            if f["neighbour"] is not None:
                n = by_id[f["neighbour"]]
                acc["scanqa"].append({"question_id": f"{qid}b", "scene_id": sid,
                                      "question": f"What is {f['relation']} the {n['label']}?",
                                      "answers": [f["label"], f"{f['colour']} {f['label']}"],
                                      "object_ids": [f["id"], n["id"]],
                                      "object_names": [f["label"], n["label"]]})
        for f in facts:  # ---- SQA3D: situated questions
            n = by_id.get(f["neighbour"])
            qid = 10_000 * k + len(acc["questions"]) + (0 if split == "train" else 5_000)
            questions = [(f"What color is the {f['label']} in front of me?", [f["colour"]]),
                         (f"Is there a {absent} in the room?", ["no"]),
                         (f"How many {f['label']}s are in the room?", [str(len(by_class[f["label"]]))]),
                         ("which object is next to me?", [n["label"] if n else "nothing"])]
            q, answers = questions[int(rng.integers(len(questions)))]
            acc["questions"].append({"question_id": qid, "scene_id": sid, "question": q,
                                     "situation": f"I am standing in front of the {f['label']}.",
                                     "alternative_situation": [f"I am facing the {f['label']}.",
                                                               f"The {f['label']} is right in front of me."]})
            acc["annotations"].append({"scene_id": sid, "question_id": qid, "question_type": "",
                                       "answers": [{"answer": a, "answer_confidence": "yes",
                                                    "answer_id": j + 1} for j, a in enumerate(answers)]})
        for f in facts:  # ---- ReferIt3D: Nr3D free text, Sr3D template text
            same = by_class[f["label"]]
            stim = "-".join([sid, f["label"].replace(" ", "_"), str(len(same)), str(f["id"])]
                            + [str(i) for i in same if i != f["id"]])
            n_label = by_id[f["neighbour"]]["label"] if f["neighbour"] is not None else "wall"
            for rows, text in ((nr3d, f"the {f['colour']} {f['label']} {f['relation']} the {n_label}."),
                               (sr3d, f"the {f['label']} that is closest to the {n_label}")):
                rows.append({"assignmentid": len(rows), "stimulus_id": stim, "utterance": text,
                             "correct_guess": "True", "speaker_id": "synthetic", "listener_id": "synthetic",
                             "scan_id": sid, "instance_type": f["label"], "target_id": f["id"],
                             "dataset": "nr3d" if rows is nr3d else "sr3d",
                             "tokens": str(text.replace(".", "").split())})
    for split, acc in per_split.items():
        _dump(out / "scanrefer" / f"ScanRefer_filtered_{split}.json", acc["scanrefer"])
        _dump(out / "multi3drefer" / f"multi3drefer_{split}.json", acc["multi3dref"])
        _dump(out / "scanqa" / f"ScanQA_v1.0_{split}.json", acc["scanqa"])
        _dump(out / "sqa3d" / f"v1_balanced_questions_{split}_scannetv2.json",
              {"questions": acc["questions"]})
        _dump(out / "sqa3d" / f"v1_balanced_sqa_annotations_{split}_scannetv2.json",
              {"annotations": acc["annotations"]})
        ids = sorted(s for s, sp in split_of.items() if sp == split)
        (out / "scannet").mkdir(parents=True, exist_ok=True)
        (out / "scannet" / f"scannetv2_{split}.txt").write_text("".join(s + "\n" for s in ids))
    for name, rows in (("nr3d", nr3d), ("sr3d", sr3d)):
        (out / "referit3d").mkdir(parents=True, exist_ok=True)
        with open(out / "referit3d" / f"{name}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["scan_id"])
            writer.writeheader()
            writer.writerows(rows)
    return {sp: sorted(s for s, x in split_of.items() if x == sp) for sp in ("train", "val")}


def imperfect_instances(scene: Scene,
                        rng: np.random.Generator) -> tuple[list[tuple[np.ndarray, str, float]], dict]:
    """Predicted (point ids, label, score) of ``scene``, sorted by score, and what was changed:
    ``{"missed": [gt], "split": [gt], "merged": [gt, gt], "cut": [gt...], "spurious": 1}``."""
    aligned = scene.aligned_points()
    facts = object_facts(scene)
    furniture = [f["id"] for f in facts]
    insts = scene.instances
    order = [int(i) for i in rng.permutation(furniture)]
    changes = {"missed": order[:1], "split": order[1:2], "merged": [], "cut": [], "spurious": 1}
    rest = order[2:]
    if len(rest) >= 2:  # merge the closest pair among the rest
        c = {i: aligned[insts[i].point_ids].mean(0) for i in rest}
        pairs = [(float(np.linalg.norm(c[a] - c[b])), a, b)
                 for ai, a in enumerate(rest) for b in rest[ai + 1:]]
        _, a, b = min(pairs)
        changes["merged"] = [a, b]
    preds = []
    for i, inst in enumerate(insts):
        ids = inst.point_ids
        if i in changes["missed"] or i == (changes["merged"] or [None, None])[1]:
            continue
        if i == (changes["merged"] or [None])[0]:
            ids = np.union1d(ids, insts[changes["merged"][1]].point_ids)
        elif i in changes["split"]:
            x = aligned[ids, 0]
            lo, hi = ids[x <= np.median(x)], ids[x > np.median(x)]
            preds += [(lo, inst.label), (hi, inst.label)]
            continue
        elif i in furniture and rng.random() < 0.4:  # the top quarter cut off
            z = aligned[ids, 2]
            ids = ids[z <= z.min() + 0.75 * (z.max() - z.min())]
            changes["cut"].append(i)
        preds.append((ids, inst.label))
    walls = [i for i, inst in enumerate(insts) if inst.label == "wall"]
    if walls:  # a spurious piece of wall, 0.6 m around one of its points
        w = insts[walls[int(rng.integers(len(walls)))]].point_ids
        centre = aligned[w[int(rng.integers(len(w)))]]
        preds.append((w[np.abs(aligned[w] - centre).max(1) < 0.3], "lamp"))
    scores = rng.uniform(0.2, 0.99, size=len(preds))
    if walls:
        scores[-1] = rng.uniform(0.05, 0.2)
    out = [(np.sort(ids), label, round(float(s), 4)) for (ids, label), s in zip(preds, scores)]
    out.sort(key=lambda p: -p[2])
    return out, changes


def scannet_class_ids(table: LabelTable) -> dict[str, int]:
    """Label -> ScanNet class id (the tsv's first id of its category) for the labels of every layout's
    ground truth: categories, the tsv's raw labels, and the mpcat40 labels the generator writes."""
    from featurizer.dataset.synthetic.furniture import RAW_LABELS
    from featurizer.dataset.synthetic.layout_matterport import MPCAT40

    class_id: dict[str, int] = {}
    for i, cat in sorted(table.id_to_category.items()):
        class_id.setdefault(cat, i)
    names = dict(table.raw_to_category)
    names.update({MPCAT40.get(raw, cat): cat for raw, (cat, _, _) in reversed(RAW_LABELS.items())})
    names.update({cat: cat for cat in class_id})  # a category is itself (mpcat40 "table" is one)
    return {label: class_id[cat] for label, cat in names.items() if cat in class_id}


def write_mask3d_export(source: str | Path | SceneReader, out_root: str | Path,
                        seed: int = 0) -> dict[str, dict]:
    """Write a Mask3D raw export of imperfect predictions for every scene of ``source`` (a ScanNet-layout
    folder or a reader: :func:`scenes_reader`; the labels tsv is read at its root); returns scene ->
    changes."""
    reader = scenes_reader(source)
    root, out = Path(reader.root), Path(out_root)
    table = read_label_table(root / TSV_NAME)
    class_id = scannet_class_ids(table)
    scenes = read_scenes(reader)
    split_of = assign_splits(s.scene_id for s in scenes)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / TSV_NAME, out / TSV_NAME)
    changes = {}
    for k, scene in enumerate(scenes):
        sid = scene.scene_id
        preds, changes[sid] = imperfect_instances(scene, np.random.default_rng([int(seed), k, 2]))
        folder = out / split_of[sid]
        (folder / "pred_mask").mkdir(parents=True, exist_ok=True)
        lines = []
        preds = [p for p in preds if p[1] in class_id]  # no ScanNet class: not a Mask3D prediction
        for j, (ids, label, score) in enumerate(preds):
            mask = np.zeros(scene.num_points, dtype=np.uint8)
            mask[ids] = 1
            name = f"pred_mask/{sid}_{j}.txt"
            (folder / name).write_text("\n".join("1" if m else "0" for m in mask) + "\n")
            lines.append(f"{name} {class_id[label]} {score}")
        (folder / f"{sid}.txt").write_text("\n".join(lines) + "\n")
    return changes
