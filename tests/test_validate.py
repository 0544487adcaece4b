"""The validation pass: every scene's files are checked before any work; every bad scene is reported
at once (on_bad_scene=stop) or recorded in summary.json while the others are processed (skip)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_featurizer
from featurizer.dataset.labels import TSV_NAME, read_label_table
from featurizer.dataset.scannet import ScanNetReader
from featurizer.dataset.synthetic.generate import generate_dataset
from featurizer.errors import ConfigError, DataError, ValidationError
from featurizer.segmenter.gt import GroundTruth
from featurizer.segmenter.mask3d_inst_seg import Mask3DInstSeg
from featurizer.segmenter.instance_npz import InstanceNpz
from featurizer.segmenter.mask3d import Mask3DExport
from featurizer.validate import validate_scenes
from test_messages import _Command

SCENES = [f"scene{i:04d}_00" for i in range(8)]
SEGS = "_vh_clean_2.0.010000.segs.json"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate_src")
    generate_dataset(root, num_scenes=len(SCENES), frames_per_scene=3, seed=5, image_size=(96, 72),
                     num_objects=3, write_sens=True, split="val")
    return root


@pytest.fixture
def root(generated, tmp_path):
    dst = tmp_path / "scannet"
    shutil.copytree(generated, dst)
    return dst


def _scan(root: Path, sid: str) -> Path:
    return root / "scans" / sid


def _frames(root: Path, sid: str) -> Path:
    return root / "scannet_2d" / sid


# ------------------------------------------------------------------ defects; each returns (file, problem)
def break_segs(root: Path, sid: str):
    path = _scan(root, sid) / f"{sid}{SEGS}"
    data = json.loads(path.read_text())
    n = len(data["segIndices"])
    data["segIndices"] = data["segIndices"][:-5]
    path.write_text(json.dumps(data))
    return path, f"segIndices has {n - 5} entries but the mesh has {n} vertices"


def break_aggregation(root: Path, sid: str):
    path = _scan(root, sid) / f"{sid}.aggregation.json"
    data = json.loads(path.read_text())
    data["segGroups"][1]["segments"].append(999999)
    path.write_text(json.dumps(data))
    return path, "segGroups[1]"


def empty_color_folder(root: Path, sid: str):
    folder = _frames(root, sid) / "color"
    for p in folder.iterdir():
        p.unlink()
    return folder, "no frame files"


def garble_pose(root: Path, sid: str):
    path = _frames(root, sid) / "pose" / "20.txt"
    path.write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 one\n")
    return path, "not a 4x4 matrix of numbers"


def non_finite_pose(root: Path, sid: str) -> None:
    """Allowed: such frames are skipped with a note when the scene is loaded, as before."""
    path = _frames(root, sid) / "pose" / "40.txt"
    pose = np.loadtxt(path)
    pose[0, 3] = -np.inf
    np.savetxt(path, pose)


READER_DEFECTS = {"segs": break_segs, "aggregation": break_aggregation, "color": empty_color_folder,
                  "pose": garble_pose}


def write_inst_seg(root: Path, folder: Path, scene_ids) -> None:
    """Chat-Scene's mask3d_inst_seg files made of the scenes' ground-truth instances."""
    folder.mkdir(parents=True, exist_ok=True)
    reader = ScanNetReader(str(root), frames="none", scenes=list(scene_ids))
    for sid in scene_ids:
        insts = reader.load(sid).instances
        entries = [{"label": i.label, "segments": i.point_ids.tolist()} for i in insts]
        torch.save(entries, folder / f"{sid}.pt")


def pickle_inst_seg(folder: Path, sid: str, marker: Path):
    path = folder / f"{sid}.pt"
    torch.save([{"label": "chair", "segments": [1, 2]}, _Command(f"touch {marker}")], path)
    return path, "refusing to unpickle"


def write_mask3d(root: Path, export: Path, sid: str) -> list[Path]:
    """A raw Mask3D export of the scene's GT instances (class id: the tsv's id of the category)."""
    reader = ScanNetReader(str(root), frames="none", scenes=[sid])
    scene = reader.load(sid)
    table = read_label_table(root / TSV_NAME).id_to_category
    ids = {cat: i for i, cat in sorted(table.items(), reverse=True)}  # the lowest id of each category
    (export / "pred_mask").mkdir(parents=True, exist_ok=True)
    lines, masks = [], []
    for k, inst in enumerate(scene.instances):
        mask = np.zeros(scene.num_points, dtype=np.int64)
        mask[inst.point_ids] = 1
        rel = f"pred_mask/{sid}_{k}.txt"
        np.savetxt(export / rel, mask, fmt="%d")
        lines.append(f"{rel} {ids[inst.label]} {0.9 - 0.1 * k:.2f}")
        masks.append(export / rel)
    (export / f"{sid}.txt").write_text("\n".join(lines) + "\n")
    return masks


# ------------------------------------------------------------------ the reader's checks
def test_good_scene_passes_and_gives_the_vertex_count(root):
    for frames in ("exported", "sens", "none"):
        reader = ScanNetReader(str(root), frames=frames, scenes=SCENES[:1])
        assert reader.check_scene(SCENES[0]) == len(reader.load(SCENES[0]).points)


@pytest.mark.parametrize("defect", sorted(READER_DEFECTS))
def test_reader_check_scene_finds_each_defect(root, defect):
    sid = SCENES[2]
    path, problem = READER_DEFECTS[defect](root, sid)
    reader = ScanNetReader(str(root), scenes=SCENES)
    with pytest.raises(DataError) as err:
        reader.check_scene(sid)
    assert err.value.path == path and problem in err.value.problem
    assert validate_scenes(reader, GroundTruth(), policy="skip") == {sid: str(err.value)}


def test_garbled_pose_names_every_bad_pose_file(root):
    sid = SCENES[1]
    for k in (0, 40):
        (_frames(root, sid) / "pose" / f"{k}.txt").write_text("")
    with pytest.raises(DataError) as err:
        ScanNetReader(str(root), scenes=[sid]).check_scene(sid)
    assert err.value.path == _frames(root, sid) / "pose" / "0.txt"
    assert "2 of 3 pose files: 0.txt, 40.txt" in err.value.problem


def test_non_finite_pose_is_not_a_validation_error(root):
    sid = SCENES[1]
    non_finite_pose(root, sid)
    reader = ScanNetReader(str(root), scenes=[sid])
    assert not np.isfinite(np.loadtxt(_frames(root, sid) / "pose" / "40.txt")).all()
    assert validate_scenes(reader, GroundTruth()) == {}
    with pytest.warns(UserWarning, match="non-finite"):
        assert [f.number for f in reader.load(sid).frames] == [0, 20]


def test_sens_header_is_checked(root):
    sid = SCENES[3]
    sens = _scan(root, sid) / f"{sid}.sens"
    sens.write_bytes(sens.read_bytes()[:40])
    reader = ScanNetReader(str(root), frames="sens", scenes=SCENES[2:4])
    bad = validate_scenes(reader, GroundTruth(), policy="skip")
    assert list(bad) == [sid] and bad[sid].startswith(f"{sens}: truncated header")


# ------------------------------------------------------------------ the segmenters' checks
def test_mask3d_mask_file_with_wrong_line_count(root):
    export = root / "mask3d" / "val"
    for sid in SCENES[:2]:
        masks = write_mask3d(root, export, sid)
    n = len(ScanNetReader(str(root), frames="none", scenes=SCENES[1:2]).load(SCENES[1]).points)
    masks[1].write_text("0\n" * (n - 3))
    seg = Mask3DExport(str(root / "mask3d"), labels_tsv=str(root))
    reader = ScanNetReader(str(root), scenes=SCENES[:2])
    with pytest.raises(DataError) as err:
        seg.check_scene(SCENES[1], n)
    assert err.value.path == masks[1]
    assert err.value.problem == f"mask has {n - 3} lines but the scene has {n} points (mesh vertices)"
    assert validate_scenes(reader, seg, policy="skip") == {SCENES[1]: str(err.value)}
    (export / f"{SCENES[0]}.txt").unlink()
    with pytest.raises(ValidationError, match=f"{SCENES[0]}: .*Mask3D export missing for this scene"):
        validate_scenes(reader, seg, policy="skip")


def test_instance_npz_out_of_range_and_wrong_shape(root, tmp_path):
    reader = ScanNetReader(str(root), scenes=SCENES[:3])
    n0, n1, n2 = (reader.check_scene(sid) for sid in SCENES[:3])
    folder = tmp_path / "npz"
    folder.mkdir()
    labels = np.array(["chair", "table"])
    np.savez(folder / f"{SCENES[0]}.npz", labels=labels, point_ids=np.array([0, 1, n0]),
             offsets=np.array([0, 2, 3]))
    np.savez(folder / f"{SCENES[1]}.npz", labels=labels, instance_ids=np.zeros(n1 - 1, dtype=np.int64))
    np.savez(folder / f"{SCENES[2]}.npz", labels=labels, instance_ids=np.full(n2, 1))  # good
    assert validate_scenes(reader, InstanceNpz(str(folder)), policy="skip") == {
        SCENES[0]: f"{folder / SCENES[0]}.npz: point id {n0} out of range for {n0} points",
        SCENES[1]: f"{folder / SCENES[1]}.npz: 'instance_ids' has {n1 - 1} entries, the scene {n1} points",
    }


def test_inst_seg_pickle_is_refused_without_running_it(root, tmp_path):
    folder = tmp_path / "inst_seg"
    write_inst_seg(root, folder, SCENES[:3])
    marker = tmp_path / "pwned"
    path, problem = pickle_inst_seg(folder, SCENES[1], marker)
    torch.save([{"label": 7, "segments": [1]}], folder / f"{SCENES[2]}.pt")
    reader = ScanNetReader(str(root), scenes=SCENES[:3])
    bad = validate_scenes(reader, Mask3DInstSeg(str(folder)), policy="skip")
    assert list(bad) == SCENES[1:3]
    assert bad[SCENES[1]].startswith(f"{path}: {problem}")  # the reason itself: another part of issue 9
    assert bad[SCENES[2]] == f"{folder / SCENES[2]}.pt: entry 0: 'label' is int, not str"
    assert not marker.exists()


# ------------------------------------------------------------------ the pass
def test_stop_lists_the_first_ten_then_a_count(root):
    missing = [f"scene09{i:02d}_00" for i in range(13)]
    reader = ScanNetReader(str(root), frames="none", scenes=SCENES[:2] + missing)
    with pytest.raises(ValidationError) as err:
        validate_scenes(reader, GroundTruth())
    lines = str(err.value).splitlines()
    assert lines[0] == "13 of 15 scene(s) failed validation; nothing was computed:"
    assert lines[1:11] == [f"  {s}: {root / 'scans' / s}: scene folder not found (looked in scans/ and "
                           f"scans_test/)" for s in missing[:10]]
    assert lines[11] == "  and 3 more" and "on_bad_scene=skip" in lines[12]
    assert list(err.value.bad) == missing
    assert list(validate_scenes(reader, GroundTruth(), policy="skip")) == missing
    with pytest.raises(ValidationError, match="no scene is left"):
        validate_scenes(ScanNetReader(str(root), scenes=missing[:2]), GroundTruth(), policy="skip")
    with pytest.raises(ConfigError, match="on_bad_scene"):
        validate_scenes(reader, GroundTruth(), policy="ignore")


def test_problems_shared_by_every_scene_stop_at_once(root, tmp_path):
    with pytest.raises(DataError, match="mask3d_inst_seg folder not found"):
        validate_scenes(ScanNetReader(str(root), scenes=SCENES), Mask3DInstSeg(str(tmp_path / "nope")), "skip")
    (root / TSV_NAME).unlink()
    with pytest.raises(DataError, match="labels tsv not found"):
        validate_scenes(ScanNetReader(str(root), scenes=SCENES), GroundTruth(), "skip")


# ------------------------------------------------------------------ run.py, end to end
def _broken_dataset(root: Path, tmp_path: Path) -> tuple[Path, dict, Path]:
    """Five bad scenes (four reader defects, one pickled inst_seg file) and three good ones
    (one of them with a non-finite pose, which is allowed)."""
    inst_seg = tmp_path / "inst_seg"
    write_inst_seg(root, inst_seg, SCENES)
    expected = {sid: READER_DEFECTS[d](root, sid)
                for sid, d in zip(SCENES[1:5], ("segs", "aggregation", "color", "pose"))}
    marker = tmp_path / "pwned"
    expected[SCENES[5]] = pickle_inst_seg(inst_seg, SCENES[5], marker)
    non_finite_pose(root, SCENES[6])
    return inst_seg, expected, marker


def _run(root: Path, work: Path, inst_seg: Path, *extra: str, check: bool):
    return run_featurizer("dataset=scannet", f"dataset.root={root}", f"dataset.scenes=[{','.join(SCENES)}]",
                          "segmenter=mask3d_inst_seg", f"segmenter.root={inst_seg}", "encoder2d=none",
                          "logger=none", "pictures=0", f"hydra.run.dir={work / 'run'}", *extra,
                          root=work, check=check)


@pytest.mark.slow
def test_run_stops_before_any_shard_naming_every_bad_scene(root, tmp_path):
    inst_seg, expected, marker = _broken_dataset(root, tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    proc = _run(root, work, inst_seg, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "featurizer: error: 5 of 8 scene(s) failed validation" in proc.stderr
    for sid, (path, problem) in expected.items():
        line = next(x for x in proc.stderr.splitlines() if x.startswith(f"  {sid}: "))
        assert line.startswith(f"  {sid}: {path}: ") and problem in line
    assert "on_bad_scene=skip" in proc.stderr
    assert not list(work.rglob("*.pt")) and not (work / "run" / "summary.json").exists()
    assert not marker.exists()
    proc = _run(root, work, inst_seg, "on_bad_scene=maybe", check=False)
    assert proc.returncode != 0 and "config option 'on_bad_scene': unknown value 'maybe'" in proc.stderr


@pytest.mark.slow
def test_run_with_skip_processes_the_good_scenes_and_records_the_bad(root, tmp_path):
    inst_seg, expected, marker = _broken_dataset(root, tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    _run(root, work, inst_seg, "on_bad_scene=skip", check=True)
    run_dir = work / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    good = [SCENES[0], SCENES[6], SCENES[7]]
    assert summary["status"] == "ok" and summary["scenes"] == 3
    assert list(summary["bad_scenes"]) == SCENES[1:6]
    for sid, (path, problem) in expected.items():
        assert summary["bad_scenes"][sid].startswith(f"{path}: ") and problem in summary["bad_scenes"][sid]
    attrs = torch.load(run_dir / "scannet_mask3d_val_attributes.pt", weights_only=True)
    assert list(attrs) == good
    assert sorted(p.stem for p in (run_dir / "pcd_all").iterdir()) == good
    assert any("non-finite" in note for note in summary["notes"][SCENES[6]])
    assert not marker.exists()
