"""The Matterport3D reader on synthetic houses written in Matterport's layout and conventions
(:mod:`featurizer.dataset.synthetic.layout_matterport`): contract, projection round trip (and its negative
under the dataset's traps), 2D features equal to the ScanNet layout's within a measured tolerance, bad
input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CONF, demo_2d
from featurizer.dataset.matterport import GL_TO_CV, MatterportReader, faces_to_vertices, read_house
from featurizer.dataset.render import render_mesh
from featurizer.dataset.scannet import ScanNetReader
from featurizer.dataset.synthetic.generate import generate_dataset
from featurizer.dataset.synthetic.layout_matterport import (generate_matterport, house_id_of, image_names,
                                                            next_room)
from featurizer.errors import DataError

W, H = 160, 120
SEED, FRAMES, OBJECTS = 4, 3, 4
SID = f"{house_id_of(0)}_region0"
SID1 = f"{house_id_of(0)}_region1"  # the room next door: one panorama of 3 images, after region 0's


@pytest.fixture(scope="module")
def mp_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("matterport")
    models = generate_matterport(root, 2, FRAMES, SEED, (W, H), OBJECTS, splits=["val", "train"])
    return root, models


@pytest.fixture
def copy(mp_root, tmp_path):
    dst = tmp_path / "mp"
    shutil.copytree(mp_root[0], dst)
    return dst


def _house(root: Path) -> Path:
    return root / house_id_of(0)


# ------------------------------------------------------------------ contract
def test_reader_loads_the_models_ground_truth(mp_root):
    import hydra
    from omegaconf import OmegaConf

    root, models = mp_root
    cfg = OmegaConf.load(CONF / "dataset" / "matterport.yaml")
    cfg.root, cfg.splits = str(root), ["train", "val"]
    reader = hydra.utils.instantiate(cfg)
    assert reader.name == "matterport"
    assert reader.scene_ids == [f"{house_id_of(1)}_region0", f"{house_id_of(1)}_region1", SID, SID1]
    assert reader.split_of(SID) == "val" and reader.split_of(reader.scene_ids[0]) == "train"
    model = models[0]
    truth = model.objects + model.structure
    assert reader.check_scene(SID) == len(model.raw_vertices)
    assert reader.gt_object_count(SID) == len(truth) == OBJECTS + 5
    scene = reader.load(SID)
    assert scene.notes == [] and scene.split == "val"
    np.testing.assert_array_equal(scene.points, model.raw_vertices)
    np.testing.assert_array_equal(scene.colors, model.colors)
    np.testing.assert_array_equal(scene.axis_align, np.eye(4))
    assert len(scene.instances) == len(truth)
    for inst, g in zip(scene.instances, truth):
        np.testing.assert_array_equal(inst.point_ids, g["point_ids"])
    assert [i.label for i in scene.instances][-5:] == ["wall"] * 4 + ["floor"]
    labels = {raw: i.label for i, raw in zip(scene.instances, [g["raw_label"] for g in truth])}
    assert labels.get("bookshelf", "shelving") == "shelving" and labels.get("couch", "sofa") == "sofa"
    assert [f.number for f in scene.frames] == list(range(FRAMES))
    for f, pose in zip(scene.frames, model.poses):
        assert f.image_size == (W, H) and f.depth_scale == 4000.0
        np.testing.assert_allclose(f.pose, pose, atol=1e-12)  # OpenGL c2w in the .conf -> OpenCV
        np.testing.assert_allclose(f.intrinsics, model.k_image, atol=1e-12)
    files = reader.input_files(SID)
    assert _house(root) / "undistorted_camera_parameters" / f"{house_id_of(0)}.conf" in files
    assert _house(root) / "house_segmentations" / f"{house_id_of(0)}.house" in files
    assert len(files) == 4 + 2 + 2 * (FRAMES + 3)  # the house's images: both regions'
    scene1 = reader.load(SID1)
    assert scene1.notes == [] and [f.number for f in scene1.frames] == [FRAMES, FRAMES + 1, FRAMES + 2]
    vertices1, poses1 = next_room(model)
    np.testing.assert_array_equal(scene1.points, vertices1)
    for f, pose in zip(scene1.frames, poses1):
        np.testing.assert_allclose(f.pose, pose, atol=1e-12)


def test_the_config_option_provides_the_contract(mp_root):
    from hydra.utils import instantiate

    from test_config import _compose

    root, _ = mp_root
    cfg = _compose(["dataset=matterport", f"dataset.root={root}"])
    reader = instantiate(cfg.dataset)
    reader.prepare()
    reader.check()
    scene = reader.load(SID)
    assert reader.check_scene(SID) == len(scene.points) and scene.split == reader.split_of(SID) == "val"
    assert all(p.is_file() for p in reader.input_files(SID, frames=True))
    assert set(reader.input_files(SID, frames=False)) < set(reader.input_files(SID, frames=True))
    assert reader.scene_cost(SID) == len(scene.points) / 1000.0 + (FRAMES + 3) // 2  # scans / regions


def test_face_labels_move_to_vertices_by_majority_with_documented_ties():
    faces = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 4], [1, 2, 5], [2, 5, 6]])
    labels = np.array([2, 2, 1, -1, 1])
    # v0: 2,2,1 -> 2; v1: 2,-1 -> 2 (a label beats unannotated); v2: 2,2,-1,1 -> 2;
    # v3: 2,1 -> 1 (tie: lowest); v4: 1; v5: -1,1 -> 1; v6: 1; v7: in no face -> -1
    np.testing.assert_array_equal(faces_to_vertices(faces, labels, 8), [2, 2, 2, 1, 1, 1, 1, -1])
    np.testing.assert_array_equal(faces_to_vertices(faces, np.full(5, -1), 7), np.full(7, -1))


# ------------------------------------------------------------------ projection round trip
def _id_buffer(model, pose, vertices=None) -> np.ndarray:
    """(H, W) ground-truth group index the generator drew at each pixel (-1: nothing), from its own pose
    (of region 0's mesh, or of the region at ``vertices``)."""
    ids = np.full(len(model.raw_vertices), 255)
    for i, g in enumerate(model.objects + model.structure):
        ids[g["point_ids"]] = i
    colors = np.stack([ids, np.zeros_like(ids), np.zeros_like(ids)], axis=1).astype(np.uint8)
    vertices = model.raw_vertices if vertices is None else vertices
    color, depth = render_mesh(vertices, model.faces, colors, pose, model.k_image, W, H)
    return np.where(depth > 0, color[..., 0].astype(int), -1)


def _round_trip(scene, model, pose_of=lambda f: f.pose, depth_factor=1.0, region=None) -> tuple[int, float]:
    """Points of every instance projected through the reader's pose, K and depth (kept where the depth
    agrees within 5%): (how many, the fraction landing on pixels the generator drew for that instance).
    region: ``next_room(model)`` for region 1 (default region 0: the model)."""
    seen = hit = 0
    vertices, poses = region if region is not None else (model.raw_vertices, model.poses)
    assert len(scene.frames) == len(poses)
    for frame, true_pose in zip(scene.frames, poses):
        ids = _id_buffer(model, true_pose, vertices)
        _, depth = frame.read()
        depth = depth * depth_factor
        w2c = np.linalg.inv(pose_of(frame))
        for i, inst in enumerate(scene.instances):
            p = scene.points[inst.point_ids].astype(np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
            z = p[:, 2]
            front = z > 0.05
            k = frame.intrinsics
            u = np.rint(k[0, 0] * p[front, 0] / z[front] + k[0, 2]).astype(int)
            v = np.rint(k[1, 1] * p[front, 1] / z[front] + k[1, 2]).astype(int)
            inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
            u, v, zz = u[inside], v[inside], z[front][inside]
            d = depth[v, u]
            ok = (d > 0) & (np.abs(d - zz) <= 0.05 * d)
            seen += int(ok.sum())
            hit += int((ids[v[ok], u[ok]] == i).sum())
    return seen, hit / max(seen, 1)


def _passes(seen: int, fraction: float) -> bool:
    return seen >= 500 and fraction >= 0.95


def test_projection_round_trip_and_the_traps_fail_it(mp_root):
    root, models = mp_root
    scene, model = MatterportReader(str(root)).load(SID), models[0]
    seen, fraction = _round_trip(scene, model)
    assert _passes(seen, fraction), (seen, fraction)
    traps = {
        "OpenGL axes kept": dict(pose_of=lambda f: f.pose @ GL_TO_CV),
        "pose not inverted": dict(pose_of=lambda f: np.linalg.inv(f.pose)),
        "depth / 1000": dict(depth_factor=4.0),
    }
    for name, kwargs in traps.items():
        assert not _passes(*_round_trip(scene, model, **kwargs)), name
    scene1 = MatterportReader(str(root)).load(SID1)  # the room next door, its frames by the .house
    assert _passes(*_round_trip(scene1, model, region=next_room(model)))


# ------------------------------------------------------------------ a region's frames: .house vs the margin
def test_the_house_file_assigns_frames_where_the_margin_heuristic_is_wrong(copy):
    """Region 1's panorama stands 0.3 m behind the wall it shares with region 0: within frame_margin of
    region 0's box. The .house file puts it in region 1; the heuristic (no .house) gives it to both."""
    region_of = read_house(_house(copy) / "house_segmentations" / f"{house_id_of(0)}.house")
    assert region_of == {image_names(n)[0]: 0 for n in range(FRAMES)} | \
        {image_names(0, 1, cam)[0]: 1 for cam in range(3)}
    reader = MatterportReader(str(copy))
    own = {SID: list(range(FRAMES)), SID1: [FRAMES, FRAMES + 1, FRAMES + 2]}
    for sid, numbers in own.items():
        assert [f.number for f in reader.load(sid).frames] == numbers
    (_house(copy) / "house_segmentations" / f"{house_id_of(0)}.house").unlink()
    with pytest.warns(UserWarning, match="a heuristic"):
        margin = {sid: [f.number for f in reader.load(sid).frames] for sid in own}
    assert set(own[SID1]) <= set(margin[SID])  # region 1's whole panorama taken by region 0
    for sid, numbers in own.items():
        assert margin[sid] != numbers and set(numbers) <= set(margin[sid]), (sid, margin)


# ------------------------------------------------------------------ two layouts, one scene
def test_2d_features_equal_the_scannet_layouts(mp_root, tmp_path):
    root, _ = mp_root
    generate_dataset(tmp_path, num_scenes=1, frames_per_scene=FRAMES, seed=SEED, image_size=(W, H),
                     num_objects=OBJECTS, split="val")
    scannet = ScanNetReader(str(tmp_path)).load("scene0000_00")
    matterport = MatterportReader(str(root)).load(SID)
    np.testing.assert_array_equal(scannet.points, matterport.points)
    for a, b in zip(scannet.instances, matterport.instances):
        np.testing.assert_array_equal(a.point_ids, b.point_ids)
    a, b = demo_2d(scannet, matterport)
    assert len(a.features) >= 6 and a.features.keys() == b.features.keys()
    # colour is the same JPEG; the layouts differ in depth quantisation (1 mm vs 0.25 mm) and pose text
    # digits (9 vs 17), so a few points at the depth test's edge differ: measured max |a - b| / |a| = 2.3e-3
    # (mask_pool, 9 instances, 6 equal bit for bit) and at most 2 visible points of ~1000
    worst = max(float((a.features[i] - b.features[i]).norm() / a.features[i].norm()) for i in a.features)
    assert worst <= 5e-3, worst
    for i in a.records:
        assert abs(a.records[i]["visible_points"] - b.records[i]["visible_points"]) <= \
            max(2, 0.01 * a.records[i]["visible_points"]), i
    assert all(torch.isfinite(f).all() for f in b.features.values())


# ------------------------------------------------------------------ bad input
def _conf(root: Path) -> Path:
    return _house(root) / "undistorted_camera_parameters" / f"{house_id_of(0)}.conf"


def _expect(root: Path, path: Path, words: str) -> None:
    reader = MatterportReader(str(root))
    with pytest.raises(DataError) as e:
        reader.check_scene(SID)
    assert e.value.path == path and words in e.value.problem, str(e.value)
    with pytest.raises(DataError) as e:
        reader.load(SID)
    assert e.value.path == path, str(e.value)


def test_missing_files_name_the_file(copy):
    conf = _conf(copy)
    conf.unlink()
    _expect(copy, conf, "not found")


def test_missing_image_is_named_by_check_and_skipped_with_a_note_by_load(copy):
    depth_name, _ = image_names(1)
    path = _house(copy) / "undistorted_depth_images" / depth_name
    path.unlink()
    reader = MatterportReader(str(copy))
    with pytest.raises(DataError) as e:
        reader.check_scene(SID)
    assert e.value.path == path and f"1 of the {FRAMES + 3} images" in e.value.problem
    with pytest.warns(UserWarning, match="missing image: 1"):
        scene = reader.load(SID)
    assert [f.number for f in scene.frames] == [0, 2]


def test_only_one_of_fsegs_and_semseg_names_the_missing_one(copy):
    path = _house(copy) / "region_segmentations" / "region0.fsegs.json"
    path.unlink()
    _expect(copy, path, "ground truth needs both")


def test_inconsistent_counts_name_the_file(copy):
    fsegs = _house(copy) / "region_segmentations" / "region0.fsegs.json"
    fsegs.write_text(fsegs.read_text().replace("[", "[7, ", 1))
    _expect(copy, fsegs, "faces")


def test_n_images_disagreeing_with_the_scan_lines_names_the_conf(copy):
    conf = _conf(copy)
    conf.write_text(conf.read_text().replace(f"n_images {FRAMES + 3}", f"n_images {FRAMES + 4}"))
    _expect(copy, conf, "scan lines")


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_unreadable_pose_names_the_conf_and_line(copy, damage):
    conf = _conf(copy)
    lines = conf.read_text().splitlines()
    n = next(i for i, line in enumerate(lines) if line.startswith("scan "))
    words = lines[n].split()
    lines[n] = " ".join(words[:-1] if damage == "truncate" else words[:-1] + ["1.0x"])
    conf.write_text("\n".join(lines) + "\n")
    _expect(copy, conf, f"line {n + 1}")


def test_semseg_segment_absent_from_fsegs_names_the_semseg(copy):
    import json

    path = _house(copy) / "region_segmentations" / "region0.semseg.json"
    data = json.loads(path.read_text())
    data["segGroups"][0]["segments"].append(10**9)
    path.write_text(json.dumps(data))
    _expect(copy, path, "absent from region0.fsegs.json")


def _house_file(root: Path) -> Path:
    return _house(root) / "house_segmentations" / f"{house_id_of(0)}.house"


@pytest.mark.parametrize("damage, words", [
    ("unknown panorama", "is of panorama 7, but the file has 2 panorama line(s) before it"),
    ("truncated image line", "a 'I' line has 41 fields, this one 40"),
    ("region out of range", "is in region 5, but the H line counts 2 regions"),
    ("non-integer index", "non-integer count or index"),
    ("image count", "the H line counts 7 images, the file has 6"),
])
def test_bad_house_file_names_the_file_and_line(copy, damage, words):
    path = _house_file(copy)
    lines = path.read_text().splitlines()
    n = next(i for i, line in enumerate(lines) if line.startswith("I "))
    p = next(i for i, line in enumerate(lines) if line.startswith("P  0000"))  # the first panorama line
    w = lines[n].split()
    if damage == "unknown panorama":
        lines[n] = " ".join(w[:2] + ["7"] + w[3:])
    elif damage == "truncated image line":
        lines[n] = " ".join(w[:-1])
    elif damage == "region out of range":
        n = p
        w = lines[p].split()
        lines[p] = " ".join(w[:3] + ["5"] + w[4:])
    elif damage == "non-integer index":
        lines[n] = " ".join(w[:4] + ["one"] + w[5:])
    else:
        h = next(i for i, line in enumerate(lines) if line.startswith("H "))
        w = lines[h].split()
        lines[h] = " ".join(w[:3] + ["7"] + w[4:])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        read_house(path)
    assert e.value.path == path and words in e.value.problem, str(e.value)
    assert damage == "image count" or e.value.problem.startswith(f"line {n + 1}: "), str(e.value)
    _expect(copy, path, words)  # check_scene and load name it too
