"""Embedded label sets (ScanNet200, ScanNet 20, NYU40, Eigen13, RIO27), Mask3D exports named through them on
any reader's scene, and 3RScan's benchmark label columns."""

from __future__ import annotations

import numpy as np
import pytest
from plyfile import PlyData

from featurizer.dataset import label_sets as L
from featurizer.dataset.labels import TSV_NAME, read_label_table
from featurizer.dataset.rscan import LABELS_PLY, RScanReader
from featurizer.dataset.scannet import ScanNetReader
from featurizer.dataset.synthetic.furniture import RAW_LABELS
from featurizer.dataset.synthetic.generate import generate_dataset
from featurizer.dataset.synthetic.layout_rscan import RSCAN_CLASSES, write_scan
from featurizer.dataset.synthetic.scene import make_scene
from featurizer.dataset.synthetic_annotations import read_scenes, write_mask3d_export
from featurizer.errors import ConfigError, DataError
from featurizer.segmenter.mask3d import Mask3DExport
from test_segmenters import write_mask3d_export as write_export

SID = "0a4b8ef6-a83a-21f2-8672-dce34dd0d7ca"


# ------------------------------------------------------------------ the tables
def test_tables_have_the_sources_sizes_and_pairs():
    assert len(L.VALID_CLASS_IDS_200) == len(set(L.VALID_CLASS_IDS_200)) == 200
    assert len(L.CLASS_LABELS_200) == len(set(L.CLASS_LABELS_200)) == 200
    assert list(L.VALID_CLASS_IDS_200) == sorted(L.VALID_CLASS_IDS_200)
    assert len(L.SCANNET20) == 20 and len(L.NYU40) == 40 and len(L.EIGEN13) == 13 and len(L.RIO27) == 27
    # pairs read in ScanNet's scannet200_constants.py (and Mask3D's copy): first, tenth, last ones
    assert [L.SCANNET200[i] for i in (1, 2, 3, 10, 1189, 1190, 1191)] == [
        "wall", "chair", "floor", "office chair", "potted plant", "luggage", "mattress"]
    assert 12 not in L.SCANNET200 and 1177 not in L.SCANNET200  # gaps of VALID_CLASS_IDS_200
    assert (L.SCANNET20[39], L.SCANNET20[24]) == ("otherfurniture", "refrigerator")
    assert 13 not in L.SCANNET20
    # the ScanNet 20 ids are NYU40 ids: the two sources agree on every name but ScanNet's spelling fix
    assert {k: L.NYU40[k] for k in L.SCANNET20 if k != 24} == {k: v for k, v in L.SCANNET20.items()
                                                             if k != 24}
    assert L.NYU40[24] == "refridgerator" and L.NYU40[32] == "night stand" and L.NYU40[40] == "otherprop"
    assert (L.RIO27[16], L.RIO27[21], L.RIO27[27]) == ("fridge", "nightstand", "blanket")
    assert (L.EIGEN13[11], L.EIGEN13[12]) == ("TV", "Wall")
    # rows of 3RScan's mapping csv (NYU40, Eigen, RIO27 names) for raw labels of the synthetic scenes
    names = {raw: (L.NYU40[n], L.EIGEN13[e], L.RIO27[r]) for raw, (n, e, r) in RSCAN_CLASSES.items()}
    assert names["bookshelf"] == ("bookshelf", "Furniture", "shelf")
    assert names["couch"] == ("sofa", "Sofa", "sofa") and names["desk"] == ("desk", "Table", "table")
    assert names["trash can"] == ("otherprop", "Objects", "object")
    assert names["refrigerator"] == ("refridgerator", "Furniture", "fridge")
    with pytest.raises(ConfigError, match="segmenter.label_set.*scannet200, scannet20, tsv"):
        Mask3DExport("/nowhere", label_set="scannet100")


def test_synthetic_tsv_ids_are_scannet200_ids_and_categories_name_alike(tmp_path):
    from featurizer.dataset.synthetic.layout import write_labels_tsv

    write_labels_tsv(tmp_path / TSV_NAME)
    table = read_label_table(tmp_path / TSV_NAME)
    ids = {name: i for i, name in L.SCANNET200.items()}
    rows = {raw: table.raw_to_category[raw] for raw in RAW_LABELS}
    assert {ids[raw] for raw in RAW_LABELS} == set(table.id_to_category)
    assert table.id_to_category[ids["office chair"]] == "chair"  # raw labels still map to categories
    for cat in set(rows.values()):  # every category's row: its ScanNet200 id, named alike
        assert table.id_to_category[ids[cat]] == L.SCANNET200[ids[cat]] == cat
    # 3RScan's mapping agrees with ScanNet's tsv on NYU40 for the synthetic raw labels, but for trash can
    assert {r: RSCAN_CLASSES[r][0] for r in RAW_LABELS if r != "trash can"} == {
        r: n for r, (_, n, _) in RAW_LABELS.items() if r != "trash can"}


# ------------------------------------------------------------------ Mask3D exports
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A small synthetic ScanNet-layout dataset with its Mask3D export (as the demo writes them)."""
    root = tmp_path_factory.mktemp("demo")
    generate_dataset(root, 2, 1, seed=3, image_size=(64, 48), num_objects=8)
    write_mask3d_export(root, root / "mask3d_export")
    return root


def test_demo_export_names_alike_with_scannet200_and_tsv(demo):
    """The synthetic Mask3D export is a ScanNet200 export: scannet200 (no tsv needed) and tsv give the same
    labels, the GT categories; scannet20 reads its ids as NYU40 ids and refuses one that is not."""
    root = demo
    outside = []
    for scene in read_scenes(root):
        sid, splits = scene.scene_id, ["train", "val"]
        by_set = {}
        for name in ("scannet200", "tsv"):
            seg = Mask3DExport(str(root / "mask3d_export"), splits=splits, labels_tsv=str(root),
                               label_set=name, max_instances=None)
            by_set[name] = [(i.label, i.score) for i in seg.predict(scene)]
            assert (root / TSV_NAME in seg.input_files(sid)) == (name == "tsv")
        assert by_set["scannet200"] == by_set["tsv"] and len(by_set["tsv"]) > 5
        assert {label for label, _ in by_set["tsv"]} <= {i.label for i in scene.instances}
        seg = Mask3DExport(str(root / "mask3d_export"), splits=splits, label_set="scannet20")
        txt = seg.scene_file(sid)
        ids = [int(line.split()[1]) for line in txt.read_text().splitlines()]
        outside.append(any(i not in L.SCANNET20 for i in ids))
        if outside[-1]:  # e.g. 17 (toilet in ScanNet200) is NYU40's dresser, not a ScanNet 20 class
            with pytest.raises(DataError, match=r"line \d+: class id \d+ is not a ScanNet \(20\) class id"):
                seg.predict(scene)
    assert any(outside)


def test_scannet_reader_labels_category_nyu40_scannet200(demo, tmp_path):
    import json
    import shutil

    shutil.copytree(demo, tmp_path / "d", ignore=shutil.ignore_patterns("mask3d_export"))
    root = tmp_path / "d"
    sid = "scene0000_00"
    agg = root / "scans" / sid / f"{sid}.aggregation.json"
    raw = [g["label"] for g in json.loads(agg.read_text())["segGroups"]]
    by_mode = {m: ScanNetReader(str(root), scenes=[sid], frames="none", labels=m).load(sid).instances
               for m in ("category", "nyu40", "scannet200")}
    assert [i.label for i in by_mode["category"]] == [RAW_LABELS[r][0] for r in raw]
    assert [i.label for i in by_mode["nyu40"]] == [L.NYU40[RAW_LABELS[r][1]] for r in raw]
    assert [i.label for i in by_mode["scannet200"]] == raw  # the synthetic raw labels are ScanNet200 names
    assert by_mode["nyu40"][raw.index("couch")].label == "sofa"  # NYU40 calls a couch a sofa
    # a raw label the tsv does not list: kept under its raw name as a category, left out of the sets
    data = json.loads(agg.read_text())
    data["segGroups"][0]["label"] = "hovercraft"
    agg.write_text(json.dumps(data))
    for mode in ("nyu40", "scannet200"):
        with pytest.warns(UserWarning, match=f"labels={mode}: left out 1 instance.*'hovercraft'"):
            scene = ScanNetReader(str(root), scenes=[sid], frames="none", labels=mode).load(sid)
        assert [i.gt_object_id for i in scene.instances] == [i.gt_object_id for i in by_mode[mode][1:]]
    scene = ScanNetReader(str(root), scenes=[sid], frames="none").load(sid)
    assert scene.instances[0].label == "hovercraft" and len(scene.instances) == len(raw)
    with pytest.raises(ConfigError, match="dataset.labels"):
        ScanNetReader(str(root), scenes=[sid], frames="none", labels="rio27")


@pytest.fixture(scope="module")
def rscan(tmp_path_factory):
    """(3RScan root holding one synthetic scan and no ScanNet tsv, the scene model)."""
    root = tmp_path_factory.mktemp("rscan")
    model = make_scene(np.random.default_rng(5), 1, (64, 48), (64, 48), 6, 600, False)
    write_scan(root, SID, model, color_size=(96, 54))
    return root, model


def test_scannet200_export_on_a_3rscan_scene(rscan, tmp_path):
    root, model = rscan
    scene = RScanReader(str(root), scenes=[SID], frames="none").load(SID)
    n = scene.num_points
    chair = scene.instances[0].point_ids
    preds = [(10, 0.9, chair), (1191, 0.8, np.arange(5)), (1, 0.3, np.arange(10, 20))]
    txt = write_export(tmp_path, preds, n, scene=SID, tsv=None) / f"{SID}.txt"
    assert not list(root.rglob(TSV_NAME)) and not list(tmp_path.rglob(TSV_NAME))
    seg = Mask3DExport(str(tmp_path), splits=["val"], labels_tsv=str(root))  # default: scannet200
    seg.check_global()
    seg.check_scene(SID, n)
    seg.segment(scene)
    assert [i.label for i in scene.instances] == ["office chair", "mattress", "wall"]
    np.testing.assert_array_equal(scene.instances[0].point_ids, chair)
    assert seg.input_files(SID)[0] == txt
    # the same ids as NYU40 ids of a ScanNet (20-class) checkpoint: 10 bookshelf, 1 wall; 1191 is none
    with pytest.raises(DataError, match=r"line 2: class id 1191 is not a ScanNet \(20\) class id "
                                        r"\(segmenter.label_set=scannet20\)") as err:
        Mask3DExport(str(tmp_path), splits=["val"], label_set="scannet20").check_scene(SID, n)
    assert err.value.path == txt
    write_export(tmp_path, [(10, 0.9, chair), (1, 0.3, np.arange(3))], n, scene=SID, tsv=None)
    seg20 = Mask3DExport(str(tmp_path), splits=["val"], label_set="scannet20")
    assert [i.label for i in seg20.predict(scene)] == ["bookshelf", "wall"]
    # an id ScanNet200 does not have (12: a gap of VALID_CLASS_IDS_200), named with file and line
    write_export(tmp_path, [(1, 0.9, chair), (12, 0.3, np.arange(3))], n, scene=SID, tsv=None)
    with pytest.raises(DataError, match=r"line 2: class id 12 is not a ScanNet200 class id"):
        Mask3DExport(str(tmp_path), splits=["val"]).predict(scene)
    # label_set=tsv on a dataset without ScanNet's tsv: the option named
    with pytest.raises(ConfigError, match="segmenter.labels_tsv"):
        Mask3DExport(str(tmp_path), splits=["val"], labels_tsv=None, label_set="tsv").check_global()


# ------------------------------------------------------------------ 3RScan's benchmark columns
@pytest.mark.parametrize("labels, column, table", [("nyu40", 0, L.NYU40), ("eigen13", 1, L.EIGEN13),
                                                   ("rio27", 2, L.RIO27)])
def test_rscan_benchmark_labels_from_the_ply_columns(rscan, labels, column, table):
    root, model = rscan
    reader = RScanReader(str(root), scenes=[SID], frames="none", labels=labels)
    reader.check_scene(SID)
    scene = reader.load(SID)
    groups = model.objects + model.structure
    assert len(scene.instances) == len(groups) and scene.notes == []
    expected = [table[RSCAN_CLASSES[g["raw_label"]][column]] for g in groups]
    assert [i.label for i in scene.instances] == expected
    raw = RScanReader(str(root), scenes=[SID], frames="none").load(SID)
    assert [i.label for i in raw.instances] == [g["raw_label"] for g in groups]


def test_rscan_instances_outside_the_set_are_left_out_and_columns_checked(rscan, tmp_path):
    import shutil

    root, model = rscan
    shutil.copytree(root / SID, tmp_path / SID)
    path = tmp_path / SID / LABELS_PLY
    ply = PlyData.read(str(path))
    first = model.objects[0]
    ply["vertex"].data["RIO27"][first["point_ids"]] = 0  # 3RScan's "-": not a RIO27 class
    ply.text = True
    ply.write(str(path))
    with pytest.warns(UserWarning, match="left out 1 instance"):
        scene = RScanReader(str(tmp_path), scenes=[SID], frames="none", labels="rio27").load(SID)
    groups = model.objects + model.structure
    assert len(scene.instances) == len(groups) - 1
    assert [i.gt_object_id for i in scene.instances] == [g["object_id"] + 1 for g in groups[1:]]
    assert any("labels=rio27: left out 1 instance" in n and first["raw_label"] in n for n in scene.notes)
    # a labels PLY without the column: named before long work
    text = path.read_text().replace("property uchar RIO27\n", "")
    rows = text.split("end_header\n")
    body = [" ".join(r.split()[:-1]) if i < len(model.raw_vertices) else r
            for i, r in enumerate(rows[1].splitlines())]
    path.write_text(rows[0] + "end_header\n" + "\n".join(body) + "\n")
    with pytest.raises(DataError, match="no RIO27") as err:
        RScanReader(str(tmp_path), scenes=[SID], frames="none", labels="rio27").check_scene(SID)
    assert err.value.path == path
    with pytest.raises(ConfigError, match="dataset.labels"):
        RScanReader(str(tmp_path), scenes=[SID], frames="none", labels="scannet200")


@pytest.mark.parametrize("labels", ["nyu40", "scannet200"])
def test_a_run_building_annotations_refuses_labels_that_leave_objects_out(demo, tmp_path, labels):
    """The task annotations index a scene's objects in aggregation order: a label set that leaves objects out
    would shift them, so such a run stops before long work, naming the option; annotations=none runs."""
    from conftest import run_featurizer
    from featurizer.dataset.synthetic_annotations import write_annotation_inputs

    write_annotation_inputs(demo, tmp_path / "annotations")
    common = ["dataset=scannet", f"dataset.root={demo}", "dataset.splits=[train]", f"dataset.labels={labels}",
              "dataset.frames=none", "encoder2d=none", "logger=none", "pictures=0", "pictures_misses=0"]
    proc = run_featurizer(*common, f"annotations.root={tmp_path / 'annotations'}",
                          f"hydra.run.dir={tmp_path / 'refused'}", root=tmp_path, check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        f"featurizer: error: config option 'dataset.labels': dataset.labels={labels} leaves objects out, "
        "which shifts the object ids the task annotations refer to: keep every object (the default labels) "
        "or pass annotations=none")
    assert not (tmp_path / "outputs" / "cache").exists()  # refused before any stage ran
    run_featurizer(*common, "annotations=none", f"hydra.run.dir={tmp_path / 'ok'}", root=tmp_path)
    assert (tmp_path / "ok" / "scannet_gt_uni3d_feats.pt").is_file()
    assert ScanNetReader(str(demo), splits=["train"], labels="category").object_filter is None
