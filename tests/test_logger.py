"""Run loggers: an offline wandb run holds what log_summary sent; finish() is always safe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from featurizer.errors import ConfigError, DataError
from featurizer.logger import NullLogger, WandbRunLogger, flatten_summary
from wandb_offline import read_offline_run

ROOT = Path(__file__).resolve().parents[1]

SUMMARY = {
    "status": "ok",
    "error": None,
    "choices": {"dataset": "synthetic", "segmenter": "gt", "encoder3d": "uni3d_tiny", "encoder2d": "tiny",
                "fusion": "mask_pool"},
    "scenes": 2,
    "instances": 9,
    "keys_3d": 8,
    "keys_2d": 6,
    "missing_3d": {"too_few_points": 1},
    "missing_2d": {"no_valid_view": 2, "too_few_points": 1},
    "views_per_instance": {"mean": 2.5, "median": 2.0, "min": 0, "max": 5},
    "timings": {"read": 0.25, "3d": 1.5, "2d": 2.75, "total": 4.5},
    "files": {"feats3d": "a.pt", "feats2d": "b.pt", "attributes": "c.pt", "gt_attributes": "c.pt"},
    "feature_stats": {"3d": {"norm_mean": 12.5, "norm_std": 0.5}, "2d": {"norm_mean": 3.0, "norm_std": 0.25}},
}
METRICS = {"knn_3d": 0.875, "linear_3d": 0.9, "knn_2d": None, "n_3d": 8, "chance": 0.25, "labels": "gt"}
# views per instance: 0, 1, 2, 2, 5 (a list of used views counts as its length)
RECORDS = {
    "scene0000_00_00": {"3d": {"ok": True}, "2d": {"views": 0}},
    "scene0000_00_01": {"2d": {"views": 1}},
    "scene0000_00_02": {"2d": {"views": [3, 7]}},
    "scene0001_00_00": {"2d": {"views": 2}},
    "scene0001_00_01": {"2d": {"views": 5}},
    "scene0001_00_02": {"3d": {"ok": False}},
}


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    """No network: offline mode, every wandb folder under tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


def test_flatten_summary_values():
    flat = flatten_summary(SUMMARY, METRICS)
    assert flat["status"] == "ok" and "error" not in flat
    assert flat["scenes"] == 2 and flat["instances"] == 9 and flat["keys_3d"] == 8 and flat["keys_2d"] == 6
    assert flat["timings/2d"] == 2.75 and flat["timings/total"] == 4.5
    assert flat["missing_2d/no_valid_view"] == 2 and flat["missing_2d/total"] == 3
    assert flat["missing_3d/total"] == 1
    assert flat["views_per_instance/median"] == 2.0
    assert flat["feature_stats/3d/norm_mean"] == 12.5 and flat["feature_stats/2d/norm_std"] == 0.25
    assert flat["probe/knn_3d"] == 0.875 and flat["probe/n_3d"] == 8
    assert "probe/knn_2d" not in flat and "probe/labels" not in flat  # None and strings left out
    assert flat["choices/fusion"] == "mask_pool"


def test_wandb_offline_run_holds_the_logged_summary(offline_env):
    logger = WandbRunLogger(project="featurizer-test", mode="offline", dir=str(offline_env / "job"))
    config = {"seed": 3, "fusion": {"name": "mask_pool", "k": 4}}
    logger.start(config, name="fusion=mask_pool", group="sweep-a")
    logger.log_summary(SUMMARY, METRICS, RECORDS)
    logger.finish()
    logger.finish()  # idempotent

    runs = sorted((offline_env / "job" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and (runs[0] / "files").is_dir()
    run = read_offline_run(runs[0])
    assert (run["name"], run["group"], run["project"]) == ("fusion=mask_pool", "sweep-a", "featurizer-test")
    assert run["config"]["seed"] == 3 and run["config"]["fusion"] == {"name": "mask_pool", "k": 4}
    s = run["summary"]
    assert s["scenes"] == 2 and s["instances"] == 9 and s["keys_2d"] == 6
    assert s["timings/3d"] == 1.5 and s["timings/total"] == 4.5
    assert s["missing_2d/no_valid_view"] == 2 and s["missing_3d/too_few_points"] == 1
    assert s["views_per_instance/mean"] == 2.5 and s["views_per_instance/zero_views"] == 1
    assert s["feature_stats/3d/norm_mean"] == 12.5
    assert s["probe/knn_3d"] == 0.875 and s["probe/linear_3d"] == 0.9 and s["probe/chance"] == 0.25

    hist = s["views_per_instance/histogram"]
    assert hist["_type"] == "histogram" and sum(hist["values"]) == 5
    assert hist["bins"][0] == 0 and hist["bins"][-1] == 5
    assert s["counts"]["nrows"] == 1 and s["missing"]["nrows"] == 3

    # the tables themselves are files of the run
    files = (runs[0] / "files").rglob("*.table.json")
    tables = {p.name.split("_")[0]: json.loads(p.read_text()) for p in files}
    assert tables["counts"]["data"] == [["fusion=mask_pool", "sweep-a", "ok", 2, 9, 8, 6, 1, 3, 4.5]]
    assert sorted(map(tuple, tables["missing"]["data"])) == [
        ("2d", "no_valid_view", 2), ("2d", "too_few_points", 1), ("3d", "too_few_points", 1)
    ]


def test_finish_after_failed_start_does_not_raise(offline_env, monkeypatch):
    import wandb

    def broken_init(**kwargs):
        raise RuntimeError("wandb could not start")

    monkeypatch.setattr(wandb, "init", broken_init)
    logger = WandbRunLogger(mode="offline", dir=str(offline_env))
    with pytest.raises(RuntimeError, match="could not start"):
        logger.start({"seed": 0}, name="job", group=None)
    logger.finish(exit_code=1)
    logger.finish()
    with pytest.warns(UserWarning, match="without a started run"):
        logger.log_summary(SUMMARY, None, None)
    WandbRunLogger().finish()  # never started at all


def test_finish_swallows_errors_of_wandb(offline_env):
    class Exploding:
        id = "x"

        def finish(self, exit_code=0):
            raise OSError("disk full")

    logger = WandbRunLogger(mode="offline", dir=str(offline_env))
    logger.run = Exploding()
    with pytest.warns(UserWarning, match="disk full"):
        logger.finish()
    assert logger.run is None
    logger.finish()


def test_bad_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="logger.mode"):
        WandbRunLogger(mode="onlin")


def test_null_logger_does_nothing(tmp_path):
    logger = NullLogger()
    assert logger.start({"a": 1}, name="x", group=None) is None
    assert logger.log_summary(SUMMARY, METRICS, RECORDS) is None
    assert logger.finish() is None and logger.finish(1) is None
    assert list(tmp_path.iterdir()) == []


def test_logger_option_files_instantiate(tmp_path, monkeypatch):
    def compose(option: str):
        cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path / "run")}})
        cfg.logger = OmegaConf.load(ROOT / "conf" / "logger" / f"{option}.yaml")
        return instantiate(cfg.logger)

    monkeypatch.delenv("WANDB_MODE", raising=False)
    logger = compose("wandb")
    assert isinstance(logger, WandbRunLogger)
    assert (logger.project, logger.mode, logger.dir) == ("featurizer", "offline", str(tmp_path / "run"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert compose("wandb").mode == "disabled"
    assert isinstance(compose("none"), NullLogger)


def test_read_offline_run_rejects_other_folders(tmp_path):
    with pytest.raises(DataError, match="no run-"):
        read_offline_run(tmp_path)
    (tmp_path / "run-x.wandb").write_bytes(b"not a log")
    with pytest.raises(DataError, match="not a wandb transaction log"):
        read_offline_run(tmp_path)


def test_flatten_summary_logs_the_grounding_upper_bound():
    grounding = [{"task": "scanrefer", "split": "val", "records_in": 20, "records_out": 20, "dropped_thres": 0,
                  "skipped": 0, "refs": 20, "iou25": 0.8, "iou50": 0.7, "file": "scanrefer_mask3d_val.json"},
                 {"task": "scanqa", "split": "val", "records_in": 5, "records_out": 5, "dropped_thres": 0,
                  "skipped": 0, "refs": 0, "iou25": None, "iou50": None, "file": "scanqa_val.json"}]
    flat = flatten_summary({**SUMMARY, "grounding": grounding}, METRICS)
    assert flat["grounding/scanrefer/val/iou25"] == 0.8 and flat["grounding/scanrefer/val/iou50"] == 0.7
    assert flat["grounding/scanrefer/val/records_out"] == 20 and flat["grounding/scanqa/val/records_in"] == 5
    assert "grounding/scanqa/val/iou25" not in flat  # a task that matches nothing has no bound
