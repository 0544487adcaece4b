"""2D encoders: Pillow-exact preprocessing, pixel -> patch geometry through the real processors and
patch embeddings, loading through the YAML configs, and errors naming the option."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from featurizer.encoder2d.hf import HFPatchEncoder
from featurizer.encoder2d.resize import pil_resize, vertical_pass_first
from featurizer.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf" / "encoder2d"
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


# ---------------------------------------------------------------------------- fixtures
def _save_models(root: Path) -> dict[str, Path]:
    """Tiny random models of each family + their model card image processors, save_pretrained'ed."""
    import transformers as tf

    torch.manual_seed(0)
    made = {
        "dinov2": (
            tf.Dinov2Model(tf.Dinov2Config(**TINY, patch_size=14, image_size=224)),
            # facebook/dinov2-* preprocessor_config.json
            tf.BitImageProcessorPil(
                size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, do_center_crop=True,
                resample=3, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
            ),
        ),
        "dinov2_reg": (
            tf.Dinov2WithRegistersModel(
                tf.Dinov2WithRegistersConfig(**TINY, patch_size=14, image_size=224, num_register_tokens=4)
            ),
            tf.BitImageProcessorPil(
                size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, do_center_crop=True,
                resample=3, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
            ),
        ),
        # openai/clip-vit-*-patch14: shortest edge 224, centre crop 224, CLIP mean/std (the defaults)
        "clip": (tf.CLIPVisionModel(tf.CLIPVisionConfig(**TINY, patch_size=14, image_size=224)),
                 tf.CLIPImageProcessorPil()),
        # google/siglip-base-patch16-224: 224x224, no crop, mean/std 0.5
        "siglip": (
            tf.SiglipVisionModel(tf.SiglipVisionConfig(**TINY, patch_size=16, image_size=224)),
            tf.SiglipImageProcessorPil(
                size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3
            ),
        ),
    }
    paths = {}
    for family, (model, processor) in made.items():
        path = root / family
        model.save_pretrained(path)
        processor.save_pretrained(path)
        paths[family] = path
    return paths


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return _save_models(tmp_path_factory.mktemp("hf"))


def _processor(path: Path):
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(path, backend="pil")


def _hf_model(family: str, path: Path):
    import transformers as tf

    cls = {"dinov2": tf.Dinov2Model, "dinov2_reg": tf.Dinov2WithRegistersModel,
           "clip": tf.CLIPVisionModel, "siglip": tf.SiglipVisionModel}[family]
    return cls.from_pretrained(path).eval()


def _frames(n: int, h: int = 480, w: int = 640, seed: int = 0) -> np.ndarray:
    """Smooth-ish random frames (n, h, w, 3) uint8 (noise plus gradients, like photos)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    return np.clip(base[None] + rng.normal(0, 40, (n, h, w, 3)), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- Pillow-exact resize
SIZES = [
    ((480, 640), (256, 341)),  # DINOv2 processor on a ScanNet frame
    ((480, 640), (224, 298)),  # CLIP
    ((480, 640), (224, 224)),  # SigLIP
    ((480, 640), (168, 224)),  # tiny full frame
    ((968, 1296), (224, 294)),  # ScanNet colour stream, full frame
    ((37, 53), (256, 366)),  # upsampling
    ((480, 640), (476, 644)),  # Pillow 13 runs the vertical pass first here
    ((285, 24), (7, 66)),
    ((613, 98), (291, 362)),
]


@pytest.mark.parametrize("resample", [3, 2, 1])
def test_torch_resize_is_pillow_bit_for_bit(resample):
    from PIL import Image

    rng = np.random.default_rng(resample)
    for (h, w), (oh, ow) in SIZES:
        imgs = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)  # noise: the hardest case for rounding
        ref = np.stack([np.asarray(Image.fromarray(x).resize((ow, oh), resample)) for x in imgs])
        out = pil_resize(torch.from_numpy(imgs), (oh, ow), resample, impl="torch")
        assert out.dtype == torch.uint8 and out.shape == (2, oh, ow, 3)
        np.testing.assert_array_equal(out.numpy(), ref, err_msg=f"{(h, w)} -> {(oh, ow)} filter {resample}")
        np.testing.assert_array_equal(pil_resize(torch.from_numpy(imgs), (oh, ow), resample).numpy(), ref)


def test_vertical_pass_order_rule():
    import PIL

    if int(PIL.__version__.split(".")[0]) >= 13:
        assert vertical_pass_first((480, 640), (476, 644))
    assert not vertical_pass_first((480, 640), (256, 341))  # every ScanNet-frame case: horizontal first
    assert not vertical_pass_first((100, 100), (300, 300))


# ---------------------------------------------------------------------------- processor equality
@pytest.mark.parametrize("family", ["dinov2", "clip", "siglip"])
@pytest.mark.parametrize("impl", ["pil", "torch"])
def test_processor_mode_equals_model_card_processor(models, family, impl):
    enc = HFPatchEncoder(model=str(models[family]), family=family, mode="processor")
    enc.resize_impl = impl
    proc = _processor(models[family])
    for (h, w) in [(480, 640), (968, 1296), (517, 333), (90, 100)]:
        img = _frames(1, h, w, seed=h)[0]
        ref = proc(img, return_tensors="pt")["pixel_values"]
        ours = enc.preprocess(torch.from_numpy(img)[None])
        assert ours.dtype == torch.float32 and ours.shape == ref.shape
        assert torch.equal(ours, ref), f"{family} {impl} {(h, w)}: max diff {(ours - ref).abs().max()}"


@pytest.mark.parametrize("family", ["dinov2", "siglip"])
def test_full_frame_equals_processor_resized_to_net_size(models, family):
    enc = HFPatchEncoder(model=str(models[family]), family=family, mode="full_frame")
    proc = _processor(models[family])
    img = _frames(1)[0]
    rows, cols = enc.grid_shape((640, 480))
    p = enc.patch_size
    assert (rows, cols) == {"dinov2": (16, 21), "siglip": (14, 19)}[family]
    ref = proc(img, size={"height": rows * p, "width": cols * p}, do_center_crop=False, return_tensors="pt")
    assert torch.equal(enc.preprocess(torch.from_numpy(img)[None]), ref["pixel_values"])


# ---------------------------------------------------------------------------- pixel -> patch round trip
BAND = 80  # frame pixels per colour band


def _band_image(w: int, h: int) -> np.ndarray:
    """R encodes the column band, G the row band, B constant."""
    u = np.arange(w)[None, :].repeat(h, 0)
    v = np.arange(h)[:, None].repeat(w, 1)
    return np.stack([16 + 24 * (u // BAND), 16 + 30 * (v // BAND), np.full_like(u, 100)], -1).astype(np.uint8)


def _patch_colours(model, pixel_values: torch.Tensor, mean, std, p: int) -> torch.Tensor:
    """(rows, cols, 2) mean unnormalised R, G of each patch, through the model's own patch Conv2d."""
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.kernel_size == (p, p) and conv.stride == (p, p)
    with torch.no_grad():
        conv.weight.zero_()
        for c in (0, 1):  # output channel c = mean over the patch of input channel c, unnormalised
            conv.weight[c, c] = std[c] * 255.0 / (p * p)
        if conv.bias is not None:
            conv.bias.zero_()
        out = conv(pixel_values)[0, :2]
    offset = torch.tensor([mean[0] * 255.0, mean[1] * 255.0]).view(2, 1, 1)
    return (out + offset).permute(1, 2, 0)


def _pure_patches(pixel_values: torch.Tensor, mean, std, p: int, rows: int, cols: int) -> torch.Tensor:
    """(rows, cols) bool: the patch's input pixels all have one colour (it lies inside one band)."""
    x = pixel_values[0, :2] * torch.tensor(std[:2]).view(2, 1, 1) + torch.tensor(mean[:2]).view(2, 1, 1)
    x = (x * 255.0)[:, : rows * p, : cols * p].reshape(2, rows, p, cols, p)
    spread = x.amax(dim=(2, 4)) - x.amin(dim=(2, 4))
    return (spread < 0.5).all(dim=0)


ROUND_TRIPS = [
    ("dinov2", "processor", (640, 480)),
    ("dinov2", "processor", (360, 500)),  # portrait: the other branch of the shortest-edge rule
    ("dinov2", "full_frame", (640, 480)),
    ("siglip", "processor", (640, 480)),  # anisotropic 224x224 resize, no crop, patch 16
    ("siglip", "full_frame", (640, 480)),
    ("clip", "processor", (640, 480)),
]


@pytest.mark.parametrize("family,mode,size", ROUND_TRIPS)
def test_pixel_to_patch_round_trip_through_real_processor(models, family, mode, size):
    w, h = size
    enc = HFPatchEncoder(model=str(models[family]), family=family, mode=mode)
    proc = _processor(models[family])
    model = _hf_model(family, models[family])
    p = enc.patch_size
    rows, cols = enc.grid_shape(size)
    img = _band_image(w, h)
    if mode == "processor":
        pv = proc(img, return_tensors="pt")["pixel_values"]
    else:  # the real processor doing the full-frame resize: no crop, size = the grid in pixels
        pv = proc(img, size={"height": rows * p, "width": cols * p}, do_center_crop=False,
                  return_tensors="pt")["pixel_values"]
    assert pv.shape[-2:] == (rows * p, cols * p)
    mean, std = list(proc.image_mean), list(proc.image_std)
    colours = _patch_colours(model, pv, mean, std, p)
    pure = _pure_patches(pv, mean, std, p, rows, cols)

    vv, uu = torch.meshgrid(torch.arange(0, h, 3), torch.arange(0, w, 3), indexing="ij")
    u, v = uu.reshape(-1), vv.reshape(-1)
    r, c, valid = enc.pixel_to_patch(u, v, size)
    assert r.dtype == torch.int64 and c.dtype == torch.int64 and valid.dtype == torch.bool
    assert int(r.min()) >= 0 and int(r.max()) < rows and int(c.min()) >= 0 and int(c.max()) < cols
    band = torch.stack([16 + 24 * (u // BAND), 16 + 30 * (v // BAND)], -1).float()

    checked = valid & pure[r, c]
    assert checked.float().sum() > 0.15 * valid.float().sum()  # not vacuous (thousands of pixels)
    got = colours[r[checked], c[checked]]
    assert torch.allclose(got, band[checked], atol=0.05), "a pixel maps to a patch of another band"
    # every patch a valid pixel maps to contains that pixel's colour somewhere (impure ones included)
    assert torch.all((colours[r[valid], c[valid]] - band[valid]).abs().amax(-1) < 30)
    # negative control: the same check with the grid shifted by one patch fails
    shifted = colours[r[checked], (c[checked] + 1).clamp(max=cols - 1)]
    assert not torch.allclose(shifted, band[checked], atol=0.05)

    if (family, mode, size) == ("dinov2", "processor", (640, 480)):
        # 640x480 -> 341x256 (int(256 * 640 / 480)), crop 224 at ((341-224)//2, (256-224)//2) = (58, 16)
        assert (rows, cols) == (16, 16)
        x = (u.double() + 0.5) * 341 / 640 - 58
        y = (v.double() + 0.5) * 256 / 480 - 16
        expect = (x >= 0) & (x < 224) & (y >= 0) & (y < 224)
        assert torch.equal(valid, expect) and int((~valid).sum()) > 0.4 * len(u)
        assert np.allclose(enc.encoded_region(size), (58 * 640 / 341, 30.0, 282 * 640 / 341, 450.0))
    elif mode == "full_frame" or family == "siglip":
        assert bool(valid.all())
        assert enc.encoded_region(size) == (0.0, 0.0, float(w), float(h))
    elif family == "clip":
        # 640x480 -> 298x224, crop 224 at x0 = (298 - 224) // 2 = 37
        assert np.allclose(enc.encoded_region(size), (37 * 640 / 298, 0.0, 261 * 640 / 298, 480.0))
        assert not bool(valid.all()) and bool(valid[(u > 100) & (u < 540)].all())


def test_full_frame_formula_and_out_of_frame(models):
    enc = HFPatchEncoder(
        model=str(models["dinov2"]), family="dinov2", mode="full_frame", full_frame_size=[224, 168]
    )
    assert enc.grid_shape((640, 480)) == (12, 16)
    u = torch.tensor([0, 39, 40, 639, -1, 640, 100])
    v = torch.tensor([0, 0, 479, 479, 5, 5, 480])
    r, c, valid = enc.pixel_to_patch(u, v, (640, 480))
    # col = floor((u + 0.5) * 224 / 640 / 14): u = 39 -> 13.825 / 14 -> 0; u = 40 -> 14.175 -> 1
    assert c[:4].tolist() == [0, 0, 1, 15] and r[:4].tolist() == [0, 0, 11, 11]
    assert valid.tolist() == [True, True, True, True, False, False, False]


# ---------------------------------------------------------------------------- YAML configs -> tokens
GRIDS = {  # (processor, full_frame) grids for 640x480 frames
    "dinov2": ((16, 16), (16, 21)), "dinov2_reg": ((16, 16), (16, 21)),
    "clip": ((16, 16), (16, 21)), "siglip": ((14, 14), (14, 19)),
}
PREFIX = {"dinov2": 1, "dinov2_reg": 5, "clip": 1, "siglip": 0}


@pytest.mark.parametrize("family", ["dinov2", "dinov2_reg", "clip", "siglip"])
@pytest.mark.parametrize("mode", ["processor", "full_frame"])
def test_yaml_config_tokens_equal_direct_hf_call(models, family, mode):
    cfg = OmegaConf.load(CONF / f"{family}.yaml")
    assert cfg._target_ == "featurizer.encoder2d.hf.HFPatchEncoder" and cfg.family == family
    assert cfg.mode == "full_frame"
    cfg.model = str(models[family])
    cfg.mode = mode
    cfg.batch_size = 2  # 3 frames -> two batches
    enc = instantiate(cfg)
    assert enc.name == family and enc.dim == 32
    frames = _frames(3)
    tokens = enc.patch_tokens(torch.from_numpy(frames))
    rows, cols = GRIDS[family][mode == "full_frame"]
    assert enc.grid_shape((640, 480)) == (rows, cols)
    assert tokens.shape == (3, rows, cols, 32) and tokens.dtype == torch.float32

    model = _hf_model(family, models[family])
    if mode == "processor":
        pv = _processor(models[family])(list(frames), return_tensors="pt")["pixel_values"]
        kwargs = {}
    else:
        pv = enc.preprocess(torch.from_numpy(frames))
        kwargs = {"interpolate_pos_encoding": True} if family in ("clip", "siglip") else {}
    with torch.no_grad():
        hidden = model(pixel_values=pv, **kwargs).last_hidden_state
    assert hidden.shape[1] == PREFIX[family] + rows * cols
    direct = hidden[:, PREFIX[family]:].reshape(3, rows, cols, 32)
    assert torch.allclose(tokens, direct, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(tokens[0], tokens[1])  # frames differ -> tokens differ


@pytest.mark.parametrize("family", ["dinov2", "clip", "siglip"])
def test_embed_is_cls_or_pooler_output(models, family):
    enc = HFPatchEncoder(model=str(models[family]), family=family, batch_size=2)
    model = _hf_model(family, models[family])
    proc = _processor(models[family])
    crops = [_frames(1, s, s, seed=s)[0] for s in (120, 300, 57)]
    emb = enc.embed(crops)
    assert emb.shape == (3, 32) and emb.dtype == torch.float32
    with torch.no_grad():
        for i, crop in enumerate(crops):
            out = model(pixel_values=proc(crop, return_tensors="pt")["pixel_values"])
            ref = out.last_hidden_state[0, 0] if family == "dinov2" else out.pooler_output[0]
            assert torch.allclose(emb[i], ref, atol=1e-5)


def test_tiny_yaml_is_seeded_and_shaped():
    cfg = OmegaConf.load(CONF / "tiny.yaml")
    a, b = instantiate(cfg), instantiate(cfg)
    assert a.dim == 64 and a.patch_size == 14 and a.grid_shape((640, 480)) == (12, 16)
    frames = torch.from_numpy(_frames(4))
    ta = a.patch_tokens(frames)
    assert ta.shape == (4, 12, 16, 64)
    assert torch.equal(ta, b.patch_tokens(frames))  # same seed -> same weights -> same tokens
    assert a.preprocess(frames).shape == (4, 3, 168, 224)
    assert a.encoded_region((640, 480)) == (0.0, 0.0, 640.0, 480.0)


def test_none_yaml_has_no_target():
    cfg = OmegaConf.load(CONF / "none.yaml")
    assert OmegaConf.to_container(cfg) == {}


# ---------------------------------------------------------------------------- errors
def test_missing_folder_names_the_option(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(ConfigError, match="encoder2d.model") as e:
        HFPatchEncoder(model=str(missing), family="dinov2")
    assert str(missing) in str(e.value)
    cfg = OmegaConf.load(CONF / "dinov2.yaml")
    cfg.model = str(missing)
    with pytest.raises(Exception, match="encoder2d.model"):  # hydra wraps it, the message survives
        instantiate(cfg)


def test_unknown_hub_id_offline_names_the_option(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="encoder2d.model.*nobody-xyz/not-a-model"):
        HFPatchEncoder(model="nobody-xyz/not-a-model", family="dinov2")


def test_bad_options(models):
    with pytest.raises(ConfigError, match="encoder2d.family"):
        HFPatchEncoder(model=str(models["dinov2"]), family="clip")  # a DINOv2 folder is not CLIP
    with pytest.raises(ConfigError, match="encoder2d.family"):
        HFPatchEncoder(model=str(models["dinov2"]), family="vit")
    with pytest.raises(ConfigError, match="encoder2d.mode"):
        HFPatchEncoder(model=str(models["dinov2"]), mode="crop")
    with pytest.raises(ConfigError, match="encoder2d.full_frame_size"):
        HFPatchEncoder(model=str(models["dinov2"]), full_frame_size=[225, 168])
    with pytest.raises(ConfigError, match="encoder2d.random_init_config"):
        HFPatchEncoder(family="dinov2", random_init_config={"hidden_size": "large"})


def test_full_clip_and_siglip_checkpoints_load_the_vision_tower(tmp_path):
    """Hub ids openai/clip-* and google/siglip-* hold the full two-tower model: the vision tower loads."""
    import transformers as tf

    frames = torch.from_numpy(_frames(1))
    for family, model, processor, grid, prefix in [
        ("clip", tf.CLIPModel(tf.CLIPConfig(vision_config=dict(**TINY, patch_size=14), text_config=TINY)),
         tf.CLIPImageProcessorPil(), (16, 16), 1),
        ("siglip",
         tf.SiglipModel(tf.SiglipConfig(vision_config=dict(**TINY, patch_size=16), text_config=TINY)),
         tf.SiglipImageProcessorPil(), (14, 14), 0),
    ]:
        model.save_pretrained(tmp_path / family)
        processor.save_pretrained(tmp_path / family)
        enc = HFPatchEncoder(model=str(tmp_path / family), family=family, mode="processor")
        tokens = enc.patch_tokens(frames)
        with torch.no_grad():
            hidden = model.eval().vision_model(pixel_values=enc.preprocess(frames)).last_hidden_state
        assert torch.allclose(tokens, hidden[:, prefix:].reshape(1, *grid, 32), atol=1e-5)


def test_missing_weight_is_a_checkpoint_error(models, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from featurizer.errors import CheckpointError

    folder = tmp_path / "broken"
    shutil.copytree(models["dinov2"], folder)
    state = load_file(folder / "model.safetensors")
    del state["encoder.layer.1.mlp.fc1.weight"]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="encoder.layer.1.mlp.fc1.weight"):
        HFPatchEncoder(model=str(folder), family="dinov2")
