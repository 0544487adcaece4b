"""Sweeps end to end: real Hydra multiruns of `run.py` in a subprocess (wandb offline into a temporary
folder) write one folder per job, share the cached 3D stage, record a failing job and go on, and end
with sweep.md/.csv/.png whose numbers are the jobs' metrics.json values; ablation grids run
without `-m`."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from conftest import CONF, run_featurizer

SMALL = ["dataset.num_scenes=2", "dataset.frames_per_scene=6", "pictures=0"]
FUSIONS = ["paper", "mean", "mask_pool"]
METRICS = ["knn_3d", "linear_3d", "knn_2d", "linear_2d", "knn_concat", "linear_concat",
           "chance", "coverage_3d", "coverage_2d"]

pytestmark = pytest.mark.slow


def _jobs(sweep: Path) -> list[Path]:
    """Job folders of a sweep, in job-number order."""
    jobs = [p.parent for p in sweep.glob("*/.hydra")]
    return sorted(jobs, key=lambda p: int(p.name.split("_", 1)[0]))


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _csv_rows(sweep: Path) -> list[dict]:
    with open(sweep / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


def _cell(value) -> str:
    """What sweep.csv holds for a metrics.json value."""
    return "" if value is None else repr(float(value))


def _assert_row_is_the_job(row: dict, job: Path) -> None:
    metrics = _json(job / "metrics.json")
    timings = _json(job / "timings.json")
    assert row["job"] == job.name and row["status"] == "ok" and row["error"] == ""
    for name in METRICS:
        assert row[name] == _cell(metrics[name]), f"{job.name}: {name}"
        if row[name]:
            assert float(row[name]) == metrics[name]
    assert float(row["time_s"]) == timings["total"]


@pytest.fixture(scope="module")
def fusion_sweep(tmp_path_factory, data_dir):
    """`python run.py -m fusion=paper,mean,mask_pool` with wandb offline; (root, sweep dir, process)."""
    root = tmp_path_factory.mktemp("sweep")
    sweep = root / "fusion_sweep"
    proc = run_featurizer("fusion=" + ",".join(FUSIONS), *SMALL, "logger=wandb", f"paths.data_dir={data_dir}",
                          f"hydra.sweep.dir={sweep}", root=root, multirun=True)
    return root, sweep, proc


def test_fusion_sweep_writes_jobs_and_a_summary_of_their_metrics(fusion_sweep):
    root, sweep, proc = fusion_sweep
    jobs = _jobs(sweep)
    assert [j.name for j in jobs] == [
        f"{i}_dataset.frames_per_scene=6,dataset.num_scenes=2,fusion={f}" for i, f in enumerate(FUSIONS)]
    for job, fusion in zip(jobs, FUSIONS):
        summary = _json(job / "summary.json")
        assert summary["status"] == "ok" and summary["choices"]["fusion"] == fusion
        assert summary["scenes"] == 2 and summary["keys_2d"] > 0
        assert (job / "metrics.json").is_file()
        # one offline wandb run per job, inside the job's folder, grouped by the sweep, holding the probe
        from wandb_offline import read_offline_run

        runs = sorted((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, f"{job.name}: {runs}"
        logged = read_offline_run(runs[0])
        assert logged["group"] == sweep.name and logged["summary"]["status"] == "ok"
        assert logged["summary"]["probe/knn_2d"] == _json(job / "metrics.json")["knn_2d"]
    assert not (root / "wandb").exists(), "wandb wrote outside the job folders"

    # summary written by the SweepTable callback at the end of the multirun (not by hand)
    rows = _csv_rows(sweep)
    assert [r["fusion"] for r in rows] == FUSIONS
    for row, job in zip(rows, jobs):
        _assert_row_is_the_job(row, job)
    md = (sweep / "sweep.md").read_text().splitlines()
    table = [line for line in md if line.startswith("| ")]
    assert table[0].startswith("| job | status | fusion | knn_3d |") and len(table) == 1 + 3
    for line, job, fusion in zip(table[1:], jobs, FUSIONS):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:3] == [job.name, "ok", fusion]
        assert cells[5] == f"{_json(job / 'metrics.json')['knn_2d']:.3f}"
    assert "| job | status | fusion |" in proc.stdout, "the table is printed at the end of the sweep"

    from PIL import Image

    png = sweep / "sweep.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] >= 600 and im.size[1] >= 700


def test_fusion_sweep_computes_the_3d_stage_once(fusion_sweep):
    _, sweep, _ = fusion_sweep
    jobs = _jobs(sweep)
    summaries = [_json(j / "summary.json") for j in jobs]
    assert [s["computed_scenes"]["3d"] for s in summaries] == [2, 0, 0]
    assert [s["reused_scenes"]["3d"] for s in summaries] == [0, 2, 2]
    assert [s["computed_scenes"]["2d"] for s in summaries] == [2, 2, 2], "each fusion is its own 2D stage"
    feats = [torch.load(j / "scannet_gt_uni3d_feats.pt", weights_only=True) for j in jobs]
    for other in feats[1:]:
        assert other.keys() == feats[0].keys()
        assert all(torch.equal(other[k], feats[0][k]) for k in feats[0])
    # the 2D features are the fusions' own
    videos = [torch.load(j / "scannet_gt_videofeats.pt", weights_only=True) for j in jobs]
    key = sorted(set(videos[0]) & set(videos[1]) & set(videos[2]))[0]
    assert not torch.allclose(videos[0][key], videos[1][key])
    assert not torch.allclose(videos[1][key], videos[2][key])


def test_probe_accuracy_depends_on_the_fusion(fusion_sweep):
    _, sweep, _ = fusion_sweep
    metrics = {f: _json(j / "metrics.json") for f, j in zip(FUSIONS, _jobs(sweep))}
    # same 3D features in every job: same 3D accuracies
    for name in ("knn_3d", "linear_3d"):
        assert len({m[name] for m in metrics.values()}) == 1, name
    two_d = {f: (m["knn_2d"], m["linear_2d"]) for f, m in metrics.items()}
    assert all(0.0 <= v <= 1.0 for pair in two_d.values() for v in pair if v is not None)
    assert len(set(two_d.values())) >= 2, f"2D probe accuracies do not depend on the fusion: {two_d}"


def test_a_failing_job_is_reported_and_the_sweep_goes_on(fusion_sweep, data_dir):
    root, _, _ = fusion_sweep
    npz_root = data_dir / "instance_npz"  # instance_npz's default root: absent -> DataError in check()
    assert not npz_root.exists()
    sweep = root / "failing_sweep"
    proc = run_featurizer("segmenter=instance_npz,gt", *SMALL, "logger=wandb", f"paths.data_dir={data_dir}",
                          f"hydra.sweep.dir={sweep}", root=root, multirun=True)
    assert proc.returncode == 0
    assert "featurizer: job 0 failed: DataError" in proc.stderr

    failed_job, ok_job = _jobs(sweep)
    failed = _json(failed_job / "summary.json")
    assert failed["status"] == "failed" and failed["choices"]["segmenter"] == "instance_npz"
    assert failed["error"] == f"DataError: {npz_root}: instance .npz folder not found"
    assert not (failed_job / "metrics.json").exists()
    assert _json(ok_job / "summary.json")["status"] == "ok", "the job after the failure ran"
    assert sorted((ok_job / "wandb").glob("offline-run-*")), "a failed job's wandb run broke the next one"

    rows = _csv_rows(sweep)
    assert [(r["segmenter"], r["status"]) for r in rows] == [("instance_npz", "failed"), ("gt", "ok")]
    assert rows[0]["error"] == failed["error"]
    assert all(rows[0][name] == "" for name in METRICS + ["time_s"])
    _assert_row_is_the_job(rows[1], ok_job)
    md = (sweep / "sweep.md").read_text()
    assert "2 jobs, 1 ok, 1 failed" in md
    failed_line = next(line for line in md.splitlines() if line.startswith(f"| {failed_job.name} |"))
    assert "| **failed** |" in failed_line and "instance .npz folder not found" in failed_line
    assert (sweep / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_ablation_grid_runs_without_dash_m(fusion_sweep, data_dir):
    root, first_sweep, _ = fusion_sweep
    # paths.root_dir given: the default sweep folder <root>/outputs/multiruns/featurizer/<time>
    proc = run_featurizer("ablation=fusion_x_encoder2d", *SMALL, "logger=none", f"paths.root_dir={root}",
                          f"paths.data_dir={data_dir}", root=root)
    sweeps = sorted((root / "outputs" / "multiruns" / "featurizer").iterdir())
    assert len(sweeps) == 1, sweeps
    sweep = sweeps[0]
    grid = yaml.safe_load((CONF / "ablation" / "fusion_x_encoder2d.yaml").read_text())
    params = grid["hydra"]["sweeper"]["params"]
    expected = list(itertools.product(params["fusion"].split(","), params["encoder2d"].split(",")))
    assert len(expected) == 6

    jobs = _jobs(sweep)
    got = []
    for job in jobs:
        summary = _json(job / "summary.json")
        assert summary["status"] == "ok", summary.get("error")
        got.append((summary["choices"]["fusion"], summary["choices"]["encoder2d"]))
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        processor = summary["choices"]["encoder2d"] == "tiny_processor"
        assert cfg["encoder2d"]["mode"] == ("processor" if processor else "full_frame")
        assert "ablation" not in job.name, "the ablation name is left out of job folder names"
    assert got == expected
    rows = _csv_rows(sweep)
    assert [(r["fusion"], r["encoder2d"]) for r in rows] == expected
    for row, job in zip(rows, jobs):
        _assert_row_is_the_job(row, job)
    assert (sweep / "sweep.png").is_file() and "Launching 6 jobs" in proc.stdout + proc.stderr

    # the cached stages are shared across sweeps: 3D from the first sweep everywhere, and the 2D stage
    # of (fusion=mean, encoder2d=tiny), the first sweep's `mean` job, reused with identical features
    first_mean = next(j for j in _jobs(first_sweep) if j.name.endswith("fusion=mean"))
    mean_tiny = jobs[expected.index(("mean", "tiny"))]
    assert _json(mean_tiny / "summary.json")["computed_scenes"] == {"3d": 0, "2d": 0}
    a = torch.load(first_mean / "scannet_gt_videofeats.pt", weights_only=True)
    b = torch.load(mean_tiny / "scannet_gt_videofeats.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the processor mode crops the frame: the probe sees different 2D features than the full frame
    by_choice = {c: _json(j / "metrics.json") for c, j in zip(expected, jobs)}
    assert any(by_choice[(f, "tiny")]["knn_2d"] != by_choice[(f, "tiny_processor")]["knn_2d"]
               or by_choice[(f, "tiny")]["coverage_2d"] != by_choice[(f, "tiny_processor")]["coverage_2d"]
               for f, _ in expected)
    assert all(math.isfinite(m["knn_3d"]) for m in by_choice.values())
