"""Messages that cost time or mislead (issue 9, part 6): each error is one line naming the file or the
model and what to do, arrives before any long wait, and never advises an unsafe load."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, run_featurizer
from featurizer.dataset.scannet import ScanNetReader
from featurizer.encoder2d.hf import HFPatchEncoder
from featurizer.encoder3d.uni3d import Uni3D
from featurizer.errors import CheckpointError, DataError
from featurizer.scene import Scene
from featurizer.segmenter.mask3d_inst_seg import Mask3DInstSeg

SCENE = "scene0011_00"
HUB_ID = "featurizer-tests/tiny-dinov2"
UNI3D_TINY = dict(size=None, width=96, depth=2, num_heads=2, pc_encoder_dim=128, embed_dim=64,
                  block_style="packed_swiglu", mlp_hidden=256)


def _scene() -> Scene:
    rng = np.random.default_rng(0)
    return Scene(scene_id=SCENE, points=rng.uniform(-2, 2, (50, 3)), colors=rng.integers(0, 256, (50, 3)),
                 split="val")


def _python(code: str, **env: str | None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (Hugging Face reads HF_HOME and its offline flag at import)."""
    full = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    full.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=full, capture_output=True, text=True,
                          timeout=300)


# ---------------------------------------------------------------------------- 1. 2D model not found
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import transformers as tf

    folder = tmp_path_factory.mktemp("model") / "tiny-dinov2"
    torch.manual_seed(0)
    cfg = tf.Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          patch_size=14, image_size=56)
    tf.Dinov2Model(cfg).save_pretrained(folder)
    tf.BitImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56},
                            do_center_crop=True).save_pretrained(folder)
    return folder


LOAD = f"from featurizer.encoder2d.hf import HFPatchEncoder; print(HFPatchEncoder(model={HUB_ID!r}).dim)"
REMEDIES = ["encoder2d.model=/path", f"hf download {HUB_ID}", f"huggingface-cli download {HUB_ID}",
            "HF_HUB_OFFLINE=1"]


@pytest.mark.parametrize("offline", [True, False])
def test_model_neither_local_nor_cached_fails_at_once_with_the_remedies(tmp_path, offline):
    # offline: HF_HUB_OFFLINE=1; online: a hub endpoint that refuses connections (no network here)
    proc = _python(LOAD, HF_HOME=str(tmp_path), HF_HUB_OFFLINE="1" if offline else None,
                   HF_ENDPOINT="http://127.0.0.1:9")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "ConfigError" in last and "encoder2d.model" in last and HUB_ID in last
    assert ("HF_HUB_OFFLINE is set" if offline else "http://127.0.0.1:9 cannot be reached") in last
    for remedy in REMEDIES:
        assert remedy in last, remedy
    assert "Retrying" not in proc.stderr  # the old code retried for 39 s before failing


def test_local_folder_still_loads(tiny_model):
    enc = HFPatchEncoder(model=str(tiny_model), family="dinov2", mode="processor")
    assert enc.dim == 32 and enc.patch_size == 14 and enc.num_prefix_tokens == 1
    assert enc.grid_shape((640, 480)) == (4, 4)


def test_model_in_the_hub_cache_loads_without_going_online(tmp_path, tiny_model):
    # the Hugging Face cache layout: hub/models--<org>--<name>/{refs/main, snapshots/<commit>/<files>}
    repo = tmp_path / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in tiny_model.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    # network not disabled, but the endpoint refuses: the old code tried it (with retries) first
    proc = _python(LOAD, HF_HOME=str(tmp_path), HF_ENDPOINT="http://127.0.0.1:9")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["32"]
    assert "Retrying" not in proc.stderr and "127.0.0.1" not in proc.stderr


# ---------------------------------------------------------------------------- 2. pickled .pt refused
class _Command:
    """Unpickling this runs a shell command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _evil(path: Path, marker: Path, writer: str) -> Path:
    payload = [{"label": "chair", "segments": [1, 2]}, _Command(f"echo hi > {marker}")]
    if writer == "torch_save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    return path


GLOBAL = f"{os.system.__module__}.system"  # posix.system on Linux and macOS, nt.system on Windows


@pytest.mark.parametrize("writer", ["torch_save", "pickle"])
def test_pickled_pt_names_file_and_global_and_never_advises_unpickling(tmp_path, writer):
    marker = tmp_path / "ran"
    path = _evil(tmp_path / f"{SCENE}.pt", marker, writer)
    with pytest.raises(DataError) as err:
        Mask3DInstSeg(str(tmp_path)).predict(_scene())
    text = str(err.value)
    assert err.value.path == path and text.startswith(str(path)) and "\n" not in text
    assert GLOBAL in text and "refusing to unpickle" in text
    assert "weights_only=False" not in text and "likely succeed" not in text
    assert not marker.exists()

    ckpt = _evil(tmp_path / "uni3d.pt", marker, writer)  # the same for a Uni3D checkpoint
    with pytest.raises(CheckpointError) as err:
        Uni3D(**UNI3D_TINY, checkpoint=str(ckpt))
    assert str(err.value).startswith(f"{ckpt}: refusing to unpickle") and GLOBAL in str(err.value)
    assert "weights_only=False" not in str(err.value)
    assert not marker.exists()


# ---------------------------------------------------------------------------- 3. not a checkpoint at all
def _not_checkpoints(folder: Path) -> dict[str, bytes]:
    good = folder / "good.pt"
    torch.save({"w": torch.zeros(100)}, good)
    return {
        "random bytes": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "text": b"scene0000_00 chair 1 2 3\nnot a checkpoint\n",
        "empty": b"",
        "truncated checkpoint": good.read_bytes()[:300],
        "plain pickle": pickle.dumps([{"label": "chair", "segments": [1, 2]}]),
    }


def test_not_a_checkpoint_is_said_so_for_inst_seg_and_uni3d(tmp_path):
    for what, data in _not_checkpoints(tmp_path).items():
        path = tmp_path / f"{SCENE}.pt"
        path.write_bytes(data)
        with pytest.raises(DataError) as err:
            Mask3DInstSeg(str(tmp_path)).predict(_scene())
        assert str(err.value).startswith(f"{path}: not a PyTorch checkpoint ("), what
        assert "mmap" not in str(err.value) and "\n" not in str(err.value), what
        with pytest.raises(CheckpointError) as err:
            Uni3D(**UNI3D_TINY, checkpoint=str(path))
        assert str(err.value).startswith(f"{path}: not a PyTorch checkpoint ("), what
        assert "mmap" not in str(err.value) and "_use_new_zipfile_serialization" not in str(err.value), what


# ---------------------------------------------------------------------------- 4. missing dataset root
def test_missing_dataset_root_is_named_before_the_split_file(tmp_path):
    root = tmp_path / "nonexistent"
    with pytest.raises(DataError) as err:
        ScanNetReader(str(root), splits=["val"])
    assert err.value.path == root and "root folder not found" in str(err.value)
    assert "split file" not in str(err.value)


# ---------------------------------------------------------------------------- 5. show_views
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, data_dir) -> Path:
    root = tmp_path_factory.mktemp("views")
    run_featurizer("dataset.num_scenes=2", "dataset.frames_per_scene=6", "logger=none", "pictures=0",
                   f"paths.data_dir={data_dir}", f"hydra.run.dir={root / 'run'}", root=root)
    return root / "run"


def _show_views(run: Path, scene: str, instance: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "show_views.py"), str(run), scene,
                           str(instance), "--out", str(run / "v.png")],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_show_views_unknown_scene_or_instance_is_one_line_naming_what_exists(demo_run):
    proc = _show_views(demo_run, "scene9999_00", 0)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("show_views.py: error: unknown scene 'scene9999_00'")
    assert line.endswith("has: scene0000_00, scene0001_00")

    proc = _show_views(demo_run, "scene0000_00", 99)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("show_views.py: error: scene0000_00 has no instance 99; its instances: 0 ")
    labels = line.split("its instances: ", 1)[1].split(", ")
    assert [int(x.split(" ", 1)[0]) for x in labels] == list(range(len(labels))) and len(labels) >= 3

    proc = _show_views(demo_run, "scene0000_00", 0)  # a known one still draws its picture
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (demo_run / "v.png").stat().st_size > 1000
