"""A new Hugging Face backbone is one YAML file: encoder2d=dinov3 (DINOv3ViTModel, CLS + registers, RoPE,
a processor that needs torchvision) and encoder2d=siglip2 (fixed-resolution SigLIP 2, which transformers
loads as a SigLIP model), each on a tiny random model saved with save_pretrained, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import run_featurizer
from featurizer.encoder2d.hf import HFPatchEncoder
from featurizer.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf" / "encoder2d"
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
# facebook/dinov3-vitl16-pretrain-lvd1689m's preprocessor_config.json (its processor needs torchvision)
DINOV3_PREPROCESSOR = {
    "image_processor_type": "DINOv3ViTImageProcessorFast",
    "do_resize": True, "size": {"height": 224, "width": 224},
    "resample": 2, "do_center_crop": None, "crop_size": None, "do_rescale": True,
    "rescale_factor": 0.00392156862745098, "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
}
PREFIX = {"dinov3": 1 + 4, "siglip2": 0}  # CLS + 4 registers; SigLIP has neither


def _save(root: Path) -> dict[str, Path]:
    import transformers as tf

    torch.manual_seed(0)
    dinov3 = root / "dinov3"
    config = tf.DINOv3ViTConfig(**TINY, patch_size=16, num_register_tokens=4)
    tf.DINOv3ViTModel(config).save_pretrained(dinov3)
    (dinov3 / "preprocessor_config.json").write_text(json.dumps(DINOV3_PREPROCESSOR))
    # google/siglip2-base-patch16-224: a two-tower SiglipModel (model_type siglip), 224x224 bilinear
    siglip2 = root / "siglip2"
    config = tf.SiglipConfig(vision_config=dict(**TINY, patch_size=16), text_config=TINY)
    tf.SiglipModel(config).save_pretrained(siglip2)
    tf.SiglipImageProcessorPil(size={"height": 224, "width": 224}, resample=2).save_pretrained(siglip2)
    return {"dinov3": dinov3, "siglip2": siglip2}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return _save(tmp_path_factory.mktemp("backbones"))


def _frames(n: int, h: int = 480, w: int = 640, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    return np.clip(base[None] + rng.normal(0, 40, (n, h, w, 3)), 0, 255).astype(np.uint8)


def _encoder(name: str, path: Path, **overrides) -> HFPatchEncoder:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    cfg.model = str(path)
    for k, v in overrides.items():
        cfg[k] = v
    return instantiate(cfg)


@pytest.mark.parametrize("name", ["dinov3", "siglip2"])
@pytest.mark.parametrize("mode", ["processor", "full_frame"])
def test_yaml_backbone_tokens_equal_direct_hf_call(models, name, mode):
    import transformers as tf

    enc = _encoder(name, models[name], mode=mode, batch_size=2)
    assert enc.name == name and enc.dim == 32 and enc.patch_size == 16
    assert enc.num_prefix_tokens == PREFIX[name]
    rows, cols = enc.grid_shape((640, 480))
    assert (rows, cols) == ((14, 14) if mode == "processor" else (14, 19))  # 640x480 -> 224x224 / 304x224
    frames = torch.from_numpy(_frames(3))
    tokens = enc.patch_tokens(frames)
    assert tokens.shape == (3, rows, cols, 32) and tokens.dtype == torch.float32

    model_cls = tf.DINOv3ViTModel if name == "dinov3" else tf.SiglipVisionModel
    model = model_cls.from_pretrained(models[name]).eval()
    kwargs = {"interpolate_pos_encoding": True} if name == "siglip2" else {}
    with torch.no_grad():
        hidden = model(pixel_values=enc.preprocess(frames), **kwargs).last_hidden_state
    assert hidden.shape[1] == PREFIX[name] + rows * cols
    assert torch.allclose(tokens, hidden[:, PREFIX[name]:].reshape(3, rows, cols, 32), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(tokens[0], tokens[1])


def test_siglip2_preprocessing_equals_transformers_pil_processor(models):
    from transformers import AutoImageProcessor

    enc = _encoder("siglip2", models["siglip2"], mode="processor")
    proc = AutoImageProcessor.from_pretrained(models["siglip2"], backend="pil")
    assert type(proc).__name__ == "SiglipImageProcessorPil" and proc.resample == 2
    for impl in ("pil", "torch"):
        enc.resize_impl = impl
        for h, w in [(480, 640), (968, 1296), (517, 333)]:
            img = _frames(1, h, w, seed=h)[0]
            ref = proc(img, return_tensors="pt")["pixel_values"]
            assert torch.equal(enc.preprocess(torch.from_numpy(img)[None]), ref), (impl, h, w)


def test_dinov3_preprocessing_applies_the_files_settings(models):
    """DINOv3's processor needs torchvision: the folder's settings are applied with Pillow's resize."""
    from PIL import Image

    enc = _encoder("dinov3", models["dinov3"], mode="processor")
    assert enc.prep.resize == ("size", (224, 224)) and enc.prep.crop is None and enc.prep.resample == 2
    img = _frames(1, seed=5)[0]
    resized = np.asarray(Image.fromarray(img).resize((224, 224), Image.BILINEAR)).astype(np.float64)
    mean, std = np.array(DINOV3_PREPROCESSOR["image_mean"]), np.array(DINOV3_PREPROCESSOR["image_std"])
    expected = ((resized / 255).astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)
    ours = enc.preprocess(torch.from_numpy(img)[None])[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    # a YAML `processor` entry overrides the file's settings
    size = {"size": {"height": 256, "width": 256}}
    enc = _encoder("dinov3", models["dinov3"], mode="processor", processor=size)
    assert enc.prep.resize == ("size", (256, 256)) and enc.grid_shape((640, 480)) == (16, 16)


def test_patch_sequence_models_are_refused_by_name(tmp_path):
    import transformers as tf

    folder = tmp_path / "naflex"
    tf.Siglip2VisionModel(tf.Siglip2VisionConfig(**TINY, patch_size=16)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(DINOV3_PREPROCESSOR))
    with pytest.raises(ConfigError, match="encoder2d.model.*Siglip2VisionModel needs pixel_attention_mask"):
        HFPatchEncoder(model=str(folder))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dinov3", "siglip2"])
def test_backbone_end_to_end(models, data_dir, tmp_path, name):
    run = tmp_path / "run"
    run_featurizer("dataset.num_scenes=2", "dataset.frames_per_scene=6", "logger=none", "pictures=0",
                   f"paths.data_dir={data_dir}", f"hydra.run.dir={run}", f"encoder2d={name}",
                   f"encoder2d.model={models[name]}", root=tmp_path)
    feats = torch.load(run / "scannet_gt_videofeats.pt", weights_only=True)
    attrs = torch.load(run / "scannet_train_attributes.pt", weights_only=True)  # 2 scenes: both train
    summary = json.loads((run / "summary.json").read_text())
    instances = sum(len(a["objects"]) for a in attrs.values())
    assert summary["choices"]["encoder2d"] == name and summary["keys_2d"] == len(feats)
    assert len(feats) >= 0.7 * instances and len(attrs) == 2
    for key, value in feats.items():
        assert value.shape == (32,) and value.dtype == torch.float32, key
        assert bool(torch.isfinite(value).all()), key
        assert key.rsplit("_", 1)[0] in attrs
    assert len({tuple(v.tolist()) for v in feats.values()}) == len(feats)  # instances differ
