"""What a run prints when it ends (its summary, the grounding upper bound), and the run's pictures of 2D views."""

from __future__ import annotations

from pathlib import Path


GROUPS = ("experiment", "dataset", "segmenter", "encoder3d", "encoder2d", "fusion", "trainer")


def _reasons(counts: dict | None) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def format_summary(summary: dict, output_dir: Path) -> str:
    """A short, human-readable account of one run."""
    t = summary.get("timings", {})
    choices = summary.get("choices", {})
    computed = summary.get("computed_scenes", {})
    reused = summary.get("reused_scenes", {})
    lines = [
        "",
        "featurizer run summary",
        "----------------------",
        f"choices        {' '.join(f'{k}={choices[k]}' for k in GROUPS if choices.get(k))}",
        f"scenes         {summary['scenes']}  (computed now: "
        + ", ".join(f"{s} {computed.get(s, 0)}" for s in computed)
        + "; reused from cache: " + ", ".join(f"{s} {reused.get(s, 0)}" for s in reused) + ")",
        f"instances      {summary['instances']}",
        f"3D features    {summary['keys_3d']} written; missing: {_reasons(summary.get('missing_3d'))}",
    ]
    if summary.get("keys_2d") is not None:
        v = summary.get("views_per_instance") or {}
        views = "" if v.get("mean") is None else f"; views per instance mean {v['mean']:.1f}, max {v['max']:.0f}"
        lines.append(f"2D features    {summary['keys_2d']} written; missing: {_reasons(summary.get('missing_2d'))}"
                     + views)
    stage_times = [("read + segment", t.get("read", 0.0)),
                   ("3D (prepare + Uni3D)", t.get("prepare_3d", 0.0) + t.get("encode_3d", 0.0)),
                   ("2D (decode, encode, map, fuse)", t.get("total_2d", 0.0))]
    lines.append("time per stage " + ", ".join(f"{name} {sec:.1f}s" for name, sec in stage_times)
                 + f"; total {t.get('total', 0.0):.1f}s")
    if t.get("cached_token_frames"):
        lines.append(f"token cache    patch tokens of {t['cached_token_frames']:.0f} frames reused (cache_tokens)")
    gt_set = summary.get("gt_features")
    if gt_set:
        lines.append(f"GT instances   {gt_set['instances']}: 3D features {gt_set['keys_3d']}"
                     + (f", 2D features {gt_set['keys_2d']}" if gt_set.get("keys_2d") is not None else "")
                     + " (gt_features)")
    if summary.get("bad_scenes"):
        lines.append(f"bad scenes     {len(summary['bad_scenes'])} skipped (on_bad_scene=skip; reasons in summary.json)")
    lines.append(f"output         {output_dir}")
    for role, name in _file_names(summary):
        lines.append(f"  {role:<14}{name}")
    if summary.get("annotations", {}).get("note"):
        lines.append(f"annotations    {summary['annotations']['note']}")
    if summary.get("grounding"):
        lines.extend(format_grounding(summary["grounding"]))
    for pic in summary.get("pictures_misses", []):
        lines.append(f"  {'miss':<14}{pic}")
    if summary.get("metrics"):
        m = summary["metrics"]
        shown = [f"{k} {m[k]:.3f}" for k in ("knn_3d", "knn_2d", "knn_concat") if m.get(k) is not None]
        if shown:
            lines.append("probe          " + ", ".join(shown) + "  (metrics.json)")
    for pic in summary.get("pictures", []):
        lines.append(f"  {'picture':<14}{pic}")
    notes = summary.get("notes") or {}
    if notes:
        lines.append(f"data notes     {sum(len(n) for n in notes.values())} in {len(notes)} scene(s) (summary.json)")
    return "\n".join(lines) + "\n"


def _file_names(summary: dict) -> list[tuple[str, str]]:
    """(role, file) of every file a run wrote, for the summary's list."""
    out = []
    for part in (summary, summary.get("gt_features") or {}):
        for role, name in (part.get("files") or {}).items():
            if isinstance(name, dict):
                out.extend((f"{role}", f"{n}") for n in dict.fromkeys(name.values()))
            elif name and role != "pcd_all":
                out.append((role, name))
    if (summary.get("files") or {}).get("pcd_all"):
        out.append(("pcd_all", "pcd_all/<scene>.pth"))
    return list(dict.fromkeys(out))


def format_grounding(stats: list[dict]) -> list[str]:
    """The grounding upper bound per task and split: records in, kept, dropped by the train threshold,
    and the share of referred GT objects whose best predicted instance reaches IoU 0.25 / 0.5."""
    lines = ["annotations    task / split: records in -> kept (dropped by the train IoU threshold); "
             "upper bound @0.25 / @0.5"]
    for s in stats:
        bound = "" if s.get("iou25") is None else f"; {s['iou25']:.3f} / {s['iou50']:.3f} of {s['refs']} refs"
        lines.append(f"  {s['task'] + ' / ' + s['split']:<24}{s['records_in']} -> {s['records_out']} "
                     f"({s['dropped_thres']} dropped){bound}   {s['file']}")
    return lines


def write_pictures(output_dir: Path, records: dict, reader, segmenter, encoder2d, fusion, count: int) -> list[str]:
    """Pictures of the ``count`` best-seen instances of the first scene: chosen views, projected points,
    pooled region and the patch grid actually encoded (featurizer.viz). records: the run's records
    (:class:`featurizer.writer.RunResult`); the first scene's 2D stage runs again once, traced."""
    from featurizer.viz import draw_instance_views, trace_instances

    if not reader.scene_ids:
        return []
    scene_id = reader.scene_ids[0]
    # the best-seen objects (walls and floors are seen everywhere but are not what people look for)
    seen = sorted(((r["2d"].get("views", 0), key) for key, r in records.items()
                   if r["scene"] == scene_id and r.get("2d", {}).get("ok")
                   and r.get("label") not in ("wall", "floor", "ceiling")), reverse=True)
    if not seen:
        return []
    scene = segmenter.segment(reader.load(scene_id))
    keys = [key for _, key in seen[:count]]
    # one traced 2D pass for all the pictures
    traced = trace_instances(scene, [int(key.rsplit("_", 1)[1]) for key in keys], encoder2d, fusion)
    written = []
    for key, (index, views) in zip(keys, traced.items()):
        out = Path(output_dir) / "views" / f"{key}.png"
        draw_instance_views(scene, index, encoder2d, fusion, out, traced=views)
        written.append(str(out.relative_to(output_dir)))
    return written
