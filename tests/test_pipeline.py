"""End to end: `python run.py` on generated scenes writes the Chat-Scene files with the right values,
resumes, recomputes on config change, runs in two processes with identical results, and refuses bad
input clearly without touching earlier outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_featurizer

SMALL = ["dataset.num_scenes=2", "dataset.frames_per_scene=6"]
QUIET = ["logger=none", "pictures=0"]


def _load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _run(root: Path, run: str, *extra: str, data_dir: Path, small: bool = True, **kw):
    return run_featurizer(*(SMALL if small else []), *QUIET, f"paths.data_dir={data_dir}",
                          f"hydra.run.dir={root / run}", *extra, root=root, **kw)


def _merged(run_dir: Path) -> dict:
    """Every merged output file of a run, loaded."""
    files = {p.relative_to(run_dir).as_posix(): _load(p) for p in sorted(run_dir.rglob("*.pt*"))}
    assert files, f"no outputs in {run_dir}"
    return files


def _assert_same(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("pipeline")
    proc = _run(root, "run1", data_dir=data_dir)
    return root, root / "run1", proc


@pytest.mark.slow
def test_demo_outputs_match_the_scenes(first_run, data_dir):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    root, run_dir, proc = first_run
    assert "featurizer run summary" in proc.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["scenes"] == 2

    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    reader = instantiate(cfg.dataset)
    attrs = {}  # the GT attributes of every split, one file per split
    for split in ("train", "val"):
        if (run_dir / f"scannet_{split}_attributes.pt").is_file():
            attrs.update(_load(run_dir / f"scannet_{split}_attributes.pt"))
    feats3d = _load(run_dir / "scannet_gt_uni3d_feats.pt")
    feats2d = _load(run_dir / "scannet_gt_videofeats.pt")
    records = json.loads((run_dir / "records.json").read_text())
    assert list(attrs) == reader.scene_ids
    n_instances = 0
    for scene_id in reader.scene_ids:
        scene = reader.load(scene_id)
        aligned = (np.c_[scene.points.astype(np.float64), np.ones(len(scene.points))] @ scene.axis_align.T)[:, :3]
        coords, colors, labels, point_ids = _load(run_dir / "pcd_all" / f"{scene_id}.pth")
        np.testing.assert_allclose(coords.numpy(), aligned, atol=1e-4)
        assert not np.allclose(coords.numpy(), scene.points, atol=1e-2), "pcd_all must hold ALIGNED coordinates"
        np.testing.assert_array_equal(colors.numpy(), scene.colors)
        assert labels == [inst.label for inst in scene.instances][:100]
        assert [list(ids) for ids in point_ids] == [inst.point_ids.tolist() for inst in scene.instances][:100]
        # boxes: a direct min/max computation on the aligned points of each instance
        locs = attrs[scene_id]["locs"]
        assert locs.dtype == torch.float32 and locs.shape == (len(labels), 6)
        for i, inst in enumerate(scene.instances[:100]):
            pts = aligned[inst.point_ids]
            lo, hi = pts.min(0), pts.max(0)
            np.testing.assert_allclose(locs[i, :3].numpy(), (lo + hi) / 2, atol=1e-4)
            np.testing.assert_allclose(locs[i, 3:].numpy(), hi - lo, atol=1e-4)
            key = f"{scene_id}_{i:02}"
            assert records[key]["label"] == inst.label
            if len(inst.point_ids) >= 10:
                assert feats3d[key].shape == (64,) and feats3d[key].dtype == torch.float32
            else:
                assert key not in feats3d and records[key]["3d"]["reason"]
            if key in feats2d:
                assert records[key]["2d"]["views"] >= 1 and torch.isfinite(feats2d[key]).all()
            else:
                assert records[key]["2d"]["reason"], f"{key}: missing 2D feature without a reason"
        n_instances += len(scene.instances[:100])
    assert summary["instances"] == n_instances == len(records)
    assert summary["keys_3d"] == len(feats3d) and summary["keys_2d"] == len(feats2d)
    assert len(feats2d) >= n_instances // 2, "most synthetic objects are seen by some frame"
    assert summary["computed_scenes"] == {"3d": 2, "2d": 2}


@pytest.mark.slow
def test_rerun_resumes_and_recomputes_only_what_changed(first_run, data_dir):
    root, run1, _ = first_run
    base = _merged(run1)

    # same configuration: nothing recomputed, identical files
    _run(root, "run2", data_dir=data_dir)
    summary = json.loads((root / "run2" / "summary.json").read_text())
    assert summary["computed_scenes"] == {"3d": 0, "2d": 0}
    _assert_same(base, _merged(root / "run2"))

    # one shard deleted: only that scene's stage is recomputed, results identical
    shard = sorted((root / "outputs" / "cache" / "3d").rglob("*.pt"))[0]
    shard.unlink()
    _run(root, "run3", data_dir=data_dir)
    summary = json.loads((root / "run3" / "summary.json").read_text())
    assert summary["computed_scenes"] == {"3d": 1, "2d": 0}
    _assert_same(base, _merged(root / "run3"))

    # a changed 3D configuration recomputes the 3D stage of every scene and reuses the 2D stage
    _run(root, "run4", "encoder3d.seed=1", data_dir=data_dir)
    summary = json.loads((root / "run4" / "summary.json").read_text())
    assert summary["computed_scenes"] == {"3d": 2, "2d": 0}
    new = _load(root / "run4" / "scannet_gt_uni3d_feats.pt")
    old = base["scannet_gt_uni3d_feats.pt"]
    assert new.keys() == old.keys()
    assert not torch.allclose(next(iter(new.values())), next(iter(old.values())))


@pytest.mark.slow
def test_two_processes_equal_one(first_run, data_dir):
    root, run1, _ = first_run
    ddp_root = root / "ddp"
    ddp_root.mkdir()
    _run(ddp_root, "run", "trainer=ddp_cpu", data_dir=data_dir)
    summary = json.loads((ddp_root / "run" / "summary.json").read_text())
    assert summary["computed_scenes"] == {"3d": 2, "2d": 2}, "each scene exactly once"
    _assert_same(_merged(run1), _merged(ddp_root / "run"))


@pytest.mark.slow
def test_bad_input_is_one_clear_error_and_keeps_earlier_outputs(first_run, data_dir, tmp_path):
    root, run1, _ = first_run
    before = {p: p.read_bytes() for p in run1.rglob("*") if p.is_file() and ".hydra" not in p.parts}

    # an unknown config option names the option
    proc = _run(root, "run1", "encoder3d=uni3d_huge", data_dir=data_dir, check=False)
    assert proc.returncode != 0 and "encoder3d" in proc.stderr and "uni3d_huge" in proc.stderr
    proc = _run(root, "run1", "geometry_backend=fast", data_dir=data_dir, check=False)
    assert proc.returncode != 0 and "featurizer: error:" in proc.stderr and "geometry_backend" in proc.stderr
    assert "Traceback" not in proc.stderr

    # a missing scene folder, through the ScanNet reader on a copy of the generated data
    cfg_root = next(p for p in data_dir.rglob("scans") if p.is_dir()).parent
    copy = tmp_path / "scannet"
    shutil.copytree(cfg_root, copy)
    scene_ids = sorted(p.name for p in (copy / "scans").iterdir())
    shutil.rmtree(copy / "scans" / scene_ids[-1])
    proc = _run(root, "run1", "dataset=scannet", f"dataset.root={copy}", f"dataset.scenes=[{','.join(scene_ids)}]",
                data_dir=data_dir, small=False, check=False)
    assert proc.returncode != 0
    assert "featurizer: error:" in proc.stderr and scene_ids[-1] in proc.stderr
    assert "Traceback" not in proc.stderr

    # a checkpoint of the wrong size
    ckpt = tmp_path / "model.pt"
    from featurizer.encoder3d.uni3d import Uni3D

    tiny = Uni3D(size=None, width=96, depth=2, num_heads=2, mlp_hidden=256, block_style="packed_swiglu",
                 pc_encoder_dim=128, embed_dim=64)
    torch.save({"module": tiny.state_dict()}, ckpt)  # the published layout, of another width
    proc = _run(root, "run1", "encoder3d=uni3d_ti", f"encoder3d.checkpoint={ckpt}", data_dir=data_dir, check=False)
    assert proc.returncode != 0 and str(ckpt) in proc.stderr and "featurizer: error:" in proc.stderr

    after = {p: p.read_bytes() for p in run1.rglob("*") if p.is_file() and ".hydra" not in p.parts}
    changed = [str(p) for p in before if after.get(p) != before[p]]
    assert not changed, f"a failed run changed earlier outputs: {changed}"


def _digests(run_dir: Path) -> dict[str, str]:
    """sha256 of every output a user would checksum: the .pt/.pth files and the JSON files but timings."""
    import hashlib

    files = [p for p in sorted(run_dir.rglob("*")) if p.suffix in (".pt", ".pth", ".json")
             and p.name != "timings.json" and ".hydra" not in p.parts]
    return {p.relative_to(run_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.slow
def test_two_clean_runs_write_byte_identical_files(first_run, data_dir, tmp_path):
    root, run1, _ = first_run
    other = tmp_path / "clean"  # its own cache: every stage computed again
    other.mkdir()
    _run(other, "run", data_dir=data_dir)
    a, b = _digests(run1), _digests(other / "run")
    assert {"summary.json", "records.json", "metrics.json", "scannet_gt_uni3d_feats.pt",
            "scannet_gt_videofeats.pt", "scannet_train_attributes.pt"} <= set(a)
    assert any(name.startswith("pcd_all/") for name in a)
    assert a == b
    timings = json.loads((other / "run" / "timings.json").read_text())
    assert timings["total"] > 0 and "timings" not in json.loads((other / "run" / "summary.json").read_text())


@pytest.mark.slow
def test_an_empty_scene_list_is_an_error_and_never_reports_an_old_summary(first_run, data_dir, tmp_path):
    root, run1, _ = first_run
    before = (run1 / "summary.json").read_bytes()
    for run_dir in (run1, tmp_path / "new"):  # a reused folder and a new one
        proc = _run(root, str(run_dir), "dataset.scenes=[]", data_dir=data_dir, check=False)
        assert proc.returncode != 0
        assert "featurizer: error:" in proc.stderr and "dataset.scenes" in proc.stderr
        assert "Traceback" not in proc.stderr and "featurizer run summary" not in proc.stdout
    assert (run1 / "summary.json").read_bytes() == before
    assert not (tmp_path / "new" / "summary.json").exists()


@pytest.mark.slow
def test_changed_input_files_recompute_only_their_scene_and_stage(data_dir, tmp_path):
    """A frame truncated then put back: the rerun recomputes that scene's 2D stage and no other shard."""
    src = next(p for p in data_dir.rglob("scans") if p.is_dir()).parent
    copy = tmp_path / "scannet"
    shutil.copytree(src, copy)
    scenes = sorted(p.name for p in (copy / "scans").iterdir())[:2]
    args = ("dataset=scannet", f"dataset.root={copy}", f"dataset.scenes=[{','.join(scenes)}]")
    jpg = sorted((copy / "scannet_2d" / scenes[1] / "color").glob("*.jpg"))[2]
    good = jpg.read_bytes()
    jpg.write_bytes(good[: len(good) // 2])  # truncated

    def run(name):
        _run(tmp_path, name, *args, data_dir=data_dir, small=False)
        out = tmp_path / name
        return json.loads((out / "summary.json").read_text()), _merged(out)

    summary, truncated = run("truncated")
    assert summary["computed_scenes"] == {"3d": 2, "2d": 2}
    assert "unreadable or truncated image" in " ".join(summary["notes"][scenes[1]])
    jpg.write_bytes(good)  # put back
    summary, restored = run("restored")
    assert summary["computed_scenes"] == {"3d": 0, "2d": 1}
    assert scenes[1] not in summary["notes"]
    feats = "scannet_gt_videofeats.pt"
    first = [k for k in truncated[feats] if k.startswith(scenes[0])]
    assert first and all(torch.equal(truncated[feats][k], restored[feats][k]) for k in first)
    assert any(not torch.equal(truncated[feats][k], restored[feats][k])
               for k in truncated[feats] if k.startswith(scenes[1]))
    _assert_same(truncated["scannet_gt_uni3d_feats.pt"], restored["scannet_gt_uni3d_feats.pt"])
    summary, _ = run("again")
    assert summary["computed_scenes"] == {"3d": 0, "2d": 0}


@pytest.mark.slow
def test_ddp_subprocess_launcher_runs_the_post_run_steps_once(first_run, data_dir, tmp_path):
    """trainer=ddp as on a GPU machine (Lightning's subprocess launcher re-runs run.py per rank under
    Hydra), here on 2 CPU processes: one output folder, equal to the single-process run's, one merge,
    one summary, one wandb run."""
    root, run1, _ = first_run
    proc = run_featurizer(*SMALL, "pictures=0", "logger=wandb", f"paths.data_dir={data_dir}",
                          f"hydra.run.dir={tmp_path / 'run'}", "trainer=ddp", "trainer.accelerator=cpu",
                          "trainer.devices=2", root=tmp_path)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr  # two processes did run
    assert proc.stdout.count("featurizer run summary") == 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["computed_scenes"] == {"3d": 2, "2d": 2}, "each scene exactly once"
    assert len(list((tmp_path / "run").rglob("offline-run-*"))) == 1
    _assert_same(_merged(run1), _merged(tmp_path / "run"))
    assert (run1 / "records.json").read_text() == (tmp_path / "run" / "records.json").read_text()
