"""featurizer's entry point: compose the config, build the parts by name, run the predict loop.

    python run.py                                   # demo: synthetic scenes, tiny encoders, no downloads
    python run.py experiment=chat_scene dataset.root=/data/scannet
    python run.py -m fusion=paper,mean,mask_pool,topk_views
"""

from __future__ import annotations

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


def featurize(cfg: DictConfig):
    """One featurizer run; returns its :class:`featurizer.writer.RunResult` (summary, records, features),
    or None in the processes of a multi-process run that are not rank 0 (only rank 0 merges and reports)."""
    import lightning as L

    from featurizer.errors import ConfigError
    from featurizer.files import atomic_write_json, remove_stale
    from featurizer.geometry import check_backend
    from featurizer.module import FeaturizerModule, SceneDataset, SceneInputs, scene_loader
    from featurizer.probe import probe
    from featurizer.store import StageStore, config_hash, stage_hashes
    from featurizer.summary import format_summary, write_pictures
    from featurizer.validate import check_policy, validate_scenes
    from featurizer.writer import OutputNames, ShardWriter, merge, write_summary

    started = time.time()
    logging.getLogger("lightning.pytorch").propagate = False  # Lightning prints its own lines once
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning's internal deprecation noise
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    # Build and validate every part before any long work starts.
    check_backend(cfg.geometry_backend, option="geometry_backend")
    check_policy(cfg.on_bad_scene)
    reader = instantiate(cfg.dataset)
    reader.prepare()  # one-time work (the synthetic dataset generates its scenes here)
    if not reader.scene_ids:
        raise ConfigError("dataset.scenes", "the list of scenes is empty: name at least one scene, or leave "
                                            "dataset.scenes unset to read the split file")
    segmenter = instantiate(cfg.segmenter)
    bad_scenes = validate_scenes(reader, segmenter, cfg.on_bad_scene)  # every scene, before any shard
    reader.scene_ids = [s for s in reader.scene_ids if s not in bad_scenes]  # on_bad_scene=skip
    encoder3d = instantiate(cfg.encoder3d)
    encoder2d = _optional(cfg.encoder2d)
    fusion = _optional(cfg.fusion) if encoder2d is not None else None

    sections = {k: OmegaConf.to_container(cfg[k], resolve=True)
                for k in ("dataset", "segmenter", "encoder3d", "encoder2d", "fusion")}
    store = StageStore(cfg.paths.cache_dir, stage_hashes(sections, with_2d=encoder2d is not None),
                       inputs=SceneInputs(reader, segmenter))
    # stopgap until the writer names files per scene split: one split's name, or the splits joined
    split_name = reader.split if len(reader.splits) == 1 else "_".join(reader.splits)
    names = OutputNames(reader.name, segmenter.name, encoder3d.name, split_name, segmenter.is_ground_truth)
    token_cache = (Path(cfg.paths.cache_dir) / "tokens" / config_hash("tokens", sections["encoder2d"])
                   if cfg.cache_tokens and encoder2d is not None else None)
    # what a killed run left in this run's folders (temporary files of processes that are gone)
    remove_stale(output_dir, output_dir / "pcd_all", *(store.folder(s) for s in store.stages),
                 *([token_cache] if token_cache else []))
    module = FeaturizerModule(encoder3d, encoder2d, fusion, frame_workers=cfg.frame_workers,
                              frame_batch=cfg.frame_batch,
                              token_cache_dir=str(token_cache) if token_cache else None,
                              geometry_backend=cfg.geometry_backend)
    trainer = instantiate(cfg.trainer, callbacks=[ShardWriter(store)])
    trainer.predict(module, dataloaders=scene_loader(SceneDataset(reader, segmenter, store), cfg.scene_workers),
                    return_predictions=False)
    if not trainer.is_global_zero:
        return None

    # Rank 0 only, once: merge, probe, pictures; the result stays in memory for the logger.
    result = merge(store, output_dir, reader.scene_ids, names, {"choices": _choices(), "bad_scenes": bad_scenes},
                   started_at=started)
    summary = result.summary
    summary["metrics"] = probe(result.feats3d, result.feats2d, result.attributes, result.gt_attributes,
                               instances=summary["instances"], source=output_dir)
    atomic_write_json(summary["metrics"], output_dir / "metrics.json")
    if encoder2d is not None and cfg.pictures:
        summary["pictures"] = write_pictures(output_dir, result.records, reader, segmenter, encoder2d, fusion,
                                             cfg.pictures)
    summary["timings"]["total"] = time.time() - started
    write_summary(summary, output_dir)
    print(format_summary(summary, output_dir))
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    from lightning.pytorch.utilities import rank_zero_only

    from featurizer.errors import FeaturizerError
    from featurizer.files import atomic_write_json

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    output_dir = Path(cfg.paths.output_dir)
    logger = _optional(cfg.logger) if rank_zero_only.rank == 0 else None  # one wandb run per job
    try:
        if logger is not None:
            logger.start(OmegaConf.to_container(cfg, resolve=True), name=cfg.run_name or output_dir.name,
                         group=Path(hc.sweep.dir).name if multirun else None)
        result = featurize(cfg)
        if logger is not None and result is not None:
            logger.log_summary(result.summary, result.summary["metrics"], result.records)
            if getattr(logger, "sync_dir", None):
                mode = getattr(logger, "mode", "")
                print(f"wandb ({mode}): {logger.sync_dir}" + ("  (upload: wandb sync <that folder>)"
                                                               if mode == "offline" else ""))
        return None if result is None else result.summary
    except Exception as exc:
        if isinstance(exc, InstantiationException) and isinstance(exc.__cause__, FeaturizerError):
            exc = exc.__cause__  # a part's constructor refused its input: show that one clear message
        if multirun:  # one failing job is recorded in its own folder and the sweep goes on
            failed = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                      "choices": _choices()}
            output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(failed, output_dir / "summary.json")
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
