"""Tables and plots of a sweep: one row per job, with the choices that vary and the probe's numbers.

:func:`tabulate_sweep` turns a Hydra multirun folder into ``sweep.md``, ``sweep.csv`` and
``sweep.png`` (one row per job, failed jobs included), and :class:`SweepTable` runs it as a
Hydra callback at the end of a multirun.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback

from featurizer.errors import DataError
from featurizer.files import atomic, atomic_write_text
from featurizer.probe import METRIC_NAMES, MODALITIES, probe_run, read_json_object

log = logging.getLogger(__name__)


def _natural_key(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Folders under ``sweep_dir`` (not itself) holding a ``.hydra/`` folder, in natural order."""
    jobs = {p.parent for p in sweep_dir.rglob(".hydra") if p.is_dir() and p.parent != sweep_dir}
    return sorted(jobs, key=lambda p: _natural_key(p.relative_to(sweep_dir).as_posix()))


def _override(item) -> tuple[str, str | None]:
    """(key, value) of a Hydra override ``[+~]key=value``; value None for one without ``=``."""
    key, sep, value = str(item).partition("=")
    return key.lstrip("+~"), value if sep else None


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as e:
        log.warning("%s: cannot be read as YAML: %s", path, e)
        return None


def _job_choices(job: Path, summary: dict | None) -> tuple[dict[str, str], list[str]]:
    """Config-group choices and overridden values of one job, as strings; the overridden keys."""
    choices: dict[str, str] = {}
    overridden: list[str] = []
    hydra_cfg = _read_yaml(job / ".hydra" / "hydra.yaml")
    if isinstance(hydra_cfg, dict):
        runtime = ((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
        for group, option in runtime.items():
            if not str(group).startswith("hydra/") and option is not None:
                choices[str(group)] = str(option)
    if summary and isinstance(summary.get("choices"), dict):
        for group, option in summary["choices"].items():
            choices[str(group)] = str(option)
    overrides = _read_yaml(job / ".hydra" / "overrides.yaml")
    if isinstance(overrides, list):
        for key, value in map(_override, overrides):
            if value is not None:
                choices[key] = value
                overridden.append(key)
    return choices, overridden


def _job_row(sweep_dir: Path, job: Path, probe_missing: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"job": job.relative_to(sweep_dir).as_posix(), "status": "failed", "error": None}
    summary = None
    summary_path = job / "summary.json"
    if not summary_path.is_file():
        row["error"] = "no summary.json (the job did not finish)"
    else:
        try:
            summary = read_json_object(summary_path)
        except DataError as e:
            row["error"] = str(e)
    if summary is not None:
        if summary.get("status") == "ok":
            row["status"] = "ok"
        else:
            row["error"] = summary.get("error") or f"status {summary.get('status')!r}"
    row["choices"], row["override_keys"] = _job_choices(job, summary)

    metrics: dict = {}
    metrics_path = job / "metrics.json"
    if row["status"] == "ok":
        if metrics_path.is_file():
            try:
                metrics = read_json_object(metrics_path)
            except DataError as e:
                row["error"] = str(e)
        elif probe_missing:
            try:
                metrics = probe_run(job)
            except Exception as e:  # a probe failure must not lose the other rows
                row["error"] = f"probe failed: {e}"
    for name in METRIC_NAMES + ("chance", "coverage_3d", "coverage_2d"):
        row[name] = metrics.get(name)
    timings_path = job / "timings.json"  # written next to summary.json (times apart, for checksums)
    timings = read_json_object(timings_path) if timings_path.is_file() else {}
    row["time_s"] = timings.get("total")
    row["scenes"] = (summary or {}).get("scenes")
    row["instances"] = (summary or {}).get("instances")
    row["grounding"] = {f"{g['task']}_{g['split']}_iou{t}": g[f"iou{t}"]  # the grounding upper bound
                        for g in (summary or {}).get("grounding") or [] if g.get("iou25") is not None
                        for t in ("25", "50")}
    row.update(row["grounding"])
    return row


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _md_cell(text: str, limit: int | None = None) -> str:
    text = " ".join(str(text).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text.replace("|", "\\|")


def _table_columns(rows: list[dict]) -> tuple[list[str], list[str]]:
    """(varying choice columns, value columns)."""
    all_keys: list[str] = []
    for row in rows:
        for key in row["choices"]:
            if key not in all_keys:
                all_keys.append(key)
    varying = [k for k in all_keys if len({row["choices"].get(k) for row in rows}) > 1]
    if not varying:  # nothing varies (one job): show what was overridden
        varying = [k for k in all_keys if any(k in row["override_keys"] for row in rows)]
    # the grounding upper bound where it differs between jobs (e.g. a segmenter sweep); the same in every
    # job (a fusion sweep) it stays in each job's summary.json
    grounding = [k for k in dict.fromkeys(k for row in rows for k in row.get("grounding", {}))
                 if len({row.get(k) for row in rows if row["status"] == "ok"}) > 1]
    values = list(METRIC_NAMES) + ["chance", "coverage_3d", "coverage_2d"] + grounding + ["time_s"]
    return varying, values


def tabulate_sweep(sweep_dir, probe_missing: bool = True, echo: bool = True) -> tuple[Path, Path, Path]:
    """Tabulate a Hydra multirun folder: one row per job, failed jobs included.

    A job is a folder under ``sweep_dir`` holding ``.hydra/``. Columns: job, status, the choices
    that vary across the sweep (``.hydra/hydra.yaml`` runtime choices, ``summary.json`` choices
    and ``.hydra/overrides.yaml``), the probe accuracies and chance (``metrics.json``; computed
    with :func:`probe_run` when missing and ``probe_missing``), coverage, total time, error.
    Writes ``sweep.md``, ``sweep.csv`` and ``sweep.png`` (bar chart of the probe
    accuracies per job, grouped 3D/2D/concat) into ``sweep_dir``, prints the Markdown table when
    ``echo``, and returns the three paths.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise DataError(sweep_dir, "sweep folder not found")
    jobs = _job_dirs(sweep_dir)
    if not jobs:
        raise DataError(sweep_dir, "no job folders (subfolders holding .hydra/) in this sweep folder")
    rows = []
    for job in jobs:
        rows.append(_job_row(sweep_dir, job, probe_missing))
    varying, values = _table_columns(rows)

    header = ["job", "status", *varying, *values, "error"]
    table_rows = [
        [row["job"], row["status"], *(row["choices"].get(k, "") for k in varying),
         *(row.get(v) for v in values), row["error"] or ""]
        for row in rows
    ]

    md_lines = [
        f"# Sweep {sweep_dir.name}",
        "",
        f"{len(rows)} jobs, {sum(r['status'] == 'ok' for r in rows)} ok, "
        f"{sum(r['status'] != 'ok' for r in rows)} failed. Accuracies: cross-validated by scene, "
        "GT labels; chance = majority-class rate.",
        "",
    ]
    table_md = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for cells in table_rows:
        shown = [_md_cell(_fmt(c), limit=120 if i == len(cells) - 1 else None) for i, c in enumerate(cells)]
        shown[1] = "**failed**" if cells[1] != "ok" else "ok"
        table_md.append("| " + " | ".join(shown) + " |")
    md_path = sweep_dir / "sweep.md"
    atomic_write_text("\n".join(md_lines + table_md) + "\n", md_path)

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for cells in table_rows:
        writer.writerow(["" if c is None else (repr(c) if isinstance(c, float) else c) for c in cells])
    csv_path = sweep_dir / "sweep.csv"
    atomic_write_text(buf.getvalue(), csv_path)

    png_path = sweep_dir / "sweep.png"
    _plot_sweep(rows, varying, png_path, title=f"probe accuracy: {sweep_dir.name}")
    if echo:
        print("\n".join(table_md))
    return md_path, csv_path, png_path


def _plot_sweep(rows: list[dict], varying: list[str], path: Path, title: str) -> None:
    """Two panels (kNN, linear); per job three bars (3D, 2D, concat) and a chance tick."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = []
    for row in rows:
        parts = [f"{k}={row['choices'].get(k, '')}" for k in varying]
        label = row["job"] + ("\n" + "\n".join(parts) if parts else "")
        labels.append(label + ("\n(failed)" if row["status"] != "ok" else ""))
    n = len(rows)
    fig = Figure(figsize=(max(6.0, 1.6 * n + 2), 7.5), dpi=100)
    FigureCanvasAgg(fig)
    colors = {"3d": "#4c72b0", "2d": "#dd8452", "concat": "#55a868"}
    width = 0.26
    x = np.arange(n)
    for p, probe in enumerate(("knn", "linear")):
        ax = fig.add_subplot(2, 1, p + 1)
        for m, mod in enumerate(MODALITIES):
            vals = [row.get(f"{probe}_{mod}") for row in rows]
            heights = [v if isinstance(v, (int, float)) and math.isfinite(v) else 0.0 for v in vals]
            bars = ax.bar(x + (m - 1) * width, heights, width, label=mod, color=colors[mod])
            for bar, v in zip(bars, vals):
                if isinstance(v, (int, float)) and math.isfinite(v):
                    ax.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, v), ha="center",
                                va="bottom", fontsize=7)
        labelled = False
        for i, row in enumerate(rows):
            c = row.get("chance")
            if isinstance(c, (int, float)) and math.isfinite(c):
                ax.hlines(c, i - 1.5 * width, i + 1.5 * width, colors="k", linestyles="dashed",
                          label=None if labelled else "chance")
                labelled = True
        ax.set_ylim(0, 1.08)
        ax.set_ylabel(f"{'kNN' if probe == 'knn' else 'linear probe'} accuracy")
        ax.set_xticks(x)
        ax.set_xticklabels(labels if p == 1 else [""] * n, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        if p == 0:
            ax.set_title(title)
            ax.legend(loc="upper right", fontsize=8, ncol=4)
    fig.tight_layout()
    with atomic(path) as tmp:
        fig.savefig(tmp, format="png")


class SweepTable(Callback):
    """Hydra callback: at the end of a multirun, :func:`tabulate_sweep` on ``hydra.sweep.dir``.

    Register under ``hydra.callbacks`` in ``conf/config.yaml``::

        hydra:
          callbacks:
            sweep_table:
              _target_: featurizer.sweep.SweepTable

    A failure to summarise is logged, never raised: the jobs' own results are already on disk.
    """

    def __init__(self, probe_missing: bool = True) -> None:
        self.probe_missing = probe_missing

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            paths = tabulate_sweep(sweep_dir, probe_missing=self.probe_missing, echo=True)
        except Exception:
            log.exception("sweep table of %s failed", sweep_dir)
            return
        log.info("sweep table: %s", ", ".join(str(p) for p in paths))


def shard_groups(sweep_dir: Path) -> dict[tuple[str, ...], list[Path]]:
    """The sweep's sharded jobs grouped by their other overrides: ``{overrides without shard: [jobs]}``.

    A sweep over shards and another axis (``shard=0,1 fusion=mean,paper``) gives one group per value
    of the other axis; jobs without ``num_shards`` > 1 are left out."""
    groups: dict[tuple[str, ...], list[Path]] = {}
    for job in _job_dirs(sweep_dir):
        overrides = [str(o) for o in (_read_yaml(job / ".hydra" / "overrides.yaml") or [])]
        num = [value for key, value in map(_override, overrides) if key == "num_shards" and value is not None]
        if not num or not num[-1].isdigit() or int(num[-1]) < 2:
            continue
        key = tuple(o for o in overrides if _override(o)[0] not in ("shard", "merge_only"))
        groups.setdefault(key, []).append(job)
    return groups


def merge_command(overrides: tuple[str, ...], run_dir: Path, script: Path | None = None) -> list[str]:
    """The command that merges the shares of one group (also what a user runs by hand after a rerun)."""
    script = Path(script or sys.argv[0]).resolve()
    return [sys.executable, str(script), *overrides, "merge_only=true", f"hydra.run.dir='{run_dir}'"]


class ShardMerge(Callback):
    """Hydra callback: when a multirun of sharded jobs (``shard=range(N) num_shards=N``) ends, merge each
    group's shares once, into ``<sweep dir>/merged/<the other swept values>/`` (a run folder with the
    Chat-Scene files, summary, probe and annotations; ``merged/all/`` when only the shards vary), by
    running ``run.py <overrides> merge_only=true``.

    A merge that fails (a share missing: a job failed or was preempted) is logged with the command to
    rerun after the missing share is done; it never hides the jobs' own results.
    """

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        groups = shard_groups(sweep_dir)
        common = set.intersection(*(set(g) for g in groups)) if groups else set()
        for overrides, jobs in groups.items():
            varying = [o for o in overrides if o not in common]  # e.g. fusion=mean when fusions are swept too
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", "_".join(o.replace("=", "-") for o in varying)) or "all"
            cmd = merge_command(overrides, sweep_dir / "merged" / name)
            log.info("merging %d shares: %s", len(jobs), " ".join(cmd))
            proc = subprocess.run(cmd, cwd=str(config.hydra.runtime.cwd), text=True, capture_output=True)
            sys.stdout.write(proc.stdout)
            if proc.returncode != 0:
                log.error("merge of %s failed (%s); after rerunning the missing shares, merge by hand:\n  %s",
                          name, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode,
                          " ".join(cmd))
