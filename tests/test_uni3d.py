"""Uni3D encoder: fixture parity, strict checkpoint loading, batching, FPS/kNN, configs."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED, shared_or_skip
from featurizer.encoder3d.grouping import farthest_point_sample, knn
from featurizer.encoder3d.uni3d import SIZES, Uni3D, load_uni3d_state_dict, preprocess
from featurizer.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = SHARED / "fixtures" / "uni3d"
REFERENCE = SHARED / "reference" / "uni3d"
TOL = 1e-4

TINY = dict(size=None, width=96, depth=2, num_heads=2, pc_encoder_dim=128, embed_dim=64)
STYLES = {  # fixture -> (block_style, mlp_hidden), manifest.json
    "tiny_eva02_packed": ("packed_swiglu", 256),
    "tiny_eva02_split": ("split_swiglu", 256),
    "tiny_eva_giant": ("gelu", 418),
}


def tiny(style: str = "packed_swiglu", hidden: int = 256, **kw) -> Uni3D:
    return Uni3D(**TINY, block_style=style, mlp_hidden=hidden, **kw)


def cloud(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xyz = (rng.normal(size=(n, 3)) * [0.5, 0.3, 0.8] + rng.uniform(-3, 3, size=3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    return xyz, rgb


# ------------------------------------------------------------------ parity with the fixtures


@pytest.mark.parametrize("fixture", list(STYLES))
def test_fixture_parity(fixture):
    shared_or_skip("fixtures", "uni3d")
    objects = np.load(FIXTURES / "objects.npz")
    n = len([k for k in objects.files if k.startswith("points_")])
    xyz = [objects[f"points_{i}"] for i in range(n)]
    rgb = [objects[f"colors_{i}"] for i in range(n)]
    style, hidden = STYLES[fixture]
    model = tiny(style, hidden, checkpoint=str(FIXTURES / f"{fixture}.pt"))
    expected = torch.load(FIXTURES / f"{fixture}.expected.pt", weights_only=True)
    out = model.encode(xyz, rgb)
    assert out.shape == expected.shape == (n, 64) and out.dtype == torch.float32
    assert (out - expected).abs().max().item() <= TOL
    # the 37-point object (74 points after self-concatenation, 512 centres) is among them
    assert len(preprocess(xyz[0], rgb[0])) == 74


def test_preprocess_values():
    xyz, rgb = cloud(37, 0)
    pts = preprocess(xyz, rgb)
    assert pts.shape == (74, 6) and pts.dtype == np.float32
    np.testing.assert_array_equal(pts[:37], pts[37:])
    np.testing.assert_allclose(pts[:, :3].mean(0), 0, atol=1e-6)
    assert abs(np.linalg.norm(pts[:, :3], axis=1).max() - 1.0) < 1e-6
    np.testing.assert_allclose(pts[:37, 3:], rgb / 255.0, atol=1e-7)
    assert preprocess(*cloud(10, 1)).shape == (80, 6)  # 10 -> 20 -> 40 -> 80
    assert preprocess(*cloud(64, 1)).shape == (64, 6)
    same = preprocess(np.ones((12, 3), np.float32), np.zeros((12, 3), np.uint8))  # one repeated point
    assert np.isfinite(same).all() and (same[:, :3] == 0).all()


# ------------------------------------------------------------------ strict checkpoint loading


def key_table(size: str) -> dict[str, torch.Tensor]:
    """The published checkpoint's keys and shapes as fp16 meta tensors (no memory)."""
    rows = (REFERENCE / f"keys-uni3d-{size}.tsv").read_text().splitlines()[1:]
    table = {}
    for row in rows:
        key, shape = row.split("\t")
        table[key] = torch.empty(ast.literal_eval(shape), dtype=torch.float16, device="meta")
    return table


def meta_model(size: str) -> Uni3D:
    with torch.device("meta"):
        return Uni3D(size=size)


@pytest.mark.parametrize("size", list(SIZES))
def test_key_tables_load_strictly(size):
    shared_or_skip("reference", "uni3d")
    table = key_table(size)
    model = meta_model(size)
    assert sorted(model.state_dict()) == sorted(table)
    load_uni3d_state_dict(table, model)
    load_uni3d_state_dict({"module": {f"module.{k}": v for k, v in table.items()}}, model)


@pytest.mark.parametrize("size,other,width", [("ti", "g", 1408), ("g", "ti", 192), ("b", "l", 1024),
                                              ("s", "b", 768)])
def test_wrong_size_is_named(size, other, width):
    shared_or_skip("reference", "uni3d")
    with pytest.raises(CheckpointError, match=rf"width {width} in checkpoint, {SIZES[size].width} expected: "
                                              rf"is this uni3d-{other}\?"):
        load_uni3d_state_dict(key_table(other), meta_model(size))


def test_missing_unexpected_and_wrong_shape_keys():
    shared_or_skip("reference", "uni3d")
    model = meta_model("b")
    table = key_table("b")
    gone = "point_encoder.visual.blocks.7.mlp.norm.weight"
    missing = {k: v for k, v in table.items() if k != gone}
    with pytest.raises(CheckpointError, match=rf"missing key\(s\) {gone}"):
        load_uni3d_state_dict(missing, model)
    extra = dict(table, **{"point_encoder.visual.blocks.3.gamma_1": torch.empty(768, device="meta")})
    with pytest.raises(CheckpointError,
                       match=r"unexpected key\(s\) point_encoder\.visual\.blocks\.3\.gamma_1"):
        load_uni3d_state_dict(extra, model)
    bad = dict(table, **{"point_encoder.encoder2trans.weight": torch.empty(768, 256, device="meta")})
    with pytest.raises(CheckpointError, match=r"point_encoder\.encoder2trans\.weight has shape \(768, 256\) "
                                              r"in checkpoint, \(768, 512\) expected"):
        load_uni3d_state_dict(bad, model)
    with pytest.raises(CheckpointError, match="depth 24 in checkpoint, 12 expected: is this uni3d-l"):
        load_uni3d_state_dict(key_table("l"), meta_model_custom(depth=12, base="l"))


def meta_model_custom(depth: int, base: str) -> Uni3D:
    with torch.device("meta"):
        return Uni3D(size=base, depth=depth)


def test_prefix_fp16_and_containers(tmp_path):
    source = tiny(seed=3)
    sd = {f"module.{k}": v.half() if v.is_floating_point() else v for k, v in source.state_dict().items()}
    path = tmp_path / "model.pt"
    torch.save({"module": sd, "epoch": 7}, path)
    for ckpt in (path, str(path), {k[len("module."):]: v for k, v in sd.items()}):
        target = tiny(seed=4)
        load_uni3d_state_dict(ckpt, target)
        for k, v in target.state_dict().items():
            assert v.dtype == source.state_dict()[k].dtype  # fp16 cast to the module's fp32
            torch.testing.assert_close(v, sd[f"module.{k}"].to(v.dtype), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        tiny(checkpoint=str(tmp_path / "absent.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a PyTorch checkpoint"):
        tiny(checkpoint=str(tmp_path / "junk.pt"))
    # a checkpoint of another block style names it
    with pytest.raises(CheckpointError, match="block style packed_swiglu in checkpoint, gelu expected"):
        load_uni3d_state_dict(path, tiny("gelu", 418))


def test_config_errors():
    with pytest.raises(ConfigError, match="encoder3d.size"):
        Uni3D(size="xl")
    with pytest.raises(ConfigError, match="encoder3d.width"):
        Uni3D(size=None, depth=2, num_heads=2, mlp_hidden=8, block_style="gelu")
    with pytest.raises(ConfigError, match="encoder3d.block_style"):
        tiny("swiglu")
    with pytest.raises(ConfigError, match="encoder3d.num_heads"):
        Uni3D(**dict(TINY, num_heads=5), block_style="gelu", mlp_hidden=8)


# ------------------------------------------------------------------ batching


def test_batched_equals_one_at_a_time():
    model = tiny(batch_size=3)
    sizes = [20, 700, 37, 300, 1500, 64, 520, 11]
    clouds = [cloud(n, i) for i, n in enumerate(sizes)]
    xyz, rgb = [c[0] for c in clouds], [c[1] for c in clouds]
    batched = model.encode(xyz, rgb)
    single = torch.cat([model.encode([x], [c]) for x, c in zip(xyz, rgb)])
    assert batched.shape == (len(sizes), 64)
    assert (batched - single).abs().max().item() <= TOL
    # distinct instances give distinct features (no mix-up of the order when bucketing)
    assert torch.cdist(batched, batched).add(torch.eye(len(sizes)) * 1e3).min().item() > 1e-3
    assert model.encode([], []).shape == (0, 64)


def test_repeated_centres_are_encoded_once_with_the_same_result():
    model = tiny()
    xyz, rgb = cloud(30, 5)  # 60 points after concatenation: 30 distinct centres among 512
    pts = torch.from_numpy(preprocess(xyz, rgb))[None]
    lengths = torch.tensor([len(pts[0])])
    enc = model.point_encoder
    with torch.inference_mode():
        _, tokens = enc.group_tokens(pts, lengths)
        from featurizer.encoder3d.grouping import group

        _, centers, nbr = group(pts, 512, 64, lengths)
        grp = pts[0][nbr[0]]  # (G, K, 6)
        grp = torch.cat([grp[..., :3] - centers[0][:, None], grp[..., 3:]], dim=-1)
        direct = enc.encoder(grp)  # every group, no de-duplication
        # the reference module stack on the same groups (conv1d layout, BN in eval mode)
        f = enc.encoder.first_conv(grp.transpose(1, 2))
        f = torch.cat([f.amax(2, keepdim=True).expand_as(f), f], dim=1)
        ref = enc.encoder.second_conv(f).amax(2)
    assert (tokens[0] - direct).abs().max().item() <= 1e-5
    assert (direct - ref).abs().max().item() <= 1e-4


# ------------------------------------------------------------------ FPS / kNN against loops


def fps_loop(xyz: np.ndarray, num: int) -> list[int]:
    """The CUDA kernel, serially: start at 0, temp 1e10, skip |p|^2 <= 1e-3, best starts at -1."""
    xyz = xyz.astype(np.float32)
    temp = [np.float32(1e10)] * len(xyz)
    idx, old = [0], 0
    for _ in range(1, num):
        best, besti = np.float32(-1), 0
        x1, y1, z1 = xyz[old]
        for k, (x2, y2, z2) in enumerate(xyz):
            if x2 * x2 + y2 * y2 + z2 * z2 <= np.float32(1e-3):
                continue
            d = (x2 - x1) * (x2 - x1) + (y2 - y1) * (y2 - y1) + (z2 - z1) * (z2 - z1)
            temp[k] = min(d, temp[k])
            if temp[k] > best:
                best, besti = temp[k], k
        old = besti
        idx.append(old)
    return idx


def test_fps_matches_loop_with_padding_and_quirks():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, size=(40, 3)).astype(np.float32)
    a[0] = 0.0  # index 0 is taken first although it is never eligible afterwards
    a[7] = [0.01, 0.01, 0.0]  # |p|^2 = 2e-4: never chosen
    b = rng.uniform(-1, 1, size=(15, 3)).astype(np.float32)
    b = np.concatenate([b, b])  # duplicated, fewer points than centres: repeats after 15 distinct
    num = 48
    ref_a, ref_b = fps_loop(a, num), fps_loop(b, num)
    assert 7 not in ref_a and ref_a[0] == 0 and 0 not in ref_a[1:]
    assert len(set(ref_b)) == 15 and ref_b[15:] == [ref_b[15]] * (num - 15)
    padded = np.zeros((2, 40, 3), np.float32)
    padded[0], padded[1, :30] = a, b
    padded[1, 30:] = 5.0  # far-away padding would be chosen at once if it were not masked
    got = farthest_point_sample(torch.from_numpy(padded), num, torch.tensor([40, 30]))
    assert got[0].tolist() == ref_a
    assert got[1].tolist() == ref_b
    alone = farthest_point_sample(torch.from_numpy(b)[None], num)
    assert alone[0].tolist() == ref_b


def test_knn_matches_loop_with_padding():
    rng = np.random.default_rng(1)
    pts = rng.uniform(-1, 1, size=(2, 50, 3)).astype(np.float32)
    lengths = torch.tensor([50, 33])
    pts[1, 33:] = 0.0  # padding placed where it would be nearest to many centres
    centers = pts[:, :6].copy()
    got = knn(torch.from_numpy(pts), torch.from_numpy(centers), 8, lengths, max_elements=400)  # chunked
    for b in range(2):
        n = int(lengths[b])
        for g in range(6):
            d = ((pts[b, :n] - centers[b, g]) ** 2).sum(1)
            assert sorted(got[b, g].tolist()) == sorted(np.argsort(d, kind="stable")[:8].tolist())


# ------------------------------------------------------------------ configs


def test_tiny_yaml_loads_a_saved_checkpoint(tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "encoder3d" / "uni3d_tiny.yaml")
    trained = instantiate(cfg, seed=11)
    path = tmp_path / "uni3d-tiny.pt"
    torch.save({"module": trained.state_dict()}, path)
    loaded = instantiate(cfg, checkpoint=str(path))
    fresh = instantiate(cfg)
    assert isinstance(loaded, Uni3D) and loaded.name == "uni3d" and loaded.dim == 64
    xyz, rgb = zip(*(cloud(n, 20 + n) for n in (45, 400)))
    out = loaded.encode(list(xyz), list(rgb))
    torch.testing.assert_close(out, trained.encode(list(xyz), list(rgb)), rtol=0, atol=1e-6)
    assert (out - fresh.encode(list(xyz), list(rgb))).abs().max().item() > 1e-2


@pytest.mark.parametrize("size", list(SIZES))
def test_published_size_yamls(size):
    from hydra.utils import instantiate

    from test_config import _compose

    cfg = _compose([f"encoder3d=uni3d_{size}"]).encoder3d
    assert cfg.size == size and cfg.checkpoint is None and cfg.num_group == 512 and cfg.group_size == 64
    with torch.device("meta"):
        model = instantiate(cfg)
    assert model.arch == SIZES[size] and model.dim == 1024 and model.name == "uni3d"
    assert model.point_encoder.trans2embed.weight.shape == (1024, SIZES[size].width)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model = tiny(batch_size=4)
    clouds = [cloud(n, n) for n in (30, 200, 900, 2500)]
    xyz, rgb = [c[0] for c in clouds], [c[1] for c in clouds]
    cpu = model.encode(xyz, rgb)
    gpu = model.to("cuda").encode(xyz, rgb)
    assert (cpu - gpu).abs().max().item() <= 1e-3
    model.bf16 = True
    assert (cpu - model.encode(xyz, rgb)).abs().max().item() <= 0.1 * cpu.abs().max().item()


def test_a_3d_encoder_without_a_name_is_refused():
    from featurizer.encoder3d.base import PointEncoder
    from featurizer.errors import ConfigError

    with pytest.raises(ConfigError, match="encoder3d.name"):
        tiny(name="")
    with pytest.raises(ConfigError, match="encoder3d.name"):
        PointEncoder(None)
    assert isinstance(tiny(), PointEncoder) and tiny().name == "uni3d"
