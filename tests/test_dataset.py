"""ScanNetReader against scenes the synthetic generator wrote in the ScanNet layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from featurizer.dataset.labels import TSV_NAME, read_label_table
from featurizer.dataset.render import render_mesh
from featurizer.dataset.scannet import ScanNetReader, read_ply_header
from featurizer.dataset.synthetic.furniture import RAW_LABELS
from featurizer.dataset.synthetic.generate import generate_dataset, generate_scene
from featurizer.dataset.synthetic.layout import write_labels_tsv
from featurizer.errors import ConfigError, DataError
from featurizer.scene import instance_boxes

SID = "scene0000_00"


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("scannet_root")
    truths = generate_dataset(root, num_scenes=1, frames_per_scene=4, seed=3, image_size=(320, 240),
                              split="val")
    return root, truths[0]


@pytest.fixture
def copy(dataset, tmp_path):
    """A fresh copy of the generated ScanNet root, to damage."""
    root, gt = dataset
    dst = tmp_path / "root"
    shutil.copytree(root, dst)
    return dst, gt


def _scan(root: Path) -> Path:
    return root / "scans" / SID


def test_points_colours_alignment(dataset):
    root, gt = dataset
    reader = ScanNetReader(str(root), splits=["val"])
    assert reader.scene_ids == [SID] and reader.split == "val"
    reader.check()
    s = reader.load(SID)
    assert s.scene_id == SID and s.split == "val" and s.notes == []
    np.testing.assert_array_equal(s.points, gt["vertices_raw"])
    np.testing.assert_array_equal(s.colors, gt["colors"])
    np.testing.assert_allclose(s.axis_align, gt["axis_align"], atol=1e-8)
    np.testing.assert_allclose(s.aligned_points(), gt["vertices_aligned"], atol=1e-4)


def test_gt_instances(dataset):
    root, gt = dataset
    s = ScanNetReader(str(root), frames="none").load(SID)
    groups = gt["objects"] + gt["structure"]
    assert len(s.instances) == len(groups) == 15
    for inst, g in zip(s.instances, groups):
        np.testing.assert_array_equal(inst.point_ids, g["point_ids"])
        assert inst.gt_object_id == g["object_id"]
        assert inst.label == RAW_LABELS[g["raw_label"]][0]
        assert inst.score is None
    # the tsv mapping was exercised: some raw labels differ from their category
    mapped = [(g["raw_label"], i.label) for g, i in zip(groups, s.instances) if g["raw_label"] != i.label]
    assert mapped, "expected at least one raw label mapped to another category"
    # boxes of the reader's instances = min/max of the generator's aligned vertices
    boxes = instance_boxes(s.instances, s.aligned_points())
    for box, g in zip(boxes, groups):
        v = gt["vertices_aligned"][g["point_ids"]]
        np.testing.assert_allclose(box[:3], (v.min(0) + v.max(0)) / 2, atol=1e-4)
        np.testing.assert_allclose(box[3:], v.max(0) - v.min(0), atol=1e-4)


def test_label_fallback_to_raw(copy):
    root, gt = copy
    agg = _scan(root) / f"{SID}.aggregation.json"
    data = json.loads(agg.read_text())
    data["segGroups"][0]["label"] = "hovercraft"
    agg.write_text(json.dumps(data))
    s = ScanNetReader(str(root), frames="none").load(SID)
    assert s.instances[0].label == "hovercraft"
    assert read_label_table(root / TSV_NAME).category("office chair") == "chair"


def test_frames_poses_intrinsics_and_read(dataset):
    root, gt = dataset
    s = ScanNetReader(str(root)).load(SID)
    assert [f.number for f in s.frames] == gt["frame_ids"] == [0, 20, 40, 60]
    for f, pose in zip(s.frames, gt["poses"]):
        np.testing.assert_allclose(f.pose, pose, atol=1e-7)
        np.testing.assert_allclose(f.intrinsics, gt["intrinsics"], atol=1e-6)
        assert f.image_size == (320, 240) and f.depth_scale == 1000.0
    color, depth = s.frames[2].read()
    assert color.shape == (240, 320, 3) and color.dtype == np.uint8
    assert depth.dtype == np.float32 and depth.shape == (240, 320)
    mesh = (gt["vertices_raw"], gt["faces"], gt["colors"])
    _, truth = render_mesh(*mesh, gt["poses"][2], gt["intrinsics"], 320, 240)
    np.testing.assert_allclose(depth, truth, atol=0.0005 + 1e-6)  # metres, from millimetre pngs
    assert 0.3 < np.median(depth) < 12


def test_frame_stride_and_max_frames(dataset):
    root, _ = dataset
    assert [f.number for f in ScanNetReader(str(root), frame_stride=2).load(SID).frames] == [0, 40]
    assert [f.number for f in ScanNetReader(str(root), frame_stride=3).load(SID).frames] == [0, 60]
    assert [f.number for f in ScanNetReader(str(root), max_frames=3).load(SID).frames] == [0, 20, 40]
    assert [f.number for f in ScanNetReader(str(root), frame_stride=2, max_frames=1).load(SID).frames] == [0]
    assert ScanNetReader(str(root), frames="none").load(SID).frames == []


def test_frames_sorted_numerically(copy):
    root, gt = copy
    fd = root / "scannet_2d" / SID
    for sub, ext in (("color", "jpg"), ("depth", "png"), ("pose", "txt")):  # 100 sorts before 20 as text
        shutil.copy(fd / sub / f"60.{ext}", fd / sub / f"100.{ext}")
    assert [f.number for f in ScanNetReader(str(root)).load(SID).frames] == [0, 20, 40, 60, 100]


def test_intrinsics_rescaled_to_image_size(tmp_path):
    # intrinsics written for a 640x480 sensor, images exported at 320x240 (OpenScene's export case)
    gt = generate_scene(tmp_path, SID, np.random.default_rng(11), num_frames=2, image_size=(320, 240),
                        num_objects=8, intrinsics_size=(640, 480))
    write_labels_tsv(tmp_path / TSV_NAME)
    k_file = np.loadtxt(tmp_path / "scannet_2d" / SID / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
    np.testing.assert_allclose(k_file, gt["intrinsics_written"], atol=1e-6)
    assert k_file[0, 0] > 570  # a 640-wide focal length
    s = ScanNetReader(str(tmp_path), scenes=[SID]).load(SID)
    k = s.frames[0].intrinsics
    expect = k_file.copy()  # pixel centres at integers: focal * 0.5, centre (c + 0.5) * 0.5 - 0.5
    expect[[0, 1], [0, 1]] *= 0.5
    expect[:2, 2] = (k_file[:2, 2] + 0.5) * 0.5 - 0.5
    np.testing.assert_allclose(k, expect, atol=1e-6)
    np.testing.assert_allclose(k, gt["intrinsics"], atol=1e-6)
    assert s.frames[0].image_size == (320, 240)
    # without intrinsic_depth.txt: from the meta's fx_depth .. my_depth, rescaled the same way
    (tmp_path / "scannet_2d" / SID / "intrinsic" / "intrinsic_depth.txt").unlink()
    s = ScanNetReader(str(tmp_path), scenes=[SID]).load(SID)
    np.testing.assert_allclose(s.frames[0].intrinsics, expect, atol=1e-5)


def test_non_finite_pose_is_skipped_with_a_note(copy):
    root, _ = copy
    (root / "scannet_2d" / SID / "pose" / "20.txt").write_text("-inf -inf -inf -inf\n" * 4)
    with pytest.warns(UserWarning, match="non-finite"):
        s = ScanNetReader(str(root)).load(SID)
    assert [f.number for f in s.frames] == [0, 40, 60]
    assert any("non-finite" in n and "20" in n for n in s.notes)


def test_test_split_scene(copy):
    root, gt = copy
    scan = _scan(root)
    (scan / f"{SID}.aggregation.json").unlink()
    (scan / f"{SID}_vh_clean_2.0.010000.segs.json").unlink()
    meta = scan / f"{SID}.txt"
    kept = [line for line in meta.read_text().splitlines() if "axisAlignment" not in line]
    meta.write_text("\n".join(kept) + "\n")
    (root / "scans_test").mkdir()
    shutil.move(str(scan), str(root / "scans_test" / SID))
    (root / TSV_NAME).unlink()  # not needed without aggregations
    reader = ScanNetReader(str(root), splits=["test"], scenes=[SID])
    reader.check()
    with pytest.warns(UserWarning, match="axisAlignment"):
        s = reader.load(SID)
    assert s.instances == [] and s.split == "test"
    np.testing.assert_array_equal(s.axis_align, np.eye(4))
    assert "no axisAlignment: identity" in s.notes
    np.testing.assert_array_equal(s.points, gt["vertices_raw"])
    assert len(s.frames) == 4


def test_scene_list_sources(copy):
    root, _ = copy
    assert ScanNetReader(str(root), scenes=["a", "b"]).scene_ids == ["a", "b"]  # explicit list wins
    assert ScanNetReader(str(root), scenes="a,b").scene_ids == ["a", "b"]
    (root / "mine").mkdir()
    (root / "mine" / "scannetv2_train.txt").write_text(f"\n{SID}\n\n")
    assert ScanNetReader(str(root), splits=["train"], split_dir=str(root / "mine")).scene_ids == [SID]
    with pytest.raises(DataError, match=r"scannetv2_train\.txt.*split file not found"):
        ScanNetReader(str(root), splits=["train"])


def test_bad_options():
    with pytest.raises(ConfigError, match="dataset.frames"):
        ScanNetReader("/nonexistent", scenes=[SID], frames="video")
    with pytest.raises(ConfigError, match="dataset.frame_stride"):
        ScanNetReader("/nonexistent", scenes=[SID], frame_stride=0)
    with pytest.raises(ConfigError, match="dataset.root"):
        ScanNetReader("???", scenes=[SID])


# ------------------------------------------------------------------ bad input -> DataError
def test_missing_scene_folder(dataset):
    root, _ = dataset
    reader = ScanNetReader(str(root), scenes=[SID, "scene0999_00"])
    with pytest.raises(DataError, match=r"scans/scene0999_00: scene folder not found") as e:
        reader.check()
    assert e.value.path == root / "scans" / "scene0999_00"


def test_ply_without_colour_properties(copy):
    root, _ = copy
    ply = _scan(root) / f"{SID}_vh_clean_2.ply"
    ply.write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nend_header\n0 0 0 1\n1 1 1 2\n"
    )
    counts, props, fmt = read_ply_header(ply)
    assert counts == {"vertex": 2} and props == ["x", "y", "z", "red"] and fmt == "ascii"
    reader = ScanNetReader(str(root))
    with pytest.raises(DataError, match=r"_vh_clean_2\.ply: .*lacks properties green, blue") as e:
        reader.check()
    assert e.value.path == ply
    with pytest.raises(DataError, match=r"lacks properties green, blue"):
        reader.load(SID)


def test_segs_length_mismatch(copy):
    root, gt = copy
    segs = _scan(root) / f"{SID}_vh_clean_2.0.010000.segs.json"
    data = json.loads(segs.read_text())
    data["segIndices"] = data["segIndices"][:-7]
    segs.write_text(json.dumps(data))
    n = len(gt["vertices_raw"])
    message = rf"segIndices has {n - 7} entries but the mesh has {n} vertices"
    with pytest.raises(DataError, match=message) as e:
        ScanNetReader(str(root), frames="none").load(SID)
    assert e.value.path == segs


def test_aggregation_with_unknown_segments(copy):
    root, _ = copy
    agg = _scan(root) / f"{SID}.aggregation.json"
    data = json.loads(agg.read_text())
    data["segGroups"][2]["segments"] += [999999, 888888]
    agg.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"segGroups\[2\].*2 segment id\(s\) absent.*888888, 999999") as e:
        ScanNetReader(str(root), frames="none").load(SID)
    assert e.value.path == agg


def test_empty_mesh_with_a_segment_group_is_one_clear_error(copy):
    """A mesh of no vertices (its segs list empty) under an aggregation naming segments: the DataError of
    the absent segments (the old lookup indexed the empty unique ids and raised IndexError)."""
    root, _ = copy
    scan = _scan(root)
    (scan / f"{SID}_vh_clean_2.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    (scan / f"{SID}_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"segIndices": []}))
    agg = scan / f"{SID}.aggregation.json"
    with pytest.raises(DataError, match=r"segGroups\[0\] \(objectId .*\) names \d+ segment id\(s\) absent") \
            as e:
        ScanNetReader(str(root), frames="none").check()
    assert e.value.path == agg


def test_missing_labels_tsv(copy):
    root, _ = copy
    (root / TSV_NAME).unlink()
    reader = ScanNetReader(str(root))
    with pytest.raises(DataError, match=r"scannetv2-labels\.combined\.tsv: labels tsv not found"):
        reader.check()
    with pytest.raises(DataError, match=r"labels tsv not found"):
        reader.load(SID)


def test_unparsable_axis_alignment(copy):
    root, _ = copy
    meta = _scan(root) / f"{SID}.txt"
    meta.write_text(meta.read_text().replace("axisAlignment = ", "axisAlignment = 1 0 oops "))
    reader = ScanNetReader(str(root))
    with pytest.raises(DataError, match=rf"{SID}\.txt: axisAlignment is not 16 numbers") as e:
        reader.check()
    assert e.value.path == meta
    meta.write_text("axisAlignment = 1 0 0 0 1\n")
    with pytest.raises(DataError, match=r"16 finite numbers, got 5"):
        ScanNetReader(str(root), frames="none").load(SID)


def test_missing_segs_or_frames(copy):
    root, _ = copy
    (_scan(root) / f"{SID}_vh_clean_2.0.010000.segs.json").unlink()
    with pytest.raises(DataError, match=r"segs\.json: not found, but .*aggregation\.json is"):
        ScanNetReader(str(root)).check()
    (_scan(root) / f"{SID}.aggregation.json").unlink()  # now a test-split-like scan
    shutil.rmtree(root / "scannet_2d" / SID / "depth")
    with pytest.raises(DataError, match=r"depth: exported frames folder not found"):
        ScanNetReader(str(root), frames="exported").check()
    with pytest.raises(DataError, match=r"depth: exported frames folder not found"):
        ScanNetReader(str(root), frames="exported").load(SID)
    assert ScanNetReader(str(root), frames="none").load(SID).frames == []
