"""Writing a synthetic scene model (:mod:`.scene`) in the Matterport3D layout and conventions.

One model is one house of two regions in the house frame = the model's raw frame: ``region0`` is the model
(its points equal the ScanNet layout's, its frames the model's cameras, three to a panorama) and ``region1``
the room next door (:func:`next_room`: the same room moved across its +x wall, with one panorama of three
images standing 0.3 m behind the shared wall and looking into it). That panorama's cameras lie within
``frame_margin`` of region 0's box, so the margin heuristic gives them to region 0 too; the ``.house`` file
says which region each panorama is in. Written as Matterport stores it (read by
:class:`featurizer.dataset.matterport.MatterportReader`):

- ``region_segmentations/region<N>.ply``: binary ply, vertex x y z nx ny nz tx ty red green blue, face
  vertex_indices material_id segment_id category_id (labels per FACE);
- ``region<N>.fsegs.json`` (segment per face) and ``region<N>.semseg.json`` (segGroups of raw labels);
- ``undistorted_camera_parameters/<house>.conf``: an ``intrinsics_matrix`` line before every
  ``INTRINSICS_EVERY`` scans, each ``scan`` a row-major camera-to-world in OpenGL camera axes (region 0's
  scans first);
- ``house_segmentations/<house>.house``: the ``ASCII 1.1`` header, H, L, R (one per region), P (the portal
  between the rooms, then the panoramas with their region) and I lines (the images of each panorama), as
  :func:`featurizer.dataset.matterport.read_house` documents;
- ``undistorted_color_images/<pano>_i<cam>_<yaw>.jpg`` and
  ``undistorted_depth_images/<pano>_d<cam>_<yaw>.png`` (uint16, 0.25 mm per unit), both at the image size,
  each rendered from its own region's mesh;
- ``scenes_<split>.txt`` (houses) and ``metadata/category_mapping.tsv`` at the root.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from featurizer.dataset.matterport import CONF_DIR, DEPTH_SCALE, GL_TO_CV, HOUSE_DIR, REGIONS, TSV
from featurizer.dataset.render import look_at, render_mesh
from featurizer.dataset.synthetic.furniture import RAW_LABELS
from featurizer.dataset.synthetic.layout import JPEG_QUALITY
from featurizer.dataset.synthetic.scene import SceneModel, make_scene

INTRINSICS_EVERY = 2  # scans per intrinsics_matrix line (real files: one per camera of a panorama)
TSV_HEADER = ["index", "raw_category", "category", "count", "nyuId", "nyu40id", "eigen13id", "nyu40class",
              "eigen13class", "ModelNet40", "ModelNet10", "ShapeNetCore55", "synsetoffset", "wnsynsetid",
              "wnsynsetkey", "mpcat40index", "mpcat40"]
FLOATS = ("x", "y", "z", "nx", "ny", "nz", "tx", "ty")  # region ply vertex: position, normal, texture
MPCAT40 = {"bookshelf": "shelving", "lamp": "lighting", "refrigerator": "appliances", "desk": "table",
           "nightstand": "chest_of_drawers", "trash can": "objects", "couch": "sofa"}


def house_id_of(index: int) -> str:
    return f"synth{index:04d}house"


def panorama_name(index: int) -> str:
    return f"{index:06d}{'ab' * 13}"


def image_names(n: int, pano: int | None = None, cam: int | None = None) -> tuple[str, str]:
    """(depth, colour) file names ``<pano>_d<cam>_0.png``, ``<pano>_i<cam>_0.jpg`` of image ``cam`` of
    panorama ``pano`` (default: region 0's scan ``n``, panorama ``n // 3``, camera ``n % 3``)."""
    pano = n // 3 if pano is None else pano
    cam = n % 3 if cam is None else cam
    return f"{panorama_name(pano)}_d{cam}_0.png", f"{panorama_name(pano)}_i{cam}_0.jpg"


def next_room(model: SceneModel) -> tuple[np.ndarray, list[np.ndarray]]:
    """Region 1 of the house written for ``model``: the same room moved across its +x wall (the rooms share
    that wall), (V, 3) float32 raw vertices, and the camera-to-world poses (raw frame, OpenCV axes) of its
    one panorama: three cameras 0.3 m behind the shared wall, 1.5 m high, looking into the room."""
    hx = model.room[0] / 2
    shift = model.to_raw[:3, :3] @ np.array([model.room[0], 0.0, 0.0])
    vertices = (model.raw_vertices.astype(np.float64) + shift).astype(np.float32)
    eye = np.array([hx + 0.3, 0.0, 1.5])
    targets = [(3 * hx, -1.5, 0.8), (3 * hx, 0.0, 1.0), (3 * hx, 1.5, 0.8)]
    return vertices, [model.to_raw @ look_at(eye, np.array(t)) for t in targets]


def category_index() -> dict[str, int]:
    return {raw: i for i, raw in enumerate(RAW_LABELS, start=1)}


def write_category_tsv(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["\t".join(TSV_HEADER)]
    for raw, i in category_index().items():
        cat, nyu, nyu_class = RAW_LABELS[raw]
        row = [str(i), raw, cat, "1", "", str(nyu), "", nyu_class] + [""] * 7 + ["", MPCAT40.get(raw, cat)]
        rows.append("\t".join(row))
    path.write_text("\n".join(rows) + "\n")


def write_region(d: Path, region: int, model: SceneModel, vertices: np.ndarray) -> None:
    """``region<region>.ply`` / ``.fsegs.json`` / ``.semseg.json``: the mesh of ``model`` at ``vertices``
    (binary little endian ply with Matterport's vertex and per-face properties)."""
    n, faces = len(vertices), model.faces
    groups = model.objects + model.structure
    group_of_vertex = np.full(n, -1)
    for i, g in enumerate(groups):
        group_of_vertex[g["point_ids"]] = i
    cat = category_index()
    face_group = group_of_vertex[faces[:, 0]]
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment featurizer synthetic Matterport3D region\n"
        f"element vertex {n}\n" + "".join(f"property float {p}\n" for p in FLOATS)
        + "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nproperty int material_id\n"
        "property int segment_id\nproperty int category_id\nend_header\n"
    )
    vdt = np.dtype([(p, "<f4") for p in FLOATS] + [(c, "u1") for c in "rgb"])
    v = np.zeros(n, dtype=vdt)
    v["x"], v["y"], v["z"] = vertices.T
    v["r"], v["g"], v["b"] = model.colors.T
    ints = ("material", "segment", "category")
    fdt = np.dtype([("n", "u1"), ("i", "<i4", (3,))] + [(p, "<i4") for p in ints])
    fa = np.zeros(len(faces), dtype=fdt)
    fa["n"], fa["i"] = 3, faces
    fa["material"] = model.seg[faces[:, 0]]
    fa["segment"] = face_group
    fa["category"] = [cat[groups[g]["raw_label"]] if g >= 0 else 0 for g in face_group]
    stem = d / REGIONS / f"region{region}"
    with open(stem.with_suffix(".ply"), "wb") as fh:
        fh.write(header.encode("ascii") + v.tobytes() + fa.tobytes())
    face_segments = model.seg[model.faces[:, 0]].tolist()
    stem.with_suffix(".fsegs.json").write_text(json.dumps({"segIndices": face_segments}))
    sem = [{"id": i, "objectId": i, "label": g["raw_label"], "segments": g["segments"]}
           for i, g in enumerate(groups)]
    stem.with_suffix(".semseg.json").write_text(json.dumps({"segGroups": sem}, indent=1))


def _numbers(values) -> str:
    return " ".join(f"{x:.9g}" for x in np.asarray(values, dtype=np.float64).reshape(-1))


def house_lines(house: str, regions: list[np.ndarray], scans: list[tuple[int, int, int, np.ndarray]],
                k: np.ndarray, size: tuple[int, int], door: np.ndarray) -> list[str]:
    """The ``.house`` file's lines: header, H, one L, an R per region (its vertices' box), the portal between
    regions 0 and 1 (``door``: its two corners (2, 3)), a P per panorama and an I per scan ``(region,
    panorama, camera, OpenCV camera-to-world)``."""
    lo = np.min([v.min(0) for v in regions], axis=0)
    hi = np.max([v.max(0) for v in regions], axis=0)
    panos = sorted({(s[1], s[0]) for s in scans})
    zeros = "0 0 0 0 0"
    lines = ["ASCII 1.1",
             f"H  {house} -  {len(scans)} {len(panos)} 0 0 0 0 0 {len(regions)} 1 1  {zeros}  "
             f"{_numbers(np.r_[lo, hi])}  {zeros}",
             f"L  0 {len(regions)}  -  {_numbers((lo + hi) / 2)}  {_numbers(np.r_[lo, hi])}  {zeros}"]
    for r, v in enumerate(regions):
        box = np.r_[v.min(0), v.max(0)]
        centre = (box[:3] + box[3:]) / 2
        lines.append(f"R  {r} 0  0 0  {'lb'[r % 2]}  {_numbers(centre)}  {_numbers(box)}  {zeros}")
    lines.append(f"P  0 0 1  door  {_numbers(door)}  0 0 0 0")
    for i, (pano, region) in enumerate(panos):
        centre = np.mean([s[3][:3, 3] for s in scans if s[1] == pano], axis=0)
        lines.append(f"P  {panorama_name(pano)}  {i} {region}  0  {_numbers(centre)}  {zeros}")
    index = {pano: i for i, (pano, _) in enumerate(panos)}
    for i, (_, pano, cam, pose) in enumerate(scans):
        w2c_gl = np.linalg.inv(pose @ GL_TO_CV)  # the extrinsics (world -> camera), the .conf's camera axes
        lines.append(f"I  {i} {index[pano]}  {panorama_name(pano)} {cam} 0  {_numbers(w2c_gl)}  "
                     f"{_numbers(k)}  {size[0]} {size[1]}  {_numbers(pose[:3, 3])}  {zeros}")
    return lines


def write_house(root: Path, house: str, model: SceneModel, image_size: tuple[int, int]) -> Path:
    """Write ``model`` as house ``house`` (region 0, and :func:`next_room` as region 1) under ``root``;
    returns the house folder."""
    from PIL import Image

    d = Path(root) / house
    for sub in (REGIONS, CONF_DIR, HOUSE_DIR, "undistorted_color_images", "undistorted_depth_images"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    room1, poses1 = next_room(model)
    regions = [model.raw_vertices, room1]
    for r, vertices in enumerate(regions):
        write_region(d, r, model, vertices)
    last = (len(model.poses) + 2) // 3  # region 0's scans fill panoramas 0 .. last - 1
    scans = [(0, n // 3, n % 3, pose) for n, pose in enumerate(model.poses)]
    scans += [(1, last, cam, pose) for cam, pose in enumerate(poses1)]
    k = model.k_image
    lines = ["dataset matterport", f"n_images {len(scans)}", "depth_directory undistorted_depth_images",
             "color_directory undistorted_color_images", ""]
    for n, (region, pano, cam, pose) in enumerate(scans):
        if n % INTRINSICS_EVERY == 0:
            lines.append("intrinsics_matrix " + " ".join(f"{x:.17g}" for x in k.reshape(-1)))
        depth_name, color_name = image_names(n, pano, cam)
        c2w_gl = pose @ GL_TO_CV  # OpenCV camera -> OpenGL camera (the flip is its own inverse)
        lines.append(f"scan {depth_name} {color_name} " + " ".join(f"{x:.17g}" for x in c2w_gl.reshape(-1)))
        color, depth = render_mesh(regions[region], model.faces, model.colors, pose, k, *image_size)
        Image.fromarray(color).save(d / "undistorted_color_images" / color_name, quality=JPEG_QUALITY)
        raw = np.clip(np.rint(depth * DEPTH_SCALE), 0, 65535).astype(np.uint16)
        Image.fromarray(raw).save(d / "undistorted_depth_images" / depth_name)
    (d / CONF_DIR / f"{house}.conf").write_text("\n".join(lines) + "\n")
    hx = model.room[0] / 2  # a door in the shared wall (aligned frame), as the portal's corners
    door = np.array([[hx, -0.45, 0.0], [hx, 0.45, 2.0]]) @ model.to_raw[:3, :3].T + model.to_raw[:3, 3]
    house_file = house_lines(house, regions, scans, k, image_size, door)
    (d / HOUSE_DIR / f"{house}.house").write_text("\n".join(house_file) + "\n")
    return d


def generate_matterport(root: Path, num_houses: int, frames_per_house: int, seed: int,
                        image_size: tuple[int, int] = (640, 480), num_objects: int = 10,
                        splits: list[str] | None = None) -> list[SceneModel]:
    """Houses ``synth<i>house`` (two regions each: :func:`write_house`) from the models :func:`make_scene`
    draws for ``default_rng([seed, i])``: the models of
    :func:`featurizer.dataset.synthetic.generate.generate_dataset` with the same seed and sizes.
    splits: the split of each house (default all ``val``)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_category_tsv(root / TSV)
    splits = list(splits) if splits is not None else ["val"] * num_houses
    size = (int(image_size[0]), int(image_size[1]))
    models = []
    for i in range(num_houses):
        model = make_scene(np.random.default_rng([int(seed), i]), frames_per_house, size, size, num_objects,
                           1000, exact_f32=False)
        write_house(root, house_id_of(i), model, size)
        models.append(model)
    for split in dict.fromkeys(splits):
        houses = [house_id_of(i) for i, s in enumerate(splits) if s == split]
        (root / f"scenes_{split}.txt").write_text("\n".join(houses) + "\n")
    return models
