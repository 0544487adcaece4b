"""Test helper: what an offline wandb run recorded, read back from its ``run-<id>.wandb`` transaction
log without the network or ``wandb.Api`` (the tests check what featurizer logged)."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

from featurizer.errors import DataError

_LOG_HEADER = 7  # ":W&B" + magic 0xBEE1 (little endian) + version byte
_BLOCK = 32768
_RECORD_HEADER = 7  # crc32 (uint32), length (uint16), type (uint8): LevelDB log format


def _wandb_log_records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise DataError(path, "not a wandb transaction log (no ':W&B' header)")
    records, pending, pos = [], b"", _LOG_HEADER
    while pos + _RECORD_HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _RECORD_HEADER:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + _RECORD_HEADER])
        chunk = data[pos + _RECORD_HEADER : pos + _RECORD_HEADER + length]
        pos += _RECORD_HEADER + length
        if kind == 1:  # full
            records.append(chunk)
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            records.append(pending + chunk)
        else:  # zero padding at the end of an unfinished file
            break
    return records


def _set_path(target: dict, item) -> None:
    keys = list(item.nested_key) or [item.key]
    node = target
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = json.loads(item.value_json)


def read_offline_run(run_dir) -> dict[str, Any]:
    """What an offline wandb run recorded, read from its ``run-<id>.wandb`` file.

    run_dir: the ``offline-run-<time>-<id>`` folder. Returns ``{"id", "name", "group", "project",
    "config": dict, "summary": dict (last value per key), "history": [dict per logged step]}``.
    Nested summary values (histograms, tables) are dicts as wandb serialises them.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = Path(run_dir)
    logs = sorted(run_dir.glob("run-*.wandb"))
    if not logs:
        raise DataError(run_dir, "no run-*.wandb file (not a wandb run folder)")
    out: dict[str, Any] = {"id": None, "name": None, "group": None, "project": None,
                           "config": {}, "summary": {}, "history": []}
    records = []
    for _ in range(100):  # wandb's writer process may still be flushing the log: wait for its exit record
        records = []
        for raw in _wandb_log_records(logs[0]):
            record = pb.Record()
            record.ParseFromString(raw)
            records.append(record)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        time.sleep(0.1)
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.update(id=run.run_id, name=run.display_name, group=run.run_group, project=run.project)
            for item in run.config.update:
                _set_path(out["config"], item)
        elif kind == "config":
            for item in record.config.update:
                _set_path(out["config"], item)
        elif kind == "summary":
            for item in record.summary.update:
                _set_path(out["summary"], item)
            for item in record.summary.remove:
                keys = list(item.nested_key) or [item.key]
                node = out["summary"]
                for key in keys[:-1]:
                    node = node.get(key, {})
                node.pop(keys[-1], None)
        elif kind == "history":
            step: dict[str, Any] = {}
            for item in record.history.item:
                _set_path(step, item)
            out["history"].append(step)
    out["config"].pop("_wandb", None)
    return out
