"""Generating synthetic datasets: one scene model (:mod:`.scene`) per scene, written in the ScanNet layout
(:mod:`.layout`) or in another dataset's (:func:`generate_layout`: :mod:`.layout_scannetpp`,
:mod:`.layout_rscan`, :mod:`.layout_matterport`, :mod:`.layout_nerfstudio`), plus the labels tsv and the
split files (``train`` and ``val``, the scenes assigned by :func:`planned_splits`).

Everything is deterministic for a seed (the rng is seeded per scene from ``(seed, scene index)``): scene
``i`` is the same model in every layout, under the layout's own scene id (:func:`layout_scene_id`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featurizer.dataset.labels import TSV_NAME
from featurizer.dataset.scannet import PLY_SUFFIX
from featurizer.dataset.synthetic.layout import (write_annotation, write_exported_frames, write_labels_tsv,
                                                 write_meta, write_ply, write_stream)
from featurizer.dataset.synthetic.scene import make_scene
from featurizer.dataset.synthetic_annotations import assign_splits


LAYOUTS = ("scannet", "scannetpp", "3rscan", "matterport", "nerfstudio")


def scene_id_of(index: int) -> str:
    """The id of the generated scene number ``index``: ``scene0000_00``, ``scene0001_00``, ..."""
    return f"scene{index:04d}_00"


def layout_scene_id(layout: str, index: int) -> str:
    """The id of scene number ``index`` in ``layout``, shaped as that dataset's ids (they sort in index
    order): ScanNet ``scene0000_00``, ScanNet++ ten hex digits, 3RScan a UUID, Matterport
    ``<house>_region0``, nerfstudio the capture folder ``capture0000``."""
    from featurizer.dataset.synthetic.layout_matterport import house_id_of

    return {"scannet": scene_id_of(index), "scannetpp": f"{index:010x}",
            "3rscan": f"{index:08x}-5e7d-4c1a-9f00-000000000000",
            "matterport": f"{house_id_of(index)}_region0", "nerfstudio": f"capture{index:04d}"}[layout]


def planned_splits(num_scenes: int, layout: str = "scannet") -> dict[str, str]:
    """Scene id -> split of a generated dataset of ``num_scenes`` scenes, in scene order:
    :func:`featurizer.dataset.synthetic_annotations.assign_splits` (every third scene is ``val``)."""
    return assign_splits(layout_scene_id(layout, i) for i in range(num_scenes))


def generate_scene(
    out_root: Path,
    scene_id: str,
    rng: np.random.Generator,
    num_frames: int = 24,
    image_size: tuple[int, int] = (640, 480),
    num_objects: int = 10,
    split: str = "val",
    intrinsics_size: tuple[int, int] | None = None,
    object_vertices: int = 1000,
    write_sens: bool = False,
) -> dict:
    """Write one scene under ``out_root`` in the ScanNet layout; return the ground truth written.

    out_root: the ScanNet root (``scans/`` or ``scans_test/`` and ``scannet_2d/`` are created in it).
    num_frames: exported frames (numbers 0, 20, 40, ...); image_size: (width, height) of colour and depth.
    intrinsics_size: the (width, height) the written intrinsics (``intrinsic_depth.txt``, meta
        ``fx_depth``.., ``depthWidth``/``depthHeight``) refer to; default ``image_size``. Images are
        always rendered at ``image_size``, so a reader must rescale when the two differ.
    split: ``test`` writes a test-split scan (``scans_test/``, no aggregation, segs or alignment).
    write_sens: also write the RGB-D stream ``<scan folder>/<scene>.sens`` (version 4, JPEG colour,
        zlib depth): ``num_frames * FRAME_STEP`` stream frames, the exported frame ``k`` being stream
        frame ``k`` (the frames in between are rendered from poses interpolated between consecutive
        exported ones, around the loop). The stream's frame ``k`` holds exactly the exported data:
        the same JPEG bytes (same encoder and quality), the same uint16 depth, and the same pose and
        intrinsics: with ``write_sens`` poses and intrinsics are float32 values (what a ``.sens``
        stores) and the text files print them exactly, so both readers produce equal frames.
        The header's intrinsics are those at ``image_size`` (equal to the written ones bit for bit
        when ``intrinsics_size`` is ``image_size``). Costs ``FRAME_STEP`` renders per exported frame.

    Returned dict: ``scene_id``, ``axis_align`` (4, 4), ``vertices_raw`` (V, 3) float32 as written,
    ``vertices_aligned`` (V, 3) float64, ``colors`` (V, 3) uint8, ``faces`` (F, 3), ``seg_indices``
    (V,), ``objects`` (list of dicts: object_id, raw_label, label, point_ids, segments, box (6,) of
    aligned vertices), ``structure`` (wall/floor groups, same keys), ``room_size`` (3,),
    ``intrinsics`` (3, 3) at image_size, ``intrinsics_written`` (3, 3) at intrinsics_size,
    ``frame_ids``, ``poses`` (list of (4, 4) camera-to-world, raw frame), ``scene_dir``, ``frames_dir``,
    ``sens_path`` (None unless ``write_sens``).
    """
    if write_sens and num_frames < 1:
        raise ValueError("write_sens needs num_frames >= 1")
    out_root = Path(out_root)
    size = (int(image_size[0]), int(image_size[1]))
    isize = size if intrinsics_size is None else (int(intrinsics_size[0]), int(intrinsics_size[1]))
    is_test = split == "test"
    model = make_scene(rng, num_frames, size, isize, num_objects, object_vertices, exact_f32=write_sens)

    scan_dir = out_root / ("scans_test" if is_test else "scans") / scene_id
    scan_dir.mkdir(parents=True, exist_ok=True)
    write_ply(scan_dir / f"{scene_id}{PLY_SUFFIX}", model.raw_vertices, model.colors, model.faces)
    write_meta(scan_dir / f"{scene_id}.txt", model, size, isize, num_frames, with_alignment=not is_test)
    if not is_test:
        write_annotation(scan_dir, scene_id, model)
    frames_dir = out_root / "scannet_2d" / scene_id
    write_exported_frames(frames_dir, model, size, exact=write_sens)
    sens_path = scan_dir / f"{scene_id}.sens" if write_sens else None
    if write_sens:
        write_stream(sens_path, model, size, isize)
    return {
        "scene_id": scene_id,
        "split": split,
        "axis_align": model.align,
        "vertices_raw": model.raw_vertices,
        "vertices_aligned": model.vertices_aligned,
        "vertices_aligned_read": model.vertices_aligned_read,
        "colors": model.colors,
        "faces": model.faces,
        "seg_indices": model.seg,
        "objects": model.objects,
        "structure": model.structure,
        "room_size": model.room,
        "intrinsics": model.k_image,
        "intrinsics_written": model.k_written,
        "frame_ids": model.frame_ids,
        "poses": model.poses,
        "scene_dir": scan_dir,
        "frames_dir": frames_dir,
        "sens_path": sens_path,
    }


def generate_dataset(
    root: Path,
    num_scenes: int,
    frames_per_scene: int,
    seed: int,
    split: str | None = None,
    image_size: tuple[int, int] = (640, 480),
    num_objects: int = 10,
    write_sens: bool = False,
) -> list[dict]:
    """Write ``num_scenes`` scenes plus the labels tsv and the split files under ``root``.

    split: every scene in this split (``test`` writes test scans); None (default) splits the scenes
        into ``train`` and ``val`` by :func:`planned_splits` (``scannetv2_train.txt``, ``scannetv2_val.txt``).
    write_sens: also write each scene's ``<scene>.sens`` stream (see :func:`generate_scene`)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_labels_tsv(root / TSV_NAME)
    split_of = (planned_splits(num_scenes) if split is None
                else {scene_id_of(i): split for i in range(num_scenes)})
    truths = []
    for i, (sid, scene_split) in enumerate(split_of.items()):
        rng = np.random.default_rng([int(seed), i])
        truths.append(generate_scene(root, sid, rng, num_frames=frames_per_scene, image_size=image_size,
                                     num_objects=num_objects, split=scene_split, write_sens=write_sens))
    for name in dict.fromkeys(split_of.values()):
        ids = [sid for sid, sp in split_of.items() if sp == name]
        (root / f"scannetv2_{name}.txt").write_text("\n".join(ids) + "\n")
    return truths


def layout_sizes(layout: str, image_size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(depth size, colour size) a layout writes for the model's ``image_size`` (the depth size, that of
    the model's intrinsics): ScanNet++'s colour is larger than its depth (twice here; the iPhone's is 7.5
    times), 3RScan's colour is 16:9 (960x540 for a 640 wide depth) whatever the depth's aspect; the
    other layouts write both at ``image_size``."""
    w, h = int(image_size[0]), int(image_size[1])
    color = {"scannetpp": (2 * w, 2 * h), "3rscan": (3 * w // 2, 27 * w // 32)}.get(layout, (w, h))
    return (w, h), color


def generate_layout(root: Path, layout: str, num_scenes: int, frames_per_scene: int, seed: int,
                    image_size: tuple[int, int] = (640, 480), num_objects: int = 10,
                    render_depth: bool = False) -> None:
    """Write ``num_scenes`` scenes in ``layout`` (not ``scannet``: :func:`generate_dataset`) under ``root``:
    the models :func:`generate_dataset` draws for the same seed and sizes, each dataset's split files
    for the :func:`planned_splits` (nerfstudio has none), and the ScanNet labels tsv at the root (a
    ScanNet-trained Mask3D export names its classes with it).

    render_depth: ScanNet++ only, also the toolkit's ``render_depth`` pngs (at the colour size)."""
    from featurizer.dataset.synthetic import (layout_matterport, layout_nerfstudio, layout_rscan,
                                              layout_scannetpp)

    if layout not in LAYOUTS[1:]:
        raise ValueError(f"generate_layout writes {', '.join(LAYOUTS[1:])}, not {layout!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_labels_tsv(root / TSV_NAME)
    size, color = layout_sizes(layout, image_size)
    planned = planned_splits(num_scenes, layout)
    if layout == "matterport":  # one house of one region per model
        layout_matterport.generate_matterport(root, num_scenes, frames_per_scene, seed, size, num_objects,
                                              splits=list(planned.values()))
        return
    for i, sid in enumerate(planned):
        model = make_scene(np.random.default_rng([int(seed), i]), frames_per_scene, size, size, num_objects,
                           1000, exact_f32=False)
        if layout == "scannetpp":
            layout_scannetpp.write_scene(root, sid, model, size, color, render_depth=render_depth)
        elif layout == "3rscan":
            layout_rscan.write_scan(root, sid, model, depth_size=size, color_size=color)
        else:  # nerfstudio
            layout_nerfstudio.write_capture(root / sid, model, size)
    split_writers = {"scannetpp": layout_scannetpp.write_splits, "3rscan": layout_rscan.write_splits}
    if layout in split_writers:  # the non-empty splits, as generate_dataset writes them
        split_writers[layout](root, {sp: [s for s, x in planned.items() if x == sp]
                                     for sp in dict.fromkeys(planned.values())})
