"""Real-data ingestion: ``.sens`` frames in the ScanNet reader, the test split, and real-data defects.

Every defect of the issue's part 4 is exercised here, except "a mask file with the wrong number of
lines", which is tested in tests/test_segmenters.py::test_mask3d_wrong_line_count_names_mask_file.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from featurizer.dataset.frames import (
    DEPTH_ZERO,
    MISSING,
    REASONS,
    SIZE_MISMATCH,
    UNREADABLE,
    describe_skipped,
    read_frame_checked,
)
from featurizer.dataset.render import render_mesh
from featurizer.dataset.scannet import ScanNetReader
from featurizer.dataset.sens import SensFile, write_sens
from featurizer.dataset.synthetic.generate import generate_dataset, generate_scene
from featurizer.dataset.synthetic.reader import SyntheticScanNet
from featurizer.dataset.synthetic.scene import FRAME_STEP
from featurizer.errors import DataError
from featurizer.scene import Frame, Instance, Scene

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SID = "scene0000_00"
W, H = 320, 240
NUM_FRAMES = 3


@pytest.fixture(scope="module")
def sens_root(tmp_path_factory):
    """One 320x240 scene with 3 exported frames and its 60-frame ``.sens`` stream."""
    root = tmp_path_factory.mktemp("ingest_root")
    gt = generate_dataset(root, num_scenes=1, frames_per_scene=NUM_FRAMES, seed=4, image_size=(W, H),
                          write_sens=True, split="val")[0]
    return root, gt


@pytest.fixture
def copy(sens_root, tmp_path):
    """A fresh copy of the generated root, to damage."""
    root, gt = sens_root
    dst = tmp_path / "root"
    shutil.copytree(root, dst)
    return dst, gt


@pytest.fixture(scope="module")
def encoders():
    import hydra
    from omegaconf import OmegaConf

    enc2d = hydra.utils.instantiate(OmegaConf.load(CONF / "encoder2d" / "tiny.yaml"))
    enc3d = hydra.utils.instantiate(OmegaConf.load(CONF / "encoder3d" / "uni3d_tiny.yaml"))
    return enc2d.eval(), enc3d.eval()


def _fusion():
    import hydra
    from omegaconf import OmegaConf

    return hydra.utils.instantiate(OmegaConf.load(CONF / "fusion" / "mask_pool.yaml"))


def _frames_dir(root: Path) -> Path:
    return root / "scannet_2d" / SID


def _load(root: Path, **kwargs) -> Scene:
    return ScanNetReader(str(root), **kwargs).load(SID)


# ------------------------------------------------------------------ .sens frames in the reader
def test_sens_frames_equal_exported_frames(sens_root):
    root, gt = sens_root
    exported = _load(root)
    sens = _load(root, frames="sens", frame_stride=FRAME_STEP)
    assert exported.notes == [] and sens.notes == []
    assert [f.number for f in exported.frames] == [f.number for f in sens.frames] == gt["frame_ids"]
    assert gt["frame_ids"] == [0, 20, 40]
    for fe, fs in zip(exported.frames, sens.frames):
        assert fs.source is not None and fs.color_path is None
        assert fe.image_size == fs.image_size == (W, H) and fe.depth_scale == fs.depth_scale == 1000.0
        np.testing.assert_array_equal(fe.pose, fs.pose)  # bit for bit
        np.testing.assert_array_equal(fe.intrinsics, fs.intrinsics)
        ce, de = fe.read()
        cs, ds = fs.read()
        assert ds.dtype == de.dtype == np.float32
        np.testing.assert_array_equal(de, ds)
        np.testing.assert_array_equal(ce, cs)  # the same JPEG bytes on both paths
    np.testing.assert_allclose(sens.frames[1].pose, gt["poses"][1], atol=0)
    np.testing.assert_allclose(sens.frames[0].intrinsics, gt["intrinsics"], atol=1e-9)
    # the stride runs over the stream; max_frames caps after the stride
    assert [f.number for f in _load(root, frames="sens", frame_stride=7).frames] == list(range(0, 60, 7))
    assert [f.number for f in _load(root, frames="sens", frame_stride=20, max_frames=2).frames] == [0, 20]
    assert len(_load(root, frames="sens").frames) == NUM_FRAMES * FRAME_STEP


def test_sens_stream_holds_the_exported_bytes_and_the_frames_between(sens_root):
    root, gt = sens_root
    sens = SensFile(gt["sens_path"])
    assert gt["sens_path"] == root / "scans" / SID / f"{SID}.sens"
    assert sens.num_frames == NUM_FRAMES * FRAME_STEP and sens.color_size == sens.depth_size == (W, H)
    np.testing.assert_array_equal(sens.intrinsic_depth[:3, :3], gt["intrinsics_written"].astype(np.float32))
    for k in gt["frame_ids"]:
        src = sens.source(k)
        with open(gt["sens_path"], "rb") as f:
            f.seek(src.color_offset)
            jpeg = f.read(src.color_size)
        assert jpeg == (gt["frames_dir"] / "color" / f"{k}.jpg").read_bytes()
        png = np.asarray(Image.open(gt["frames_dir"] / "depth" / f"{k}.png"))
        np.testing.assert_array_equal(sens.read_depth(k), png)
    # frame 10 is half way from exported frame 0 to 20 (camera centre), rendered from its own pose
    middle = (sens.pose(0)[:3, 3] + sens.pose(20)[:3, 3]) / 2
    np.testing.assert_allclose(sens.pose(10)[:3, 3], middle, atol=1e-5)
    mesh = (gt["vertices_raw"], gt["faces"], gt["colors"])
    _, depth = render_mesh(*mesh, sens.pose(10).astype(np.float64), gt["intrinsics"], W, H)
    np.testing.assert_array_equal(sens.read_depth(10), np.rint(depth * 1000).astype(np.uint16))
    assert not np.array_equal(sens.read_depth(10), sens.read_depth(0))


def test_sens_missing_file_is_a_clear_error(copy):
    root, _ = copy
    path = root / "scans" / SID / f"{SID}.sens"
    path.unlink()
    reader = ScanNetReader(str(root), frames="sens")
    with pytest.raises(DataError, match=r"scene0000_00\.sens: \.sens file not found") as e:
        reader.check()
    assert e.value.path == path
    with pytest.raises(DataError, match=r"\.sens file not found"):
        reader.load(SID)
    ScanNetReader(str(root), frames="exported").check()  # the exported path does not need it


def test_truncated_sens_keeps_complete_frames_noted_once(copy):
    root, _ = copy
    path = root / "scans" / SID / f"{SID}.sens"
    sens = SensFile(path)
    cut = sens.source(30).depth_offset + 10  # frame 30's depth bytes are cut
    path.write_bytes(path.read_bytes()[:cut])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = _load(root, frames="sens", frame_stride=FRAME_STEP)
    assert [f.number for f in scene.frames] == [0, 20]
    truncation = [n for n in scene.notes if "truncated .sens" in n]
    assert len(truncation) == 1 and "frame 30" in truncation[0] and f"{SID}.sens" in truncation[0]
    assert sum("truncated .sens" in str(w.message) for w in caught) == 1  # warned once, with the scene id
    assert any(str(w.message).startswith(f"{SID}: ") for w in caught)


def test_sens_from_the_config_option_and_the_synthetic_dataset(sens_root, tmp_path):
    import hydra
    from omegaconf import OmegaConf

    root, gt = sens_root
    cfg = OmegaConf.load(CONF / "dataset" / "scannet.yaml")
    cfg.root, cfg.frames, cfg.frame_stride, cfg.scenes = str(root), "sens", FRAME_STEP, [SID]
    reader = hydra.utils.instantiate(cfg)
    reader.check()
    assert [f.number for f in reader.load(SID).frames] == gt["frame_ids"]
    # dataset=synthetic dataset.frames=sens writes the streams itself, in a folder of its own
    small = dict(num_scenes=1, frames_per_scene=2, image_size=(64, 48), num_objects=8)
    ds = SyntheticScanNet(str(tmp_path / "sens"), frames="sens", frame_stride=FRAME_STEP, **small)
    ds.prepare()
    ds.check()
    scene = ds.load(SID)
    assert [f.number for f in scene.frames] == [0, 20] and scene.frames[0].image_size == (64, 48)
    plain = SyntheticScanNet(str(tmp_path / "plain"), **small)
    plain.prepare()
    assert not (plain.root / "scans" / SID / f"{SID}.sens").exists()
    ref = plain.load(SID)  # the same scene: poses agree to float32 precision
    np.testing.assert_allclose(scene.frames[1].pose, ref.frames[1].pose, atol=1e-6)


def test_sens_and_exported_paths_give_equal_2d_features(sens_root, encoders):
    from featurizer.stage2d import run_2d

    root, _ = sens_root
    enc2d, _ = encoders
    results = []
    for kwargs in ({"frames": "exported"}, {"frames": "sens", "frame_stride": FRAME_STEP}):
        scene = _load(root, **kwargs)
        assert len(scene.frames) == NUM_FRAMES and len(scene.instances) == 15
        results.append(run_2d(scene, enc2d, _fusion()))
    exported, sens = results
    assert len(exported.features) >= 8  # most objects are seen
    assert exported.features.keys() == sens.features.keys()
    for i, feat in exported.features.items():
        assert feat.shape == (enc2d.dim,) and torch.isfinite(feat).all()
        assert torch.equal(feat, sens.features[i]), i
    assert exported.records == sens.records


# ------------------------------------------------------------------ test split
def _test_split_root(tmp_path: Path):
    gt = generate_scene(tmp_path, SID, np.random.default_rng(21), num_frames=2, image_size=(W, H),
                        num_objects=6, split="test")
    return tmp_path, gt


def test_test_split_runs_with_predicted_instances(tmp_path, encoders):
    from featurizer.module import SceneDataset, stage3d
    from featurizer.segmenter.instance_npz import InstanceNpz
    from featurizer.store import StageStore

    root, gt = _test_split_root(tmp_path / "data")
    scan = root / "scans_test" / SID
    assert not (root / "scans" / SID).exists()
    assert not list(scan.glob("*.aggregation.json")) and not list(scan.glob("*.segs.json"))
    assert "axisAlignment" not in (scan / f"{SID}.txt").read_text()
    # a predicted segmentation in the documented npz format (two objects, score-ordered)
    ids = np.full(len(gt["vertices_raw"]), -1)
    objs = gt["objects"][:2]
    for i, o in enumerate(objs):
        ids[o["point_ids"]] = i
    preds = tmp_path / "preds"
    preds.mkdir()
    np.savez(preds / f"{SID}.npz", instance_ids=ids, labels=np.array([o["label"] for o in objs]),
             scores=np.array([0.4, 0.9]))
    reader = ScanNetReader(str(root), splits=["test"], scenes=[SID])
    segmenter = InstanceNpz(str(preds), name="oneformer3d")
    reader.check()  # no labels tsv needed: no aggregations
    segmenter.check_global()
    for scene_id in reader.scene_ids:  # as the validation pass checks them
        segmenter.check_scene(scene_id, reader.check_scene(scene_id))
    store = StageStore(tmp_path / "cache", {"3d": "h3"})
    with pytest.warns(UserWarning, match="no axisAlignment: identity"):
        item = SceneDataset(reader, segmenter, store)[0]
    scene = item["scene"]
    assert item["todo"] == ["3d"] and item["gt"] is None  # GT attributes are absent for test scenes
    assert scene.split == "test" and "no axisAlignment: identity" in scene.notes
    np.testing.assert_array_equal(scene.axis_align, np.eye(4))
    np.testing.assert_array_equal(scene.aligned_points(), gt["vertices_raw"])
    assert [i.label for i in scene.instances] == [objs[1]["label"], objs[0]["label"]]  # by score
    np.testing.assert_array_equal(scene.instances[0].point_ids, objs[1]["point_ids"])
    assert len(scene.frames) == 2
    _, enc3d = encoders
    payload = stage3d(scene, item["gt"], enc3d)
    assert payload["gt"] is None and payload["labels"] == [objs[1]["label"], objs[0]["label"]]
    assert set(payload["feats"]) == {f"{SID}_00", f"{SID}_01"}
    v = gt["vertices_raw"][objs[1]["point_ids"]].astype(np.float64)  # identity: boxes in raw coordinates
    np.testing.assert_allclose(payload["locs"][0, :3].numpy(), (v.min(0) + v.max(0)) / 2, atol=1e-5)


# ------------------------------------------------------------------ defects: poses
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_non_finite_poses_are_dropped_with_a_note(copy, bad):
    root, _ = copy
    pose = np.loadtxt(_frames_dir(root) / "pose" / "20.txt")
    pose[1, 3] = float(bad)
    np.savetxt(_frames_dir(root) / "pose" / "20.txt", pose)
    with pytest.warns(UserWarning, match="non-finite pose: 20"):
        scene = _load(root)
    assert [f.number for f in scene.frames] == [0, 40]
    assert scene.notes == ["skipped 1 frame(s) with a non-finite pose: 20"]


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_non_finite_sens_poses_are_dropped_with_a_note(tmp_path, bad):
    poses = np.tile(np.eye(4), (4, 1, 1))
    poses[2, 0, 0] = bad
    color = [np.full((12, 16, 3), 100, np.uint8)] * 4
    depth = [np.full((12, 16), 2000, np.uint16)] * 4
    k = np.array([[14.0, 0, 7.5], [0, 14.0, 5.5], [0, 0, 1]])
    scan = tmp_path / "scans" / SID
    scan.mkdir(parents=True)
    _write_tiny_ply(scan / f"{SID}_vh_clean_2.ply")
    write_sens(scan / f"{SID}.sens", color, depth, poses, k, k)
    with pytest.warns(UserWarning, match="non-finite pose: 2"):
        scene = _load(tmp_path, frames="sens", scenes=[SID])
    assert [f.number for f in scene.frames] == [0, 1, 3]
    assert "skipped 1 frame(s) with a non-finite pose: 2" in scene.notes


@pytest.mark.parametrize("fx_color", [28.0, 40.0])
def test_sens_colour_resized_to_depth_and_unregistered_intrinsics_noted(tmp_path, fx_color):
    # colour 32x24 and depth 16x12 (ScanNet: 1296x968 and 640x480); colour intrinsics twice the depth
    # ones are registered, others are noted
    k_depth = np.array([[14.0, 0, 7.5], [0, 14.0, 5.5], [0, 0, 1]])
    k_color = np.array([[fx_color, 0, 15.5], [0, fx_color, 11.5], [0, 0, 1]])
    yy, xx = np.mgrid[0:24, 0:32]
    color = np.stack([xx * 8, yy * 10, np.full_like(xx, 90)], -1).astype(np.uint8)
    scan = tmp_path / "scans" / SID
    scan.mkdir(parents=True)
    _write_tiny_ply(scan / f"{SID}_vh_clean_2.ply")
    write_sens(scan / f"{SID}.sens", [color] * 2, [np.full((12, 16), 1500, np.uint16)] * 2,
               np.tile(np.eye(4), (2, 1, 1)), k_color, k_depth)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no meta file, no alignment
        scene = _load(tmp_path, frames="sens", scenes=[SID])
    frame = scene.frames[1]
    np.testing.assert_array_equal(frame.intrinsics, k_depth)
    assert frame.image_size == (16, 12) and frame.number == 1
    c, d, reason = read_frame_checked(frame)
    assert reason is None and c.shape == (12, 16, 3) and (d == np.float32(1.5)).all()
    assert abs(int(c[6, 8, 0]) - 8 * 17) <= 12  # bilinear down-sampling of the x ramp: x 16..17 at column 8
    noted = [n for n in scene.notes if "not be registered" in n]
    assert len(noted) == (fx_color != 28.0)
    if noted:
        assert noted[0].startswith(f"{SID}.sens: colour intrinsics resized to 16x12 (fx 20.0")


def _write_tiny_ply(path: Path) -> None:
    path.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                    "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
                    "end_header\n0 0 1 1 2 3\n1 0 1 4 5 6\n0 1 1 7 8 9\n")


@pytest.mark.parametrize("text", ["", "1 0 0 0\n0 1 0 0\n0 0 1", "1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 one\n",
                                  "1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1 7\n"],
                         ids=["empty", "truncated", "garbled", "17 numbers"])
def test_unreadable_pose_files_are_skipped_with_a_note(copy, text):
    root, _ = copy
    (_frames_dir(root) / "pose" / "40.txt").write_text(text)
    with pytest.warns(UserWarning, match="pose file is not a 4x4 matrix"):
        scene = _load(root)
    assert [f.number for f in scene.frames] == [0, 20]
    assert scene.notes == ["skipped 1 frame(s) whose pose file is not a 4x4 matrix of numbers "
                           "(empty, truncated or garbled): 40"]


# ------------------------------------------------------------------ defects: frame files
@pytest.mark.parametrize("missing", ["color/20.jpg", "depth/20.png"])
def test_frames_with_a_missing_image_are_skipped_with_a_note(copy, missing):
    root, _ = copy
    (_frames_dir(root) / missing).unlink()
    with pytest.warns(UserWarning, match="pose but no colour or depth image: 20"):
        scene = _load(root)
    assert [f.number for f in scene.frames] == [0, 40]
    assert scene.notes == ["skipped 1 frame(s) with a pose but no colour or depth image: 20"]


def test_frames_with_images_but_no_pose_are_noted(copy):
    root, _ = copy
    (_frames_dir(root) / "pose" / "0.txt").unlink()
    with pytest.warns(UserWarning, match="images but no pose file: 0"):
        scene = _load(root)
    assert [f.number for f in scene.frames] == [20, 40]


def test_duplicate_frame_numbers_keep_the_first_with_a_note(copy):
    root, gt = copy
    fd = _frames_dir(root)
    other = np.loadtxt(fd / "pose" / "40.txt")
    np.savetxt(fd / "pose" / "020.txt", other)  # frame 20 twice, with another pose
    shutil.copy(fd / "color" / "40.jpg", fd / "color" / "020.jpg")
    shutil.copy(fd / "color" / "40.jpg", fd / "color" / "20.png")
    with pytest.warns(UserWarning, match="repeat a frame number"):
        scene = _load(root)
    assert [f.number for f in scene.frames] == [0, 20, 40]  # no frame twice
    f20 = scene.frames[1]
    np.testing.assert_array_equal(f20.pose, np.loadtxt(fd / "pose" / "20.txt"))  # the plain name wins
    assert f20.color_path == fd / "color" / "20.jpg"
    assert "pose/: 1 file(s) repeat a frame number, ignored: 020.txt (kept 20.txt)" in scene.notes
    assert "color/: 2 file(s) repeat a frame number, ignored: 20.png (kept 20.jpg), 020.jpg (kept 20.jpg)" \
        in scene.notes
    # a zero-padded name alone is frame 20 as well
    (fd / "pose" / "20.txt").unlink()
    scene = _load(root)
    np.testing.assert_array_equal(scene.frames[1].pose, other)


def _frame(root: Path, k: int) -> Frame:
    return next(f for f in _load(root).frames if f.number == k)


def test_read_frame_checked_good_frames_equal_frame_read(sens_root):
    root, _ = sens_root
    for frame in _load(root).frames + _load(root, frames="sens", frame_stride=FRAME_STEP).frames:
        color, depth, reason = read_frame_checked(frame)
        assert reason is None
        c, d = frame.read()
        np.testing.assert_array_equal(color, c)
        np.testing.assert_array_equal(depth, d)
        assert color.dtype == np.uint8 and depth.dtype == np.float32 and color.shape == (H, W, 3)


@pytest.mark.parametrize("which", ["color/20.jpg", "depth/20.png"])
def test_read_frame_checked_missing_file(copy, which):
    root, _ = copy
    frame = _frame(root, 20)
    (_frames_dir(root) / which).unlink()  # removed after the scene was read
    assert read_frame_checked(frame) == (None, None, MISSING)


@pytest.mark.parametrize("which", ["color/20.jpg", "depth/20.png"])
@pytest.mark.parametrize("keep", [0.5, 0.0], ids=["half", "empty"])
def test_read_frame_checked_truncated_file(copy, which, keep):
    root, _ = copy
    frame = _frame(root, 20)
    path = _frames_dir(root) / which
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    assert read_frame_checked(frame) == (None, None, UNREADABLE)
    # a process-wide LOAD_TRUNCATED_IMAGES = True (PIL would fill the rest with grey) does not hide it
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        assert read_frame_checked(frame) == (None, None, UNREADABLE)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def test_read_frame_checked_all_zero_depth(copy):
    root, _ = copy
    frame = _frame(root, 40)
    Image.fromarray(np.zeros((H, W), np.uint16)).save(_frames_dir(root) / "depth" / "40.png")
    assert read_frame_checked(frame) == (None, None, DEPTH_ZERO)
    depth = np.zeros((H, W), np.uint16)
    depth[5, 7] = 1234  # one valid pixel is enough
    Image.fromarray(depth).save(_frames_dir(root) / "depth" / "40.png")
    color, d, reason = read_frame_checked(frame)
    assert reason is None and d[5, 7] == np.float32(1.234) and (d > 0).sum() == 1


def test_read_frame_checked_size_mismatch_and_colour_resize(copy):
    root, _ = copy
    fd = _frames_dir(root)
    frame = _frame(root, 0)
    reference, _ = frame.read()
    # colour at twice the size (same aspect ratio): resized as Frame.read does
    big = Image.open(fd / "color" / "0.jpg").resize((2 * W, 2 * H), Image.BILINEAR)
    big.save(fd / "color" / "0.jpg", quality=95)
    color, _, reason = read_frame_checked(frame)
    assert reason is None and color.shape == (H, W, 3)
    np.testing.assert_array_equal(color, frame.read()[0])
    assert np.abs(color.astype(float) - reference).mean() < 8
    # colour of another aspect ratio, or depth of another size: refused
    big.resize((W, W)).save(fd / "color" / "0.jpg")
    assert read_frame_checked(frame) == (None, None, SIZE_MISMATCH)
    shutil.copy(fd / "color" / "20.jpg", fd / "color" / "0.jpg")
    Image.fromarray(np.full((H // 2, W // 2), 1500, np.uint16)).save(fd / "depth" / "0.png")
    assert read_frame_checked(frame) == (None, None, SIZE_MISMATCH)


def test_read_frame_checked_sens_defects(copy):
    root, _ = copy
    path = root / "scans" / SID / f"{SID}.sens"
    frames = {f.number: f for f in _load(root, frames="sens", frame_stride=FRAME_STEP).frames}
    src = frames[20].source
    with open(path, "r+b") as f:  # garbage in frame 20's colour and frame 40's depth
        f.seek(frames[20].source.color_offset + 20)
        f.write(b"\x00" * (src.color_size - 40))
        f.seek(frames[40].source.depth_offset + 2)
        f.write(b"\xff" * 64)
    assert read_frame_checked(frames[20]) == (None, None, UNREADABLE)
    assert read_frame_checked(frames[40]) == (None, None, UNREADABLE)
    assert read_frame_checked(frames[0])[2] is None
    path.unlink()
    assert read_frame_checked(frames[0]) == (None, None, MISSING)


def test_read_frame_checked_sens_all_zero_depth(tmp_path):
    k = np.array([[14.0, 0, 7.5], [0, 14.0, 5.5], [0, 0, 1]])
    depth = [np.zeros((12, 16), np.uint16), np.full((12, 16), 900, np.uint16)]
    color = [np.full((12, 16, 3), 50, np.uint8)] * 2
    write_sens(tmp_path / "a.sens", color, depth, np.tile(np.eye(4), (2, 1, 1)), k, k)
    frames = SensFile(tmp_path / "a.sens").frames()
    assert read_frame_checked(frames[0]) == (None, None, DEPTH_ZERO)
    color, d, reason = read_frame_checked(frames[1])
    assert reason is None and (d == np.float32(0.9)).all() and color.shape == (12, 16, 3)


def test_describe_skipped():
    assert describe_skipped({}) is None
    text = describe_skipped({60: DEPTH_ZERO, 20: MISSING, 40: MISSING})
    assert text == "skipped 3 frame(s) at read time: missing file: 20, 40; depth all zero: 60"
    many = describe_skipped({k: UNREADABLE for k in range(12)}, limit=3)
    assert many.endswith("unreadable or truncated image: 0, 1, 2 and 9 more")
    assert set(REASONS) == {MISSING, UNREADABLE, DEPTH_ZERO, SIZE_MISMATCH}


# ------------------------------------------------------------------ defects: instances
def test_empty_and_tiny_instances_are_recorded_without_a_3d_feature(sens_root, encoders):
    from featurizer.module import stage3d

    root, _ = sens_root
    scene = _load(root, frames="none")
    real = scene.instances[0]
    scene.instances = [real, Instance(np.zeros(0, np.int64), "chair"), Instance(real.point_ids[:5], "lamp")]
    _, enc3d = encoders
    payload = stage3d(scene, None, enc3d)
    keys = [f"{SID}_00", f"{SID}_01", f"{SID}_02"]
    assert list(payload["feats"]) == [keys[0]]
    assert payload["feats"][keys[0]].shape == (enc3d.dim,)
    rec = payload["records"]
    assert rec[keys[0]]["3d"] == {"ok": True, "reason": None}
    assert rec[keys[1]]["3d"] == {"ok": False, "reason": "empty instance"} and rec[keys[1]]["num_points"] == 0
    assert rec[keys[2]]["3d"] == {"ok": False, "reason": "fewer than 10 points"}
    assert rec[keys[2]]["num_points"] == 5
    np.testing.assert_array_equal(payload["locs"][1].numpy(), np.zeros(6))  # an empty box, not garbage


def test_instance_no_frame_sees_gets_no_2d_feature_and_a_reason(sens_root, encoders):
    from featurizer.stage2d import run_2d

    root, _ = sens_root
    scene = _load(root)
    # 40 points 50 m above the room (aligned frame): above every camera's field of view
    rng = np.random.default_rng(0)
    above = np.array([0.0, 0.0, 50.0]) + rng.uniform(-0.5, 0.5, size=(40, 3))
    raw = np.linalg.inv(scene.axis_align)
    above_raw = above @ raw[:3, :3].T + raw[:3, 3]
    n = scene.num_points
    points = np.concatenate([scene.points, above_raw])
    colors = np.concatenate([scene.colors, np.full((40, 3), 9)])
    instances = scene.instances[:3] + [Instance(np.arange(n, n + 40), "kite")]
    scene = Scene(SID, points, colors, scene.axis_align, instances=instances, frames=scene.frames)
    enc2d, _ = encoders
    result = run_2d(scene, enc2d, _fusion())
    assert 3 not in result.features
    assert result.records[3] == {"views": 0, "visible_points": 0, "reason": "no visible points"}
    seen = [i for i in range(3) if i in result.features]
    assert seen and all(result.records[i]["reason"] is None for i in seen)


def test_one_odd_depth_frame_does_not_decide_the_scene_size(copy, encoders):
    """A smaller first depth frame among full-size ones: only that frame is skipped, with its record."""
    from featurizer.stage2d import run_2d

    root, _ = copy
    enc2d, _ = encoders
    good = run_2d(_load(root), enc2d, _fusion())
    Image.fromarray(np.full((H // 2, W // 2), 1500, np.uint16)).save(_frames_dir(root) / "depth" / "0.png")
    scene = _load(root)
    assert [f.image_size for f in scene.frames] == [(W, H)] * NUM_FRAMES  # the majority, not frame 0
    exported = _load(root, frames="exported")
    np.testing.assert_array_equal(scene.frames[1].intrinsics, exported.frames[1].intrinsics)
    result = run_2d(scene, enc2d, _fusion())
    assert result.skipped_frames == {0: SIZE_MISMATCH}
    assert good.skipped_frames == {}
    assert set(result.features) and set(result.features) <= set(good.features)
    assert all(result.records[i]["views"] <= good.records[i]["views"] for i in good.records)
