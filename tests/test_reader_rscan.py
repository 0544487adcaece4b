"""The 3RScan reader on synthetic scans written in the 3RScan layout (synthetic/layout_rscan.py).

One scene model is written twice, in the 3RScan layout and in the ScanNet layout (the same seed gives
the same model), so the reader's ground truth, its projection and its 2D features are checked against
the generator's truth and against the ScanNet reader.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData

from conftest import demo_2d
from featurizer.dataset.render import render_mesh
from featurizer.dataset.rscan import INFO, LABELS_PLY, OBJ_NAME, SEMSEG, RScanReader, pose_name
from featurizer.dataset.scannet import ScanNetReader
from featurizer.dataset.synthetic.generate import generate_scene
from featurizer.dataset.synthetic.layout import write_labels_tsv
from featurizer.dataset.synthetic.layout_rscan import write_scan, write_splits
from featurizer.dataset.synthetic.scene import make_scene
from featurizer.errors import DataError
from featurizer.scene import Frame

SEED, NUM_FRAMES, NUM_OBJECTS = 5, 3, 6
SID = "0a4b8ef6-a83a-21f2-8672-dce34dd0d7ca"  # 3RScan scan ids are UUIDs
SIZE = (320, 240)  # the ScanNet layout's frames
COLOR_SIZE = (480, 270)  # 3RScan's colour aspect (960x540), smaller for speed; depth is 224x172
MIN_VISIBLE = 500  # object points a correct projection sees in the three frames (about 2500 here)
MIN_HIT = 0.95  # of them, the share that lands on the generator's pixels of their object


def _model():
    return make_scene(np.random.default_rng(SEED), NUM_FRAMES, SIZE, SIZE, NUM_OBJECTS, 1000, False)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """(3RScan root, the model, what write_scan wrote)."""
    root = tmp_path_factory.mktemp("rscan")
    model = _model()
    truth = write_scan(root, SID, model, color_size=COLOR_SIZE)
    write_splits(root, {"train": [], "val": [SID]})
    return root, model, truth


@pytest.fixture
def copy(written, tmp_path):
    root, model, truth = written
    shutil.copytree(root, tmp_path / "root")
    return tmp_path / "root"


def _groups(model):
    return model.objects + model.structure


# ------------------------------------------------------------------ the contract
def test_reader_loads_points_real_colours_and_ground_truth(written):
    root, model, truth = written
    with pytest.raises(DataError, match="split file lists no scans"):  # train.txt is empty
        RScanReader(str(root), splits=["train", "val"])
    reader = RScanReader(str(root), splits="val")
    assert reader.scene_ids == [SID] and reader.split_of(SID) == "val" and reader.name == "3rscan"
    reader.check()
    scene = reader.load(SID)
    assert scene.notes == [] and scene.split == "val"
    np.testing.assert_array_equal(scene.points, model.raw_vertices)
    np.testing.assert_array_equal(scene.axis_align, np.eye(4))
    # the texture's colours, not the labels PLY's visualisation colours
    np.testing.assert_array_equal(scene.colors, model.colors)
    ply = PlyData.read(str(root / SID / LABELS_PLY))["vertex"].data
    ply_rgb = np.stack([ply["red"], ply["green"], ply["blue"]], axis=1)
    assert np.abs(ply_rgb.astype(int) - model.colors).mean() > 40
    groups = _groups(model)
    assert len(scene.instances) == len(groups) == reader.gt_object_count(SID) == 6 + 5
    for inst, g in zip(scene.instances, groups):
        np.testing.assert_array_equal(inst.point_ids, g["point_ids"])
        assert inst.label == g["raw_label"] and inst.gt_object_id == g["object_id"] + 1
    assert reader.check_scene(SID) == len(scene.points)
    assert [f.number for f in scene.frames] == [0, 1, 2]
    for frame, pose in zip(scene.frames, truth["poses"]):
        assert frame.image_size == (224, 172) and frame.depth_scale == 1000.0
        np.testing.assert_array_equal(frame.pose, pose)
        np.testing.assert_allclose(frame.intrinsics, truth["k_depth"], rtol=1e-15)
        color, depth = frame.read()
        assert color.shape == (172, 224, 3) and depth.shape == (172, 224) and depth.max() > 1.0
    assert all(p.is_file() for p in reader.input_files(SID))
    assert len(reader.input_files(SID, frames=False)) == 5
    assert reader.scene_cost(SID) == pytest.approx(len(scene.points) / 1000 + NUM_FRAMES)


def test_option_composes_and_instantiates(written):
    from hydra.utils import instantiate

    from test_config import _compose

    root, _, _ = written
    cfg = _compose(["dataset=3rscan", f"dataset.root={root}"])
    reader = instantiate(cfg.dataset)
    assert isinstance(reader, RScanReader) and reader.scene_ids == [SID]


def test_per_vertex_obj_colours_win_over_the_texture(copy):
    obj = copy / SID / OBJ_NAME
    lines = obj.read_text().splitlines()
    lines = [line + " 0.5 0 1" if line.startswith("v ") else line for line in lines]
    obj.write_text("\n".join(lines) + "\n")
    (copy / SID / "mesh.refined_0.png").unlink()
    scene = RScanReader(str(copy), frames="none").load(SID)
    assert (scene.colors == [128, 0, 255]).all() and scene.frames == []


# ------------------------------------------------------------------ projection round trip
def _id_buffers(model, truth):
    """The generator's pixels of each group (id + 1; 0 = nothing), rendered with its own cameras."""
    ids = np.zeros((len(model.raw_vertices), 3), dtype=np.uint8)
    for gi, g in enumerate(_groups(model)):
        ids[g["point_ids"], 0] = gi + 1
    k, (w, h) = truth["k_depth"], truth["depth_size"]
    mesh = (model.raw_vertices, model.faces, ids)
    return [render_mesh(*mesh, pose, k, w, h)[0][..., 0] for pose in truth["poses"]]


def _hits(frames: list[Frame], depths, id_buffers, model) -> tuple[int, float]:
    """Object points projected through each frame's pose, intrinsics and depth (visible: in the image, in
    front, within 5 cm of the depth there): (how many, share landing on their own object's pixels)."""
    visible = hit = 0
    for frame, depth, ids in zip(frames, depths, id_buffers):
        w2c = np.linalg.inv(frame.pose)
        h, w = depth.shape
        for gi, g in enumerate(model.objects):
            cam = model.raw_vertices[g["point_ids"]].astype(np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
            z = cam[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                u = np.rint(frame.intrinsics[0, 0] * cam[:, 0] / z + frame.intrinsics[0, 2])
                v = np.rint(frame.intrinsics[1, 1] * cam[:, 1] / z + frame.intrinsics[1, 2])
            ok = (z > 0.1) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
            u, v, z = u[ok].astype(int), v[ok].astype(int), z[ok]
            seen = np.abs(depth[v, u] - z) < 0.05
            visible += int(seen.sum())
            hit += int((ids[v[seen], u[seen]] == gi + 1).sum())
    return visible, hit / max(visible, 1)


def _passes(frames, depths, id_buffers, model) -> bool:
    visible, share = _hits(frames, depths, id_buffers, model)
    return visible >= MIN_VISIBLE and share >= MIN_HIT


def _with(frame: Frame, **changes) -> Frame:
    fields = dict(number=frame.number, pose=frame.pose, intrinsics=frame.intrinsics,
                  image_size=frame.image_size, depth_scale=frame.depth_scale, source=frame.source)
    return Frame(**{**fields, **changes})


def test_projection_round_trip_and_each_wrong_convention_fails(written):
    root, model, truth = written
    scene = RScanReader(str(root)).load(SID)
    ids = _id_buffers(model, truth)
    depths = [f.read()[1] for f in scene.frames]
    visible, share = _hits(scene.frames, depths, ids, model)
    assert visible >= MIN_VISIBLE and share >= MIN_HIT, (visible, share)
    # measured: 3006 points, 0.972 on their object; the misses are vertices where an object meets the floor
    # or another object (within the 5 cm depth test, but the pixel is drawn as the other surface).
    # The wrong conventions below measure: 0 visible (inverted poses, depth / 4000), 168 at 0.21 (rotated),
    # 1367 at 0.84 (square pixels), 101 at 0.16 (roll ignored)

    # poses taken as world-to-camera (inverted once too often)
    inverted = [_with(f, pose=np.linalg.inv(f.pose)) for f in scene.frames]
    assert not _passes(inverted, depths, ids, model)
    # images turned upright (np.rot90(img, 3), as 3DSSG shows them) but the stored-orientation K kept
    rot = [_with(f, image_size=f.image_size[::-1]) for f in scene.frames]
    assert not _passes(rot, [np.rot90(d, 3) for d in depths], [np.rot90(i, 3) for i in ids], model)
    # depth divided by 4000 (Matterport's scale) instead of m_depthShift
    assert not _passes(scene.frames, [d * 1000 / 4000 for d in depths], ids, model)
    # square pixels assumed (fy := fx), i.e. the non-square depth intrinsics not used as they are
    square = []
    for f in scene.frames:
        k = f.intrinsics.copy()
        k[1, 1] = k[0, 0]
        square.append(_with(f, intrinsics=k))
    assert not _passes(square, depths, ids, model)
    # the camera roll ignored (poses of an upright camera with the stored images)
    upright = [_with(f, pose=p) for f, p in zip(scene.frames, model.poses)]
    assert not _passes(upright, depths, ids, model)


# ------------------------------------------------------------------ two layouts, one scene
def test_2d_features_agree_with_the_scannet_layout(written, tmp_path):
    root, model, _ = written
    gt = generate_scene(tmp_path, "scene0000_00", np.random.default_rng(SEED), num_frames=NUM_FRAMES,
                        image_size=SIZE, num_objects=NUM_OBJECTS)
    np.testing.assert_array_equal(gt["vertices_raw"], model.raw_vertices)  # one model, two layouts
    write_labels_tsv(tmp_path / "scannetv2-labels.combined.tsv")
    scannet = ScanNetReader(str(tmp_path), scenes=["scene0000_00"]).load("scene0000_00")
    rscan = RScanReader(str(root)).load(SID)
    for a, b in zip(scannet.instances, rscan.instances):
        np.testing.assert_array_equal(a.point_ids, b.point_ids)
    a, b = demo_2d(scannet, rscan)
    # the two sensors' fields of view differ (3RScan's depth camera: 64 x 39 degrees, rolled; ScanNet's
    # here: 58 x 45), so an object can be seen in other views; compare those seen in as many views in both
    both = a.features.keys() & b.features.keys()
    same = sorted(i for i in both if a.records[i]["views"] == b.records[i]["views"])
    assert len(same) >= 5
    fa = torch.nn.functional.normalize(torch.stack([a.features[i] for i in same]), dim=1)
    fb = torch.nn.functional.normalize(torch.stack([b.features[i] for i in same]), dim=1)
    sim = fa @ fb.T
    # measured: cosine 0.935 to 0.998 (mean 0.98) over 6 objects; the layouts differ by camera roll, pixel
    # aspect, resolution and JPEG resampling
    own = sim.diagonal()
    assert own.min() > 0.9, own
    # the tiny random encoder separates objects weakly (furniture pairs: cosine about 0.95, furniture
    # against the wall: about -0.4), so the check is against the mean over other pairs (measured 0.5)
    others = sim[~torch.eye(len(same), dtype=torch.bool)]
    assert own.mean() > others.mean() + 0.3, (own, others)


# ------------------------------------------------------------------ bad input
def _reader(root, **kwargs) -> RScanReader:
    return RScanReader(str(root), **kwargs)


def _raises(root, path: Path, match: str, load: bool = True):
    with pytest.raises(DataError, match=match) as e:
        _reader(root).check()
    assert e.value.path == path
    if load:
        with pytest.raises(DataError, match=match):
            _reader(root).load(SID)


@pytest.mark.parametrize("name", [OBJ_NAME, SEMSEG, f"sequence/{INFO}"])
def test_missing_file_is_named(copy, name):
    path = copy / SID / name
    path.unlink()
    _raises(copy, path, "not found")


def test_missing_texture_and_zipped_sequence_are_named(copy):
    (copy / SID / "mesh.refined_0.png").unlink()
    with pytest.raises(DataError, match="texture not found") as e:
        _reader(copy).load(SID)
    assert e.value.path == copy / SID / "mesh.refined_0.png"
    shutil.rmtree(copy / SID / "sequence")
    (copy / SID / "sequence.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    _raises(copy, copy / SID / "sequence.zip", "not unzipped", load=False)


def test_inconsistent_counts_are_named(copy):
    info = copy / SID / "sequence" / INFO
    info.write_text(info.read_text().replace(f"m_frames.size = {NUM_FRAMES}", "m_frames.size = 7"))
    _raises(copy, info, "m_frames.size = 7 but sequence/ has 3 pose files", load=False)
    info.write_text(info.read_text().replace("m_frames.size = 7", f"m_frames.size = {NUM_FRAMES}"))
    obj = copy / SID / OBJ_NAME
    obj.write_text(obj.read_text().replace("usemtl", "v 0 0 0\nusemtl"))
    _raises(copy, copy / SID / LABELS_PLY, r"vertices but mesh\.refined\.v2\.obj has")


def test_unreadable_pose_is_named_and_nan_pose_skipped(copy):
    seq = copy / SID / "sequence"
    (seq / pose_name(1)).write_text("1 0 0\n0 1")
    _raises(copy, seq / pose_name(1), "not a 4x4 matrix", load=False)
    with pytest.warns(UserWarning, match="not a 4x4 matrix: 1"):
        assert [f.number for f in _reader(copy).load(SID).frames] == [0, 2]
    (seq / pose_name(1)).write_text("nan " * 16)
    _reader(copy).check()
    with pytest.warns(UserWarning, match="non-finite pose: 1"):
        assert [f.number for f in _reader(copy).load(SID).frames] == [0, 2]


def test_missing_split_file_and_labels_of_another_scan(copy):
    (copy / "splits" / "val.txt").unlink()
    with pytest.raises(DataError, match="split file not found") as e:
        _reader(copy)
    assert e.value.path == copy / "splits" / "val.txt"
    ply = copy / SID / LABELS_PLY
    text = ply.read_text().split("end_header\n")
    rows = text[1].split("\n")
    rows[0] = "9 9 9" + rows[0][rows[0].index(" ", rows[0].index(" ", rows[0].index(" ") + 1) + 1):]
    ply.write_text(text[0] + "end_header\n" + "\n".join(rows))
    with pytest.raises(DataError, match="not mesh.refined.v2.obj's") as e:
        _reader(copy, scenes=[SID]).load(SID)
    assert e.value.path == ply
