"""Mask3D's raw export: ``<root>/<split>/<scene>.txt`` + one ``0``/``1`` mask file per instance.

Layout (DESIGN.md section 4)::

    <root>/<split>/<scene>.txt                 # lines: pred_mask/<scene>_<k>.txt <class_id> <score>
    <root>/<split>/pred_mask/<scene>_<k>.txt   # one 0/1 line per mesh vertex

Class ids are named through ``label_set``: ``scannet200`` (default: a ScanNet200 checkpoint such as the
published ``scannet200_val.ckpt`` writes ScanNet200 ids, i.e. ids of column 0 of
``scannetv2-labels.combined.tsv``), ``scannet20`` (a ScanNet 20-class checkpoint writes the NYU40 ids of the
20 benchmark classes), both from the tables embedded in :mod:`featurizer.dataset.label_sets`, so any dataset
works without ScanNet's tsv; or ``tsv`` (column 0 of the labels tsv, named by its column 2, ``category``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featurizer.dataset.label_sets import DISPLAY, label_table
from featurizer.dataset.labels import TSV_NAME as LABELS_TSV_NAME
from featurizer.dataset.labels import read_label_table
from featurizer.errors import ConfigError, DataError
from featurizer.scene import Instance, Scene
from featurizer.segmenter.base import Segmenter


def read_labels_tsv(path: str | Path) -> dict[int, str]:
    """ScanNet's labels tsv as ``{id (column 0): category (column 2)}`` (featurizer.dataset.labels)."""
    names = read_label_table(path).id_to_category
    if not names:
        raise DataError(path, "labels tsv has no rows")
    return names


def read_binary_mask(path: Path, num_points: int) -> np.ndarray:
    """(num_points,) bool mask from a file of one ``0``/``1`` (or integer) line per vertex."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "mask file not found") from None
    buf = np.frombuffer(raw, dtype=np.uint8)
    if len(buf) in (2 * num_points, 2 * num_points - 1) and num_points > 0:
        # fast path for Mask3D's `np.savetxt(fmt="%d")`: "0\n1\n..." (~10x faster than split())
        digits, newlines = buf[0::2], buf[1::2]
        if (newlines == ord("\n")).all() and ((digits == ord("0")) | (digits == ord("1"))).all():
            return digits == ord("1")
    tokens = raw.split()
    if len(tokens) != num_points:
        raise DataError(
            path, f"mask has {len(tokens)} lines but the scene has {num_points} points (mesh vertices)"
        )
    values = np.array(tokens, dtype=np.bytes_)
    ones = values == b"1"
    if not (ones | (values == b"0")).all():  # tolerate other integer spellings, e.g. "1.0" or "2"
        try:
            ones = values.astype(np.float64) != 0
        except ValueError:
            bad = next(t for t in tokens if t not in (b"0", b"1"))
            raise DataError(path, f"mask line is not a number: {bad[:40]!r}") from None
    return ones


LABEL_SET_CHOICES = ("scannet200", "scannet20", "tsv")


class Mask3DExport(Segmenter):
    """Instances of Mask3D's raw export, sorted by score (descending, stable) and thresholded.

    root: the export folder holding ``<split>/``.
    splits: the subfolders (``val``, ``train``, ``test``) searched for a scene's ``<scene>.txt``, in order:
        a run over several splits finds each scene in its own (default: the dataset's splits).
    label_set: how class ids are named: ``scannet200`` (default), ``scannet20`` or ``tsv`` (see the module).
    labels_tsv: with ``label_set=tsv``: ``scannetv2-labels.combined.tsv``, or a folder holding it (e.g. the
        dataset root); None looks for it in ``root`` and then in ``root``'s parent. Unused otherwise.
    score_threshold: keep instances with ``score >= score_threshold``.
    max_instances: keep the first ``max_instances`` after sorting (paper: 100); None keeps all.

    Only the kept instances' mask files are read. Empty masks are kept (the pipeline records them
    as having no feature) and reported with ``scene.warn``.
    """

    name = "mask3d"

    def __init__(
        self,
        root: str,
        splits: list[str] | str = ("val",),
        labels_tsv: str | None = None,
        label_set: str = "scannet200",
        score_threshold: float = 0.0,
        max_instances: int | None = 100,
    ):
        super().__init__(max_instances=max_instances)
        if root is None:
            raise ConfigError("segmenter.root", "the Mask3D export folder is not set")
        if max_instances is not None and max_instances < 0:
            raise ConfigError("segmenter.max_instances", f"must be >= 0 or null, got {max_instances}")
        self.root = Path(root)
        self.splits = [splits] if isinstance(splits, str) else [str(x) for x in splits]
        if not self.splits:
            raise ConfigError("segmenter.splits", "empty: name the export's split folder(s)")
        self.labels_tsv = None if labels_tsv is None else Path(labels_tsv)
        self.label_set = str(label_set)
        if self.label_set != "tsv":
            label_table(self.label_set, "segmenter.label_set", LABEL_SET_CHOICES)
        self.score_threshold = float(score_threshold)
        self._names: dict[int, str] | None = None

    def scene_file(self, scene_id: str) -> Path:
        """``<root>/<split>/<scene>.txt`` of the first split folder holding it (else of the first split)."""
        files = [self.root / split / f"{scene_id}.txt" for split in self.splits]
        return next((f for f in files if f.is_file()), files[0])

    def labels_path(self) -> Path:
        """The labels tsv this segmenter uses (raises ConfigError when none can be found)."""
        if self.labels_tsv is not None:
            path = self.labels_tsv / LABELS_TSV_NAME if self.labels_tsv.is_dir() else self.labels_tsv
            if not path.is_file():
                raise ConfigError("segmenter.labels_tsv", f"{path} not found")
            return path
        candidates = [self.root / LABELS_TSV_NAME, self.root.parent / LABELS_TSV_NAME]
        for path in candidates:
            if path.is_file():
                return path
        raise ConfigError(
            "segmenter.labels_tsv",
            f"not set, and no {LABELS_TSV_NAME} in {self.root} or {self.root.parent}",
        )

    def class_names(self) -> dict[int, str]:
        """``{class id: name}`` of the label set (the tsv read once with ``label_set=tsv``)."""
        if self._names is None:
            if self.label_set == "tsv":
                self._names = read_labels_tsv(self.labels_path())
            else:
                self._names = label_table(self.label_set, "segmenter.label_set", LABEL_SET_CHOICES)
        return self._names

    def _unknown_class(self) -> str:
        if self.label_set == "tsv":
            return f"not in {self.labels_path()}"
        return f"not a {DISPLAY[self.label_set]} class id (segmenter.label_set={self.label_set})"

    def input_files(self, scene_id: str) -> list[Path]:
        """The scene's prediction list, every mask file it names, and the labels tsv (``label_set=tsv``)."""
        txt = self.scene_file(scene_id)
        masks = [mask for mask, _, _ in self.read_predictions(scene_id)] if txt.is_file() else []
        return [txt, *([self.labels_path()] if self.label_set == "tsv" else []), *masks]

    def check_global(self) -> None:
        for split in self.splits:
            self.check_folder(self.root / split, "Mask3D export")
        self.class_names()

    def check_scene(self, scene_id: str, num_points: int) -> None:
        """The prediction file and every mask file :meth:`predict` would read (one line per vertex)."""
        self.read_instances(scene_id, num_points)

    def read_predictions(self, scene_id: str) -> list[tuple[Path, int, float]]:
        """``(mask file, class id, score)`` per line of ``<scene>.txt``, in file order; DataError naming the
        line of a malformed line or of a class id the label set does not have."""
        txt = self.scene_file(scene_id)
        if not txt.is_file():
            raise DataError(txt, "Mask3D export missing for this scene")
        names = self.class_names()
        out = []
        for lineno, line in enumerate(txt.read_text().splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise DataError(
                    txt, f"line {lineno}: expected '<mask file> <class id> <score>', got {line!r}"
                )
            try:
                class_id, score = int(parts[1]), float(parts[2])
            except ValueError:
                raise DataError(txt, f"line {lineno}: bad class id or score in {line!r}") from None
            if not np.isfinite(score):
                raise DataError(txt, f"line {lineno}: non-finite score {parts[2]}")
            if class_id not in names:
                raise DataError(txt, f"line {lineno}: class id {class_id} is {self._unknown_class()}")
            mask = Path(parts[0])
            out.append((mask if mask.is_absolute() else txt.parent / mask, class_id, score))
        return out

    def read_instances(self, scene_id: str, num_points: int) -> tuple[list[Instance], list[str]]:
        """The kept instances (score-sorted, thresholded, truncated) and the names of empty masks."""
        preds = self.read_predictions(scene_id)
        names = self.class_names()
        kept = [p for p in preds if p[2] >= self.score_threshold]
        kept.sort(key=lambda p: -p[2])  # stable: equal scores keep file order
        if self.max_instances is not None:
            kept = kept[: self.max_instances]  # only read the masks that will be used
        instances, empty = [], []
        for mask_path, class_id, score in kept:
            ids = np.flatnonzero(read_binary_mask(mask_path, num_points))
            if len(ids) == 0:
                empty.append(mask_path.name)
            instances.append(Instance(point_ids=ids, label=names[class_id], score=score))
        return instances, empty

    def predict(self, scene: Scene) -> list[Instance]:
        instances, empty = self.read_instances(scene.scene_id, scene.num_points)
        if empty:
            scene.warn(f"Mask3D: {len(empty)} empty mask(s) kept as empty instances: {', '.join(empty[:5])}")
        return instances
