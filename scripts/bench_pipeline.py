"""Where the time goes: the whole pipeline on generated scenes of ScanNet's sizes, random-weight models of the
real architectures (DINOv2-large built from its config, Uni3D-g), on one device.

    python scripts/bench_pipeline.py --device cuda --bf16   # 150 frames, 100 instances, 150k points a scene
    python scripts/bench_pipeline.py --scenes 1 --frames 8  # CPU: a few minutes (3D rate from 4 instances)

Each scene is a synthetic ScanNet scan (``featurizer.dataset.synthetic.generate_scene``: furniture in a room,
a mesh of about ``--points`` vertices, ``--frames`` 640x480 RGB-D frames rendered and written as JPEG colour
and uint16 PNG depth in the exported-frame layout), read by ``ScanNetReader`` as a real scan is. Its instances
are the ground-truth objects, walls and floor, then halves of them (along each one's longest side) up to
``--instances``: a Mask3D export lists about 100 masks, the later ones overlapping parts of objects. Timed per
scene, as the pipeline runs them: one after the other, but the frame decoding, which the 2D stage's DataLoader
workers start before the 3D stage (as ``FeaturizerModule.predict_step`` does) and continue while the encoders
run:

- read: ``ScanNetReader.load`` (PLY mesh, meta, segments, aggregation, frame list);
- 3D: ``featurizer.module.stage3d`` with Uni3D (``--size``), on the first ``--instances-3d`` instances;
- 2D: ``featurizer.stage2d.run_2d`` with DINOv2 (``--dinov2``, the model card processor: 224 crop, 16x16
  grid) and ``PaperFusion``, the ``chat_scene`` configuration; its decode (time waiting for the workers),
  encode (synchronised), mapping (with its per-scene setup, scaled with the frames below: an upper bound)
  and fusion times. On a GPU the mapping is asynchronous, so some of it is counted as fusion, which first
  waits for its results; their sum is exact;
- decode throughput: every frame read once more with ``read_frame_checked`` by ``--workers`` DataLoader
  workers, alone (the frames were just written: from the page cache, not the disk).

The per-scene time is the sum of the stages (the decode row: what the 2D stage still waited for); each stage
is scaled to a ScanNet scene (150 frames, 100 instances) by its rate, then to all 1,513 ScanNet scans on
``--devices`` devices (scenes are independent: one device per share). The largest stage is named the
bottleneck. ``--bf16`` runs both encoders under bf16 autocast on CUDA (the encoders' ``bf16`` option) and
compares their outputs in fp32 and bf16 autocast on the same inputs (on any device: the same forward the
encoders run under their option, autocast around the network). GPU utilisation needs pynvml
(``torch.cuda.utilization``); without it "n/a".
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featurizer.dataset.frames import read_frame_checked  # noqa: E402
from featurizer.dataset.labels import TSV_NAME  # noqa: E402
from featurizer.dataset.scannet import ScanNetReader  # noqa: E402
from featurizer.dataset.synthetic.generate import generate_scene  # noqa: E402
from featurizer.dataset.synthetic.layout import write_labels_tsv  # noqa: E402
from featurizer.encoder2d.hf import HFPatchEncoder  # noqa: E402
from featurizer.encoder3d.uni3d import SIZES, Uni3D, preprocess  # noqa: E402
from featurizer.fusion.paper import PaperFusion  # noqa: E402
from featurizer.module import stage3d  # noqa: E402
from featurizer.scene import MIN_POINTS_3D, Instance  # noqa: E402
from featurizer.stage2d import FrameBatches, run_2d  # noqa: E402
from scripts.bench_3d import machine, sync  # noqa: E402

SCANNET_SCANS, SCANNET_FRAMES, SCANNET_INSTANCES = 1513, 150, 100
# facebook/dinov2-* config.json values (no download); the processor: the model cards' preprocessor_config.json
DINOV2 = {
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
    "giant": dict(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, use_swiglu_ffn=True),
}
DINOV2_COMMON = dict(mlp_ratio=4, patch_size=14, image_size=518, layerscale_value=1.0, layer_norm_eps=1e-6)
DINOV2_PROCESSOR = dict(do_resize=True, size={"shortest_edge": 256}, resample=3, do_center_crop=True,
                        crop_size={"height": 224, "width": 224}, do_rescale=True, rescale_factor=1 / 255,
                        do_normalize=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


def make_scenes(root: Path, n: int, frames: int, points: int) -> ScanNetReader:
    """``n`` synthetic scans under ``root`` with ``frames`` frames and about ``points`` mesh vertices each."""
    write_labels_tsv(root / TSV_NAME)
    ids = []
    for i in range(n):
        scene_id = f"scene{i:04d}_00"
        # a frameless probe with the same rng finds the vertex count of the room and of the objects it places
        probe = generate_scene(root / "probe", scene_id, np.random.default_rng([0, i]), num_frames=0,
                               num_objects=100, object_vertices=1000)
        room = sum(len(g["point_ids"]) for g in probe["structure"])
        per_object = max(50, int(1000 * (points - room) / max(len(probe["vertices_raw"]) - room, 1)))
        generate_scene(root, scene_id, np.random.default_rng([0, i]), num_frames=frames, num_objects=100,
                       object_vertices=per_object)
        ids.append(scene_id)
    return ScanNetReader(str(root), splits=["val"], scenes=ids)


def with_parts(instances: list[Instance], points: np.ndarray, n: int) -> list[Instance]:
    """The first ``n`` of: the instances, then their lower halves, then their upper halves (split at the
    median of each one's longest side), then the same again."""
    out = list(instances[:n])
    for k in range(max(0, n - len(out))):
        inst = instances[k % len(instances)]
        p = points[inst.point_ids]
        axis = int(np.ptp(p, axis=0).argmax())
        below = p[:, axis] <= np.median(p[:, axis])
        keep = below if (k // len(instances)) % 2 == 0 else ~below
        out.append(Instance(inst.point_ids[keep], inst.label, score=0.5))
    return out


def _decode(frames: list) -> int:
    return sum(read_frame_checked(f)[2] is None for f in frames)


def decode_all(frames: list, workers: int, batch: int) -> tuple[float, int]:
    """Seconds to decode every frame with ``workers`` DataLoader workers, and the number of good frames."""
    loader = torch.utils.data.DataLoader(frames, batch_size=batch, num_workers=workers, collate_fn=_decode)
    t0 = time.perf_counter()
    good = sum(loader)
    return time.perf_counter() - t0, good


class Synced:
    """The 2D encoder with ``patch_tokens`` waiting for the device, so that run_2d's encode time is the
    encoder's own (CUDA runs asynchronously); every other attribute is the encoder's."""

    def __init__(self, encoder):
        self._encoder = encoder

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        out = self._encoder.patch_tokens(images)
        sync(out.device)
        return out


class GpuMonitor:
    """Mean GPU utilisation (``torch.cuda.utilization``, sampled every 0.1 s by a thread) and the peak of
    torch's allocated memory of named phases; nothing on a CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.peak: dict[str, int] = {}
        self.phase: str | None = None
        self.util_ok = False
        if self.cuda:
            try:
                torch.cuda.utilization(device)
                self.util_ok = True
            except Exception:  # noqa: BLE001 (pynvml missing, or no NVML on this machine)
                pass
        self._stop = threading.Event()
        if self.util_ok:
            threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            phase = self.phase
            if phase is not None:
                self.samples[phase].append(float(torch.cuda.utilization(self.device)))

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.phase = name
        try:
            yield
        finally:
            sync(self.device)
            self.phase = None
            if self.cuda:
                self.peak[name] = max(self.peak.get(name, 0), torch.cuda.max_memory_allocated(self.device))

    def utilisation(self, name: str) -> str:
        s = self.samples.get(name)
        return f"{np.mean(s):.0f}%" if self.util_ok and s else "n/a"

    def stop(self) -> None:
        self._stop.set()


def tokens_2d(encoder: HFPatchEncoder, images: torch.Tensor, bf16: bool) -> torch.Tensor:
    """(B, T, D) float32 patch tokens of (B, H, W, 3) uint8 frames: ``patch_tokens``' forward, under bf16
    autocast or not."""
    x = encoder.preprocess(images.to(encoder.device))
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        hidden = encoder.model(pixel_values=x).last_hidden_state
    return hidden[:, encoder.num_prefix_tokens:].float().cpu()


def feats_3d(model: Uni3D, xyz: list[np.ndarray], rgb: list[np.ndarray], bf16: bool) -> torch.Tensor:
    """(I, D) float32 Uni3D features of instances in one padded batch, under bf16 autocast or not."""
    clouds = [preprocess(p, c) for p, c in zip(xyz, rgb)]
    lengths = torch.tensor([len(c) for c in clouds])
    padded = np.zeros((len(clouds), int(lengths.max()), 6), np.float32)
    for row, cloud in enumerate(clouds):
        padded[row, :len(cloud)] = cloud
    with torch.inference_mode(), torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
        return model(torch.from_numpy(padded).to(model.device), lengths.to(model.device)).float().cpu()


def difference(fp32: torch.Tensor, bf16: torch.Tensor) -> tuple[float, float, float, float, float]:
    """(max |fp32 - bf16|, max |fp32|, ||fp32 - bf16|| / ||fp32||, mean and min cosine) over feature rows."""
    a, b = fp32.reshape(-1, fp32.shape[-1]).double(), bf16.reshape(-1, bf16.shape[-1]).double()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    return (float((a - b).abs().max()), float(a.abs().max()), float((a - b).norm() / a.norm()),
            float(cos.mean()), float(cos.min()))


def hms(seconds: float) -> str:
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h} h {rest // 60:02d} min" if h else f"{rest // 60} min {rest % 60:02d} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--scenes", type=int, default=2, help="generated scenes (timed after a warm-up)")
    ap.add_argument("--frames", type=int, default=SCANNET_FRAMES, help="640x480 frames a scene")
    ap.add_argument("--points", type=int, default=150_000, help="mesh vertices a scene (about)")
    ap.add_argument("--instances", type=int, default=SCANNET_INSTANCES, help="instances a scene")
    ap.add_argument("--instances-3d", type=int, default=None,
                    help="instances a scene the 3D stage encodes, its rate scaled to --instances "
                         "(default: all on cuda, 4 on cpu, where Uni3D-g takes ~15 s an instance)")
    ap.add_argument("--size", default="g", choices=list(SIZES), help="Uni3D size")
    ap.add_argument("--dinov2", default="large", choices=list(DINOV2), help="DINOv2 size (config values)")
    ap.add_argument("--workers", type=int, default=max(1, min(4, (os.cpu_count() or 2) // 2)),
                    help="frame decoding DataLoader workers (default: half the CPUs, at most 4)")
    ap.add_argument("--frame-batch", type=int, default=8, help="frames per 2D batch (config frame_batch)")
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 8], help="devices of the projection")
    ap.add_argument("--bf16", action="store_true",
                    help="encoders under bf16 autocast on cuda, and their fp32 vs bf16 difference measured")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device available")
    cuda_bf16 = args.bf16 and device.type == "cuda"
    n3d = args.instances_3d or (args.instances if device.type == "cuda" else 4)
    n3d = min(n3d, args.instances)

    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        t0 = time.perf_counter()
        reader = make_scenes(Path(tmp), args.scenes, args.frames, args.points)
        print(f"generated {args.scenes} scene(s) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        t0 = time.perf_counter()
        with torch.device(device):
            enc3d = Uni3D(size=args.size, bf16=cuda_bf16)
        enc2d = HFPatchEncoder(model=f"dinov2-{args.dinov2} (random init)", family="dinov2", mode="processor",
                               batch_size=16, bf16=cuda_bf16, name="dinov2", processor=DINOV2_PROCESSOR,
                               random_init_config={**DINOV2_COMMON, **DINOV2[args.dinov2]}).to(device)
        print(f"built the models in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

        # warm-up, untimed: CUDA kernels and allocator, the compiled CPU mapping kernels
        first = reader.load(reader.scene_ids[0])
        first.instances = with_parts(first.instances, first.points, args.instances)
        warm = dataclasses.replace(first, frames=first.frames[:2])
        run_2d(warm, enc2d, PaperFusion(), device=device, frame_batch=args.frame_batch)
        if device.type == "cuda":
            stage3d(dataclasses.replace(first, instances=first.instances[:2]), None, enc3d)

        monitor = GpuMonitor(device)
        total: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for scene_id in reader.scene_ids:
            t0 = time.perf_counter()
            scene = reader.load(scene_id)
            scene.instances = with_parts(scene.instances, scene.points, args.instances)
            total["read"] += time.perf_counter() - t0
            with monitor("decode"):
                seconds, good = decode_all(scene.frames, args.workers, args.frame_batch)
            total["decode_alone"] += seconds
            counts["decoded"] += good
            with monitor("3D"):
                t0 = time.perf_counter()
                frames = FrameBatches(scene.frames, args.frame_batch, args.workers,
                                      pin=device.type == "cuda").start()  # decoding overlaps the 3D stage
                shard = stage3d(dataclasses.replace(scene, instances=scene.instances[:n3d]), None, enc3d)
                total["3d"] += time.perf_counter() - t0
            counts["encoded_3d"] += len(shard["feats"])
            with monitor("2D"):
                t0 = time.perf_counter()
                result = run_2d(scene, Synced(enc2d), PaperFusion(), device=device, num_workers=args.workers,
                                frame_batch=args.frame_batch, frame_batches=frames)
                total["2d"] += time.perf_counter() - t0
            for key, value in result.timings.items():
                total[key] += value
            counts["frames"] += len(scene.frames) - len(result.skipped_frames)
            counts["points"] += len(scene.points)
            counts["instances"] += len(scene.instances)
            counts["with_2d"] += len(result.features)
        monitor.stop()

        comparison = []
        if args.bf16:
            images = torch.stack([torch.tensor(read_frame_checked(f)[0])
                                  for f in first.frames[:args.frame_batch]])
            comparison.append((f"DINOv2-{args.dinov2} patch tokens", f"{len(images)} frames",
                               difference(tokens_2d(enc2d, images, False), tokens_2d(enc2d, images, True))))
            aligned = first.aligned_points()
            ids = [i.point_ids for i in first.instances if len(i.point_ids) >= MIN_POINTS_3D][:min(n3d, 8)]
            xyz, rgb = [aligned[i] for i in ids], [first.colors[i] for i in ids]
            comparison.append((f"Uni3D-{args.size} instance features", f"{len(ids)} instances",
                               difference(feats_3d(enc3d, xyz, rgb, False), feats_3d(enc3d, xyz, rgb, True))))

    n = args.scenes
    frames, inst = counts["frames"] / n, counts["instances"] / n
    f_scale, i_scale = SCANNET_FRAMES / frames, SCANNET_INSTANCES * n / counts["encoded_3d"]
    other_2d = total["2d"] - sum(total[k] for k in ("decode", "encode", "map", "fuse"))
    rows = [  # name, throughput, measured s per scene, scale to a ScanNet scene
        ("read scene (PLY mesh, annotations)", "", total["read"] / n, 1.0),
        (f"decode frames (JPEG + PNG, workers: {args.workers})",
         f"{counts['decoded'] / total['decode_alone']:.1f} frames/s", total["decode"] / n, f_scale),
        (f"3D: Uni3D-{args.size} ({n3d} of {inst:.0f} instances)",
         f"{counts['encoded_3d'] / total['3d']:.2f} instances/s", total["3d"] / n, i_scale),
        (f"2D encode: DINOv2-{args.dinov2}", f"{counts['frames'] / total['encode']:.1f} frames/s",
         total["encode"] / n, f_scale),
        ("2D mapping (projection, depth test)", "", total["map"] / n, f_scale),
        ("2D fusion (paper)", "", total["fuse"] / n, f_scale),
        ("2D other (loader start, finish)", "", other_2d / n, 1.0),
    ]
    per_scene = sum(r[2] for r in rows)
    projected = sum(r[2] * r[3] for r in rows)
    slowest = max(rows, key=lambda r: r[2] * r[3])

    precision = "bf16 autocast" if cuda_bf16 else "fp32"
    print(f"\nbench_pipeline on {device.type}: {n} scene(s) of {frames:.0f} frames 640x480, "
          f"{counts['points'] / n:.0f} points, {inst:.0f} instances ({counts['with_2d'] / n:.0f} with a 2D "
          f"feature); Uni3D-{args.size} and DINOv2-{args.dinov2} (random weights, {precision}), "
          f"fusion paper, frame batch {args.frame_batch}")
    print(machine(device))
    print(f"stages run one after the other, the frame decoding started with the 3D stage: the time of a "
          f"scene is their sum, the decode row only what the 2D stage still waited for; 'ScanNet scene' "
          f"scales each stage by its rate to {SCANNET_FRAMES} frames and {SCANNET_INSTANCES} instances\n")
    print("| stage | throughput | s / scene (measured) | s / ScanNet scene | share |")
    print("|---|---:|---:|---:|---:|")
    for name, rate, sec, scale in rows:
        print(f"| {name} | {rate} | {sec:.3f} | {sec * scale:.3f} | {sec * scale / projected:.0%} |")
    print(f"| **scene (sum)** | {3600 / per_scene:.1f} scenes/hour ({3600 / projected:.1f} ScanNet) "
          f"| {per_scene:.3f} | {projected:.3f} "
          "| 100% |")
    print(f"\nbottleneck: {slowest[0]}, {slowest[2] * slowest[3] / projected:.0%} of a ScanNet scene's time")
    print(f"decode throughput: each scene's frames read once more, alone; the decode row's time is what the "
          f"2D stage waited for its {args.workers} workers\n")

    print(f"| devices | ScanNet scenes / hour | all {SCANNET_SCANS:,} scans |")
    print("|---:|---:|---:|")
    for d in args.devices:
        print(f"| {d} | {3600 * d / projected:.1f} | {hms(projected * SCANNET_SCANS / d)} |")

    if device.type == "cuda":
        print("\n| phase | GPU utilisation (mean) | GPU peak memory (torch allocated) |")
        print("|---|---:|---:|")
        for phase in ("decode", "3D", "2D"):
            peak = monitor.peak.get(phase, 0) / 2**30
            print(f"| {phase} | {monitor.utilisation(phase)} | {peak:.1f} GiB |")
        if not monitor.util_ok:
            print("(GPU utilisation needs pynvml: pip install nvidia-ml-py)")
    else:
        print("\nGPU utilisation and memory: n/a (cpu)")

    if comparison:
        print(f"\nbf16 autocast vs fp32 on {device.type}, same inputs (scene {reader.scene_ids[0]}):\n")
        print("| features | inputs | max abs diff | max abs fp32 | rel. diff (‖Δ‖/‖fp32‖) | cosine mean "
              "| cosine min |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for what, inputs, (dmax, amax, rel, cmean, cmin) in comparison:
            print(f"| {what} | {inputs} | {dmax:.3e} | {amax:.3e} | {rel:.3e} | {cmean:.6f} | {cmin:.6f} |")


if __name__ == "__main__":
    main()
