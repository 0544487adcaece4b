"""The mesh renderer and the synthetic ScanNet-layout generator."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featurizer.dataset.render import look_at, render_mesh
from featurizer.dataset.synthetic.furniture import CLASSES, RAW_LABELS
from featurizer.dataset.synthetic.generate import generate_dataset, generate_scene
from featurizer.dataset.synthetic.reader import DONE_MARKER, SyntheticScanNet
from featurizer.errors import ConfigError

K320 = np.array([[290.0, 0.0, 160.0], [0.0, 290.0, 120.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="session")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_one")
    rng = np.random.default_rng([5, 0])
    gt = generate_scene(root, "scene0000_00", rng, num_frames=4, image_size=(320, 240))
    return root, gt


def _quad(z: float, half: float, color) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]], float)
    return v, np.array([[0, 1, 2], [0, 2, 3]]), np.tile(np.asarray(color, np.uint8), (4, 1))


def _ray_dirs(k: np.ndarray, w: int, h: int, offset: float = 0.0) -> np.ndarray:
    """(H, W, 3) camera-frame ray directions with z = 1 through the pixel samples."""
    u, v = np.meshgrid(np.arange(w) + offset, np.arange(h) + offset)
    return np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], -1)


def _files_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------ renderer
def test_render_plane_depth_and_colour_exact():
    v, f, c = _quad(3.0, 10.0, (10, 200, 30))
    color, depth = render_mesh(v, f, c, np.eye(4), K320, 320, 240)
    assert color.shape == (240, 320, 3) and color.dtype == np.uint8
    assert depth.shape == (240, 320) and depth.dtype == np.float32
    np.testing.assert_allclose(depth, 3.0, atol=1e-6)  # fronto-parallel plane covers the whole view
    assert (color == [10, 200, 30]).all()


def test_render_tilted_plane_matches_ray_intersection():
    # floor z = 0 seen from 1.5 m up, looking down and forward; it extends behind the camera (near clipping)
    n = 40
    xs = np.linspace(-20, 20, n + 1)
    gx, gy = np.meshgrid(xs, xs)
    verts = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    eye = np.array([0.3, -0.2, 1.5])
    pose = look_at(eye, np.array([1.0, 2.5, 0.0]))
    _, depth = render_mesh(verts, faces, np.full((len(verts), 3), 90, np.uint8), pose, K320, 320, 240)
    rays = _ray_dirs(K320, 320, 240) @ pose[:3, :3].T  # world directions, camera z = 1
    with np.errstate(divide="ignore"):
        t = -eye[2] / rays[..., 2]  # ray parameter = camera z depth, since the camera-frame z is 1
    on_floor = (np.abs(eye[0] + t * rays[..., 0]) < 20) & (np.abs(eye[1] + t * rays[..., 1]) < 20)
    hits = (rays[..., 2] < 0) & on_floor
    assert hits.mean() > 0.5
    np.testing.assert_allclose(depth[hits], t[hits], atol=1e-3, rtol=1e-5)
    assert (depth[~hits] == 0).all()


def test_render_nearest_surface_wins_and_colours_interpolate():
    wall = _quad(5.0, 20.0, (200, 200, 200))
    front = _quad(2.0, 0.5, (255, 0, 0))  # a 1 m square 2 m in front of the camera
    verts = np.concatenate([front[0], wall[0]])  # drawn first and last: order must not matter
    faces = np.concatenate([front[1], wall[1] + 4])
    cols = np.concatenate([front[2], wall[2]])
    for order in (slice(None), slice(None, None, -1)):
        color, depth = render_mesh(verts, faces[order], cols, np.eye(4), K320, 320, 240)
        assert depth[120, 160] == pytest.approx(2.0, abs=1e-6)
        assert depth[5, 5] == pytest.approx(5.0, abs=1e-6)
        assert tuple(color[120, 160]) == (255, 0, 0) and tuple(color[5, 5]) == (200, 200, 200)
        # the square spans |x| <= 0.5 at z = 2: u in 160 +- 72.5 pixels
        assert (depth[120, 90:230] == np.float32(2.0)).all() and depth[120, 86] == pytest.approx(5.0)
    # a horizontal colour ramp on a fronto-parallel quad: linear in u
    v = np.array([[-1, -1, 2], [1, -1, 2], [1, 1, 2], [-1, 1, 2]], float)
    cols = np.array([[0, 0, 0], [200, 0, 0], [200, 0, 0], [0, 0, 0]], np.uint8)
    color, _ = render_mesh(v, np.array([[0, 1, 2], [0, 2, 3]]), cols, np.eye(4), K320, 320, 240)
    x = (np.arange(320) - 160) / 290 * 2.0  # world x of each pixel sample at z = 2
    inside = np.abs(x) < 1
    np.testing.assert_allclose(color[120, inside, 0], np.rint((x[inside] + 1) * 100), atol=1)


def test_render_perspective_correct_colour_on_slanted_quad():
    # quad from z = 1 (red 0) to z = 3 (red 200) along y; colour is linear in world position
    v = np.array([[-5, 0.5, 1], [5, 0.5, 1], [5, 0.5 + 2, 3], [-5, 0.5 + 2, 3]], float)
    v[:, 1] = [0.5, 0.5, -1.5, -1.5]  # below and above the optical axis: y = 0.5 at z = 1, -1.5 at z = 3
    cols = np.array([[0, 0, 0], [0, 0, 0], [200, 0, 0], [200, 0, 0]], np.uint8)
    color, depth = render_mesh(v, np.array([[0, 1, 2], [0, 2, 3]]), cols, np.eye(4), K320, 320, 240)
    col = 160
    rows = np.flatnonzero(depth[:, col] > 0)
    z = depth[rows, col].astype(float)
    np.testing.assert_allclose(color[rows, col, 0], np.rint((z - 1) / 2 * 200), atol=1)


def test_render_empty_and_behind_camera():
    v, f, c = _quad(-3.0, 10.0, (1, 2, 3))  # behind the camera
    color, depth = render_mesh(v, f, c, np.eye(4), K320, 320, 240)
    assert not depth.any() and not color.any()


# ------------------------------------------------------------------ generator
def test_generation_is_deterministic(tmp_path):
    kwargs = dict(num_scenes=1, frames_per_scene=2, image_size=(64, 48), num_objects=9)
    generate_dataset(tmp_path / "a", seed=7, **kwargs)
    generate_dataset(tmp_path / "b", seed=7, **kwargs)
    generate_dataset(tmp_path / "c", seed=8, **kwargs)
    da, db, dc = (_files_digest(tmp_path / x) for x in "abc")
    assert len(da) >= 10 and da == db
    ply = "scans/scene0000_00/scene0000_00_vh_clean_2.ply"
    assert da.keys() == dc.keys() and da[ply] != dc[ply]
    assert da["scannet_2d/scene0000_00/depth/20.png"] != dc["scannet_2d/scene0000_00/depth/20.png"]


def test_objects_classes_and_sizes(scene):
    _, gt = scene
    objs = gt["objects"]
    assert len(objs) == 10
    labels = {o["label"] for o in objs}
    assert len(labels) >= 8
    for o in objs:  # the aggregation's raw label maps to a ScanNet category through the tsv
        assert o["label"] == RAW_LABELS[o["raw_label"]][0]
    assert any(raw != cat for raw, (cat, _, _) in RAW_LABELS.items())
    boxes = np.stack([o["box"] for o in objs])
    lo, hi = boxes[:, :3] - boxes[:, 3:] / 2, boxes[:, :3] + boxes[:, 3:] / 2
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            overlap = (lo[i] < hi[j]) & (lo[j] < hi[i])
            assert not overlap.all(), (objs[i]["raw_label"], objs[j]["raw_label"])
    # boxes inside the room, on the floor, class-typical height (nominal size +-10%)
    room = gt["room_size"]
    assert (np.abs(lo[:, :2]) < room[:2] / 2).all() and (np.abs(hi[:, :2]) < room[:2] / 2).all()
    np.testing.assert_allclose(lo[:, 2], 0.0, atol=1e-5)
    for o, h in zip(objs, boxes[:, 5]):
        nominal = CLASSES[o["raw_label"]][0][2]
        assert 0.85 * nominal <= h <= 1.12 * nominal, o["raw_label"]
    for o in objs:  # enough points for the 3D encoder, several segments each
        assert 500 <= len(o["point_ids"]) <= 3000
        assert len(o["segments"]) >= 3
    assert 10_000 <= len(gt["vertices_raw"]) <= 25_000


def test_vertex_colours_are_class_typical(scene):
    _, gt = scene
    for o in gt["objects"]:
        if o["raw_label"] in ("toilet", "bathtub"):  # single-colour classes
            mean = gt["colors"][o["point_ids"]].astype(float).mean(0)
            np.testing.assert_allclose(mean, CLASSES[o["raw_label"]][1][0], atol=3)
    floor = gt["structure"][-1]
    assert floor["raw_label"] == "floor"
    std = gt["colors"][floor["point_ids"]].astype(float).std(0)
    assert (std > 2).all() and (std < 8).all()  # noise of sigma 5 around one colour


def test_axis_alignment_is_a_z_rotation(scene):
    _, gt = scene
    a = gt["axis_align"]
    assert not np.allclose(a, np.eye(4))
    np.testing.assert_allclose(a[2, :3], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(a[:2, 2], [0, 0], atol=1e-12)
    np.testing.assert_allclose(a[:2, :2] @ a[:2, :2].T, np.eye(2), atol=1e-12)
    angle = math.degrees(math.atan2(a[1, 0], a[0, 0])) % 90
    assert 5 < angle < 85  # not a multiple of 90 degrees: the raw room is visibly rotated
    # aligned room: walls axis-aligned (the room box equals the room size), raw is not
    walls = np.concatenate([g["point_ids"] for g in gt["structure"]])
    al = gt["vertices_aligned_read"][walls]
    np.testing.assert_allclose(al.max(0) - al.min(0), gt["room_size"], atol=1e-4)
    raw = gt["vertices_raw"][walls].astype(float)
    assert (raw.max(0)[:2] - raw.min(0)[:2] > gt["room_size"][:2] + 0.3).all()


def test_rendered_depth_matches_room_planes_and_objects_occlude(scene):
    root, gt = scene
    a, k = gt["axis_align"], gt["intrinsics"]
    sx, sy, sz = gt["room_size"] / 2
    checked = occluded = 0
    for idx, pose in zip(gt["frame_ids"], gt["poses"]):
        depth_png = np.asarray(Image.open(gt["frames_dir"] / "depth" / f"{idx}.png")).astype(float) / 1000
        pose_al = a @ pose  # camera-to-aligned
        rays = _ray_dirs(k, 320, 240) @ pose_al[:3, :3].T
        eye = pose_al[:3, 3]
        # nearest of the 5 room planes (floor z=0, walls x=+-sx, y=+-sy) along each ray
        with np.errstate(divide="ignore", invalid="ignore"):
            ts = [-eye[2] / rays[..., 2]]
            ts += [(s - eye[0]) / rays[..., 0] for s in (-sx, sx)]
            ts += [(s - eye[1]) / rays[..., 1] for s in (-sy, sy)]
        ts = np.stack([np.where(t > 0, t, np.inf) for t in ts])
        t_room = ts.min(0)
        hit_z = eye[2] + t_room * rays[..., 2]
        room_hit = np.isfinite(t_room) & (hit_z < sz - 1e-3)
        # the structure alone, rendered: equal to the analytic planes
        walls_floor = np.concatenate([g["point_ids"] for g in gt["structure"]])
        st = gt["faces"][np.isin(gt["faces"][:, 0], walls_floor)]
        _, d_room = render_mesh(gt["vertices_raw"], st, gt["colors"], pose, k, 320, 240)
        np.testing.assert_allclose(d_room[room_hit], t_room[room_hit], atol=1e-3)
        # the written frame: equal to the planes where nothing is in front, and in front elsewhere
        free = room_hit & (np.abs(depth_png - t_room) <= 1e-3)
        checked += free.sum()
        occ = room_hit & (depth_png > 0) & (depth_png < t_room - 0.05)
        occluded += occ.sum()
        assert ((depth_png[room_hit] <= t_room[room_hit] + 1e-3)).all()
    assert checked > 0.5 * 4 * 320 * 240 * 0.5
    assert occluded > 1000
    # the centre of a visible object occludes the wall/floor behind it, in the written depth
    found = False
    for o in gt["objects"]:
        c = np.append(gt["vertices_raw"][o["point_ids"]].astype(float).mean(0), 1.0)
        for idx, pose in zip(gt["frame_ids"], gt["poses"]):
            p = np.linalg.inv(pose) @ c
            if p[2] <= 0.5:
                continue
            u, v = k[0, 0] * p[0] / p[2] + k[0, 2], k[1, 1] * p[1] / p[2] + k[1, 2]
            if not (0 <= u < 320 and 0 <= v < 240):
                continue
            d = np.asarray(Image.open(gt["frames_dir"] / "depth" / f"{idx}.png"))[int(v), int(u)] / 1000
            if o["raw_label"] in ("office chair", "dining table", "lamp", "desk"):  # see-through shapes
                continue
            assert 0 < d <= p[2] + 0.5
            found = True
    assert found


def test_written_colour_frames_show_the_mesh_colours(scene):
    _, gt = scene
    k = 0
    for idx, pose in zip(gt["frame_ids"], gt["poses"]):
        mesh = (gt["vertices_raw"], gt["faces"], gt["colors"])
        rendered, depth = render_mesh(*mesh, pose, gt["intrinsics"], 320, 240)
        jpg = np.asarray(Image.open(gt["frames_dir"] / "color" / f"{idx}.jpg")).astype(float)
        assert jpg.shape == (240, 320, 3)
        assert np.abs(jpg - rendered).mean() < 6  # jpeg error only
        d_png = np.asarray(Image.open(gt["frames_dir"] / "depth" / f"{idx}.png"))
        np.testing.assert_array_equal(d_png, np.rint(depth * 1000).astype(np.uint16))
        assert (depth > 0).mean() > 0.95  # walls all round; only rays above the walls (no ceiling) miss
        k += 1
    assert k == 4


def test_synthetic_dataset_generates_lazily_once_atomically(tmp_path):
    small = dict(frames_per_scene=2, image_size=(64, 48), num_objects=8)
    root = tmp_path / "synth"
    ds = SyntheticScanNet(str(root), num_scenes=3, seed=1, **small)
    assert not any(tmp_path.iterdir())  # constructing writes nothing
    assert ds.scene_ids == ["scene0000_00", "scene0001_00", "scene0002_00"] and ds.splits == ["train", "val"]
    assert [ds.split_of(s) for s in ds.scene_ids] == ["train", "train", "val"]
    with pytest.raises(ConfigError, match="dataset.splits"):
        ds.split  # noqa: B018 - two splits: no single one
    ds.prepare()
    assert (root / DONE_MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["synth"]  # no temporary folder left
    assert (root / "scannetv2_train.txt").read_text().split() == ["scene0000_00", "scene0001_00"]
    assert (root / "scannetv2_val.txt").read_text().split() == ["scene0002_00"]
    assert (root / "annotations" / "scanrefer" / "ScanRefer_filtered_val.json").is_file()
    assert (root / "mask3d_export" / "val" / "scene0002_00.txt").is_file()
    assert (root / "mask3d_export" / "scannetv2-labels.combined.tsv").is_file()
    stamp = (root / "scans/scene0000_00/scene0000_00_vh_clean_2.ply").stat().st_mtime_ns
    ds.prepare()  # a second prepare: nothing written
    again = SyntheticScanNet(str(root), num_scenes=3, seed=1, **small)
    again.prepare()
    assert (root / "scans/scene0000_00/scene0000_00_vh_clean_2.ply").stat().st_mtime_ns == stamp
    assert [ds.load(s).split for s in ds.scene_ids] == ["train", "train", "val"]
    only_val = SyntheticScanNet(str(root), num_scenes=3, seed=1, splits=["val"], **small)
    assert only_val.scene_ids == ["scene0002_00"]


def test_synthetic_root_stale_or_other_parameters_is_regenerated(tmp_path):
    small = dict(num_scenes=1, frames_per_scene=1, image_size=(32, 24), num_objects=3)
    root = tmp_path / "synth"
    (root / "scans").mkdir(parents=True)  # a half-generated folder: no done-marker
    (root / "scans" / "junk.txt").write_text("half")
    ds = SyntheticScanNet(str(root), seed=1, **small)
    ds.prepare()
    assert not (root / "scans" / "junk.txt").exists() and ds.is_generated()
    first = (root / "scans/scene0000_00/scene0000_00_vh_clean_2.ply").read_bytes()
    other = SyntheticScanNet(str(root), seed=2, **small)
    assert not other.is_generated()  # the marker records seed 1
    other.prepare()
    assert other.is_generated() and not ds.is_generated()
    assert (root / "scans/scene0000_00/scene0000_00_vh_clean_2.ply").read_bytes() != first
    assert [p.name for p in tmp_path.iterdir()] == ["synth"]


def test_synthetic_reader_reads_scenes(tmp_path):
    small = dict(frames_per_scene=2, image_size=(64, 48), num_objects=8)
    ds = SyntheticScanNet(str(tmp_path), num_scenes=2, seed=1, **small)
    ds.prepare()
    ds.check()
    s = ds.load("scene0001_00")
    assert len(s.frames) == 2 and s.frames[1].number == 20 and s.frames[0].image_size == (64, 48)
    labels = [i.label for i in s.instances]
    assert labels[-5:] == ["wall"] * 4 + ["floor"] and len(set(labels[:-5])) >= 8
    assert set(labels) <= {cat for cat, _, _ in RAW_LABELS.values()}
