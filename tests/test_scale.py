"""Scale-out: cost-balanced shares, a submitit_local job array merged once at the sweep's end, a killed
job rerun, and the same merge by hand; the merged files equal a single-process run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_featurizer
from featurizer.shards import balanced_shares, share_of
from test_pipeline import _assert_same, _merged

SMALL = ["dataset.num_scenes=3", "dataset.frames_per_scene=6", "logger=none", "pictures=0", "pictures_misses=0"]


def test_shares_are_disjoint_cover_every_scene_and_are_balanced():
    costs = {f"scene{i:04d}_00": float(c) for i, c in enumerate([50, 10, 40, 30, 30, 20, 5, 5, 60, 1])}
    for n in (1, 2, 3, 4, 11):
        shares = balanced_shares(costs, n)
        flat = [s for share in shares for s in share]
        assert sorted(flat) == sorted(costs) and len(flat) == len(set(flat)) and len(shares) == n
        loads = [sum(costs[s] for s in share) for share in shares]
        assert max(loads) - min(loads) <= max(costs.values())
        for share in shares:  # each share keeps the scene list's order
            assert share == sorted(share, key=list(costs).index)
    assert balanced_shares(costs, 2) == balanced_shares(dict(costs), 2)  # every job computes the same
    assert [sum(costs[s] for s in share) for share in balanced_shares(costs, 2)] == [126.0, 125.0]
    assert share_of(costs, 1, 2) == balanced_shares(costs, 2)[1]
    with pytest.raises(Exception, match="shard"):
        share_of(costs, 2, 2)


def _assert_same_run(a: Path, b: Path) -> None:
    _assert_same(_merged(a), _merged(b))
    assert json.loads((a / "records.json").read_text()) == json.loads((b / "records.json").read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("single")
    run_featurizer(*SMALL, f"paths.data_dir={data_dir}", f"hydra.run.dir={root / 'run'}", root=root)
    return root / "run"


@pytest.mark.slow
def test_submitit_local_array_merges_once_and_equals_one_process(single, data_dir, tmp_path):
    import hydra_plugins.hydra_submitit_launcher  # noqa: F401  (a test dependency: never skipped)
    args = [*SMALL, f"paths.data_dir={data_dir}", "hydra/launcher=local", "shard=0,1", "num_shards=2",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    run_featurizer(*args, root=tmp_path, multirun=True)
    merged = sorted((tmp_path / "sweep" / "merged").iterdir())
    assert len(merged) == 1, merged
    _assert_same_run(single, merged[0])
    jobs = [next((tmp_path / "sweep").glob(f"{j}_*")) for j in (0, 1)]
    shares = [json.loads((job / "summary.json").read_text())["share"] for job in jobs]
    scenes = {r["scene"] for r in json.loads((single / "records.json").read_text()).values()}
    assert sorted(shares[0] + shares[1]) == sorted(scenes)
    assert not set(shares[0]) & set(shares[1]) and shares[0] and shares[1]
    # a sweep over shards and fusion merges once per fusion
    run_featurizer(*[a for a in args if not a.startswith("hydra.sweep.dir")], "fusion=mean,mask_pool",
                   f"hydra.sweep.dir={tmp_path / 'grid'}", root=tmp_path, multirun=True)
    names = sorted(p.name for p in (tmp_path / "grid" / "merged").iterdir())
    assert names == ["fusion-mask_pool", "fusion-mean"]
    _assert_same_run(single, tmp_path / "grid" / "merged" / "fusion-mask_pool")


@pytest.mark.slow
def test_a_killed_job_leaves_no_partial_shard_and_a_rerun_finishes_only_what_is_missing(single, data_dir, tmp_path):
    """kill -9 a job after its first shard, rerun it: only the missing scenes are computed; equal to one run."""
    env = {**os.environ, "FEATURIZER_ROOT": str(tmp_path), "WANDB_DIR": str(tmp_path)}
    args = [*SMALL, f"paths.data_dir={data_dir}"]
    cache = tmp_path / "outputs" / "cache"
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), *args, f"hydra.run.dir={tmp_path / 'killed'}"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def shards():  # the stage shards (the token cache, written earlier in a scene's step, is not one)
        return sorted(p for stage in ("3d", "2d") for p in (cache / stage).rglob("*.pt"))

    deadline = time.time() + 300
    while time.time() < deadline and not shards() and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the job finished before it was killed"
    done = shards()
    assert 0 < len(done) < 6, "the job was killed after writing its first shard, before its last"
    for shard in cache.rglob("*.pt"):  # every shard on disk is complete (written atomically)
        assert isinstance(torch.load(shard, weights_only=True), dict), shard
    early = run_featurizer(*args, "merge_only=true", f"hydra.run.dir={tmp_path / 'early'}", root=tmp_path,
                           check=False)
    assert early.returncode != 0 and "no finished shard" in early.stderr
    run_featurizer(*args, f"hydra.run.dir={tmp_path / 'rerun'}", root=tmp_path)  # the rerun
    summary = json.loads((tmp_path / "rerun" / "summary.json").read_text())
    assert summary["computed_scenes"]["3d"] + summary["computed_scenes"]["2d"] == 6 - len(done)
    assert not list(cache.rglob("*.tmp")), "temporaries of the killed job are removed"
    _assert_same_run(single, tmp_path / "rerun")
    run_featurizer(*args, "merge_only=true", f"hydra.run.dir={tmp_path / 'merged'}", root=tmp_path)
    _assert_same_run(single, tmp_path / "merged")


@pytest.mark.slow
def test_scene_workers_read_the_next_scene_while_one_computes(single, data_dir, tmp_path):
    """scene_workers=2: scenes are read and segmented in DataLoader workers, ahead of the stages."""
    run_featurizer(*SMALL, f"paths.data_dir={data_dir}", "scene_workers=2", f"hydra.run.dir={tmp_path / 'run'}",
                   root=tmp_path)
    _assert_same_run(single, tmp_path / "run")


class _LoggedSource:
    """A frame source that records, in a file, that a worker decoded it (workers are other processes)."""

    def __init__(self, source, log: Path):
        self.source, self.log = source, log

    def __call__(self, frame):
        with open(self.log, "a") as f:
            f.write(f"{frame.number}\n")
        return self.source(frame)


class _WaitsForFrames(torch.nn.Module):
    """A 3D encoder that waits (up to ``patience`` s) for the first decoded frame and notes whether it came."""

    name, dim = "waits_for_frames", 4

    def __init__(self, log: Path, patience: float):
        super().__init__()
        self.log, self.patience, self.saw_frames = log, patience, []

    def encode(self, xyz, rgb):
        deadline = time.time() + self.patience
        while not self.log.exists() and time.time() < deadline:
            time.sleep(0.01)
        self.saw_frames.append(self.log.exists())
        return torch.stack([torch.as_tensor(x, dtype=torch.float32).mean(0).repeat(2)[:4] for x in xyz])


@pytest.mark.parametrize("workers", [0, 2])
def test_frames_are_decoded_while_the_3d_encoder_runs(tmp_path, workers):
    """With frame workers, a scene's frames are decoded during its 3D stage (the encoder sees them arrive),
    and the features equal those of the stages run one after the other."""
    import dataclasses

    from featurizer.fusion.paper import PaperFusion
    from featurizer.module import FeaturizerModule
    from test_fusion import ProcessorFake, synthetic_scene

    scene = synthetic_scene()
    log = tmp_path / "decoded.log"
    scene = dataclasses.replace(scene, frames=[dataclasses.replace(f, source=_LoggedSource(f.source, log))
                                               for f in scene.frames])
    encoder3d = _WaitsForFrames(log, patience=60 if workers else 1)
    module = FeaturizerModule(encoder3d, ProcessorFake(), PaperFusion(), frame_workers=workers, frame_batch=2)
    batch = {"scene_id": scene.scene_id, "inputs": {}, "todo": ["3d", "2d"], "scene": scene, "gt": None,
             "read_s": 0.0}
    out = module.predict_step(batch)["shards"]
    assert encoder3d.saw_frames == [workers > 0]  # no workers: frames are decoded after the 3D stage
    alone = module.stage2d(scene)  # the 2D stage by itself, frames decoded as it goes
    assert sorted(out["2d"]["feats"]) == sorted(alone["feats"]) and alone["feats"]
    for key, feat in alone["feats"].items():
        assert torch.equal(out["2d"]["feats"][key], feat), key
    assert out["2d"]["records"] == alone["records"]
