"""The ScanNet++ reader on synthetic scenes written in the ScanNet++ layout (:mod:`layout_scannetpp`):
the contract, a projection round trip (and its negatives: the dataset's traps), the 2D features of the
same scene in the ScanNet layout, undistorted DSLR frames (round trip, traps, features against the iPhone
frames), the benchmark's labels, and bad input."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import featurizer.dataset.scannetpp as spp
from conftest import demo_2d
from featurizer.dataset.render import render_mesh
from featurizer.dataset.scannetpp import ScanNetPPReader
from featurizer.dataset.frames import read_frame_checked
from featurizer.dataset.nerfstudio import opengl_to_opencv
from featurizer.dataset.synthetic.layout_scannetpp import (DSLR_DEPTH_SIZE, OVERLAP_LABEL,
                                                           rotation_quaternion, write_scene, write_splits)
from featurizer.dataset.synthetic.scene import make_scene
from featurizer.errors import ConfigError, DataError
from featurizer.geometry.mapping import VoxelCuller

SID = "scene0000_00"
SEED, FRAMES, OBJECTS = 5, 3, 6
DEPTH, COLOR = (256, 192), (640, 480)  # the iPhone's native depth size; colour resized to it
# the 2D features of the two layouts agree within this cosine (measured: min 0.986, mean 0.998 over the
# instances; the colour is rendered at 640x480 and resized to 256x192 in one layout, drawn at 256x192
# in the other)
FEATURE_COS = 0.975
# the 2D features of the DSLR and iPhone frames of one scene: other views (turned up 10 degrees, a wider
# camera, 192x128 against 256x192), so a looser bound (measured: min 0.812, mean 0.928 over the objects;
# with the nerfstudio transform_matrix as the DSLR pose: at most 0.34)
DSLR_FEATURE_COS = 0.75


def _model():
    """The model ``generate_dataset(root, 1, FRAMES, SEED, image_size=DEPTH, num_objects=OBJECTS)`` writes."""
    return make_scene(np.random.default_rng([SEED, 0]), FRAMES, DEPTH, DEPTH, OBJECTS, 1000, False)


@pytest.fixture(scope="module")
def spp_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("scannetpp")
    model = _model()
    truth = write_scene(root, SID, model, DEPTH, COLOR, render_depth=True, dslr=True, benchmark=True)
    write_splits(root, {"val": [SID], "train": ["scene_other"]})
    return root, model, truth


@pytest.fixture
def copy(spp_root, tmp_path):
    root, model, truth = spp_root
    shutil.copytree(root, tmp_path / "root")
    return tmp_path / "root", tmp_path / "root" / "data" / SID


# ------------------------------------------------------------------ contract
def test_reader_loads_the_model_with_its_overlapping_instances(spp_root):
    root, model, truth = spp_root
    reader = ScanNetPPReader(str(root))
    assert reader.scene_ids == [SID] and reader.name == "scannetpp"
    reader.check()
    assert reader.check_scene(SID) == len(model.colors)
    scene = reader.load(SID)
    assert scene.notes == [] and scene.split == "val"
    np.testing.assert_array_equal(scene.axis_align, np.eye(4))  # the mesh is already aligned
    np.testing.assert_array_equal(scene.points, truth["vertices"])
    np.testing.assert_allclose(scene.points, model.vertices_aligned, atol=1e-5)
    np.testing.assert_array_equal(scene.colors, model.colors)
    groups = truth["groups"]
    assert reader.gt_object_count(SID) == len(groups) == len(model.objects) + len(model.structure) + 1
    assert [i.label for i in scene.instances] == [g["raw_label"] for g in groups]
    assert [i.gt_object_id for i in scene.instances] == list(range(len(groups)))
    for inst, g in zip(scene.instances, groups):
        np.testing.assert_array_equal(inst.point_ids, g["point_ids"])
    for inst, obj in zip(scene.instances, model.objects):  # the model's objects, as point sets
        np.testing.assert_array_equal(inst.point_ids, obj["point_ids"])
    # the overlapping group keeps all its vertices: those of objects 0 and 1
    overlap = scene.instances[-1]
    assert overlap.label == OVERLAP_LABEL
    assert set(overlap.point_ids) == set(scene.instances[0].point_ids) | set(scene.instances[1].point_ids)
    # posed frames only (frame 1 has images but no COLMAP pose), prefixes iphone/ and video/ stripped
    assert [f.number for f in scene.frames] == model.frame_ids == [0, 20, 40]
    for frame, pose in zip(scene.frames, truth["poses"]):
        assert frame.image_size == DEPTH and frame.depth_scale == 1000.0
        np.testing.assert_allclose(frame.pose, pose, atol=1e-12)
        np.testing.assert_allclose(frame.intrinsics, model.k_image, atol=1e-9)
        color, depth = frame.read()
        assert color.shape == (DEPTH[1], DEPTH[0], 3) and depth.dtype == np.float32
    assert {p.name for p in reader.input_files(SID, frames=False)} == {
        "mesh_aligned_0.05.ply", "segments.json", "segments_anno.json"}
    assert len(reader.input_files(SID)) == 5 + 2 * (FRAMES + 1)
    assert len(ScanNetPPReader(str(root), frames="none").load(SID).frames) == 0
    # split files: train/val/test are ScanNet++'s nvs_sem_train / nvs_sem_val / sem_test
    both = ScanNetPPReader(str(root), splits=["train", "val"])
    assert both.scene_ids == ["scene_other", SID] and both.split_of(SID) == "val"
    assert (root / "splits" / "nvs_sem_val.txt").is_file()


def test_quaternions_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(200):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        q *= np.sign(np.linalg.det(q))
        np.testing.assert_allclose(spp.quaternion_matrix(rotation_quaternion(q)), q, atol=1e-12)


# ------------------------------------------------------------------ projection round trip
def _object_hits(scene, model, truth, k_true, size, poses=None) -> tuple[int, float]:
    """Points of the model's objects mapped (through the reader's poses, intrinsics and depth) onto
    pixels: how many, and the fraction that land where the generator drew that same object (an id
    buffer rendered from the generator's own camera), within one pixel (silhouette vertices round
    either way). poses: the generator's camera-to-world of the frames (default: the iPhone's)."""
    n_obj = len(model.objects)
    obj_of = np.full(len(model.colors), -1)
    for j, obj in enumerate(model.objects):
        obj_of[obj["point_ids"]] = j
    ids = np.zeros((len(obj_of), 3), np.uint8)
    ids[:, 0] = obj_of + 1  # 0: walls and floor
    assert n_obj < 255
    culler = VoxelCuller(torch.from_numpy(scene.points.astype(np.float64)), backend="torch")
    total, good = 0, 0
    for frame, pose in zip(scene.frames, truth["poses"] if poses is None else poses, strict=True):
        mask, _ = render_mesh(truth["vertices"], model.faces, ids, pose, k_true, *size)
        _, depth = frame.read()
        m = culler.project(frame.pose[None], frame.intrinsics[None], torch.from_numpy(depth)[None],
                           border=0, backend="torch")
        pid, u, v = m.point_ids.numpy(), m.u.numpy(), m.v.numpy()
        keep = obj_of[pid] >= 0
        padded = np.pad(mask[:, :, 0].astype(int) - 1, 1, constant_values=-2)
        want, vk, uk = obj_of[pid[keep]], v[keep] + 1, u[keep] + 1
        near = np.zeros(len(want), bool)
        for dv in (-1, 0, 1):
            for du in (-1, 0, 1):
                near |= padded[vk + dv, uk + du] == want
        total += int(keep.sum())
        good += int(near.sum())
    return total, good / max(total, 1)


def _passes(hits) -> bool:
    total, rate = hits
    print(f"projection round trip: {total} object points mapped, {rate:.4f} where drawn")
    return total > 300 and rate > 0.97


@pytest.mark.parametrize("frames", ["iphone", "render"])
def test_objects_project_where_the_generator_drew_them(spp_root, frames):
    root, model, truth = spp_root
    scene = ScanNetPPReader(str(root), frames=frames).load(SID)
    k_true, size = (model.k_image, DEPTH) if frames == "iphone" else (truth["k_color"], COLOR)
    assert scene.frames[0].image_size == size
    hits = _object_hits(scene, model, truth, k_true, size)
    assert _passes(hits), hits


def test_wrong_conventions_fail_the_round_trip(spp_root, monkeypatch):
    root, model, truth = spp_root
    check = lambda scene: _object_hits(scene, model, truth, model.k_image, DEPTH)  # noqa: E731
    # the colour-size intrinsics used on the depth-size images (not rescaled)
    scene = ScanNetPPReader(str(root)).load(SID)
    for f in scene.frames:
        f.intrinsics = truth["k_color"]
    assert not _passes(check(scene))
    # depth read as metres instead of millimetres
    scene = ScanNetPPReader(str(root)).load(SID)
    for f in scene.frames:
        f.depth_scale = 1.0
    assert not _passes(check(scene))
    # COLMAP's world-to-camera used as camera-to-world (not inverted)
    right = spp.colmap_pose
    monkeypatch.setattr(spp, "colmap_pose", lambda q, t: np.linalg.inv(right(q, t)))
    assert not _passes(check(ScanNetPPReader(str(root)).load(SID)))


# ------------------------------------------------------------------ the same scene in the ScanNet layout
def test_2d_features_agree_with_the_scannet_layout(spp_root, tmp_path):
    from featurizer.dataset.scannet import ScanNetReader
    from featurizer.dataset.synthetic.generate import generate_dataset

    root, model, _ = spp_root
    gt = generate_dataset(tmp_path, 1, FRAMES, SEED, split="val", image_size=DEPTH, num_objects=OBJECTS)[0]
    np.testing.assert_array_equal(gt["seg_indices"], model.seg)  # the same model
    scannet, scannetpp = demo_2d(ScanNetReader(str(tmp_path)).load(SID), ScanNetPPReader(str(root)).load(SID))
    common = [i for i in scannet.features if i < len(gt["objects"]) + len(gt["structure"])]
    assert len(common) >= OBJECTS and set(common) <= set(scannetpp.features)
    cos = [float(torch.nn.functional.cosine_similarity(scannet.features[i], scannetpp.features[i], dim=0))
           for i in common]
    print(f"2D features, ScanNet vs ScanNet++ layout: min cosine {min(cos):.4f}, mean {np.mean(cos):.4f}")
    assert min(cos) > FEATURE_COS


# ------------------------------------------------------------------ bad input
def _fails(root: Path, path: Path, match: str) -> None:
    reader = ScanNetPPReader(str(root))
    for call in (reader.check, lambda: reader.load(SID)):
        with pytest.raises(DataError, match=match) as e:
            call()
        assert e.value.path == path


def test_missing_segments_is_named(copy):
    root, d = copy
    (d / "scans" / "segments.json").unlink()
    _fails(root, d / "scans" / "segments.json", "not found, but segments_anno.json is")


def test_missing_cameras_is_named(copy):
    root, d = copy
    (d / "iphone" / "colmap" / "cameras.txt").unlink()
    _fails(root, d / "iphone" / "colmap" / "cameras.txt", "COLMAP cameras file not found")


def test_segment_count_not_the_vertex_count_is_named(copy):
    import json

    root, d = copy
    path = d / "scans" / "segments.json"
    segs = json.loads(path.read_text())
    segs["segIndices"] = segs["segIndices"][:-3]
    path.write_text(json.dumps(segs))
    _fails(root, path, r"segIndices has \d+ entries but scans/mesh_aligned_0.05.ply has \d+ vertices")


def test_unreadable_pose_is_named(copy):
    root, d = copy
    path = d / "iphone" / "colmap" / "images.txt"
    lines = path.read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if not line.startswith("#"))
    lines[i] = lines[i].replace(lines[i].split()[2], "0.7x", 1)
    path.write_text("\n".join(lines) + "\n")
    _fails(root, path, r"line \d+: .*unreadable pose")


def test_fisheye_camera_and_missing_segment_are_named(copy):
    import json

    root, d = copy
    anno = d / "scans" / "segments_anno.json"
    text = anno.read_text()
    data = json.loads(text)
    data["segGroups"][2]["segments"].append(10**9)
    anno.write_text(json.dumps(data))
    _fails(root, anno, r"segGroups\[2\] .* absent from segments.json: 1000000000")
    anno.write_text(text)
    cams = d / "iphone" / "colmap" / "cameras.txt"
    cams.write_text("1 OPENCV_FISHEYE 1752 1168 900 900 876 584 0.1 0 0 0\n")
    with pytest.raises(DataError, match="OPENCV_FISHEYE is not a pinhole model") as e:
        ScanNetPPReader(str(root), frames="iphone").load(SID)
    assert e.value.path == cams


# ------------------------------------------------------------------ DSLR frames (undistorted only)
def _depth_agrees(scene, model, truth) -> bool:
    """Every DSLR frame's depth equals the depth the generator rendered from its own camera (within the
    millimetre rounding), 0 exactly where the ray hit nothing (stored as 65535)."""
    dslr = truth["dslr"]
    for frame, pose in zip(scene.frames, dslr["poses"], strict=True):
        _, want = render_mesh(truth["vertices"], model.faces, model.colors, pose, dslr["k_depth"],
                              *DSLR_DEPTH_SIZE)
        _, depth = frame.read()
        if not (np.array_equal(depth == 0, want <= 0) and np.allclose(depth, want, atol=6e-4)):
            return False
    return True


def _transform_matrix_posed(root, truth):
    """The DSLR frames posed by their ``transforms_undistorted.json`` transform_matrix, OpenGL camera axes
    converted (what a plain nerfstudio reader would do); checks that undoing the world swap as
    ``reference/datasets.md`` says (negate row 2, swap rows 0 and 1) gives the COLMAP pose."""
    meta = json.loads((truth["scene_dir"] / spp.DSLR_TRANSFORMS).read_text())
    matrices = {int(f["file_path"][3:8]): np.array(f["transform_matrix"]) for f in meta["frames"]}
    scene = ScanNetPPReader(str(root), frames="dslr").load(SID)
    for frame in scene.frames:
        m = matrices[frame.number].copy()
        m[2] *= -1
        np.testing.assert_allclose(opengl_to_opencv(m[[1, 0, 2, 3]]), frame.pose, atol=1e-9)
        frame.pose = opengl_to_opencv(matrices[frame.number])
    return scene


def test_dslr_frames_are_read_undistorted_with_colmap_poses(spp_root):
    root, model, truth = spp_root
    dslr = truth["dslr"]
    reader = ScanNetPPReader(str(root), frames="dslr")
    reader.check()
    scene = reader.load(SID)
    assert [f.number for f in scene.frames] == dslr["numbers"] == [1000, 1001, 1002]
    assert len(scene.notes) == 2  # a posed image without depth, a depth image without pose: skipped
    assert f"without a colour or depth image: {dslr['no_depth']}" in scene.notes[0]
    assert f"without a COLMAP pose in dslr/colmap/images.txt: {dslr['no_pose']}" in scene.notes[1]
    width, height = DSLR_DEPTH_SIZE
    for frame, pose in zip(scene.frames, dslr["poses"]):
        assert frame.image_size == DSLR_DEPTH_SIZE and frame.depth_scale == 1000.0
        np.testing.assert_allclose(frame.pose, pose, atol=1e-9)
        np.testing.assert_allclose(frame.intrinsics, dslr["k_depth"], atol=1e-9)
        # the undistortion's principal point W/2, H/2 (+0.5 pixel centres) is the image centre here
        assert (frame.intrinsics[0, 2], frame.intrinsics[1, 2]) == (width / 2 - 0.5, height / 2 - 0.5)
        color, depth = frame.read()
        assert color.shape == (height, width, 3) and depth.shape == (height, width)
        assert (depth == 0).mean() > 0.1  # the misses (65535 on disk) read as invalid
        checked = read_frame_checked(pickle.loads(pickle.dumps(frame)))  # as a DataLoader worker reads it
        assert checked[2] is None
        np.testing.assert_array_equal(checked[0], color)
        np.testing.assert_array_equal(checked[1], depth)
    assert _depth_agrees(scene, model, truth)
    assert len(reader.input_files(SID)) == 5 + 4 + 4  # mesh, segments, anno, intrinsics, poses; 4 + 4 images


def test_dslr_objects_project_where_the_generator_drew_them(spp_root):
    root, model, truth = spp_root
    scene = ScanNetPPReader(str(root), frames="dslr").load(SID)
    dslr = truth["dslr"]
    hits = _object_hits(scene, model, truth, dslr["k_depth"], DSLR_DEPTH_SIZE, dslr["poses"])
    assert _passes(hits), hits


def test_dslr_wrong_conventions_fail(spp_root, monkeypatch):
    root, model, truth = spp_root
    dslr = truth["dslr"]
    check = lambda scene: _object_hits(scene, model, truth, dslr["k_depth"], DSLR_DEPTH_SIZE,  # noqa: E731
                                       dslr["poses"])
    # the nerfstudio transform_matrix (OpenGL axes converted) used as the pose: another world frame
    assert not _passes(check(_transform_matrix_posed(root, truth)))
    # the colour-size intrinsics on the depth-size images (not rescaled)
    scene = ScanNetPPReader(str(root), frames="dslr").load(SID)
    for f in scene.frames:
        f.intrinsics = dslr["k_color"]
    assert not _passes(check(scene))
    # 65535 (a miss) read as a depth of 65.535 m
    monkeypatch.setattr(spp, "DSLR_INVALID", (0,))
    assert not _depth_agrees(ScanNetPPReader(str(root), frames="dslr").load(SID), model, truth)


def test_2d_features_of_dslr_and_iphone_frames_agree(spp_root):
    root, model, truth = spp_root
    scenes = [ScanNetPPReader(str(root), frames=f).load(SID) for f in ("iphone", "dslr")]
    scenes.append(_transform_matrix_posed(root, truth))
    iphone, dslr, wrong = (result.features for result in demo_2d(*scenes))
    common = [i for i in range(len(model.objects)) if i in iphone and i in dslr]
    assert len(common) >= OBJECTS - 1

    def cos(other, ids):
        return [float(torch.nn.functional.cosine_similarity(iphone[i], other[i], dim=0)) for i in ids]

    right = cos(dslr, common)
    print(f"2D features, iPhone vs DSLR frames: min cosine {min(right):.4f}, mean {np.mean(right):.4f}")
    assert min(right) > DSLR_FEATURE_COS
    bad = cos(wrong, [i for i in common if i in wrong])
    print(f"2D features, iPhone vs DSLR posed by transform_matrix: max cosine {max(bad):.4f}")
    assert bad and max(bad) < DSLR_FEATURE_COS


def test_fisheye_dslr_images_are_refused(copy):
    root, d = copy
    with pytest.raises(ConfigError, match="fisheye") as e:
        ScanNetPPReader(str(root), frames="dslr", dslr_images="dslr/resized_images")
    assert e.value.option == "dataset.dslr_images"
    path = d / spp.DSLR_TRANSFORMS
    meta = json.loads(path.read_text())
    path.write_text(json.dumps(dict(meta, camera_model="OPENCV_FISHEYE", k1=0.05)))
    reader = ScanNetPPReader(str(root), frames="dslr")
    with pytest.raises(DataError, match="OPENCV_FISHEYE .* undistorted only") as e:
        reader.check()
    assert e.value.path == path


def test_missing_dslr_depth_is_named(copy):
    root, d = copy
    shutil.rmtree(d / "dslr" / "render_depth")
    reader = ScanNetPPReader(str(root), frames="dslr")
    with pytest.raises(DataError, match="rendered DSLR depth folder not found") as e:
        reader.check()
    assert e.value.path == d / "dslr" / "render_depth"
    ScanNetPPReader(str(root)).check()  # the iPhone frames need no DSLR depth


# ------------------------------------------------------------------ the benchmark's labels
def test_benchmark_labels_map_and_filter_the_instances(spp_root):
    root, model, truth = spp_root
    reader = ScanNetPPReader(str(root), labels="benchmark")
    reader.check()
    scene = reader.load(SID)
    kept = truth["benchmark"]  # furniture only: walls, floor (not benchmark classes) and the "None" group go
    assert [(i.gt_object_id, i.label) for i in scene.instances] == kept
    assert "cabinet" in [label for _, label in kept]  # "kitchen cabinet" mapped through instance_map_to
    assert reader.gt_object_count(SID) == len(kept) == len(model.objects)
    for inst, (index, _) in zip(scene.instances, kept):
        np.testing.assert_array_equal(inst.point_ids, truth["groups"][index]["point_ids"])
    raw = ScanNetPPReader(str(root)).load(SID)
    assert len(raw.instances) == len(truth["groups"]) > len(kept)
    with pytest.raises(ConfigError, match="unknown mode 'nyu40'"):
        ScanNetPPReader(str(root), labels="nyu40")


def test_missing_benchmark_metadata_is_named_at_check(copy):
    root, d = copy
    path = root / spp.BENCHMARK_MAP
    path.unlink()
    ScanNetPPReader(str(root)).check()  # raw labels need no metadata
    with pytest.raises(DataError, match="not found") as e:
        ScanNetPPReader(str(root), labels="benchmark").check()
    assert e.value.path == path


# ------------------------------------------------------------------ raw iPhone data
def test_unextracted_iphone_data_names_the_toolkit_command(copy):
    root, d = copy
    shutil.rmtree(d / "iphone" / "rgb")
    (d / "iphone" / "rgb.mkv").write_bytes(b"\x1aE\xdf\xa3")  # the video the toolkit extracts frames from
    with pytest.raises(DataError, match=r"but iphone/rgb.mkv is: .*python -m iphone.prepare_iphone_data") \
            as e:
        ScanNetPPReader(str(root)).check()
    assert e.value.path == d / "iphone" / "rgb"


def _lz4_literal_block(data: bytes) -> bytes:
    """An lz4 block holding ``data`` as one literal run (valid: a block's last sequence is literals only)."""
    n = len(data) - 15
    return bytes([0xF0]) + b"\xff" * (n // 255) + bytes([n % 255]) + data


def test_depth_bin_is_decoded_in_its_zlib_forms_and_the_lz4_form_is_named(copy, spp_root):
    """Without iphone/depth/, the frames' depth comes from iphone/depth.bin: its two zlib forms (float32
    metres: one stream, or per-frame blocks) decoded as the toolkit's extractor decodes them; its lz4 form
    is named, with what decoding it needs."""
    import zlib

    _, model, truth = spp_root
    root, d = copy
    extracted = ScanNetPPReader(str(root)).load(SID)
    pngs = {f.number: np.asarray(Image.open(f.depth_path)) for f in extracted.frames}
    wanted = [f.read() for f in extracted.frames]
    shutil.rmtree(d / "iphone" / "depth")
    path = d / "iphone" / "depth.bin"
    metres = np.zeros((max(pngs) + 5, DEPTH[1], DEPTH[0]), np.float32)  # every frame of the video
    for k, mm in pngs.items():
        metres[k] = mm / np.float32(1000.0)
    deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    blocks = []
    for frame in metres:
        one = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        block = one.compress(frame.tobytes()) + one.flush()
        blocks.append(len(block).to_bytes(4, "little") + block)
    for data in (deflate.compress(metres.tobytes()) + deflate.flush(), b"".join(blocks)):
        path.write_bytes(data)
        reader = ScanNetPPReader(str(root))
        reader.check()
        assert path in reader.input_files(SID)
        scene = reader.load(SID)
        assert [f.number for f in scene.frames] == [f.number for f in extracted.frames]
        for frame, done, (want_color, want_depth) in zip(scene.frames, extracted.frames, wanted):
            assert frame.image_size == done.image_size
            np.testing.assert_array_equal(frame.intrinsics, done.intrinsics)
            color, depth = read_frame_checked(pickle.loads(pickle.dumps(frame)))[:2]
            np.testing.assert_array_equal(color, want_color)
            np.testing.assert_allclose(depth, want_depth, atol=1.01e-3)  # the extractor truncates to mm
        assert _passes(_object_hits(scene, model, truth, model.k_image, DEPTH))
    block = _lz4_literal_block(np.full((192, 256), 1500, np.uint16).tobytes())  # the newer per-frame form
    path.write_bytes(b"".join(len(block).to_bytes(4, "little") + block for _ in range(2)))
    with pytest.raises(DataError, match=r"but iphone/depth.bin is \(per-frame lz4 blocks of uint16 mm: "
                                        r"decoding them needs the lz4 package.*prepare_iphone_data") as e:
        ScanNetPPReader(str(root)).check()
    assert e.value.path == d / "iphone" / "depth"
