"""featurizer's entry point: compose the config, build the parts by name, run the predict loop.

    python run.py                                   # demo: synthetic scenes, tiny encoders, no downloads
    python run.py experiment=chat_scene dataset.root=/data/scannet
    python run.py -m fusion=paper,mean,mask_pool,topk_views
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def _optional(node: DictConfig):
    """Configs without a `_target_` (encoder2d=none) mean "this part is not used"."""
    return instantiate(node) if node is not None and node.get("_target_") else None


def _choices() -> dict:
    """The option picked in each config group (``dataset: synthetic``, ...), Hydra's own left out."""
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")}


def featurize(cfg: DictConfig) -> dict:
    """One featurizer run; returns the run's summary (also written to <output_dir>/summary.json)."""
    import lightning as L

    from featurizer.geometry import check_backend
    from featurizer.report import probe_run
    from featurizer.module import FeaturizerModule, SceneDataset, scene_loader
    from featurizer.summary import format_summary, write_pictures
    from featurizer.validate import check_policy, validate_scenes
    from featurizer.writer import (OutputNames, ShardWriter, StageStore, atomic_write_text, config_hash,
                                   stage_hashes)

    started = time.time()
    logging.getLogger("lightning.pytorch").propagate = False  # Lightning prints its own lines once
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning's internal deprecation noise
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    # Build and validate every part before any long work starts.
    check_backend(cfg.geometry_backend, option="geometry_backend")
    check_policy(cfg.on_bad_scene)
    reader = instantiate(cfg.dataset)
    segmenter = instantiate(cfg.segmenter)
    bad_scenes = validate_scenes(reader, segmenter, cfg.on_bad_scene)  # every scene, before any shard
    reader.scene_ids = [s for s in reader.scene_ids if s not in bad_scenes]  # on_bad_scene=skip
    encoder3d = instantiate(cfg.encoder3d)
    encoder2d = _optional(cfg.encoder2d)
    fusion = _optional(cfg.fusion) if encoder2d is not None else None

    sections = {k: OmegaConf.to_container(cfg[k], resolve=True)
                for k in ("dataset", "segmenter", "encoder3d", "encoder2d", "fusion")}
    store = StageStore(cfg.paths.cache_dir, stage_hashes(sections, with_2d=encoder2d is not None))
    names = OutputNames(segmenter.name, encoder3d.name, reader.split, segmenter.is_ground_truth)
    writer = ShardWriter(store, output_dir, reader.scene_ids, names,
                         run_info={"choices": _choices(), "started_at": started,
                                   "output_dir": str(output_dir), "bad_scenes": bad_scenes})
    token_cache = (str(Path(cfg.paths.cache_dir) / "tokens" / config_hash("tokens", sections["encoder2d"]))
                   if cfg.cache_tokens and encoder2d is not None else None)
    module = FeaturizerModule(encoder3d, encoder2d, fusion, frame_workers=cfg.frame_workers,
                              frame_batch=cfg.frame_batch, token_cache_dir=token_cache,
                              geometry_backend=cfg.geometry_backend)
    trainer = instantiate(cfg.trainer, callbacks=[writer])
    trainer.predict(module, dataloaders=scene_loader(SceneDataset(reader, segmenter, store), cfg.scene_workers),
                    return_predictions=False)

    summary = json.loads((output_dir / "summary.json").read_text())
    summary["metrics"] = probe_run(output_dir)  # feature-quality probe against GT labels -> metrics.json
    if encoder2d is not None and cfg.pictures:
        summary["pictures"] = write_pictures(output_dir, reader, segmenter, encoder2d, fusion, cfg.pictures)
    summary["timings"]["total"] = time.time() - started
    atomic_write_text(json.dumps(summary, indent=2), output_dir / "summary.json")
    print(format_summary(summary, output_dir))
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    from featurizer.errors import FeaturizerError

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    output_dir = Path(cfg.paths.output_dir)
    logger = _optional(cfg.logger)
    try:
        if logger is not None:
            logger.start(OmegaConf.to_container(cfg, resolve=True), name=cfg.run_name or output_dir.name,
                         group=Path(hc.sweep.dir).name if multirun else None)
        summary = featurize(cfg)
        if logger is not None:
            metrics_file = output_dir / "metrics.json"
            metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
            records = json.loads((output_dir / "records.json").read_text())
            logger.log_summary(summary, metrics, records)
            if getattr(logger, "sync_dir", None):
                mode = getattr(logger, "mode", "")
                print(f"wandb ({mode}): {logger.sync_dir}" + ("  (upload: wandb sync <that folder>)"
                                                               if mode == "offline" else ""))
        return summary
    except Exception as exc:
        if isinstance(exc, InstantiationException) and isinstance(exc.__cause__, FeaturizerError):
            exc = exc.__cause__  # a part's constructor refused its input: show that one clear message
        if multirun:  # one failing job is recorded in its own folder and the sweep goes on
            failed = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                      "choices": _choices()}
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / "summary.json").write_text(json.dumps(failed, indent=2))
            traceback.print_exc()
            print(f"featurizer: job {hc.job.num} failed: {failed['error']}", file=sys.stderr)
            return failed
        if isinstance(exc, FeaturizerError):
            raise SystemExit(f"featurizer: error: {exc}") from None
        raise
    finally:
        if logger is not None:
            logger.finish(exit_code=0 if sys.exc_info()[0] is None else 1)


if __name__ == "__main__":
    main()
