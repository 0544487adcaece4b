"""Loading a user's ``.pt`` file (a checkpoint, a segmentation list) safely, with one-line errors.

Every ``torch.load`` of a file a user hands to featurizer goes through :func:`load_pt`: it uses
``weights_only=True`` only (tensors, numbers, strings, containers: no code in the file runs), and
turns torch's long messages into one line naming the file: ``not a PyTorch checkpoint (...)`` for
files torch cannot read, or the Python globals a pickled file would import when it is refused.
"""

from __future__ import annotations

import pickletools
import re
import warnings
from pathlib import Path

from featurizer.errors import DataError

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
# torch.save(..., _use_new_zipfile_serialization=False): a protocol-2 pickle of torch's magic number
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def load_pt(path: str | Path, error: type = DataError, mmap: bool = False) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU; any failure -> ``error(path, problem)``.

    error: the FeaturizerError class to raise (DataError, CheckpointError), built as error(path, text).
    mmap: memory-map the tensors (zip-format files only; legacy files are read normally).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise error(path, "file not found")
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_MAGIC))
    if not head:
        raise error(path, "not a PyTorch checkpoint (empty file)")
    is_zip = head.startswith(ZIP_MAGIC)
    if not is_zip and not head.startswith(LEGACY_MAGIC):
        if head[0] != 0x80:  # every pickle of protocol >= 2 starts with PROTO
            raise error(path, "not a PyTorch checkpoint (neither torch.save's zip format nor a pickle)")
        _refuse(path, _pickle_globals(path.read_bytes()), error)
        raise error(path, "not a PyTorch checkpoint (a plain Python pickle, not written by torch.save)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the error says it all
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, KeyError, ...: never fall back
        text = " ".join(str(e).split())
        _refuse(path, re.findall(r"GLOBAL ([\w.]+)", text), error)
        raise error(path, f"not a PyTorch checkpoint ({_short(text) or type(e).__name__})") from None


def _refuse(path: Path, names: list[str], error: type) -> None:
    if names:
        names = list(dict.fromkeys(names))
        shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
        raise error(
            path,
            f"refusing to unpickle: it needs the Python global(s) {shown}; only tensors, "
            "numbers, strings and containers are loaded, and nothing in the file was run",
        )


def _pickle_globals(data: bytes) -> list[str]:
    """``module.name`` of every global a pickle imports, read from its opcodes (nothing is executed)."""
    found, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":  # protocol <= 3: "module name"
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:  # protocol 4+: the last two strings
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str) and "UNICODE" in op.name:
                strings.append(arg)
    except Exception:  # noqa: BLE001 - a damaged pickle: report what was read before the damage
        pass
    return found


def _short(text: str) -> str:
    """The informative sentence of torch's message, without its advice (never ``weights_only=False``)."""
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    text = text.split("Check the documentation", 1)[0].split(". This is", 1)[0]
    text = text.split(" Please ", 1)[0].strip().rstrip(".")
    if "weights_only" in text or "likely succeed" in text:  # an advice we could not cut: drop it
        return ""
    return text if len(text) <= 200 else text[:197] + "..."
