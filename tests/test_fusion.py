"""Fusion strategies and the 2D stage: the paper against an independent implementation of DESIGN.md
section 5, hand-computed mask pooling, top-k view choice, crops, unseen instances, records."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from featurizer.dataset.frames import MemorySource
from featurizer.dataset.render import box_mesh, look_at
from featurizer.encoder2d.base import PatchEncoder
from featurizer.fusion.base import PointInstanceIndex, ViewBatch
from featurizer.fusion.crop_encode import CropEncodeFusion, crop_boxes, pad_square
from featurizer.fusion.mask_pool import MaskPoolFusion
from featurizer.fusion.mean import MeanFusion
from featurizer.fusion.paper import PaperFusion
from featurizer.fusion.topk_views import TopKViewsFusion
from featurizer.scene import Frame, Instance, Scene
from featurizer.stage2d import run_2d
from reference_mapping import project_points

DIM = 8


class ProcessorFake(PatchEncoder):
    """DINOv2's processor geometry with deterministic tokens: resize the short side to 256 (the long
    side to int(256 * long / short), as transformers' get_resize_output_image_size), centre crop 224
    at ((w' - 224) // 2, (h' - 224) // 2) as transformers' center_crop (640x480 -> 341x256, crop at
    (58, 16)), 14 px patches -> a 16 x 16 grid. A token holds its cell, the colour of the frame pixel
    at the cell centre and the frame's mean colour."""

    name, dim, patch_size = "fake", DIM, 14

    def _geometry(self, image_size):
        w, h = image_size
        nw, nh = (int(256 * w / h), 256) if w >= h else (256, int(256 * h / w))
        return nw / w, nh / h, (nw - 224) // 2, (nh - 224) // 2

    def grid_shape(self, image_size):
        return 16, 16

    def encoded_region(self, image_size):
        sx, sy, x0, y0 = self._geometry(image_size)
        return x0 / sx, y0 / sy, (x0 + 224) / sx, (y0 + 224) / sy

    def pixel_to_patch(self, u, v, image_size):
        sx, sy, x0, y0 = self._geometry(image_size)
        x = (u.double() + 0.5) * sx - x0
        y = (v.double() + 0.5) * sy - y0
        valid = (x >= 0) & (x < 224) & (y >= 0) & (y < 224)
        return (torch.floor(y / 14).long().clamp(0, 15), torch.floor(x / 14).long().clamp(0, 15), valid)

    def patch_tokens(self, images):
        b, h, w, _ = images.shape
        sx, sy, x0, y0 = self._geometry((w, h))
        centre = (torch.arange(16, dtype=torch.float64) + 0.5) * 14
        xs = ((centre + x0) / sx).long().clamp(0, w - 1)
        ys = ((centre + y0) / sy).long().clamp(0, h - 1)
        img = images.double() / 255.0
        sample = img[:, ys][:, :, xs]  # (B, 16, 16, 3)
        rr, cc = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
        cell = torch.stack([rr / 16, cc / 16, torch.sin(rr * 1.3 + cc * 0.7), torch.cos(rr * 0.4 - cc * 1.1)], -1)
        mean = img.mean((1, 2))[:, None, None, :1].expand(b, 16, 16, 1)
        return torch.cat([cell.expand(b, 16, 16, 4).double(), sample, mean], -1).float()

    def embed(self, images):
        out = []
        for im in images:
            a = np.asarray(im, dtype=np.float64) / 255.0
            out.append([a.shape[0] / 100, a.shape[1] / 100, *a.mean((0, 1)), a[0, 0, 0], a[-1, -1, 1], a.std()])
        return torch.tensor(out, dtype=torch.float32)


class GridFake(PatchEncoder):
    """A full-frame grid of ``patch``-pixel cells; pixels at column >= ``valid_width`` are outside the
    encoded region. Tokens come from a table given per frame (for hand-computed cases)."""

    name, dim = "grid", 3

    def __init__(self, patch=10, valid_width=10**6):
        super().__init__()
        self.patch, self.valid_width = patch, valid_width

    def grid_shape(self, image_size):
        return image_size[1] // self.patch, image_size[0] // self.patch

    def encoded_region(self, image_size):
        return 0.0, 0.0, float(image_size[0]), float(image_size[1])

    def pixel_to_patch(self, u, v, image_size):
        rows, cols = self.grid_shape(image_size)
        return ((v // self.patch).clamp(0, rows - 1), (u // self.patch).clamp(0, cols - 1), u < self.valid_width)


# ---------------------------------------------------------------------------------------------------
# A synthetic scene: coloured boxes in a room, RGB-D frames rendered around it


def surface_points(lo, hi, n, rng):
    p = rng.uniform(lo, hi, size=(n, 3))
    axis, side = rng.integers(0, 3, n), rng.integers(0, 2, n)
    p[np.arange(n), axis] = np.where(side == 1, np.asarray(hi)[axis], np.asarray(lo)[axis])
    return p


def synthetic_scene(n_boxes=14, n_frames=10, pts_per_box=900, seed=0, unseen=True) -> Scene:
    from featurizer.dataset.render import render_mesh

    rng = np.random.default_rng(seed)
    verts, faces, vcols, points, colors, instances = [], [], [], [], [], []
    for i in range(n_boxes):
        size = rng.uniform(0.3, 1.2, 3)
        lo = np.append(rng.uniform(-2.5, 2.5 - size[:2]), 0.0)
        hi = lo + size
        v, f = box_mesh(lo, hi)
        col = rng.integers(30, 255, 3)
        faces.append(f + sum(len(x) for x in verts))
        verts.append(v)
        vcols.append(np.tile(col, (8, 1)))
        p = surface_points(lo, hi, pts_per_box, rng)
        start = sum(len(x) for x in points)
        points.append(p)
        colors.append(np.tile(col, (len(p), 1)))
        instances.append(Instance(np.arange(start, start + len(p)), f"box{i}"))
    if unseen:  # far below the floor: no camera sees it
        p = surface_points((0, 0, -30), (1, 1, -29), 200, rng)
        start = sum(len(x) for x in points)
        points.append(p)
        colors.append(np.full((len(p), 3), 9))
        instances.append(Instance(np.arange(start, start + len(p)), "unseen"))
    # overlapping instances (Chat-Scene's masks may overlap): the union of boxes 0 and 1, and a part of 2
    instances.append(Instance(np.concatenate([instances[0].point_ids, instances[1].point_ids]), "pair"))
    instances.append(Instance(instances[2].point_ids[::3], "part"))
    points, colors = np.concatenate(points), np.concatenate(colors)
    verts, faces, vcols = np.concatenate(verts), np.concatenate(faces), np.concatenate(vcols)
    k = np.array([[577.9, 0, 319.5], [0, 577.9, 239.5], [0, 0, 1]])
    frames = []
    for j in range(n_frames):
        a = 2 * np.pi * j / n_frames
        eye = [5.0 * np.cos(a), 5.0 * np.sin(a), 1.6 + 0.3 * np.sin(3 * a)]
        pose = look_at(eye, rng.uniform(-0.8, 0.8, 3) * [1, 1, 0.3])
        color, depth = render_mesh(verts, faces, vcols, pose, k, 640, 480)
        frames.append(Frame(j, pose, k, (640, 480), source=MemorySource(color, depth)))
    return Scene("scene0000_00", points, colors, instances=instances, frames=frames)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return synthetic_scene()


# ---------------------------------------------------------------------------------------------------
# The paper, against a straightforward implementation of DESIGN.md section 5 written here


def _gift_wrap_area(pix: list[tuple[int, int]]) -> tuple[float, list[tuple[int, int]]]:
    """Area and vertices of the convex hull by gift wrapping (Jarvis march), independent of the code."""
    pts = sorted(set(pix))
    if len(pts) < 3:
        return 0.0, pts
    start = pts[0]
    hull, p = [], start
    while True:
        hull.append(p)
        q = pts[0] if pts[0] != p else pts[1]
        for r in pts:
            if r == p:
                continue
            cross = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
            d_q = (q[0] - p[0]) ** 2 + (q[1] - p[1]) ** 2
            d_r = (r[0] - p[0]) ** 2 + (r[1] - p[1]) ** 2
            if cross < 0 or (cross == 0 and d_r > d_q):  # r is more clockwise, or farther on the same line
                q = r
        p = q
        if p == start or len(hull) > len(pts):
            break
    area = 0.0
    for (x1, y1), (x2, y2) in zip(hull, hull[1:] + hull[:1]):
        area += x1 * y2 - x2 * y1
    return abs(area) / 2.0, hull


def visible_pixels(scene: Scene, depths: list[np.ndarray] | None = None) -> list[dict[int, tuple[int, int]]]:
    """Per frame {point: (row, col)} of the points that pass the border and 25% depth test, per point in
    float64 (depths: metres, default the frames' own)."""
    visible = []
    for f, frame in enumerate(scene.frames):
        depth = frame.read()[1] if depths is None else depths[f]
        w2c = np.linalg.inv(frame.pose)
        cam = np.c_[scene.points.astype(np.float64), np.ones(len(scene.points))] @ w2c.T
        x, y, z = cam[:, 0], cam[:, 1], cam[:, 2]
        k = frame.intrinsics
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.round(k[0, 0] * x / z + k[0, 2])
            v = np.round(k[1, 1] * y / z + k[1, 2])
        seen = {}
        for n in range(len(z)):
            if z[n] > 0 and 10 <= u[n] < 640 - 10 and 10 <= v[n] < 480 - 10:
                d = float(depth[int(v[n]), int(u[n])])
                if abs(d - z[n]) <= 0.25 * d:
                    seen[n] = (int(v[n]), int(u[n]))
        visible.append(seen)
    return visible


def reference_paper(scene: Scene, tokens: list[np.ndarray]) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    """Chat-Scene's algorithm, the slow way: per frame numpy projection, per (instance, frame) sets."""
    feats, views = {}, {}
    visible = visible_pixels(scene)
    for i, inst in enumerate(scene.instances):
        ids = set(inst.point_ids.tolist())
        acc, total, n_views = None, 0.0, 0
        for f, seen in enumerate(visible):
            common = ids & set(seen)
            if len(common) < 3:
                continue
            pix = [seen[n] for n in common]  # (row, col)
            area, hull = _gift_wrap_area(pix)
            if area == 0 or area < (480 // 16) * (640 // 16):
                continue
            r0, r1 = min(p[0] for p in hull), max(p[0] for p in hull)
            c0, c1 = min(p[1] for p in hull), max(p[1] for p in hull)
            feat = tokens[f][r0 // 30: math.ceil(r1 / 30), c0 // 40: math.ceil(c1 / 40)].reshape(-1, DIM).mean(0)
            acc = area * feat if acc is None else acc + area * feat
            total += area
            n_views += 1
        if acc is not None:
            feats[i] = acc / total
            views[i] = n_views
    return feats, views


def test_paper_matches_an_independent_implementation(scene):
    enc = ProcessorFake()
    tokens = [enc.patch_tokens(torch.from_numpy(f.read()[0])[None])[0].double().numpy() for f in scene.frames]
    want, want_views = reference_paper(scene, tokens)
    result = run_2d(scene, enc, PaperFusion(), frame_batch=4)
    assert len(want) >= len(scene.instances) - 4  # most instances are seen with a large enough hull
    assert sorted(result.features) == sorted(want)
    for i, f in want.items():
        assert result.features[i].dtype == torch.float32 and result.features[i].shape == (DIM,)
        np.testing.assert_allclose(result.features[i].numpy(), f, atol=1e-5, rtol=0)
        assert result.records[i]["views"] == want_views[i]
    assert set(result.records) == set(range(len(scene.instances)))
    assert set(result.timings) == {"decode", "encode", "map", "fuse"}


class GivenTokens(ProcessorFake):
    """The processor geometry with given (F, 16, 16, D) float32 tokens, handed out in frame order."""

    def __init__(self, tokens: torch.Tensor):
        super().__init__()
        self.tokens, self.next, self.dim = tokens, 0, tokens.shape[-1]

    def patch_tokens(self, images):
        self.next += len(images)
        return self.tokens[self.next - len(images):self.next]


def reference_paper_float32(scene: Scene, depths: list[np.ndarray],
                            tokens: torch.Tensor) -> dict[int, torch.Tensor]:
    """DESIGN.md section 5 in the reference's float32 torch arithmetic, a loop: per kept view the mean
    ``tokens[f, r0 // 30 : ceil(r1 / 30), c0 // 40 : ceil(c1 / 40)].flatten(0, 1).mean(0)``; per instance,
    in frame order, ``feature += (area / total area) * view feature`` on float32 zeros, the float64
    weight a 0-dim tensor as in the reference."""
    visible = visible_pixels(scene, depths)
    feats = {}
    for i, inst in enumerate(scene.instances):
        ids = set(inst.point_ids.tolist())
        views = []
        for f, seen in enumerate(visible):
            common = ids & set(seen)
            if len(common) < 3:
                continue
            area, hull = _gift_wrap_area([seen[n] for n in common])
            if area == 0 or area < (480 // 16) * (640 // 16):
                continue
            r0, r1 = min(p[0] for p in hull), max(p[0] for p in hull)
            c0, c1 = min(p[1] for p in hull), max(p[1] for p in hull)
            crop = tokens[f, r0 // 30: math.ceil(r1 / 30), c0 // 40: math.ceil(c1 / 40)]
            views.append((torch.tensor(area, dtype=torch.float64), crop.flatten(0, 1).mean(0)))
        if views:
            total = sum(a for a, _ in views)
            feat = torch.zeros(tokens.shape[-1], dtype=torch.float32)
            for a, view in views:
                feat += (a / total) * view
            feats[i] = feat
    return feats


def test_paper_is_bit_identical_to_the_float32_reference(scene):
    # depth as ScanNet's PNGs hold it (uint16 mm): featurizer reads float32(mm) / 1000 in float32 (as
    # the frame reader does), the reference divides in float64 (as the published loop does)
    mm = [np.round(f.read()[1] * 1000).astype(np.uint16) for f in scene.frames]
    frames = [Frame(f.number, f.pose, f.intrinsics, f.image_size,
                    source=MemorySource(f.read()[0], d.astype(np.float32) / 1000.0))
              for f, d in zip(scene.frames, mm)]
    png = Scene(scene.scene_id, scene.points, scene.colors, instances=scene.instances, frames=frames)
    tokens = np.random.default_rng(5).normal(size=(len(frames), 16, 16, 64)).astype(np.float32)
    tokens = torch.from_numpy(tokens)
    want = reference_paper_float32(png, [d / 1000 for d in mm], tokens)
    result = run_2d(png, GivenTokens(tokens), PaperFusion(), frame_batch=3)  # batches split the views
    assert sorted(result.features) == sorted(want) and len(want) >= len(png.instances) - 4
    assert max(r["views"] for r in result.records.values()) >= 4
    for i, f in want.items():
        assert torch.equal(result.features[i], f), (i, float((result.features[i] - f).abs().max()))


def test_paper_area_cut_and_degenerate_hull():
    # a single 640x480 frame; instance 0: 50 pixels on one row (degenerate hull), instance 1: a
    # 20 x 20 px square (area 400 < 1200), instance 2: a 100 x 60 px rectangle (kept)
    fusion = PaperFusion()
    fusion.start(3, ProcessorFake())
    u = [list(range(100, 150)), [300, 320, 300, 320], [200, 300, 200, 300, 250]]
    v = [[40] * 50, [100, 100, 120, 120], [200, 200, 260, 260, 230]]
    inst = torch.tensor([i for i in range(3) for _ in u[i]])
    tokens = torch.arange(16 * 16 * DIM, dtype=torch.float32).view(1, 16, 16, DIM)
    batch = ViewBatch([0], (640, 480), inst, torch.zeros_like(inst), torch.tensor(sum(u, [])),
                      torch.tensor(sum(v, [])), tokens)
    fusion.add(batch)
    feats, records = fusion.finish()
    assert sorted(feats) == [2]
    assert records[0]["reason"] == records[1]["reason"] == "no view passed the area cut"
    # rows 200..260 -> cells 6 .. ceil(260 / 30) = 9; cols 200..300 -> 5 .. ceil(300 / 40) = 8
    want = tokens[0, 6:9, 5:8].reshape(-1, DIM).mean(0)
    assert torch.allclose(feats[2], want)


# ---------------------------------------------------------------------------------------------------
# Hand-computed cases


def _hand_batch():
    """Two 40 x 20 frames, 10 px patches (2 x 4 grid), pixels at u >= 30 outside the encoded region."""
    tok = torch.zeros(2, 2, 4, 3)
    for r in range(2):
        for c in range(4):
            tok[0, r, c] = torch.tensor([r, c, 1.0])
            tok[1, r, c] = torch.tensor([10.0 * r, c * c, 2.0])
    pairs = [  # (instance, frame, u, v)
        (0, 0, 1, 1), (0, 0, 2, 2), (0, 0, 15, 3), (0, 0, 35, 5),
        (0, 1, 5, 15), (0, 1, 25, 12), (0, 1, 26, 18), (0, 1, 12, 2),
        (1, 0, 3, 3), (1, 0, 4, 4),  # 2 points: below min_points
        (1, 1, 31, 1), (1, 1, 33, 2), (1, 1, 39, 19),  # 3 points, all outside the encoded region
    ]
    i, b, u, v = (torch.tensor(x) for x in zip(*pairs))
    return ViewBatch([0, 1], (40, 20), i, b, u, v, tok)


def test_mask_pool_hand_computed():
    fusion = MaskPoolFusion(min_points=3)
    fusion.start(3, GridFake(patch=10, valid_width=30))
    fusion.add(_hand_batch())
    feats, records = fusion.finish()
    # instance 0, frame 0: patches (0,0) x2, (0,1) x1, one pixel dropped -> view 0 = (2*[0,0,1] + [0,1,1]) / 3
    # frame 1: (1,0) [10,0,2], (1,2) [10,4,2] x2, (0,1) [0,1,2] -> view 1 = [30, 9, 8] / 4
    view0, view1 = np.array([0, 1, 3]) / 3, np.array([30, 9, 8]) / 4
    want = (3 * view0 + 4 * view1) / 7
    assert sorted(feats) == [0]
    np.testing.assert_allclose(feats[0].numpy(), want, atol=1e-6)
    assert records[0] == {"views": 2, "visible_points": 8, "reason": None}
    assert records[1] == {"views": 0, "visible_points": 5, "reason": "no visible point inside the encoded region"}
    assert records[2] == {"views": 0, "visible_points": 0, "reason": "no visible points"}


def test_mean_hand_computed():
    fusion = MeanFusion(min_points=3)
    fusion.start(3, GridFake(patch=10, valid_width=30))
    fusion.add(_hand_batch())
    feats, records = fusion.finish()
    tok = _hand_batch().tokens
    view0 = tok[0, 0:1, 0:2].reshape(-1, 3).mean(0)  # patches (0,0)..(0,1)
    view1 = tok[1, 0:2, 0:3].reshape(-1, 3).mean(0)  # patches rows 0..1, cols 0..2
    np.testing.assert_allclose(feats[0].numpy(), ((view0 + view1) / 2).numpy(), atol=1e-6)
    assert records[0]["views"] == 2 and records[1]["reason"] == "no visible point inside the encoded region"


def test_topk_picks_the_views_with_most_points_across_batches():
    rng = np.random.default_rng(0)
    counts0 = [5, 9, 3, 9, 12, 2]  # instance 0: best 12 (frame 4), then 9 at frames 1 and 3: the earlier wins
    counts1 = [2, 2, 0, 0, 1, 0]  # instance 1: never 3 points in a view
    tokens = torch.from_numpy(rng.normal(size=(6, 2, 4, 3))).float()
    fusion = TopKViewsFusion(k=2, min_points=3)
    enc = GridFake(patch=10)
    fusion.start(2, enc)
    per_frame = []
    for f0 in (0, 2, 4):  # three batches of two frames
        pairs = []
        for b in range(2):
            for i, counts in enumerate((counts0, counts1)):
                for _ in range(counts[f0 + b]):
                    pairs.append((i, b, int(rng.integers(0, 40)), int(rng.integers(0, 20))))
        per_frame.append(pairs)
        i, b, u, v = (torch.tensor(x) for x in zip(*pairs))
        fusion.add(ViewBatch([f0, f0 + 1], (40, 20), i, b, u, v, tokens[f0:f0 + 2]))
    assert fusion.chosen_frames() == {0: [4, 1], 1: []}
    feats, records = fusion.finish()
    total, n = torch.zeros(3, dtype=torch.float64), 0
    for f in (4, 1):
        for i, b, u, v in per_frame[f // 2]:
            if i == 0 and b == f % 2:
                total += tokens[f, v // 10, u // 10].double()
                n += 1
    np.testing.assert_allclose(feats[0].numpy(), (total / n).numpy(), atol=1e-6)
    assert records[0]["views"] == 2 and records[0]["visible_points"] == sum(counts0)
    assert records[1]["reason"] == "fewer than 3 visible points in every view"


def test_crop_boxes_and_padding():
    # OpenMask3D's mask2box_multi_level: level l widens by int(side * 0.1) * l, clipped to the image
    assert crop_boxes((100, 50, 199, 89), 3, 0.1, (640, 480)) == [(100, 50, 200, 90), (90, 46, 210, 94),
                                                                 (80, 42, 220, 98)]
    assert crop_boxes((0, 0, 9, 469), 2, 0.1, (640, 480)) == [(0, 0, 10, 470), (0, 0, 11, 480)]
    img = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3) + 1
    sq = pad_square(img, 0)
    assert sq.shape == (4, 4, 3) and (sq[1:3] == img).all() and sq[0].sum() == 0 and sq[3].sum() == 0


# ---------------------------------------------------------------------------------------------------
# Every strategy on the synthetic scene


STRATEGIES = {
    "paper": lambda: PaperFusion(),
    "mean": lambda: MeanFusion(depth_mode="relative", depth_tol=0.25),
    "mask_pool": lambda: MaskPoolFusion(),
    "topk_views": lambda: TopKViewsFusion(k=3),
    "crop_encode": lambda: CropEncodeFusion(k=2, levels=2, embed_batch=5),
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_unseen_instance_gets_no_feature_and_a_reason(scene, name):
    result = run_2d(scene, ProcessorFake(), STRATEGIES[name](), frame_batch=4)
    unseen = next(i for i, inst in enumerate(scene.instances) if inst.label == "unseen")
    assert unseen not in result.features
    assert result.records[unseen] == {"views": 0, "visible_points": 0, "reason": "no visible points"}
    assert set(result.records) == set(range(len(scene.instances)))
    assert len(result.features) >= len(scene.instances) - 4
    for i, f in result.features.items():
        assert f.shape == (DIM,) and f.dtype == torch.float32 and bool(torch.isfinite(f).all())
        assert result.records[i]["reason"] is None and result.records[i]["views"] >= 1
    for i, rec in result.records.items():
        assert (rec["reason"] is None) == (i in result.features)
    # the overlapping "pair" instance (boxes 0 and 1) sees at least the points of box 0
    pair = next(i for i, inst in enumerate(scene.instances) if inst.label == "pair")
    assert result.records[pair]["visible_points"] == result.records[0]["visible_points"] + \
        result.records[1]["visible_points"]


def test_crop_encode_embeds_the_crops_of_the_chosen_views(scene):
    enc = ProcessorFake()
    topk = TopKViewsFusion(k=2, depth_mode="absolute", depth_tol=0.1)
    run_2d(scene, enc, topk, frame_batch=4)
    chosen = topk.chosen_frames()
    result = run_2d(scene, enc, CropEncodeFusion(k=2, levels=3, expansion=0.1), frame_batch=3)
    i = 3
    crops = []
    for f in chosen[i]:
        frame = scene.frames[f]
        color, depth = frame.read()
        ids = scene.instances[i].point_ids
        m = project_points(scene.points[ids], frame.pose[None], frame.intrinsics[None], depth[None],
                           depth_mode="absolute", depth_tol=0.1, border=10)
        box = (int(m.u.min()), int(m.v.min()), int(m.u.max()), int(m.v.max()))
        for x0, y0, x1, y1 in crop_boxes(box, 3, 0.1, (640, 480)):
            crops.append(pad_square(color[y0:y1, x0:x1]))
    want = enc.embed(crops).double().mean(0)
    assert len(crops) == 6
    np.testing.assert_allclose(result.features[i].numpy(), want.numpy(), atol=1e-5)
    assert result.records[i]["views"] == 2


def test_workers_batches_and_devices_agree(scene):
    base = run_2d(scene, ProcessorFake(), MaskPoolFusion(), frame_batch=8)
    other = run_2d(scene, ProcessorFake(), MaskPoolFusion(), frame_batch=3, num_workers=2)
    assert sorted(base.features) == sorted(other.features)
    for i in base.features:
        np.testing.assert_allclose(base.features[i].numpy(), other.features[i].numpy(), atol=1e-5)
    assert base.records == other.records


def test_no_frames_and_non_finite_poses(scene):
    empty = Scene("scene0001_00", scene.points, scene.colors, instances=scene.instances, frames=[])
    result = run_2d(empty, ProcessorFake(), MaskPoolFusion())
    assert result.features == {}
    assert all(r == {"views": 0, "visible_points": 0, "reason": "no frames"} for r in result.records.values())
    frames = [Frame(f.number, f.pose, f.intrinsics, f.image_size, source=f.source) for f in scene.frames[:3]]
    frames[1].pose[0, 0] = -np.inf
    bad = Scene("scene0002_00", scene.points, scene.colors, instances=scene.instances, frames=frames)
    good = Scene("scene0002_00", scene.points, scene.colors, instances=scene.instances,
                 frames=[frames[0], frames[2]])
    with pytest.warns(UserWarning, match="non-finite pose"):
        a = run_2d(bad, ProcessorFake(), MaskPoolFusion())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = run_2d(good, ProcessorFake(), MaskPoolFusion())
    assert a.records == b.records and sorted(a.features) == sorted(b.features)


def test_point_instance_index_handles_overlaps_and_bad_ids():
    idx = PointInstanceIndex([np.array([0, 2, 2, 5]), np.array([2, 3]), np.array([], dtype=np.int64)], 6)
    assert idx.points.tolist() == [0, 2, 3, 5] and idx.sizes.tolist() == [3, 2, 0]
    rep, inst = idx.expand(torch.tensor([1, 3, 0, 1]))  # local ids: points 2, 5, 0, 2
    assert list(zip(rep.tolist(), inst.tolist())) == [(0, 0), (0, 1), (1, 0), (2, 0), (3, 0), (3, 1)]
    from featurizer.errors import DataError

    with pytest.raises(DataError, match="instance 1"):
        PointInstanceIndex([np.array([0]), np.array([7])], 6, where="scene0000_00")


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_traces_describe_the_views_used(scene, name):
    """Each strategy's typed traces (featurizer.viz's pictures): one per frame that sees the instance,
    the kept ones are the views the record counts, with a pooled region inside the frame."""
    from featurizer.fusion.base import ViewTrace
    from featurizer.viz import trace_instance

    i = 3
    traces, record = trace_instance(scene, i, ProcessorFake(), STRATEGIES[name](), frame_batch=4)
    assert traces and all(isinstance(t, ViewTrace) for t in traces)
    assert [t.position for t in traces] == sorted(t.position for t in traces)
    kept = [t for t in traces if t.kept]
    assert len(kept) == record["views"] >= 1
    for t in traces:
        assert len(t.u) == len(t.v) > 0 and t.note
        assert (t.weight > 0) == t.kept
        regions = np.asarray(t.regions).reshape(-1, 4)
        if t.kept:
            assert len(regions) >= 1
            assert (regions[:, :2] >= 0).all() and (regions[:, 2:] <= (640, 480)).all()
            assert (regions[:, 2] > regions[:, 0]).all() and (regions[:, 3] > regions[:, 1]).all()
        if t.kept and t.region_weights is not None:  # mask pooling: the points pooled in each cell
            assert len(t.region_weights) == len(regions) and float(np.sum(t.region_weights)) == t.weight
    if name == "paper":  # the weight is the area of the hull of the view's pixels
        for t in kept:
            area, _ = _gift_wrap_area(list(zip(t.v.tolist(), t.u.tolist())))
            assert t.weight == area and len(t.hull) >= 3
    if name in ("topk_views", "crop_encode"):  # the chosen views, and only those
        topk = TopKViewsFusion(k=STRATEGIES[name]().k)
        run_2d(Scene(scene.scene_id, scene.points, scene.colors, instances=[scene.instances[i]],
                     frames=scene.frames), ProcessorFake(), topk, frame_batch=4)
        assert sorted(t.position for t in kept) == sorted(topk.chosen_frames()[0])


@pytest.mark.parametrize("name", ["paper", "topk_views"])
def test_one_traced_pass_for_several_instances_equals_one_pass_each(scene, name):
    """featurizer.viz.trace_instances (the run's pictures: one 2D pass for all of them) gives each
    instance the traces and record that tracing it alone gives (its visible pixels in another order)."""
    from featurizer.viz import trace_instance, trace_instances

    indices = [5, 1, 3]
    together = trace_instances(scene, indices, ProcessorFake(), STRATEGIES[name](), frame_batch=4)
    assert list(together) == indices
    for i in indices:
        traces, record = trace_instance(scene, i, ProcessorFake(), STRATEGIES[name](), frame_batch=4)
        got, got_record = together[i]
        assert got_record == record and traces and len(got) == len(traces)
        for a, b in zip(got, traces):
            assert (a.position, a.kept, a.weight, a.note) == (b.position, b.kept, b.weight, b.note)
            assert sorted(zip(a.u.tolist(), a.v.tolist())) == sorted(zip(b.u.tolist(), b.v.tolist()))
            np.testing.assert_array_equal(a.regions, b.regions)
            assert sorted(map(tuple, a.hull.tolist())) == sorted(map(tuple, b.hull.tolist()))
