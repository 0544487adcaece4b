"""Shared test helpers: the repository's paths, offline settings, and running `run.py` for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED = REPO.parent / "shared"

# Never reach a network from the tests: wandb offline, Hugging Face hub offline.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def shared_or_skip(*parts: str) -> Path:
    """A path under ../shared, or skip: a user's clone of the project has no ../shared."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (../shared holds the parity fixtures; a user's clone has none)")
    return path


def run_featurizer(*overrides: str, root: Path, multirun: bool = False, check: bool = True,
                   timeout: float = 600) -> subprocess.CompletedProcess:
    """`python run.py <overrides>` in a subprocess, with every output under ``root``."""
    env = {**os.environ, "FEATURIZER_ROOT": str(root), "WANDB_DIR": str(root), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(REPO / "run.py"), *(["-m"] if multirun else []), *overrides]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"run.py {' '.join(overrides)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One folder of generated synthetic scenes shared by every end-to-end test of the session."""
    return tmp_path_factory.mktemp("data")


def demo_2d(*scenes) -> list:
    """``run_2d`` of each scene with the demo's 2D parts (``conf/encoder2d/tiny.yaml``, a fresh
    ``conf/fusion/mask_pool.yaml`` per scene): what the reader tests compare across layouts."""
    import hydra
    from omegaconf import OmegaConf

    from featurizer.stage2d import run_2d

    encoder = hydra.utils.instantiate(OmegaConf.load(CONF / "encoder2d" / "tiny.yaml")).eval()
    fusion = OmegaConf.load(CONF / "fusion" / "mask_pool.yaml")
    return [run_2d(scene, encoder, hydra.utils.instantiate(fusion)) for scene in scenes]

