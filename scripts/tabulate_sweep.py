"""Tabulate a Hydra multirun folder: sweep.md, sweep.csv, sweep.png (one row per job); prints the table.

    python scripts/tabulate_sweep.py outputs/multiruns/<sweep>/<time>
    python scripts/tabulate_sweep.py <sweep dir> --no-probe   # only read existing metrics.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featurizer.errors import FeaturizerError  # noqa: E402
from featurizer.sweep import tabulate_sweep  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dir", type=Path, help="the multirun folder holding one subfolder per job")
    parser.add_argument(
        "--no-probe", action="store_true", help="do not compute metrics.json for jobs that lack it"
    )
    args = parser.parse_args(argv)
    try:
        paths = tabulate_sweep(args.sweep_dir, probe_missing=not args.no_probe, echo=True)
    except FeaturizerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
