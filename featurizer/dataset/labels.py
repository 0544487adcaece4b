"""ScanNet's ``scannetv2-labels.combined.tsv``: raw annotation labels -> benchmark categories.

The file has a header row, then tab-separated rows ``id, raw_category, category, count, nyu40id,
...``. Aggregation segGroups carry the *raw* label (column 1); the class name used everywhere
downstream is ``category`` (column 2); Mask3D class ids are looked up in ``id`` (column 0).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from featurizer.errors import DataError

TSV_NAME = "scannetv2-labels.combined.tsv"


@dataclass
class LabelTable:
    """The parsed tsv. ``raw_to_category``: raw label -> category; ``id_to_category``: id -> category;
    ``raw_to_id``: raw label -> id (a ScanNet200 id where the label is a ScanNet200 class);
    ``raw_to_nyu40``: raw label -> nyu40 id (when the column is present and numeric)."""

    path: Path
    raw_to_category: dict[str, str] = field(default_factory=dict)
    id_to_category: dict[int, str] = field(default_factory=dict)
    raw_to_id: dict[str, int] = field(default_factory=dict)
    raw_to_nyu40: dict[str, int] = field(default_factory=dict)

    def category(self, raw_label: str) -> str:
        """The category of ``raw_label``; the raw label itself when the tsv does not list it."""
        return self.raw_to_category.get(raw_label, raw_label)


def read_label_table(path: str | Path) -> LabelTable:
    """Parse the labels tsv; DataError when it is missing or lacks the columns named above."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "labels tsv not found (ScanNet's scannetv2-labels.combined.tsv)")
    table = LabelTable(path=path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t")
        header = next(rows, None)
        if header is None:
            raise DataError(path, "labels tsv is empty")
        names = [h.strip() for h in header]
        try:
            i_id, i_raw, i_cat = names.index("id"), names.index("raw_category"), names.index("category")
        except ValueError:
            raise DataError(
                path, f"labels tsv header must name id, raw_category and category; got {names[:6]}"
            ) from None
        i_nyu = names.index("nyu40id") if "nyu40id" in names else None
        for line, row in enumerate(rows, start=2):
            if not row or all(not x.strip() for x in row):
                continue
            if len(row) <= max(i_id, i_raw, i_cat):
                need = max(i_id, i_raw, i_cat) + 1
                raise DataError(path, f"line {line}: {len(row)} columns, expected at least {need}")
            raw, cat = row[i_raw].strip(), row[i_cat].strip()
            table.raw_to_category.setdefault(raw, cat)
            try:
                table.id_to_category.setdefault(int(row[i_id]), cat)
                table.raw_to_id.setdefault(raw, int(row[i_id]))
            except ValueError:
                raise DataError(path, f"line {line}: id {row[i_id]!r} is not an integer") from None
            if i_nyu is not None and len(row) > i_nyu:
                try:
                    table.raw_to_nyu40.setdefault(raw, int(row[i_nyu]))
                except ValueError:
                    pass
    return table
