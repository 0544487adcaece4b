"""Pictures of what the 2D stage did for one instance: its chosen views, the projected visible
points, the pooled region and the patch grid the encoder actually saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from featurizer.files import atomic
from featurizer.fusion.base import ViewTrace
from featurizer.scene import Scene


def _device_of(module) -> torch.device:
    try:
        return next(module.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def trace_instances(scene: Scene, indices: list[int], encoder2d, fusion,
                    **run_kwargs) -> dict[int, tuple[list[ViewTrace], dict]]:
    """Run the 2D stage once for instances ``indices`` alone, with tracing on. Returns, per index, the
    :class:`~featurizer.fusion.base.ViewTrace` of every view that sees it and the instance's record."""
    from featurizer.stage2d import run_2d

    sub = Scene(scene.scene_id, scene.points, scene.colors, scene.axis_align,
                instances=[scene.instances[i] for i in indices], frames=scene.frames, split=scene.split)
    old = fusion.trace
    fusion.trace = set(range(len(indices)))
    try:
        run_kwargs.setdefault("device", _device_of(encoder2d))
        result = run_2d(sub, encoder2d, fusion, **run_kwargs)
        return {index: (fusion.traces.get(j, []), result.records[j]) for j, index in enumerate(indices)}
    finally:
        fusion.trace = old
        fusion.traces = {}


def trace_instance(scene: Scene, index: int, encoder2d, fusion,
                   **run_kwargs) -> tuple[list[ViewTrace], dict]:
    """:func:`trace_instances` of one instance: its traces and its record."""
    return trace_instances(scene, [index], encoder2d, fusion, **run_kwargs)[index]


def draw_instance_views(scene: Scene, index: int, encoder2d, fusion, out_png: str | Path,
                        max_views: int = 4, traced: tuple[list[ViewTrace], dict] | None = None) -> Path:
    """Write a PNG of instance ``index``'s chosen views (the heaviest first, at most ``max_views``):
    the frame, the instance's projected visible points (green), the pooled region (red: patch cells,
    shaded by weight, or the reference's box; yellow: the hull), and the encoded region with its
    patch grid (cyan). Views that were not kept are shown (titled so) when none was kept.
    traced: the instance's (traces, record) from :func:`trace_instances`; by default traced here."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon, Rectangle

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    traces, record = traced or trace_instance(scene, index, encoder2d, fusion)
    kept = sorted((t for t in traces if t.kept), key=lambda t: -t.weight)
    shown = kept[:max_views] if kept else sorted(traces, key=lambda t: -len(t.u))[:max_views]
    total = sum(t.weight for t in kept) or 1.0
    inst = scene.instances[index]
    cols = max(1, min(2, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 5.2 * rows + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, t in zip(axes.ravel(), shown):
        frame = scene.frames[t.position]
        color, _ = frame.read()
        width, height = frame.image_size
        ax.imshow(color)
        # the patch grid actually encoded
        x0, y0, x1, y1 = encoder2d.encoded_region(frame.image_size)
        grid_r, grid_c = encoder2d.grid_shape(frame.image_size)
        for r in range(grid_r + 1):
            y = y0 + (y1 - y0) * r / grid_r
            ax.plot([x0, x1], [y, y], color="cyan", lw=0.4, alpha=0.6)
        for c in range(grid_c + 1):
            x = x0 + (x1 - x0) * c / grid_c
            ax.plot([x, x], [y0, y1], color="cyan", lw=0.4, alpha=0.6)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="cyan", lw=1.5, ls="--"))
        # the pooled region
        rects = np.asarray(t.regions, dtype=float).reshape(-1, 4)
        w = np.asarray(t.region_weights if t.region_weights is not None else np.ones(len(rects)), dtype=float)
        w = w / w.max() if len(w) and w.max() > 0 else w
        for (a, b, c, d), wi in zip(rects, w):
            ax.add_patch(Rectangle((a, b), c - a, d - b, fc="red", alpha=0.15 + 0.35 * wi, ec="red", lw=1.0))
        # the instance's projected visible points
        ax.scatter(t.u, t.v, s=4, c="lime", marker=".", linewidths=0)
        if len(t.hull) >= 3:
            ax.add_patch(Polygon(t.hull, closed=True, fill=False, ec="yellow", lw=1.5))
        share = t.weight / total if t.kept else 0.0
        state = f"weight {share:.2f}" if t.kept else "not kept"
        ax.set_title(f"frame {frame.number}: {len(t.u)} visible points, {state}\n{t.note}",
                     fontsize=9)
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
    reason = record["reason"] or "ok"
    fig.suptitle(f"{scene.scene_id} instance {index} ({inst.label}) | fusion {getattr(fusion, 'name', '?')} | "
                 f"{record['views']} views, {record['visible_points']} visible points | {reason}\n"
                 "green: visible points   red: pooled region   yellow: hull   cyan: encoded region and patch grid",
                 fontsize=10)
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no frame sees this instance", ha="center", va="center")
    fig.tight_layout()
    with atomic(out_png) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return out_png
