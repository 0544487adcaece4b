"""Run loggers: what one job did, sent to wandb (``conf/logger/wandb.yaml``) or nowhere (``none``).

The pipeline calls ``start(config, name, group)`` once per job, ``log_summary(...)`` when the
job's ``summary.json`` is written, and ``finish(exit_code)`` in a ``finally`` block, so that one
crashed job in a sweep never leaves a run open for the next. ``wandb`` is imported at call time.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from featurizer.errors import ConfigError

WANDB_MODES = ("online", "offline", "disabled", "shared")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _view_count(value: Any) -> int | None:
    """records[key]["2d"]["views"] is a view count or the list of views used."""
    if _number(value):
        return int(value)
    if isinstance(value, (list, tuple)):
        return len(value)
    if hasattr(value, "__len__") and not isinstance(value, (str, bytes, dict)):
        return len(value)
    return None


def flatten_summary(summary: dict, metrics: dict | None = None) -> dict[str, Any]:
    """The scalar values of a job, as flat wandb summary keys.

    ``status``, ``scenes``, ``instances``, ``keys_3d``, ``keys_2d``, ``timings/<stage>``,
    ``missing_3d/<reason>`` (and ``missing_3d/total``), ``missing_2d/...``,
    ``views_per_instance/<stat>``, ``feature_stats/<modality>/<stat>`` (when ``summary`` has
    ``feature_stats``), ``choices/<group>``, ``probe/<metric>`` for each numeric metric and
    ``grounding/<task>/<split>/<stat>`` (records in and out, the upper bound ``iou25``/``iou50``).
    None and non-finite values are left out.
    """
    flat: dict[str, Any] = {}
    if summary.get("status") is not None:
        flat["status"] = str(summary["status"])
    if summary.get("error"):
        flat["error"] = str(summary["error"])
    for name in ("scenes", "instances", "keys_3d", "keys_2d"):
        if _number(summary.get(name)):
            flat[name] = summary[name]
    for group, option in (summary.get("choices") or {}).items():
        if option is not None:
            flat[f"choices/{group}"] = str(option)
    for stage, seconds in (summary.get("timings") or {}).items():
        if _number(seconds):
            flat[f"timings/{stage}"] = seconds
    for mod in ("3d", "2d"):
        missing = summary.get(f"missing_{mod}")
        if isinstance(missing, dict):
            for reason, count in missing.items():
                if _number(count):
                    flat[f"missing_{mod}/{reason}"] = count
            flat[f"missing_{mod}/total"] = sum(c for c in missing.values() if _number(c))
    for stat, value in (summary.get("views_per_instance") or {}).items():
        if _number(value):
            flat[f"views_per_instance/{stat}"] = value
    for mod, stats in (summary.get("feature_stats") or {}).items():
        if isinstance(stats, dict):
            for stat, value in stats.items():
                if _number(value):
                    flat[f"feature_stats/{mod}/{stat}"] = value
    for name, value in (metrics or {}).items():
        if _number(value):
            flat[f"probe/{name}"] = value
    for stats in summary.get("grounding") or []:  # the annotations' grounding upper bound per task and split
        for name in ("records_in", "records_out", "dropped_thres", "refs", "iou25", "iou50"):
            if _number(stats.get(name)):
                flat[f"grounding/{stats['task']}/{stats['split']}/{name}"] = stats[name]
    return flat


def _reinit_value(version: str) -> bool | str:
    """wandb >= 0.19.10 names the policy ("finish_previous"); older versions take ``True``."""
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:3])
    return "finish_previous" if parts >= (0, 19, 10) else True


class NullLogger:
    """A run logger that records nothing (``logger=none``)."""

    def start(self, config: dict, name: str, group: str | None = None) -> None:
        pass

    def log_summary(self, summary: dict, metrics: dict | None = None, records: dict | None = None) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class WandbRunLogger:
    """One wandb run per Hydra job (``logger=wandb``).

    project / entity / tags: wandb's; mode: "offline" (default: nothing leaves the machine; ``wandb
    sync`` uploads later), "online", "shared" or "disabled"; dir: parent of the ``wandb/`` folder
    (the job's output folder in ``conf/logger/wandb.yaml``; None = wandb's default, ``WANDB_DIR``).
    """

    def __init__(
        self,
        project: str = "featurizer",
        mode: str = "offline",
        dir: str | None = None,
        entity: str | None = None,
        tags: list[str] | None = None,
    ):
        if mode not in WANDB_MODES:
            raise ConfigError("logger.mode", f"{mode!r} is not one of {', '.join(WANDB_MODES)}")
        self.project = project
        self.mode = mode
        self.dir = None if dir is None else str(dir)
        self.entity = entity
        self.tags = list(tags) if tags else None
        self.run = None
        self.sync_dir: str | None = None

    def start(self, config: dict, name: str, group: str | None = None) -> None:
        """Open a new wandb run for this job (a run left open by an earlier job is finished first).

        config: the resolved job config as a plain dict; name: the run name; group: the sweep name.
        """
        import wandb

        if self.run is not None:
            self.finish()
        if self.dir is not None:
            try:
                Path(self.dir).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError("logger.dir", f"cannot create {self.dir}: {e}") from None
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            dir=self.dir,
            name=name,
            group=group,
            tags=self.tags,
            config=config,
            reinit=_reinit_value(wandb.__version__),
            settings=wandb.Settings(silent=True),  # featurizer prints its own summary; wandb stays quiet
        )
        self.sync_dir = str(self.run.settings.sync_dir)

    def log_summary(self, summary: dict, metrics: dict | None = None, records: dict | None = None) -> None:
        """Record a job's outcome.

        summary: the job's ``summary.json`` dict (optionally with ``feature_stats`` =
        ``{modality: {"norm_mean": .., "norm_std": ..}}``); metrics: :func:`featurizer.probe.probe`'s
        dict or None; records: ``{key: {"2d": {"views": int | list}, ...}}`` validity records or
        None. Scalars (:func:`flatten_summary`) go to the run summary; a histogram of views per
        instance, a one-row table ``counts`` and a table ``missing`` (modality, reason, count) are
        logged.
        """
        if self.run is None:
            warnings.warn(
                "WandbRunLogger.log_summary called without a started run: nothing logged", stacklevel=2
            )
            return
        import wandb

        flat = flatten_summary(summary, metrics)
        payload: dict[str, Any] = {}
        views = []
        for record in (records or {}).values():
            two_d = record.get("2d") if isinstance(record, dict) else None
            if isinstance(two_d, dict) and "views" in two_d:
                count = _view_count(two_d["views"])
                if count is not None:
                    views.append(count)
        if views:
            payload["views_per_instance/histogram"] = wandb.Histogram(
                views, num_bins=max(1, min(64, max(views) - min(views) + 1))
            )
            flat["views_per_instance/zero_views"] = sum(v == 0 for v in views)

        missing = {mod: summary.get(f"missing_{mod}") or {} for mod in ("3d", "2d")}
        counts_columns = ["name", "group", "status", "scenes", "instances", "keys_3d", "keys_2d",
                          "missing_3d", "missing_2d", "total_s"]
        counts_row = [
            self.run.name, self.run.group, summary.get("status"), summary.get("scenes"),
            summary.get("instances"), summary.get("keys_3d"), summary.get("keys_2d"),
            sum(c for c in missing["3d"].values() if _number(c)),
            sum(c for c in missing["2d"].values() if _number(c)),
            (summary.get("timings") or {}).get("total"),
        ]
        payload["counts"] = wandb.Table(columns=counts_columns, data=[counts_row])
        missing_rows = [[mod, str(reason), count] for mod in ("3d", "2d")
                        for reason, count in Counter(missing[mod]).items()]
        payload["missing"] = wandb.Table(columns=["modality", "reason", "count"], data=missing_rows)
        self.run.log(payload)
        self.run.summary.update(flat)

    def finish(self, exit_code: int = 0) -> None:
        """Close the run. Safe to call any number of times, also when ``start`` failed; never raises
        (it runs in a ``finally`` and must not hide the job's own error)."""
        run, self.run = self.run, None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
        except Exception as e:  # noqa: BLE001 - see docstring
            warnings.warn(f"wandb run {getattr(run, 'id', '?')} did not finish cleanly: {e}", stacklevel=2)
