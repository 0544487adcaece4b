"""Chat-Scene annotation builders on generated scenes: each against a plain re-implementation of the
reference file's rules, tokens naming real instances, seeding, prompts read without running them,
and the bad-input checks."""

from __future__ import annotations

import csv
import json
import random
import re
import string

import numpy as np
import pytest

from featurizer.annotations import build_annotations, check_annotations, rng_for
from featurizer.annotations.match import best_pred, capitalize_sentences, iou_matrix
from featurizer.annotations.multi3dref import Multi3DRef, Multi3DRefLocation
from featurizer.annotations.obj_align import ObjAlign
from featurizer.annotations.prompts import load_prompts, read_prompts_py
from featurizer.annotations.referit3d import Nr3DCaption, ReferIt3D
from featurizer.annotations.scan2cap import Scan2Cap, Scan2CapLocation
from featurizer.annotations.scanqa import ScanQA
from featurizer.annotations.scanrefer import ScanRefer, ScanReferLocation
from featurizer.annotations.sqa3d import SQA3D
from featurizer.dataset.synthetic.reader import SyntheticScanNet
from featurizer.dataset.synthetic_annotations import (assign_splits, read_scenes, write_annotation_inputs,
                                                      write_mask3d_export)
from featurizer.errors import DataError
from featurizer.scene import instance_boxes
from featurizer.segmenter.mask3d import Mask3DExport

SEED, THRES = 3, 0.5
BUILDERS = {
    "scanrefer": ScanRefer("scanrefer"), "scan2cap": Scan2Cap("scan2cap"), "obj_align": ObjAlign("obj_align"),
    "nr3d_caption": Nr3DCaption("nr3d_caption"), "multi3dref": Multi3DRef("multi3dref"),
    "scanqa": ScanQA("scanqa"), "sqa3d": SQA3D("sqa3d"), "nr3d": ReferIt3D("nr3d", "nr3d"),
    "sr3d": ReferIt3D("sr3d", "sr3d"), "scanrefer_location": ScanReferLocation("scanrefer_location"),
    "scan2cap_location": Scan2CapLocation("scan2cap_location"),
    "multi3dref_location": Multi3DRefLocation("multi3dref_location"),
}


@pytest.fixture(scope="module")

def world(tmp_path_factory):
    """Three generated scenes, their annotation inputs, a Mask3D export, and both attribute sets."""
    tmp = tmp_path_factory.mktemp("annot")
    ds = SyntheticScanNet(str(tmp / "data"), num_scenes=3, frames_per_scene=0, image_size=(64, 48),
                          num_objects=18, seed=5)
    ds.prepare()
    root, export = tmp / "inputs", tmp / "mask3d"
    splits = write_annotation_inputs(ds.root, root, seed=SEED)
    write_mask3d_export(ds.root, export, seed=SEED)
    scenes = read_scenes(ds.root)
    split_of = assign_splits(s.scene_id for s in scenes)
    gt, pred = {"train": {}, "val": {}}, {"train": {}, "val": {}}
    for scene in scenes:
        sp = split_of[scene.scene_id]
        gt[sp][scene.scene_id] = {"objects": [i.label for i in scene.instances],
                                  "locs": instance_boxes(scene.instances, scene.aligned_points())}
        insts = Mask3DExport(str(export), splits=[sp]).predict(scene)[:100]
        pred[sp][scene.scene_id] = {"objects": [i.label for i in insts],
                                    "locs": instance_boxes(insts, scene.aligned_points())}
    return {"root": root, "splits": splits, "gt": gt, "pred": pred, "prompts": load_prompts(),
            "tmp": tmp, "export": export}


# ------------------------------------------------------------------ an independent reference
def ref_iou(a, b):
    def corners(loc):
        c, s = [float(v) for v in loc[:3]], [float(v) for v in loc[3:6]]
        xs, ys = [1, 1, -1, -1, 1, 1, -1, -1], [1, -1, -1, 1, 1, -1, -1, 1]
        zs = [1, 1, 1, 1, -1, -1, -1, -1]
        return [[c[0] + x * s[0] / 2, c[1] + y * s[1] / 2, c[2] + z * s[2] / 2]
                for x, y, z in zip(xs, ys, zs)]
    ca, cb = corners(a), corners(b)
    lo_a = [min(p[k] for p in ca) for k in range(3)]
    hi_a = [max(p[k] for p in ca) for k in range(3)]
    lo_b = [min(p[k] for p in cb) for k in range(3)]
    hi_b = [max(p[k] for p in cb) for k in range(3)]
    inter, va, vb = 1.0, 1.0, 1.0
    for k in range(3):
        inter *= max(min(hi_a[k], hi_b[k]) - max(lo_a[k], lo_b[k]), 0.0)
        va *= hi_a[k] - lo_a[k]
        vb *= hi_b[k] - lo_b[k]
    return inter / (va + vb - inter + 1e-8)


def ref_best(inst_locs, gt_loc):
    max_iou, max_id = -1, -1
    for p in range(len(inst_locs)):
        iou = ref_iou(inst_locs[p], gt_loc)
        if iou > max_iou:
            max_iou, max_id = iou, p
    return max_id, max_iou


def strip(desc):
    return desc[:-1] if desc[-1] in string.punctuation else desc


def tok(i):
    return "<OBJ%03d>" % i


def loc_str(loc):
    return "<LOCATION> " + " ".join("<LOC%03d>" % min(max(int(float(v) * 100) + 500, 0), 999)
                                    for v in loc) + " </LOCATION>"


def answer(items):
    if len(items) == 0:
        return "No."
    if len(items) == 1:
        return "Yes. %s." % items[0]
    if len(items) == 2:
        return "Yes. %s and %s." % (items[0], items[1])
    return "Yes. " + ", ".join(items[:-1]) + ", and %s." % items[-1]


def load(root, *parts):
    return json.loads(root.joinpath(*parts).read_text())


def ref_scanrefer(w, split, rng, location=False):
    P, inst, gt = w["prompts"], w["pred"][split], w["gt"][split]
    annos = sorted(load(w["root"], "scanrefer", f"ScanRefer_filtered_{split}.json"),
                   key=lambda p: f"{p['scene_id']}_{int(p['object_id']):03}")
    out = []
    for a in annos:
        scene, obj = a["scene_id"], int(a["object_id"])
        plist = P["grounding_location_prompt" if location else "grounding_prompt"]
        prompt = rng.choice(plist).replace("<description>", strip(a["description"]))
        if location:
            s = loc_str(gt[scene]["locs"][obj])
            out.append({"scene_id": scene, "obj_id": obj, ("caption" if split == "train" else "ref_captions"):
                        (s if split == "train" else [s]), "prompt": prompt})
            continue
        max_id, max_iou = ref_best(inst[scene]["locs"], gt[scene]["locs"][obj])
        if split == "train":
            if max_iou >= THRES:
                out.append({"scene_id": scene, "obj_id": max_id, "caption": tok(max_id) + ".",
                            "prompt": prompt})
        else:
            out.append({"scene_id": scene, "obj_id": obj, "ref_captions": [tok(max_id) + "."],
                        "prompt": prompt})
    return out


def ref_capitalize(text):
    sentences, cur = [], ""
    for i, ch in enumerate(text):
        cur += ch
        if ch in ".!?" and (i + 1 == len(text) or text[i + 1] == " "):
            sentences.append(cur.strip())
            cur = ""
    if cur.strip():
        sentences.append(cur.strip())
    return " ".join(s.capitalize() for s in sentences)


def ref_scan2cap(w, split, rng, location=False):
    P, inst, gt = w["prompts"], w["pred"][split], w["gt"][split]
    annos = load(w["root"], "scanrefer", f"ScanRefer_filtered_{split}.json")
    corpus = {}
    for a in annos:
        c = ref_capitalize(a["description"])
        key = f"{a['scene_id']}|{a['object_id']}"
        corpus.setdefault(key, []).append(c if location else "sos " + c + " eos")
    out = []
    for scene in sorted({a["scene_id"] for a in annos}):
        il, gl = inst[scene]["locs"], gt[scene]["locs"]
        match_id, match_iou = [-1] * len(gl), [-1] * len(gl)
        for p in range(len(il)):
            max_id = max_iou = -1
            for g in range(len(gl)):
                if f"{scene}|{g}" not in corpus:
                    continue
                iou = ref_iou(il[p], gl[g])
                if iou > max_iou:
                    max_iou, max_id = iou, g
            if f"{scene}|{max_id}" not in corpus:
                continue
            if max_iou > match_iou[max_id]:
                match_iou[max_id], match_id[max_id] = max_iou, p
        for g, p in enumerate(match_id):
            if p == -1 or (split == "train" and match_iou[g] < THRES):
                continue
            def prompt():
                if location:
                    return rng.choice(P["scan2cap_location_prompt"]).replace("<loc>", loc_str(il[p]))
                return rng.choice(P["scan2cap_prompt"]).replace("<id>", tok(p))
            if split == "train":
                for c in corpus[f"{scene}|{g}"]:
                    out.append({"scene_id": scene, "obj_id": g, "pred_id": p, "prompt": prompt(),
                                "caption": c, "iou": match_iou[g]})
            else:
                out.append({"scene_id": scene, "obj_id": g, "pred_id": p, "prompt": prompt(),
                            "ref_captions": corpus[f"{scene}|{g}"], "iou": match_iou[g]})
    return out


def ref_obj_align(w, split, rng):
    inst, gt = w["pred"][split], w["gt"][split]
    out = []
    for scene in sorted(gt):
        for g, label in enumerate(gt[scene]["objects"]):
            if ("wall" in label or "ceiling" in label or "floor" in label or "object" in label
                    or "item" in label):
                continue
            p, iou = ref_best(inst[scene]["locs"], gt[scene]["locs"][g])
            prompt, caption = "What is the %s?" % tok(p), "%s is a %s." % (tok(p), label)
            if split == "train" and iou >= THRES:
                out.append({"scene_id": scene, "obj_id": g, "prompt": prompt, "caption": caption})
            elif split == "val":
                out.append({"scene_id": scene, "obj_id": g, "prompt": prompt, "ref_captions": [caption]})
    return out


def csv_rows(w, name, split):
    scenes = set(w["root"].joinpath("scannet", f"scannetv2_{split}.txt").read_text().split())
    with open(w["root"] / "referit3d" / f"{name}.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["scan_id"] in scenes]


def ref_nr3d_caption(w, split, rng):
    inst, gt, out = w["pred"][split], w["gt"][split], []
    for r in csv_rows(w, "nr3d", split):
        scene, obj = r["scan_id"], int(r["target_id"])
        p, iou = ref_best(inst[scene]["locs"], gt[scene]["locs"][obj])
        prompt = rng.choice(w["prompts"]["nr3d_caption_prompt"]).replace("<id>", tok(p))
        if iou >= THRES:
            out.append({"scene_id": scene, "obj_id": obj, "prompt": prompt, "caption": r["utterance"]})
    return out


def ref_referit3d(w, split, rng, name):
    out = []
    for r in csv_rows(w, name, split):
        scene, obj = r["scan_id"], int(r["target_id"])
        if scene == "scene0217_00" and obj > 30:
            obj -= 31
        tokens = r["tokens"][2:-2].split("', '")
        easy = int(r["stimulus_id"].split("-")[2]) <= 2
        dep = any(t in tokens for t in ["front", "behind", "back", "right", "left", "facing", "leftmost",
                                         "rightmost", "looking", "across"])
        info = ("easy" if easy else "hard") + "_" + ("dep" if dep else "indep")
        prompt = rng.choice(w["prompts"]["grounding_prompt"]).replace("<description>", strip(r["utterance"]))
        if obj >= 100 and split == "train":
            continue
        if split == "train":
            out.append({"scene_id": scene, "obj_id": obj, "prompt": prompt, "caption": tok(obj) + "."})
        else:
            out.append({"scene_id": scene, "obj_id": obj, "prompt": prompt, "ref_captions": [tok(obj) + "."],
                        "type_info": info})
    return out


def ref_multi3dref(w, split, rng, location=False):
    inst, gt, out = w["pred"][split], w["gt"][split], []
    for a in load(w["root"], "multi3drefer", f"multi3drefer_{split}.json"):
        scene = a["scene_id"]
        plist = w["prompts"]["multi3dref_location_prompt" if location else "multi3dref_prompt"]
        prompt = rng.choice(plist).replace("<description>", strip(a["description"]))
        head = {"scene_id": scene, "obj_id": 0, "prompt": prompt}
        if location:
            body = (answer(sorted(loc_str(gt[scene]["locs"][g]) for g in a["object_ids"])) if split == "train"
                    else a["object_ids"])
            out.append({**head, ("caption" if split == "train" else "ref_captions"): body,
                        "eval_type": a["eval_type"]})
            continue
        preds, ok = [], True
        for g in a["object_ids"]:
            p, iou = ref_best(inst[scene]["locs"], gt[scene]["locs"][g])
            if split == "train" and (iou < THRES or p in preds):
                ok = False
                break
            preds.append(p)
        if not ok:
            continue
        if split == "train":
            out.append({**head, "caption": answer([tok(p) for p in sorted(preds)]),
                        "eval_type": a["eval_type"]})
        else:
            out.append({**head, "ref_captions": a["object_ids"], "eval_type": a["eval_type"]})
    return out


def ref_scanqa(w, split, rng):
    out = []
    for a in load(w["root"], "scanqa", f"ScanQA_v1.0_{split}.json"):
        head = {"scene_id": a["scene_id"], "obj_id": a.get("object_ids", [0])[0],
                "prompt": a["question"] + " Answer the question using a single word or phrase."}
        answers = a.get("answers", [])
        if split == "val":
            out.append({**head, "ref_captions": answers})
            continue
        prev = None
        for ans in answers:
            if ans != prev:
                c = ans.capitalize()
                out.append({**head, "caption": c if c[-1] == "." else c + "."})
            prev = ans
    return out


def ref_sqa3d(w, split, rng):
    questions = load(w["root"], "sqa3d", f"v1_balanced_questions_{split}_scannetv2.json")["questions"]
    qs = {q["question_id"]: q for q in questions}
    out = []
    for a in load(w["root"], "sqa3d", f"v1_balanced_sqa_annotations_{split}_scannetv2.json")["annotations"]:
        q = qs[a["question_id"]]
        situation = rng.choice([q["situation"]] + q["alternative_situation"])
        text = q["question"].lstrip()
        kind = 5
        for k, prefix in enumerate(["what", "is", "how", "can", "which"]):
            if text[:len(prefix)].lower() == prefix:
                kind = k
                break
        prompt = situation + " " + q["question"] + " Answer the question using a single word or phrase."
        answers = [x["answer"] for x in a["answers"]]
        head = {"scene_id": a["scene_id"], "obj_id": 0, "prompt": prompt}
        if split == "train":
            c = rng.choice(answers).capitalize()
            out.append({**head, "caption": c if c[-1] == "." else c + ".", "sqa_type": kind})
        else:
            out.append({**head, "ref_captions": answers, "sqa_type": kind})
    return out


REFS = {
    "scanrefer": ref_scanrefer, "scan2cap": ref_scan2cap, "obj_align": ref_obj_align,
    "nr3d_caption": ref_nr3d_caption, "multi3dref": ref_multi3dref, "scanqa": ref_scanqa, "sqa3d": ref_sqa3d,
    "nr3d": lambda w, s, r: ref_referit3d(w, s, r, "nr3d"),
    "sr3d": lambda w, s, r: ref_referit3d(w, s, r, "sr3d"),
    "scanrefer_location": lambda w, s, r: ref_scanrefer(w, s, r, location=True),
    "scan2cap_location": lambda w, s, r: ref_scan2cap(w, s, r, location=True),
    "multi3dref_location": lambda w, s, r: ref_multi3dref(w, s, r, location=True),
}
CASES = [(n, s) for n, b in BUILDERS.items() for s in b.splits]


def run_builder(w, name, split, attrs="pred"):
    b = BUILDERS[name]
    return b.build(split, w[attrs][split], w["gt"][split], w["root"], w["prompts"],
                   rng_for(SEED, name, split), THRES, 100)


# ------------------------------------------------------------------ tests
def test_iou_matrix_equals_the_corner_loop():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(-2, 2, (30, 3)), rng.uniform(0.05, 2, (30, 3))], 1).astype(np.float32)
    b = np.concatenate([a[:10], a[10:20] + 0.1, np.zeros((1, 6), np.float32)])  # equal, shifted, empty boxes
    m = iou_matrix(a, b)
    np.testing.assert_array_equal(m, [[ref_iou(x, y) for y in b] for x in a])  # the same bits
    assert m[3, 3] == pytest.approx(1.0) and m[:, -1].max() == 0.0
    assert best_pred(np.array([0.2, 0.7, 0.7])) == (1, 0.7)  # ties to the lowest index
    assert best_pred(np.zeros(3)) == (0, 0.0)  # a match always exists


@pytest.mark.parametrize("name,split", CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_builder_equals_plain_reimplementation(world, name, split):
    records, stats = run_builder(world, name, split)
    expected = REFS[name](world, split, random.Random(f"{SEED}/{name}/{split}"))
    assert records == expected
    assert stats["records_out"] == len(records) > 0 or name == "nr3d_caption" and split == "val"


def test_every_obj_token_names_an_instance(world, tmp_path):
    stats = build_annotations(list(BUILDERS.values()), ["train", "val"], world["pred"], world["gt"],
                              world["root"], tmp_path, "mask3d", seed=SEED)
    assert len(stats) == 23  # 12 builders x 2 splits, nr3d_caption train only
    for st in stats:
        gt_ids = st["task"] in ("nr3d", "sr3d")
        records = json.loads((tmp_path / st["file"]).read_text())
        attrs = world["gt" if gt_ids else "pred"][st["split"]]
        for r in records:
            text = json.dumps([r.get("prompt"), r.get("caption"), r.get("ref_captions")])
            for d in re.findall(r"<OBJ(\d{3})>", text):
                assert int(d) < len(attrs[r["scene_id"]]["locs"]), (st["file"], r)
    corpus = json.loads((tmp_path / "scan2cap_val_corpus.json").read_text())
    assert all(c.startswith("sos ") and c.endswith(" eos") for v in corpus.values() for c in v)
    assert sorted(p.name for p in tmp_path.iterdir())[:3] == [
        "multi3dref_mask3d_train.json", "multi3dref_mask3d_train_location.json", "multi3dref_mask3d_val.json"]


def test_upper_bound_gt_vs_mask3d_export(world):
    for name in ("scanrefer", "multi3dref", "obj_align"):
        _, gt_stats = run_builder(world, name, "val", attrs="gt")
        assert gt_stats["iou25"] == gt_stats["iou50"] == 1.0
        _, stats = run_builder(world, name, "val")
        assert stats["refs"] == gt_stats["refs"] > 0
        assert 0.0 < stats["iou50"] <= stats["iou25"] < 1.0  # missed objects cap it
    _, st = run_builder(world, "scanrefer", "train")
    assert st["records_out"] + st["dropped_thres"] == st["records_in"] and st["dropped_thres"] > 0


def test_seeded_runs_give_identical_files(world, tmp_path):
    def files(d, seed):
        build_annotations(list(BUILDERS.values()), ["train", "val"], world["pred"], world["gt"],
                          world["root"], d, "mask3d", seed=seed)
        return {p.name: p.read_bytes() for p in d.iterdir()}
    a, b, c = files(tmp_path / "a", 1), files(tmp_path / "b", 1), files(tmp_path / "c", 2)
    assert a == b
    assert a["scanrefer_mask3d_train.json"] != c["scanrefer_mask3d_train.json"]
    assert a["obj_align_mask3d_val.json"] == c["obj_align_mask3d_val.json"]  # draws nothing
    # a builder's draws do not depend on the other builders
    alone = tmp_path / "d"
    build_annotations([BUILDERS["sqa3d"]], ["train"], world["pred"], world["gt"], world["root"], alone, "m",
                      seed=1)
    assert (alone / "sqa3d_train.json").read_bytes() == a["sqa3d_train.json"]


def test_prompts_py_is_parsed_never_run(tmp_path):
    marker = tmp_path / "ran.txt"
    src = tmp_path / "prompts.py"
    src.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                   "ID_format = \"<OBJ{:03}>\"\n"
                   "grounding_prompt = [\n  'Which is \"<description>\"?',\n  # 'a commented entry',\n"
                   "  'Find \"<description>\".',\n]\nscan2cap_prompt = ['Describe <id>.']\n")
    prompts = read_prompts_py(src)
    assert not marker.exists()
    assert prompts == {"ID_format": "<OBJ{:03}>", "grounding_prompt": ['Which is "<description>"?',
                       'Find "<description>".'], "scan2cap_prompt": ["Describe <id>."]}
    assert load_prompts(src, ["grounding_prompt"])["scan2cap_prompt"] == ["Describe <id>."]
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\nscan2cap_prompt = [f'Describe {x}' for _ in range(3)]\n")
    with pytest.raises(DataError, match=r"bad.py: line 2: scan2cap_prompt is not a list of string literals"):
        read_prompts_py(bad)
    with pytest.raises(DataError, match=r"grounding_prompt\[0\] must hold \"<description>\" exactly once"):
        src.write_text("grounding_prompt = ['no placeholder']\n")
        load_prompts(src, ["grounding_prompt"])


def test_featurizer_prompts_have_the_reference_counts():
    p = load_prompts(None, ["grounding_prompt", "scan2cap_prompt", "multi3dref_prompt", "nr3d_caption_prompt",
                            "region_caption_prompt", "obj_caption_wid_prompt"])
    counts = {k: len(v) for k, v in p.items() if k != "ID_format"}
    assert counts == {"obj_caption_prompt": 20, "obj_caption_wid_prompt": 10, "multi3dref_prompt": 10,
                      "multi3dref_location_prompt": 1, "region_caption_prompt": 10, "grounding_prompt": 9,
                      "grounding_location_prompt": 1, "scan2cap_prompt": 10, "scan2cap_location_prompt": 1,
                      "nr3d_caption_prompt": 10}


def test_capitalize_sentences():
    assert capitalize_sentences("this is a CHAIR. it is brown!  next to the table?ok") == \
        "This is a chair. It is brown! Next to the table?ok"


def test_good_inputs_pass_every_builders_check(world):
    scenes = {split: set(world["gt"][split]) for split in ("train", "val")}
    assert check_annotations(list(BUILDERS.values()), world["root"], scenes, gt_counts(world["gt"])) == []


def test_bad_input_is_reported_with_file_and_record(world, tmp_path):
    root = tmp_path / "inputs"
    import shutil
    shutil.copytree(world["root"], root)
    path = root / "scanrefer" / "ScanRefer_filtered_val.json"
    recs = json.loads(path.read_text())
    del recs[1]["description"]
    recs[2]["object_id"] = "999"
    recs[3]["scene_id"] = "scene0999_00"
    path.write_text(json.dumps(recs))
    (root / "multi3drefer" / "multi3drefer_train.json").unlink()
    scenes = {sp: set(world["gt"][sp]) for sp in ("train", "val")}
    builders = [BUILDERS["scanrefer"], BUILDERS["multi3dref"]]
    lines = check_annotations(builders, root, scenes, gt_counts(world["gt"]), on_bad_input="skip")
    n_gt = len(world["gt"]["val"][recs[2]["scene_id"]]["locs"])
    assert lines == [
        f"{path}: record 1: no field 'description'",
        f"{path}: record 2: object id 999 out of range: {recs[2]['scene_id']} has {n_gt} GT objects",
        f"{path}: record 3: scene scene0999_00 is not in the run's val split",
        f"{root / 'multi3drefer' / 'multi3drefer_train.json'}: input file not found",
    ]
    with pytest.raises(DataError, match="record 1: no field 'description'"):
        check_annotations(builders, root, scenes, gt_counts(world["gt"]))
    records, stats = BUILDERS["scanrefer"].build("val", world["pred"]["val"], world["gt"]["val"], root,
                                                 world["prompts"], random.Random(0))
    assert stats["skipped"] == 3 and stats["records_in"] == len(recs) == len(records) + 3


def gt_counts(gt_by_split: dict) -> dict:
    """Per split, each scene's number of GT objects (what the run knows before long work)."""
    return {split: {scene: len(a["locs"]) for scene, a in scenes.items()}
            for split, scenes in gt_by_split.items()}


def test_misses_are_the_referred_objects_below_iou_25(world):
    from featurizer.annotations.pictures import find_misses

    pred = {s: a for split in ("train", "val") for s, a in world["pred"][split].items()}
    gt = {s: a for split in ("train", "val") for s, a in world["gt"][split].items()}
    scene_splits = {s: split for split in ("train", "val") for s in world["gt"][split]}
    builders = [BUILDERS[n] for n in ("scanrefer", "scan2cap", "multi3dref", "nr3d")]
    misses = find_misses(builders, world["root"], pred, gt, scene_splits, limit=10_000)
    referred = set()
    for split in ("train", "val"):
        referred |= {(r["scene_id"], int(r["object_id"]))
                     for r in load(world["root"], "scanrefer", f"ScanRefer_filtered_{split}.json")}
        m3 = load(world["root"], "multi3drefer", f"multi3drefer_{split}.json")
        referred |= {(r["scene_id"], i) for r in m3 for i in r["object_ids"]}
        referred |= {(r["scan_id"], int(r["target_id"])) for r in csv_rows(world, "nr3d", split)}
    best = {k: ref_best(pred[k[0]]["locs"], gt[k[0]]["locs"][k[1]]) for k in referred}
    assert sorted((m["scene"], m["gt_id"]) for m in misses) == sorted(k for k, (_, iou) in best.items()
                                                                      if iou < 0.25)
    assert misses and all((m["pred_id"], m["iou"]) == best[m["scene"], m["gt_id"]] for m in misses)
    assert {m["task"] for m in misses} <= {"scanrefer", "multi3dref", "nr3d"}  # scan2cap: scanrefer's records
    assert find_misses(builders, world["root"], pred, gt, scene_splits, limit=2) == misses[:2]
