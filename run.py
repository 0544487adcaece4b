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
    """The option picked in each config group (``dataset: synthetic``, ...); Hydra's own and nested groups
    (the annotation builders under ``annotations``) left out."""
    return {k: v for k, v in HydraConfig.get().runtime.choices.items()
            if not k.startswith("hydra") and "/" not in k and "@" not in k}


def _annotation_job(cfg: DictConfig):
    """The task annotations this run builds (conf/annotations/), or None."""
    from featurizer.annotations import AnnotationJob

    node = cfg.get("annotations")
    if node is None or not node.get("tasks"):
        return None
    builders = {name: instantiate(b) for name, b in node.builders.items()}
    named = any(o.split("=", 1)[0].lstrip("+~") == "annotations.root" for o in HydraConfig.get().overrides.task)
    return AnnotationJob(builders, list(node.tasks), node.root, prompts=node.prompts, seed=node.seed,
                         train_iou_thres=node.train_iou_thres, max_obj_num=node.max_obj_num,
                         on_bad_input=node.on_bad_input, required=named)


def featurize(cfg: DictConfig):
    """One featurizer run; returns its :class:`featurizer.writer.RunResult` (summary, records, features),
    or None in the processes of a multi-process run that are not rank 0 (only rank 0 merges and reports)."""
    import lightning as L

    from featurizer.annotations.pictures import write_miss_pictures
    from featurizer.console import format_summary, write_pictures
    from featurizer.errors import ConfigError
    from featurizer.files import atomic_write_json, remove_stale
    from featurizer.geometry import check_backend
    from featurizer.module import FeaturizerModule, SceneDataset, SceneInputs, scene_loader
    from featurizer.probe import probe
    from featurizer.shards import share_of
    from featurizer.store import StageStore, config_hash, stage_hashes
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
    reader.prepare()  # one-time work (the synthetic dataset is generated here)
    if not reader.scene_ids:
        raise ConfigError("dataset.scenes", "the list of scenes is empty: name at least one scene, or leave "
                                            "dataset.scenes unset to read the split files")
    segmenter = instantiate(cfg.segmenter)
    sharded = cfg.num_shards > 1 and not cfg.merge_only
    if sharded:  # this job's share of the scenes (README "Scaling out"); the merge runs once, later
        reader.scene_ids = share_of({s: reader.scene_cost(s) for s in reader.scene_ids}, cfg.shard, cfg.num_shards)
    bad_scenes = validate_scenes(reader, segmenter, cfg.on_bad_scene)  # every scene, before any shard
    reader.scene_ids = [s for s in reader.scene_ids if s not in bad_scenes]  # on_bad_scene=skip
    scene_splits = {s: reader.split_of(s) for s in reader.scene_ids}
    annotations = None if sharded else _annotation_job(cfg)  # a share builds none: its merge does
    if annotations is not None:  # skipped bad scenes count as in the run: their records are left out later
        known = {**{s: reader.split_of(s) for s in bad_scenes}, **scene_splits}
        annotations.check(known, {s: reader.gt_object_count(s) if s not in bad_scenes else None for s in known})
        if annotations.active and reader.object_filter:
            raise ConfigError(reader.object_filter.split("=")[0],
                              f"{reader.object_filter} leaves objects out, which shifts the object ids the task "
                              f"annotations refer to: keep every object (the default labels) or pass "
                              f"annotations=none")
    encoder3d = instantiate(cfg.encoder3d)
    encoder2d = _optional(cfg.encoder2d)
    fusion = _optional(cfg.fusion) if encoder2d is not None else None

    # The instance sets: the segmenter's, and ground truth's too when gt_features asks (Chat-Scene's
    # GT-box tasks read scannet_gt_*_feats.pt); each has its own stage shards and feature files.
    sections = {k: OmegaConf.to_container(cfg[k], resolve=True)
                for k in ("dataset", "segmenter", "encoder3d", "encoder2d", "fusion")}
    instance_sets, set_sections = [segmenter], [sections]
    if cfg.gt_features and not segmenter.is_ground_truth:  # as `segmenter=gt` configures it: shards are shared
        gt_yaml = Path(__file__).parent / "conf" / "segmenter" / "gt.yaml"
        gt_section = {**OmegaConf.to_container(OmegaConf.load(gt_yaml)), "max_instances": segmenter.max_instances}
        instance_sets.append(instantiate(gt_section))
        set_sections.append({**sections, "segmenter": gt_section})
    stores = []
    for seg, seg_sections in zip(instance_sets, set_sections):
        stores.append(StageStore(cfg.paths.cache_dir, stage_hashes(seg_sections, with_2d=encoder2d is not None),
                                 inputs=SceneInputs(reader, seg)))
    token_cache = (Path(cfg.paths.cache_dir) / "tokens" / config_hash("tokens", sections["encoder2d"])
                   if cfg.cache_tokens and encoder2d is not None else None)
    # what a killed run left in this run's folders (temporary files of processes that are gone)
    remove_stale(output_dir, output_dir / "pcd_all", *(st.folder(s) for st in stores for s in st.stages),
                 *([token_cache] if token_cache else []))
    module = FeaturizerModule(encoder3d, encoder2d, fusion, frame_workers=cfg.frame_workers,
                              frame_batch=cfg.frame_batch,
                              token_cache_dir=str(token_cache) if token_cache else None,
                              geometry_backend=cfg.geometry_backend)
    writer = ShardWriter(stores[0])
    trainer = instantiate(cfg.trainer, callbacks=[writer])
    for seg, store in zip(instance_sets, stores):
        if cfg.merge_only:  # every share was computed by other jobs: only check that it is all there
            break
        writer.store = store
        trainer.predict(module, dataloaders=scene_loader(SceneDataset(reader, seg, store), cfg.scene_workers),
                        return_predictions=False)
    if not trainer.is_global_zero:
        return None
    if sharded:
        summary = {"status": "ok", "error": None, "choices": _choices(), "shard": cfg.shard,
                   "num_shards": cfg.num_shards, "scenes": len(reader.scene_ids), "bad_scenes": bad_scenes,
                   "share": reader.scene_ids}
        write_summary({**summary, "timings": {"total": time.time() - started}}, output_dir)
        print(f"featurizer: share {cfg.shard} of {cfg.num_shards} done: {len(reader.scene_ids)} scene(s) in "
              f"{cfg.paths.cache_dir}; merged when every share is done (the sweep's end, or merge_only=true)")
        return None

    # Rank 0 only, once: merge, probe, annotations, pictures; the result stays in memory for the logger.
    results = []
    for seg, store in zip(instance_sets, stores):
        names = OutputNames(reader.name, seg.name, encoder3d.name, seg.is_ground_truth)
        info = {"choices": _choices(), "bad_scenes": bad_scenes} if seg is segmenter else {}
        results.append(merge(store, output_dir, reader.scene_ids, scene_splits, names, info, started_at=started,
                             primary=seg is segmenter))
    result = results[0]
    summary = result.summary
    if len(results) > 1:  # the extra GT instance set: its counts and files, its times in the run's
        gt_summary = results[1].summary
        for name, seconds in gt_summary.pop("timings").items():
            if name != "started_at":
                summary["timings"][name] = summary["timings"].get(name, 0.0) + seconds
        summary["gt_features"] = {k: gt_summary[k] for k in ("instances", "keys_3d", "keys_2d", "missing_3d",
                                                             "missing_2d", "computed_scenes", "files")}
    gt_for_probe = result.attributes if segmenter.is_ground_truth else result.gt_attributes
    summary["metrics"] = probe(result.feats3d, result.feats2d, result.attributes, gt_for_probe,
                               instances=summary["instances"], source=output_dir)
    atomic_write_json(summary["metrics"], output_dir / "metrics.json")
    if annotations is not None:
        summary["annotations"] = {"root": str(annotations.root) if annotations.root else None,
                                  "note": annotations.note, "skipped_records": annotations.problems}
        summary["grounding"] = annotations.build(result.attributes, result.gt_attributes, scene_splits,
                                                 output_dir, segmenter.name)
        summary["pictures_misses"] = write_miss_pictures(output_dir, annotations, result, reader,
                                                         cfg.pictures_misses)
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
