"""Compare two run folders: every .pt/.pth file tensor by tensor (torch.equal), every .json file (records,
task annotations, metrics) value by value; not summary.json and timings.json (times, cache reuse).

    python scripts/compare_runs.py outputs/runs/<date>/<a> outputs/runs/<date>/<b>

Prints one row per file (equal, or the first difference) and exits 1 when anything differs. Used to
show that a change leaves a run's outputs as they were (e.g. the demo before and after a refactor).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def first_difference(a, b, where: str = "") -> str | None:
    """Where ``a`` and ``b`` first differ (tensors by torch.equal, dtype and shape), or None."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return f"{where}: tensor vs {type(b).__name__}"
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        if not torch.equal(a, b):
            return f"{where}: values differ (max abs {float((a.double() - b.double()).abs().max()):.3g})"
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where}: keys differ ({sorted(set(a) ^ set(b))[:5]})"
        return next((d for k in a if (d := first_difference(a[k], b[k], f"{where}/{k}"))), None)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if type(a) is not type(b) or len(a) != len(b):
            return f"{where}: {type(a).__name__}[{len(a)}] vs {type(b).__name__}[{len(b)}]"
        diffs = (first_difference(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
        return next((d for d in diffs if d), None)
    return None if a == b else f"{where}: {a!r} vs {b!r}"


SUFFIXES = (".pt", ".pth", ".json")
NOT_COMPARED = ("summary.json", "timings.json")  # differ between any two runs: times, reused scenes


def _load(path: Path):
    return json.loads(path.read_text()) if path.suffix == ".json" else torch.load(path, weights_only=True)


def compare(run_a: Path, run_b: Path) -> list[tuple[str, str | None]]:
    """``(file, first difference or None)`` for every .pt/.pth/.json file of either run."""
    names = sorted({p.relative_to(r).as_posix() for r in (run_a, run_b) for p in r.rglob("*")
                    if p.suffix in SUFFIXES and p.name not in NOT_COMPARED and ".hydra" not in p.parts})
    rows = []
    for name in names:
        pa, pb = run_a / name, run_b / name
        if not (pa.is_file() and pb.is_file()):
            rows.append((name, f"only in {run_a if pa.is_file() else run_b}"))
            continue
        rows.append((name, first_difference(_load(pa), _load(pb))))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    args = ap.parse_args()
    rows = compare(args.run_a, args.run_b)
    print("| file | result |\n|---|---|")
    for name, diff in rows:
        print(f"| {name} | {'equal' if diff is None else diff} |")
    differing = sum(d is not None for _, d in rows)
    print(f"\n{len(rows) - differing} of {len(rows)} files equal")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
