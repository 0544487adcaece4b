"""scripts/bench_pipeline.py runs end to end at its smallest settings and prints complete tables (no timing
assertions: only that every row is there and every number is finite)."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

from conftest import REPO


def _tables(text: str) -> dict[str, list[list[str]]]:
    """Markdown tables of ``text`` by their first header cell: rows of cells (header and rule dropped)."""
    tables: dict[str, list[list[str]]] = {}
    rows: list[list[str]] = []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            tables[rows[0][0]] = rows[2:]
            rows = []
    return tables


def _number(cell: str) -> float:
    """The first number of a cell ("12.5 frames/s", "3%", "1.2e-03")."""
    match = re.search(r"-?\d[\d,]*\.?\d*(e[-+]?\d+)?", cell)
    assert match, f"no number in {cell!r}"
    return float(match.group(0).replace(",", ""))


@pytest.mark.slow
def test_bench_pipeline_smallest_prints_finite_tables():
    cmd = [sys.executable, str(REPO / "scripts" / "bench_pipeline.py"), "--scenes", "1", "--frames", "2",
           "--points", "20000", "--instances", "5", "--instances-3d", "2", "--size", "ti",
           "--dinov2", "small", "--workers", "1", "--devices", "1", "4", "--bf16"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    tables = _tables(out)

    stages = tables["stage"]
    names = [r[0] for r in stages]
    for prefix in ("read scene", "decode frames", "3D: Uni3D-ti (2 of 5 instances)",
                   "2D encode: DINOv2-small", "2D mapping", "2D fusion", "2D other", "**scene (sum)**"):
        assert any(n.startswith(prefix) for n in names), (prefix, names)
    for row in stages:
        assert len(row) == 5
        for cell in row[2:]:  # measured s, s per ScanNet scene, share
            assert math.isfinite(_number(cell)) and _number(cell) >= 0, row
    rates = {r[0].split(":")[0].split(" (")[0]: r[1] for r in stages}
    assert rates["decode frames"].endswith("frames/s") and _number(rates["decode frames"]) > 0
    assert rates["3D"].endswith("instances/s") and _number(rates["3D"]) > 0
    assert rates["2D encode"].endswith("frames/s") and _number(rates["2D encode"]) > 0
    assert _number(stages[-1][1]) > 0  # scenes/hour
    # the sum row is the sum of the stage rows (printed to 3 decimals)
    for col in (2, 3):
        assert abs(sum(_number(r[col]) for r in stages[:-1]) - _number(stages[-1][col])) < 0.01

    projection = tables["devices"]
    assert [r[0] for r in projection] == ["1", "4"]
    per_hour = [_number(r[1]) for r in projection]
    assert per_hour[1] == pytest.approx(4 * per_hour[0], rel=1e-2)
    assert all("h" in r[2] or "min" in r[2] for r in projection)
    assert re.search(r"^bottleneck: .+, \d+% of a ScanNet scene's time$", out, re.M)

    bf16 = tables["features"]
    assert [r[0] for r in bf16] == ["DINOv2-small patch tokens", "Uni3D-ti instance features"]
    assert [r[1] for r in bf16] == ["2 frames", "2 instances"]
    for row in bf16:
        dmax, amax, rel, cmean, cmin = (_number(c) for c in row[2:])
        assert all(math.isfinite(x) for x in (dmax, amax, rel, cmean, cmin))
        # bf16 autocast changes the outputs, a little: not identical, not unrelated
        assert 0 < dmax < amax and 0 < rel < 0.1 and 0.99 < cmin <= cmean <= 1.0
