"""Every option file of every config group composes, and its `_target_` names a real class."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import OmegaConf

from conftest import CONF

GROUPS = ["dataset", "segmenter", "encoder3d", "encoder2d", "fusion", "logger", "trainer", "experiment", "ablation",
          "annotations"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_every_group_has_options():
    for group in ["dataset", "segmenter", "encoder3d", "encoder2d", "fusion", "logger", "trainer", "experiment"]:
        assert any(g == group for g, _ in OPTIONS), f"conf/{group}/ has no option"


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_targets_exist(group, option):
    cfg = _compose([f"{group}={option}"])
    assert cfg.hydra.runtime.choices[group] == option
    for name in ["dataset", "segmenter", "encoder3d", "encoder2d", "fusion", "logger", "trainer"]:
        node = cfg[name]
        target = node.get("_target_") if node is not None else None
        if target:
            assert isinstance(get_class(target), type), f"{name}: {target} is not a class"
    for name, builder in (cfg.annotations.get("builders") or {}).items():
        assert isinstance(get_class(builder["_target_"]), type), f"annotations.builders.{name}"
    # every interpolation of the parts resolves (paths, env defaults, oc.select), to concrete values
    for name in ["dataset", "segmenter", "encoder3d", "encoder2d", "fusion", "trainer"]:
        resolved = OmegaConf.to_container(cfg[name], resolve=True, throw_on_missing=False)
        assert "${" not in repr(resolved), f"{name}: unresolved {resolved}"


def test_demo_defaults_are_the_demo_experiment():
    default = _compose([])
    demo = _compose(["experiment=demo"])
    for group in ["dataset", "segmenter", "encoder3d", "encoder2d", "fusion"]:
        assert default.hydra.runtime.choices[group] == demo.hydra.runtime.choices[group]
        assert OmegaConf.to_container(default[group]) == OmegaConf.to_container(demo[group])


def test_unknown_option_is_a_clear_error():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="encoder3d"):
        _compose(["encoder3d=uni3d_huge"])


@pytest.mark.parametrize("launcher", ["slurm", "local"])
def test_launcher_options_compose_with_the_submitit_plugin(launcher):
    import hydra_plugins.hydra_submitit_launcher  # noqa: F401  (a test dependency: never skipped)
    cfg = _compose([f"hydra/launcher={launcher}", "num_shards=4", "shard=3"])
    assert cfg.hydra.launcher._target_.startswith("hydra_plugins.hydra_submitit_launcher")
    assert cfg.num_shards == 4 and cfg.shard == 3
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.array_parallelism == 64
