"""Stage shards: keyed by configuration and input files, written atomically with reproducible bytes,
never trusted when they do not match; stale temporary files of killed runs are removed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest
import torch

from featurizer.errors import FeaturizerError
from featurizer.files import STALE_AFTER_S, atomic_save, remove_stale, temporary_path
from featurizer.store import StageStore, config_hash, fingerprint, stage_hashes
from featurizer.writer import OutputNames, merge


def test_stage_hashes_follow_the_sections_each_stage_depends_on():
    base = {"dataset": {"root": "a"}, "segmenter": {"n": 1}, "encoder3d": {"w": 1}, "encoder2d": {"m": 1},
            "fusion": {"k": 1}}
    h = stage_hashes(base, with_2d=True)
    fusion_changed = stage_hashes({**base, "fusion": {"k": 2}}, with_2d=True)
    enc3d_changed = stage_hashes({**base, "encoder3d": {"w": 2}}, with_2d=True)
    seg_changed = stage_hashes({**base, "segmenter": {"n": 2}}, with_2d=True)
    assert fusion_changed["3d"] == h["3d"] and fusion_changed["2d"] != h["2d"]
    assert enc3d_changed["3d"] != h["3d"] and enc3d_changed["2d"] == h["2d"]
    assert seg_changed["3d"] != h["3d"] and seg_changed["2d"] != h["2d"]
    assert "2d" not in stage_hashes(base, with_2d=False)
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})


def test_store_resumes_by_configuration_and_refuses_foreign_or_corrupt_shards(tmp_path):
    store = StageStore(tmp_path, {"3d": "h1"})
    assert store.missing_stages("s0") == ["3d"]
    store.save("3d", "s0", {"feats": {"s0_00": torch.ones(3)}}, inputs="any")
    assert store.missing_stages("s0") == []
    assert torch.equal(store.load("3d", "s0")["feats"]["s0_00"], torch.ones(3))
    assert list(tmp_path.rglob("*.tmp")) == []

    other = StageStore(tmp_path, {"3d": "h2"})  # another configuration: not reused
    assert other.missing_stages("s0") == ["3d"] and other.load("3d", "s0") is None
    other.path("3d", "s0").parent.mkdir(parents=True)
    store.path("3d", "s0").rename(other.path("3d", "s0"))  # a shard recorded under h1 in h2's folder
    assert other.load("3d", "s0") is None
    other.path("3d", "s0").write_bytes(b"garbage")
    assert other.load("3d", "s0") is None


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.pt"
    atomic_save({"v": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"v": Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.pt"]


def test_merge_names_the_unfinished_scene(tmp_path):
    store = StageStore(tmp_path / "cache", {"3d": "h"})
    names = OutputNames("scannet", "gt", "uni3d", ground_truth=True)
    with pytest.raises(FeaturizerError, match="scene0001_00"):
        merge(store, tmp_path / "out", ["scene0001_00"], {"scene0001_00": "val"}, names)
    assert not (tmp_path / "out" / "summary.json").exists()


def test_store_recomputes_a_scene_whose_input_files_changed(tmp_path):
    files = {"s0": [tmp_path / "s0_pose.txt", tmp_path / "s0_mesh.ply"], "s1": [tmp_path / "s1_pose.txt"]}
    for paths in files.values():
        for p in paths:
            p.write_text(f"content of {p.name}")
    store = StageStore(tmp_path / "cache", {"3d": "h"}, inputs=lambda stage, scene: files[scene])
    for scene in files:
        store.save("3d", scene, {"v": scene}, store.fingerprint("3d", scene))
    assert store.missing_stages("s0") == store.missing_stages("s1") == []
    before = store.fingerprint("3d", "s0")

    # same size, same modification time, other bytes: the content of a small file counts
    stat = files["s0"][0].stat()
    files["s0"][0].write_text("CONTENT OF s0_pose.txt")
    os.utime(files["s0"][0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert store.missing_stages("s0") == ["3d"] and store.load("3d", "s0") is None
    assert store.missing_stages("s1") == []  # the other scene is untouched
    store.save("3d", "s0", {"v": "new"}, store.fingerprint("3d", "s0"))
    assert store.load("3d", "s0")["v"] == "new"
    assert len(list(store.folder("3d").glob("s0.*.pt"))) == 1  # the shard of the old inputs is gone

    # a file that disappears changes the fingerprint too; the order of the paths does not
    present = store.fingerprint("3d", "s0")
    assert present != before
    files["s0"][1].unlink()
    assert store.fingerprint("3d", "s0") not in (before, present)
    assert fingerprint(files["s1"]) == fingerprint(list(reversed(files["s1"])))


def test_atomic_save_writes_the_same_bytes_for_the_same_object(tmp_path):
    obj = {"feats": {"a_00": torch.arange(6.0)}, "labels": ["chair", "table"]}
    atomic_save(obj, tmp_path / "one.pt")
    atomic_save(obj, tmp_path / "two" / "other_name.pt")
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "one.pt",
                                                                    tmp_path / "two" / "other_name.pt")]
    assert digest[0] == digest[1]
    loaded = torch.load(tmp_path / "one.pt", weights_only=True)
    assert torch.equal(loaded["feats"]["a_00"], obj["feats"]["a_00"]) and loaded["labels"] == obj["labels"]


def test_remove_stale_deletes_only_temporaries_of_dead_processes(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = temporary_path(tmp_path / "summary.json")
    theirs = temporary_path(tmp_path / "feats.pt")
    theirs = theirs.with_name(theirs.name.replace(f"-{os.getpid()}-", f"-{dead.pid}-"))
    folder = temporary_path(tmp_path / "scannet_synth")
    folder = folder.with_name(folder.name.replace(f"-{os.getpid()}-", f"-{dead.pid}-"))
    far_old = tmp_path / ".x.pt.otherhost-1-0123abcd.tmp"
    far_new = tmp_path / ".y.pt.otherhost-1-0123abcd.tmp"
    user = tmp_path / ".notes.tmp"  # not named by featurizer: never touched
    for p in (mine, theirs, far_old, far_new, user):
        p.write_text("x")
    folder.mkdir()
    (folder / "scene0000_00.ply").write_text("half written")
    old = time.time() - STALE_AFTER_S - 60
    os.utime(far_old, (old, old))
    removed = remove_stale(tmp_path, tmp_path / "absent")
    assert sorted(removed) == sorted([theirs, folder, far_old])
    assert mine.exists() and far_new.exists() and user.exists()
    assert not theirs.exists() and not folder.exists() and not far_old.exists()


def test_output_names_follow_chat_scene_for_splits_and_the_test_split():
    pred = OutputNames("scannet", "mask3d", "uni3d", ground_truth=False)
    gt = OutputNames("scannet", "gt", "uni3d", ground_truth=True)
    assert pred.feats3d() == "scannet_mask3d_uni3d_feats.pt" and pred.feats2d() == "scannet_mask3d_videofeats.pt"
    assert pred.feats3d(with_test=True) == "scannet_mask3d_uni3d_feats_all.pt"
    assert pred.feats2d(with_test=True) == "scannet_mask3d_videofeats_all.pt"
    assert pred.attributes("train") == "scannet_mask3d_train_attributes.pt"
    assert pred.attributes("all") == "scannet_mask3d_all_attributes.pt"
    assert pred.gt_attributes("val") == gt.attributes("val") == "scannet_val_attributes.pt"
    assert gt.feats3d() == "scannet_gt_uni3d_feats.pt" and gt.feats2d() == "scannet_gt_videofeats.pt"


def test_merge_writes_one_feature_file_for_train_and_val_and_the_all_files_with_test(tmp_path):
    scenes = {"s_train": "train", "s_val": "val", "s_test": "test"}
    store = StageStore(tmp_path / "cache", {"3d": "h"})
    for i, scene in enumerate(scenes):
        gt = None if scene == "s_test" else {"labels": ["chair", "desk"], "locs": torch.ones(2, 6) * i}
        store.save("3d", scene, {"coords": torch.zeros(3, 3), "colors": torch.zeros(3, 3, dtype=torch.uint8),
                                 "labels": ["chair"], "point_ids": [torch.arange(3)], "locs": torch.ones(1, 6) * i,
                                 "gt": gt, "feats": {f"{scene}_00": torch.full((4,), float(i))},
                                 "records": {f"{scene}_00": {"label": "chair", "num_points": 3,
                                                             "3d": {"ok": True, "reason": None}}},
                                 "notes": [], "timings": {}}, inputs="any")
    names = OutputNames("scannet", "mask3d", "uni3d", ground_truth=False)
    result = merge(store, tmp_path / "out", list(scenes), scenes, names)
    out = tmp_path / "out"
    load = lambda name: torch.load(out / name, weights_only=True)  # noqa: E731
    assert set(load("scannet_mask3d_uni3d_feats.pt")) == {"s_train_00", "s_val_00"}
    assert set(load("scannet_mask3d_uni3d_feats_all.pt")) == {"s_train_00", "s_val_00", "s_test_00"}
    assert set(load("scannet_mask3d_all_attributes.pt")) == set(scenes)
    for scene, split in scenes.items():
        assert set(load(f"scannet_mask3d_{split}_attributes.pt")) == {scene}
    assert set(load("scannet_train_attributes.pt")) == {"s_train"} and not (out / "scannet_test_attributes.pt").exists()
    assert load("scannet_val_attributes.pt")["s_val"]["objects"] == ["chair", "desk"]  # every GT object
    assert result.summary["scenes_per_split"] == {"test": 1, "train": 1, "val": 1}
    assert result.splits == scenes and set(result.gt_attributes) == {"s_train", "s_val"}
