"""The ``.sens`` stream reader: header, frame index, decoding, Frames, truncation, bad files."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from featurizer.dataset.sens import SensFile, SensFrameSource, sens_frames, write_sens
from featurizer.errors import ConfigError, DataError

F, WC, HC, WD, HD = 5, 64, 48, 32, 24
K_COLOR = np.array([[58.0, 0, 31.5], [0, 58.0, 23.5], [0, 0, 1]])
K_DEPTH = np.array([[28.9, 0, 15.5], [0, 28.9, 11.5], [0, 0, 1]])


def make_stream(seed: int = 0):
    rng = np.random.default_rng(seed)
    # smooth colour (JPEG-friendly): gradients + a per-frame offset
    yy, xx = np.mgrid[0:HC, 0:WC]
    colors = [
        np.stack([xx * 2 + 20 * i, yy * 3 + 10 * i, np.full_like(xx, 40 * i)], -1).astype(np.uint8)
        for i in range(F)
    ]
    depths = [rng.integers(0, 6000, size=(HD, WD)).astype(np.uint16) for _ in range(F)]
    poses = np.tile(np.eye(4), (F, 1, 1))
    poses[:, :3, 3] = rng.normal(size=(F, 3))
    poses[:, :3, :3] = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    return colors, depths, poses


@pytest.fixture()
def sens(tmp_path):
    colors, depths, poses = make_stream()
    path = tmp_path / "scene0000_00.sens"
    write_sens(path, colors, depths, poses, K_COLOR, K_DEPTH, depth_shift=1000.0, jpeg_quality=95)
    return path, colors, depths, poses


def test_header_and_poses(sens):
    path, _, _, poses = sens
    s = SensFile(path)
    assert s.version == 4 and s.sensor_name == "featurizer"
    assert (s.color_width, s.color_height, s.depth_width, s.depth_height) == (WC, HC, WD, HD)
    assert s.color_compression_type == 2 and s.depth_compression_type == 1
    assert s.depth_shift == 1000.0 and s.num_frames == F == s.header_num_frames == len(s)
    np.testing.assert_allclose(s.intrinsic_color[:3, :3], K_COLOR, rtol=1e-6)
    np.testing.assert_allclose(s.intrinsic_depth[:3, :3], K_DEPTH, rtol=1e-6)
    np.testing.assert_array_equal(s.intrinsic_depth[3], [0, 0, 0, 1])
    np.testing.assert_array_equal(s.extrinsic_color, np.eye(4))
    assert s.intrinsic_color.dtype == np.float32 and s.intrinsic_color.shape == (4, 4)
    for i in range(F):
        np.testing.assert_array_equal(s.pose(i), poses[i].astype(np.float32))
    np.testing.assert_array_equal(s.timestamps_color, np.arange(F) * 33333)
    assert s.notes == []
    with pytest.raises(IndexError):
        s.pose(F)


def test_depth_exact_and_color_close(sens):
    path, colors, depths, _ = sens
    s = SensFile(path)
    for i in range(F):
        d = s.read_depth(i)
        assert d.dtype == np.uint16 and d.shape == (HD, WD)
        np.testing.assert_array_equal(d, depths[i])
        c = s.read_color(i)
        assert c.dtype == np.uint8 and c.shape == (HC, WC, 3)
        err = np.abs(c.astype(int) - colors[i].astype(int))
        assert err.mean() < 3.0 and np.percentile(err, 99) < 20  # JPEG at quality 95


def test_sens_frames_stride_max_and_frame_fields(sens):
    path, _, _, poses = sens
    assert [f.number for f in sens_frames(path)] == [0, 1, 2, 3, 4]
    assert [f.number for f in sens_frames(path, stride=2)] == [0, 2, 4]
    assert [f.number for f in sens_frames(path, stride=2, max_frames=2)] == [0, 2]
    assert [f.number for f in sens_frames(path, stride=3, max_frames=10)] == [0, 3]
    assert sens_frames(path, max_frames=0) == []
    frames = sens_frames(path, stride=2)
    for f in frames:
        assert f.image_size == (WD, HD)
        np.testing.assert_allclose(f.intrinsics, K_DEPTH, rtol=1e-6)
        assert f.depth_scale == 1000.0
        np.testing.assert_allclose(f.pose, poses[f.number], atol=1e-6)
        assert f.color_path is None and f.depth_path is None
    with pytest.raises(ConfigError, match="stride"):
        sens_frames(path, stride=0)


def test_frame_read_resizes_color_to_depth_and_depth_in_metres(sens):
    path, colors, depths, _ = sens
    s = SensFile(path)
    frame = s.frames(stride=1)[3]
    color, depth = frame.read()
    assert color.shape == (HD, WD, 3) and color.dtype == np.uint8
    assert depth.shape == (HD, WD) and depth.dtype == np.float32
    np.testing.assert_allclose(depth, depths[3].astype(np.float32) / 1000.0, rtol=1e-6)
    expected = np.asarray(Image.fromarray(s.read_color(3)).resize((WD, HD), Image.BILINEAR))
    np.testing.assert_array_equal(color, expected)  # bilinear resize of the decoded JPEG
    direct = np.asarray(Image.fromarray(colors[3]).resize((WD, HD), Image.BILINEAR)).astype(int)
    assert np.abs(color.astype(int) - direct).mean() < 3.0


def test_frame_source_is_picklable(sens):
    path = sens[0]
    frame = sens_frames(path)[2]
    assert isinstance(frame.source, SensFrameSource)
    clone = pickle.loads(pickle.dumps(frame))
    c1, d1 = frame.read()
    c2, d2 = clone.read()
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(d1, d2)
    assert len(pickle.dumps(frame.source)) < 1000  # per-frame byte ranges only, not the whole index


def test_truncated_file_keeps_complete_frames_with_warning(sens, tmp_path):
    path = sens[0]
    data = path.read_bytes()
    full = SensFile(path)
    src3 = full.source(3)
    cut = tmp_path / "cut.sens"
    cut.write_bytes(data[: src3.depth_offset + src3.depth_size // 2])  # frame 3's depth is cut
    with pytest.warns(UserWarning, match="truncated"):
        s = SensFile(cut)
    assert s.num_frames == 3 and s.header_num_frames == F
    assert len(s.notes) == 1 and "frame 3" in s.notes[0] and "kept the 3 complete" in s.notes[0]
    np.testing.assert_array_equal(s.read_depth(2), sens[2][2])
    with pytest.warns(UserWarning):
        assert [f.number for f in sens_frames(cut)] == [0, 1, 2]
    # cut inside a frame head (after frame 1): 2 frames kept
    cut.write_bytes(data[: full.source(2).color_offset - 50])
    with pytest.warns(UserWarning, match="frame 2"):
        assert SensFile(cut).num_frames == 2


def test_truncated_header_wrong_version_and_compression(sens, tmp_path):
    path = sens[0]
    data = path.read_bytes()
    bad = tmp_path / "bad.sens"
    bad.write_bytes(struct.pack("<I", 3) + data[4:])
    with pytest.raises(DataError, match="version 3") as err:
        SensFile(bad)
    assert err.value.path == bad and "offset 0" in str(err.value)
    bad.write_bytes(data[:100])
    with pytest.raises(DataError, match="truncated header"):
        SensFile(bad)
    # depth compression field: after version (4), strlen (8), name (10), 4 matrices (256), colour type (4)
    at = 4 + 8 + len("featurizer") + 256 + 4
    assert struct.unpack_from("<i", data, at)[0] == 1
    bad.write_bytes(data[:at] + struct.pack("<i", 2) + data[at + 4 :])
    with pytest.raises(DataError, match=f"offset {at}: unsupported depth compression 2 \\(occi_ushort\\)"):
        SensFile(bad)
    with pytest.raises(DataError, match="not found"):
        SensFile(tmp_path / "missing.sens")


def test_corrupt_frame_bytes_name_the_frame(sens, tmp_path):
    path = sens[0]
    data = bytearray(path.read_bytes())
    src = SensFile(path).source(1)
    data[src.depth_offset : src.depth_offset + 8] = b"\xff" * 8  # breaks the zlib stream
    bad = tmp_path / "corrupt.sens"
    bad.write_bytes(bytes(data))
    s = SensFile(bad)
    with pytest.raises(DataError, match="frame 1 .*bad depth") as err:
        s.read_depth(1)
    assert err.value.path == bad
    np.testing.assert_array_equal(s.read_depth(0), sens[2][0])


def test_raw_streams_are_read(tmp_path):
    """Uncompressed colour (type 0) and depth (raw_ushort, type 0), hand-written."""
    rng = np.random.default_rng(3)
    color = rng.integers(0, 256, size=(HC, WC, 3), dtype=np.uint8)
    depth = rng.integers(0, 65535, size=(HD, WD), dtype=np.uint16)
    mats = np.concatenate([np.eye(4).reshape(-1)] * 4).astype(np.float32)
    head = struct.pack("<IQ", 4, 2) + b"ab" + mats.tobytes()
    head += struct.pack("<2i4IfQ", 0, 0, WC, HC, WD, HD, 500.0, 1)
    pose = np.eye(4, dtype=np.float32)
    frame = pose.tobytes() + struct.pack("<4Q", 7, 8, color.nbytes, depth.nbytes)
    frame += color.tobytes() + depth.tobytes()
    path = tmp_path / "raw.sens"
    path.write_bytes(head + frame)
    s = SensFile(path)
    np.testing.assert_array_equal(s.read_color(0), color)
    np.testing.assert_array_equal(s.read_depth(0), depth)
    _, metres = sens_frames(path)[0].read()
    np.testing.assert_allclose(metres, depth / np.float32(500.0), rtol=1e-6)


def test_non_finite_pose_is_kept_for_the_reader_to_drop(tmp_path):
    from featurizer.scene import Scene

    colors, depths, poses = make_stream(seed=5)
    poses[1] = -np.inf  # real ScanNet streams have -inf poses
    path = tmp_path / "inf.sens"
    write_sens(path, colors, depths, poses, K_COLOR, K_DEPTH)
    frames = sens_frames(path)
    assert [f.pose_is_finite for f in frames] == [True, False, True, True, True]
    scene = Scene("scene0000_00", np.zeros((1, 3)), np.zeros((1, 3)), frames=frames)
    with pytest.warns(UserWarning, match="non-finite pose: 1"):
        scene.drop_non_finite_poses()
    assert [f.number for f in scene.frames] == [0, 2, 3, 4]
