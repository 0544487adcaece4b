"""Stage shards: keyed by configuration, written atomically, never trusted when they do not match."""

from __future__ import annotations

import pytest
import torch

from featurizer.errors import FeaturizerError
from featurizer.writer import OutputNames, StageStore, atomic_save, config_hash, merge, stage_hashes


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
    store.save("3d", "s0", {"feats": {"s0_00": torch.ones(3)}})
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
    names = OutputNames("gt", "uni3d", "val", ground_truth=True)
    with pytest.raises(FeaturizerError, match="scene0001_00"):
        merge(store, tmp_path / "out", ["scene0001_00"], names)
    assert not (tmp_path / "out" / "summary.json").exists()
