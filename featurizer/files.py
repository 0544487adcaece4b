"""Writing files: atomically, with reproducible bytes, and cleaning up what a killed run left behind.

Every file featurizer writes goes through :func:`atomic`: the content is written to a temporary
name in the target's folder, ``.<name>.<host>-<pid>-<random>.tmp``, and renamed onto the target
only when complete, so a reader never sees a half-written file and an interrupted run leaves the
earlier file intact. A process killed with ``kill -9`` leaves its temporary file (or folder)
behind; :func:`remove_stale` deletes those of dead processes, and a run calls it on its own
folders when it starts.

``.pt`` files are written through a file object, not a path: ``torch.save(obj, path)`` names the
zip archive's root folder after the file's (here random, temporary) name, so two runs would write
different bytes. Through a file object the root is always ``archive``, and equal objects give
byte-identical files (checksums of two runs' outputs agree).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from featurizer.errors import DataError

_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"
# .<name>.<host>-<pid>-<8 hex>.tmp ; the name may hold dots, the host has none
_TMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")
STALE_AFTER_S = 24 * 3600.0  # a temporary file of another host is taken as abandoned after a day


def read_json(path: Path, missing: str = "file not found", expect: type | None = None):
    """A JSON file's content; DataError naming the file when it is missing (the problem: ``missing``),
    unreadable, not JSON, or, with ``expect``, not a value of that type (``dict``: a JSON object)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(path, missing) from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON: {e}") from None
    if expect is not None and not isinstance(data, expect):
        raise DataError(path, f"must hold a JSON {'object' if expect is dict else expect.__name__}, holds "
                              f"{type(data).__name__}")
    return data


def read_lines(path: Path) -> list[str]:
    """The stripped non-empty lines of a text file (split files, class lists), in file order."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def temporary_path(path: Path) -> Path:
    """A fresh temporary name for ``path`` in its folder, recognisable by :func:`remove_stale`."""
    path = Path(path)
    return path.parent / f".{path.name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"


@contextmanager
def atomic(path: Path):
    """Yields a temporary path in ``path``'s folder; renamed onto ``path`` only if the body succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` atomically, with the same bytes for the same object (see the module's note)."""
    import torch

    with atomic(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def atomic_write_text(text: str, path: Path) -> None:
    with atomic(path) as tmp:
        Path(tmp).write_text(text)


def atomic_write_json(obj: Any, path: Path, indent: int | None = 2) -> None:
    atomic_write_text(json.dumps(obj, indent=indent, sort_keys=False) + "\n", path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def is_stale(path: Path, now: float | None = None) -> bool:
    """Whether ``path`` is a temporary file or folder of :func:`atomic` whose writer is gone.

    On this host: its process no longer exists. From another host (a shared file system): older
    than :data:`STALE_AFTER_S`. Anything not named like :func:`temporary_path` is never stale.
    """
    m = _TMP.match(Path(path).name)
    if m is None:
        return False
    if m["host"] == _HOST:
        return not _alive(int(m["pid"]))
    try:
        age = (time.time() if now is None else now) - Path(path).lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > STALE_AFTER_S


def remove_stale(*folders: Path) -> list[Path]:
    """Delete the stale temporary files and folders directly in ``folders``; returns what was removed."""
    removed = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if not entry.name.endswith(".tmp") or not is_stale(Path(entry.path)):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed
