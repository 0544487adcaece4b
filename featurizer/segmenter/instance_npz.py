"""A simple per-scene ``.npz`` any instance segmenter can write (format: docs/instance_npz.md).

One ``<root>/<scene>.npz`` with EITHER

- ``instance_ids`` (N,) int: the instance of each mesh vertex, ``-1`` for none; instance ``i`` is
  the vertices with id ``i``, for ``i`` in ``0 .. I-1`` (``I = len(labels)``);

OR (CSR, for overlapping masks)

- ``point_ids`` (P,) int and ``offsets`` (I+1,) int: instance ``i`` is
  ``point_ids[offsets[i]:offsets[i+1]]``;

plus ``labels`` (I,) str and optionally ``scores`` (I,) float (instances are then ordered by score,
descending, stable). Loaded with ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from featurizer.errors import ConfigError, DataError
from featurizer.scene import Instance, Scene
from featurizer.segmenter.base import Segmenter


def _int_array(path: Path, arrays, key: str) -> np.ndarray:
    arr = arrays[key]
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise DataError(path, f"'{key}' must be a 1-D integer array, got {arr.dtype} of shape {arr.shape}")
    return arr.astype(np.int64)


def read_instance_npz(path: Path, num_points: int) -> list[Instance]:
    """The instances of one ``.npz`` (file order; sorted by score when ``scores`` is present)."""
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(path, f"not a readable .npz: {e}") from None
    with npz as arrays:
        try:
            keys = set(arrays.files)
            if "labels" not in keys:
                raise DataError(path, f"no 'labels' array (has: {sorted(keys)})")
            labels = arrays["labels"]
            if labels.ndim != 1 or labels.dtype.kind not in "US":
                raise DataError(path, f"'labels' must be a 1-D str array, got {labels.dtype} {labels.shape}")
            names = [x.decode() if isinstance(x, bytes) else str(x) for x in labels.tolist()]
            count = len(names)
            has_dense, has_csr = "instance_ids" in keys, {"point_ids", "offsets"} <= keys
            if has_dense == has_csr:
                raise DataError(
                    path,
                    f"needs one of 'instance_ids' or 'point_ids'+'offsets', not both (has: {sorted(keys)})",
                )
            if has_dense:
                ids = _int_array(path, arrays, "instance_ids")
                if len(ids) != num_points:
                    raise DataError(
                        path, f"'instance_ids' has {len(ids)} entries, the scene {num_points} points"
                    )
                if len(ids) and (ids.min() < -1 or ids.max() >= count):
                    bad = int(ids.min() if ids.min() < -1 else ids.max())
                    raise DataError(
                        path, f"instance id {bad} out of range (-1 .. {count - 1} for {count} labels)"
                    )
                valid = np.flatnonzero(ids >= 0)
                order = valid[np.argsort(ids[valid], kind="stable")]
                bounds = np.searchsorted(ids[order], np.arange(count + 1))
                groups = [order[bounds[i] : bounds[i + 1]] for i in range(count)]
            else:
                point_ids = _int_array(path, arrays, "point_ids")
                offsets = _int_array(path, arrays, "offsets")
                if len(offsets) != count + 1:
                    raise DataError(path, f"'offsets' has {len(offsets)} entries, expected I+1 = {count + 1}")
                if offsets[0] != 0 or offsets[-1] != len(point_ids) or (np.diff(offsets) < 0).any():
                    raise DataError(
                        path, f"'offsets' must rise from 0 to len(point_ids) = {len(point_ids)}"
                    )
                if len(point_ids) and (point_ids.min() < 0 or point_ids.max() >= num_points):
                    bad = int(point_ids.min() if point_ids.min() < 0 else point_ids.max())
                    raise DataError(path, f"point id {bad} out of range for {num_points} points")
                groups = [point_ids[offsets[i] : offsets[i + 1]] for i in range(count)]
            scores: list[float | None] = [None] * count
            if "scores" in keys:
                s = arrays["scores"]
                if s.shape != (count,) or s.dtype.kind not in "fiu" or not np.isfinite(s).all():
                    raise DataError(path, f"'scores' must be {count} finite numbers, got {s.dtype} {s.shape}")
                scores = [float(x) for x in s]
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            raise DataError(path, f"unreadable array: {e}") from None
    instances = [Instance(point_ids=g, label=n, score=sc) for g, n, sc in zip(groups, names, scores)]
    if "scores" in keys:
        instances.sort(key=lambda inst: -inst.score)  # stable
    return instances


class InstanceNpz(Segmenter):
    """Instances from ``<root>/<scene>.npz`` (docs/instance_npz.md).

    root: the folder of ``.npz`` files.
    max_instances: keep the first ``max_instances`` (after the score sort); None keeps all.
    name: the tag in every output file name, e.g. ``oneformer3d``.
    """

    def __init__(self, root: str, max_instances: int | None = 100, name: str = "npz"):
        super().__init__(max_instances=max_instances)
        if root is None:
            raise ConfigError("segmenter.root", "the instance .npz folder is not set")
        if not name or not str(name).replace("-", "").replace("_", "").isalnum():
            raise ConfigError("segmenter.name", f"must be a non-empty [A-Za-z0-9_-] tag, got {name!r}")
        self.root = Path(root)
        self.name = str(name)

    def scene_file(self, scene_id: str) -> Path:
        return self.root / f"{scene_id}.npz"

    def check_global(self) -> None:
        self.check_folder(self.root, "instance .npz")

    def check_scene(self, scene_id: str, num_points: int) -> None:
        read_instance_npz(self.scene_file(scene_id), num_points)

    def predict(self, scene: Scene) -> list[Instance]:
        path = self.scene_file(scene.scene_id)
        instances = read_instance_npz(path, scene.num_points)
        empty = sum(len(inst.point_ids) == 0 for inst in instances)
        if empty:
            scene.warn(f"{path.name}: {empty} empty instance(s) kept")
        return instances
