"""Pictures of grounding misses: referred objects whose best predicted instance stays below IoU 0.25.

Each picture shows the scene from above (its aligned points, subsampled, in their colours), the
referred object's ground-truth box (green) and the predicted instance box that overlaps it most (red,
dashed), with the description and the IoU, so that a reader sees at a glance why the segmenter fails
the object (missed, merged into a neighbour, split, cut off).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featurizer.annotations.base import SceneMatcher
from featurizer.annotations.match import as_locs
from featurizer.files import atomic

MISS_IOU = 0.25
MAX_POINTS = 40_000  # points drawn per picture


def find_misses(builders, root: Path, attributes: dict, gt_attributes: dict, scene_splits: dict[str, str],
                limit: int) -> list[dict]:
    """The first ``limit`` referred GT objects (in task, split, record order) whose best predicted box has
    IoU < 0.25: ``{"task", "split", "scene", "gt_id", "pred_id", "iou", "text"}``; one per (scene, object)."""
    misses, seen, read = [], set(), set()
    match = SceneMatcher(attributes, gt_attributes)
    for builder in builders:
        for split in builder.splits:
            inputs = builder.split_inputs(Path(root), split)  # none: a builder of attributes only (obj_align)
            if split not in set(scene_splits.values()) or not inputs or not inputs[0].is_file():
                continue
            if tuple(inputs) in read:  # e.g. scan2cap after scanrefer: the same records, misses already found
                continue
            read.add(tuple(inputs))
            _, records = builder.read(Path(root), split)
            for _, record in records:
                scene = record.get("scene_id") if isinstance(record, dict) else None
                text = record.get("description") or record.get("utterance") if scene else None
                if not text or not match.has(scene):
                    continue
                try:
                    ids = builder.object_ids(record)
                except (TypeError, ValueError):
                    continue
                for gt_id in ids:
                    if (scene, gt_id) in seen or not 0 <= gt_id < match.ious(scene).shape[1]:
                        continue
                    pred, iou = match.best(scene, gt_id)
                    if iou < MISS_IOU:
                        seen.add((scene, gt_id))
                        misses.append({"task": builder.name, "split": split, "scene": scene, "gt_id": gt_id,
                                       "pred_id": pred, "iou": iou, "text": str(text)})
                        if len(misses) >= limit:
                            return misses
    return misses


def draw_miss(out_png: Path, points: np.ndarray, colors: np.ndarray, gt_loc, pred_loc, miss: dict,
              gt_label: str, pred_label: str) -> None:
    """One top-view picture of a miss. points (N, 3) aligned, colors (N, 3) uint8; locs (6,) center+size."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if len(points) > MAX_POINTS:
        keep = np.random.default_rng(0).choice(len(points), MAX_POINTS, replace=False)
        points, colors = points[np.sort(keep)], colors[np.sort(keep)]
    fig = Figure(figsize=(7, 7.6), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    order = np.argsort(points[:, 2])  # higher points drawn last: the view from above
    ax.scatter(points[order, 0], points[order, 1], c=colors[order] / 255.0, s=3.0, linewidths=0)
    pred_text = f"best prediction {miss['pred_id']}: {pred_label} (IoU {miss['iou']:.2f})"
    for loc, color, style, label in ((gt_loc, "#1a9850", "-", f"GT {miss['gt_id']}: {gt_label}"),
                                     (pred_loc, "#d73027", "--", pred_text)):
        loc = np.asarray(loc, dtype=float)
        ax.add_patch(Rectangle((loc[0] - loc[3] / 2, loc[1] - loc[4] / 2), loc[3], loc[4], fill=False,
                               edgecolor=color, linestyle=style, linewidth=2.0, label=label))
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{miss['scene']}  {miss['task']} ({miss['split']})\n"
                 + "\n".join(textwrap.wrap(miss["text"], 90)[:3]), fontsize=9)
    ax.set_xlabel("x (m, aligned)")
    ax.set_ylabel("y (m, aligned)")
    fig.tight_layout()
    with atomic(out_png) as tmp:
        fig.savefig(tmp, format="png")


def write_miss_pictures(output_dir: Path, job, result, reader, count: int) -> list[str]:
    """Up to ``count`` pictures of grounding misses into ``<output_dir>/misses/``; their relative paths.

    job: the run's :class:`featurizer.annotations.AnnotationJob`; result: its
    :class:`featurizer.writer.RunResult`; reader: the run's reader (the scenes' points)."""
    if not count or job is None or not job.active or not result.gt_attributes:
        return []
    misses = find_misses(job.builders, job.root, result.attributes, result.gt_attributes, result.splits,
                         count)
    written, points = [], {}  # scene -> (aligned points, colours): each scene loaded once
    for miss in misses:
        if miss["scene"] not in points:
            scene = reader.load(miss["scene"])
            points[miss["scene"]] = scene.aligned_points(), scene.colors
        gt, pred = result.gt_attributes[miss["scene"]], result.attributes[miss["scene"]]
        out = Path(output_dir) / "misses" / f"{miss['scene']}_{miss['task']}_gt{miss['gt_id']:03}.png"
        draw_miss(out, *points[miss["scene"]], as_locs(gt["locs"])[miss["gt_id"]],
                  as_locs(pred["locs"])[miss["pred_id"]], miss, gt["objects"][miss["gt_id"]],
                  pred["objects"][miss["pred_id"]])
        written.append(out.relative_to(output_dir).as_posix())
    return written
