"""Writing a synthetic scene model (:mod:`.scene`) in the Matterport3D layout and conventions.

One model is one house with one region (``region0``), in the house frame = the model's raw frame (so its
points equal the ScanNet layout's). Written as Matterport stores it (read by
:class:`featurizer.dataset.matterport.MatterportReader`):

- ``region_segmentations/region0.ply``: binary ply, vertex x y z nx ny nz tx ty red green blue, face
  vertex_indices material_id segment_id category_id (labels per FACE);
- ``region0.fsegs.json`` (segment per face) and ``region0.semseg.json`` (segGroups of raw labels);
- ``undistorted_camera_parameters/<house>.conf``: an ``intrinsics_matrix`` line before every
  ``INTRINSICS_EVERY`` scans, each ``scan`` a row-major camera-to-world in OpenGL camera axes;
- ``undistorted_color_images/<pano>_i<cam>_<yaw>.jpg`` and
  ``undistorted_depth_images/<pano>_d<cam>_<yaw>.png`` (uint16, 0.25 mm per unit), both at the image size;
- ``scenes_<split>.txt`` (houses) and ``metadata/category_mapping.tsv`` at the root.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from featurizer.dataset.matterport import CONF_DIR, DEPTH_SCALE, GL_TO_CV, REGIONS, TSV
from featurizer.dataset.render import render_mesh
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


def image_names(n: int) -> tuple[str, str]:
    """(depth, colour) file names of scan ``n``: ``<pano>_d<cam>_<yaw>.png``, ``<pano>_i<cam>_<yaw>.jpg``."""
    pano, cam, yaw = f"{n // 3:06d}{'ab' * 13}", n % 3, 0
    return f"{pano}_d{cam}_{yaw}.png", f"{pano}_i{cam}_{yaw}.jpg"


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


def write_region_ply(path: Path, model: SceneModel) -> None:
    """The region mesh with Matterport's vertex and per-face properties (binary little endian)."""
    n, faces = len(model.raw_vertices), model.faces
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
    v["x"], v["y"], v["z"] = model.raw_vertices.T
    v["r"], v["g"], v["b"] = model.colors.T
    ints = ("material", "segment", "category")
    fdt = np.dtype([("n", "u1"), ("i", "<i4", (3,))] + [(p, "<i4") for p in ints])
    fa = np.zeros(len(faces), dtype=fdt)
    fa["n"], fa["i"] = 3, faces
    fa["material"] = model.seg[faces[:, 0]]
    fa["segment"] = face_group
    fa["category"] = [cat[groups[g]["raw_label"]] if g >= 0 else 0 for g in face_group]
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii") + v.tobytes() + fa.tobytes())


def write_house(root: Path, house: str, model: SceneModel, image_size: tuple[int, int]) -> Path:
    """Write ``model`` as house ``house`` (region 0) under ``root``; returns the house folder."""
    from PIL import Image

    d = Path(root) / house
    for sub in (REGIONS, CONF_DIR, "undistorted_color_images", "undistorted_depth_images"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    write_region_ply(d / REGIONS / "region0.ply", model)
    face_segments = model.seg[model.faces[:, 0]].tolist()
    (d / REGIONS / "region0.fsegs.json").write_text(json.dumps({"segIndices": face_segments}))
    groups = [{"id": i, "objectId": i, "label": g["raw_label"], "segments": g["segments"]}
              for i, g in enumerate(model.objects + model.structure)]
    (d / REGIONS / "region0.semseg.json").write_text(json.dumps({"segGroups": groups}, indent=1))
    k = model.k_image
    lines = ["dataset matterport", f"n_images {len(model.poses)}", "depth_directory undistorted_depth_images",
             "color_directory undistorted_color_images", ""]
    for n, pose in enumerate(model.poses):
        if n % INTRINSICS_EVERY == 0:
            lines.append("intrinsics_matrix " + " ".join(f"{x:.17g}" for x in k.reshape(-1)))
        depth_name, color_name = image_names(n)
        c2w_gl = pose @ GL_TO_CV  # OpenCV camera -> OpenGL camera (the flip is its own inverse)
        lines.append(f"scan {depth_name} {color_name} " + " ".join(f"{x:.17g}" for x in c2w_gl.reshape(-1)))
        color, depth = render_mesh(model.raw_vertices, model.faces, model.colors, pose, k, *image_size)
        Image.fromarray(color).save(d / "undistorted_color_images" / color_name, quality=JPEG_QUALITY)
        raw = np.clip(np.rint(depth * DEPTH_SCALE), 0, 65535).astype(np.uint16)
        Image.fromarray(raw).save(d / "undistorted_depth_images" / depth_name)
    (d / CONF_DIR / f"{house}.conf").write_text("\n".join(lines) + "\n")
    return d


def generate_matterport(root: Path, num_houses: int, frames_per_house: int, seed: int,
                        image_size: tuple[int, int] = (640, 480), num_objects: int = 10,
                        splits: list[str] | None = None) -> list[SceneModel]:
    """Houses ``synth<i>house`` (one region each) from the models :func:`make_scene` draws for
    ``default_rng([seed, i])``: the models of :func:`featurizer.dataset.synthetic.generate.generate_dataset`
    with the same seed and sizes. splits: the split of each house (default all ``val``)."""
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
