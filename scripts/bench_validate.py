"""Time of the validation pass (featurizer.validate.validate_scenes) per 1,000 scenes.

    python scripts/bench_validate.py                       # 1,000 small generated scenes, 5 frames each
    python scripts/bench_validate.py --scenes 2000 --frames 20 --keep /tmp/bench_validate

Part 1 generates ``--scenes`` small scenes with the synthetic generator (real ScanNet files: binary
ply, meta, segs and aggregation json, exported jpg/png/pose frames, the labels tsv) and times the
pass over all of them twice: the first pass right after writing (files in the page cache; a pass
over a cold disk adds its reads) and a second one. Part 2 builds one scene of ScanNet's real size
(150,000 vertices, 3,000 segments, 40 objects, 300 exported frames, a Mask3D export of 100 masks)
and times each check on it, to say what dominates and what a pass over real scenes costs.
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featurizer.dataset.labels import TSV_NAME, read_label_table  # noqa: E402
from featurizer.dataset.scannet import (AGG_SUFFIX, PLY_SUFFIX, SEGS_SUFFIX, ScanNetReader,  # noqa: E402
                                        _numbered_files, _read_pose, read_ply_header)
from featurizer.dataset.synthetic.generate import generate_dataset  # noqa: E402
from featurizer.dataset.synthetic.layout import write_ply  # noqa: E402
from featurizer.segmenter.gt import GroundTruth  # noqa: E402
from featurizer.segmenter.mask3d import Mask3DExport  # noqa: E402
from featurizer.validate import validate_scenes  # noqa: E402


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def big_scene(root: Path, template: str, sid: str, n: int, segments: int, objects: int, frames: int,
              masks: int, rng) -> Path:
    """A ScanNet-sized scene ``sid`` next to the generated ones (its meta and frames from ``template``);
    returns the Mask3D export folder holding its predictions."""
    scan = root / "scans" / sid
    scan.mkdir(parents=True)
    write_ply(scan / f"{sid}{PLY_SUFFIX}", rng.uniform(-4, 4, (n, 3)).astype(np.float32),
              rng.integers(0, 256, (n, 3)).astype(np.uint8), np.zeros((0, 3), dtype=np.int32))
    shutil.copy(root / "scans" / template / f"{template}.txt", scan / f"{sid}.txt")
    seg = np.sort(rng.integers(0, segments, n))
    (scan / f"{sid}{SEGS_SUFFIX}").write_text(json.dumps({"sceneId": sid, "segIndices": seg.tolist()}))
    used = np.unique(seg)
    groups = [{"id": i, "objectId": i, "label": "chair", "segments": part.tolist()}
              for i, part in enumerate(np.array_split(used, objects))]
    (scan / f"{sid}{AGG_SUFFIX}").write_text(json.dumps({"sceneId": sid, "segGroups": groups}))
    src, dst = root / "scannet_2d" / template, root / "scannet_2d" / sid
    shutil.copytree(src / "intrinsic", dst / "intrinsic")
    for sub, ext in (("color", ".jpg"), ("depth", ".png"), ("pose", ".txt")):
        (dst / sub).mkdir(parents=True)
        data = (src / sub / f"0{ext}").read_bytes()
        for k in range(frames):
            (dst / sub / f"{20 * k}{ext}").write_bytes(data)
    export = root / "mask3d" / "val"
    (export / "pred_mask").mkdir(parents=True)
    class_id = min(read_label_table(root / TSV_NAME).id_to_category)
    lines = []
    digits = np.full(2 * n, ord("\n"), dtype=np.uint8)
    for k in range(masks):
        digits[0::2] = np.where(rng.random(n) < 0.01, ord("1"), ord("0"))
        (export / "pred_mask" / f"{sid}_{k}.txt").write_bytes(digits.tobytes())  # np.savetxt(fmt="%d")
        lines.append(f"pred_mask/{sid}_{k}.txt {class_id} {1 - k / masks:.4f}")
    (export / f"{sid}.txt").write_text("\n".join(lines) + "\n")
    return export.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=1000)
    ap.add_argument("--frames", type=int, default=5, help="exported frames per generated scene")
    ap.add_argument("--objects", type=int, default=3, help="objects per generated scene")
    ap.add_argument("--keep", type=Path, default=None, help="generate into this folder and keep it")
    args = ap.parse_args()

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="bench_validate_")
    root = args.keep or Path(tmp.name)
    try:
        t = time.perf_counter()
        if not (root / TSV_NAME).is_file():
            generate_dataset(root, num_scenes=args.scenes, frames_per_scene=args.frames, seed=0,
                             image_size=(32, 24), num_objects=args.objects, split="val")
        generation = time.perf_counter() - t
        reader = ScanNetReader(str(root))
        n = len(reader.scene_ids)
        cores = os.cpu_count() or 1
        first, bad = timed(lambda: validate_scenes(reader, GroundTruth()))
        second, _ = timed(lambda: validate_scenes(reader, GroundTruth()))
        single, _ = timed(lambda: validate_scenes(reader, GroundTruth(), workers=1))
        assert bad == {}, bad
        s0 = reader.scene_ids[0]
        poses = len(_numbered_files(reader.frames_dir(s0) / "pose", (".txt",), []))
        vertices = read_ply_header(reader.scene_dir(s0) / f"{s0}{PLY_SUFFIX}")[0]["vertex"]
        files = n * (4 + poses)  # ply header, meta, segs, aggregation, every pose file
        print(f"# validation pass: {platform.processor() or platform.machine()}, python "
              f"{platform.python_version()}; {n} generated scenes (~{vertices} vertices, {poses} frames "
              f"each; generated in {generation:.0f} s)\n")
        print("| pass | processes | scenes | files read | seconds | seconds per 1,000 scenes |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, procs, sec in (("first (just written: page cache)", cores, first),
                                 ("second", cores, second), ("third, one process", 1, single)):
            print(f"| {name} | {procs} | {n} | {files} | {sec:.2f} | {sec / n * 1000:.2f} |")

        # part 2: one ScanNet-sized scene, each check timed
        rng = np.random.default_rng(0)
        sid = "scene9999_00"
        nv, nframes, nmasks = 150_000, 300, 100
        seg_root = big_scene(root, s0, sid, nv, 3000, 40, nframes, nmasks, rng)
        big = ScanNetReader(str(root), scenes=[sid])
        scan, fd = big.scene_dir(sid), big.frames_dir(sid)
        mask3d = Mask3DExport(str(seg_root), labels_tsv=str(root))
        rows = [
            ("ply header", "1", lambda: read_ply_header(scan / f"{sid}{PLY_SUFFIX}")),
            ("segs + aggregation json (parse, length, segments known)", "2",
             lambda: big._ground_truth_groups(scan, sid, nv)),
            ("exported frames: list 3 folders, parse every pose file", f"{nframes}",
             lambda: big._check_frame_files(sid)),
            ("one pose file", "1", lambda: _read_pose(fd / "pose" / "0.txt")),
            ("reader.check_scene (all of the above + meta)", f"{4 + nframes}", lambda: big.check_scene(sid)),
            ("Mask3D export: prediction txt + every mask file read", f"{1 + nmasks}",
             lambda: mask3d.check_scene(sid, nv)),
        ]
        print(f"\n# one ScanNet-sized scene: {nv} vertices, 3000 segments, 40 objects, {nframes} exported "
              f"frames, {nmasks} Mask3D masks ({nmasks * 2 * nv / 1e6:.0f} MB)\n")
        print("| check | files | ms per scene (best of 3) | s per 1,000 scenes |")
        print("|---|---:|---:|---:|")
        per_scene = {}
        for name, count, fn in rows:
            sec, _ = timed(fn, repeat=3)
            per_scene[name] = sec
            print(f"| {name} | {count} | {sec * 1000:.1f} | {sec * 1000:.1f} |")
        gt = per_scene["reader.check_scene (all of the above + meta)"]
        m3d = gt + per_scene["Mask3D export: prediction txt + every mask file read"]
        print("\n| all 1,513 ScanNet scans at this size (projected: per-scene time x 1,513 / processes) "
              f"| 1 process | {cores} processes (this machine) | 16 processes |\n|---|---:|---:|---:|")
        for name, sec in (("GT instances", gt), ("Mask3D export", m3d)):
            print(f"| {name} | {sec * 1513:.0f} s | {sec * 1513 / cores:.0f} s | {sec * 1513 / 16:.0f} s |")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
