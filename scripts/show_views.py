"""Picture of one instance's chosen views in a finished run.

    python scripts/show_views.py <run_dir> <scene_id> <instance> [--out PNG] [--max-views 4]

Rebuilds the run's dataset, segmenter, 2D encoder and fusion from ``<run_dir>/.hydra/config.yaml``,
loads and segments the scene, and writes ``<run_dir>/views/<scene>_<instance>.png`` (default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("scene")
    parser.add_argument("instance", type=int)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--max-views", type=int, default=4)
    args = parser.parse_args(argv)

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from featurizer.errors import ConfigError, DataError
    from featurizer.viz import draw_instance_views

    config = args.run_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        raise DataError(config, "not found: is this a featurizer run folder?")
    cfg = OmegaConf.load(config)
    # the run's config refers to Hydra's runtime values (${hydra:...}): answer them from .hydra/hydra.yaml
    hydra_yaml = args.run_dir / ".hydra" / "hydra.yaml"
    hydra_cfg = OmegaConf.load(hydra_yaml).hydra if hydra_yaml.is_file() else OmegaConf.create({})
    if not OmegaConf.has_resolver("hydra"):
        OmegaConf.register_new_resolver("hydra", lambda key: OmegaConf.select(hydra_cfg, key))
    for part in ("dataset", "segmenter", "encoder2d", "fusion"):
        if cfg.get(part) is None:
            raise ConfigError(part, f"the run at {args.run_dir} has no '{part}' (was its 2D stage off?)")
    dataset = instantiate(cfg.dataset)
    dataset.prepare()
    segmenter = instantiate(cfg.segmenter)
    encoder2d = instantiate(cfg.encoder2d)
    fusion = instantiate(cfg.fusion)
    if args.scene not in dataset.scene_ids:
        _fail(f"unknown scene {args.scene!r}; the run at {args.run_dir} has: {', '.join(dataset.scene_ids)}")
    scene = segmenter.segment(dataset.load(args.scene))
    if not 0 <= args.instance < len(scene.instances):
        known = ", ".join(f"{i} {inst.label}" for i, inst in enumerate(scene.instances)) or "none"
        _fail(f"{args.scene} has no instance {args.instance}; its instances: {known}")
    out = args.out or args.run_dir / "views" / f"{args.scene}_{args.instance}.png"
    path = draw_instance_views(scene, args.instance, encoder2d, fusion, out, max_views=args.max_views)
    print(path)
    return path


def _fail(message: str) -> None:
    """One line on stderr and exit status 2 (a usage error, as argparse reports them)."""
    print(f"show_views.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    from featurizer.errors import FeaturizerError

    try:
        main()
    except FeaturizerError as e:  # a bad run folder or data: the message says it all, no traceback
        _fail(str(e))
