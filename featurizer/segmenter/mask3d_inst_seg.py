"""Chat-Scene's shared Mask3D results: ``<root>/<scene>.pt``, a list of ``{"label", "segments"}``.

Each file holds a list of dicts ``{"label": str, "segments": [point ids]}`` (here ``segments`` are
indices into the scene's mesh vertices), already sorted by Mask3D's score. The files are loaded with
``torch.load(..., weights_only=True)`` only: a file that needs anything but plain containers,
numbers, strings and tensors is refused and no code in it runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featurizer.errors import ConfigError, DataError
from featurizer.ptfile import load_pt
from featurizer.scene import Instance, Scene
from featurizer.segmenter.base import Segmenter


def _point_ids(value: object) -> np.ndarray | None:
    """(K,) int64 point ids from a list / tuple / tensor / array of integers, else None."""
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        return None
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        return None
    return arr.astype(np.int64)


class Mask3DInstSeg(Segmenter):
    """Instances from ``<root>/<scene>.pt`` (Chat-Scene's ``mask3d_inst_seg``), in list order.

    root: the ``mask3d_inst_seg`` folder.
    max_instances: keep the first ``max_instances`` (paper: 100); None keeps all.
    Entries may carry an optional ``"score"`` (recorded on the Instance).
    """

    name = "mask3d"

    def __init__(self, root: str, max_instances: int | None = 100):
        super().__init__(max_instances=max_instances)
        if root is None:
            raise ConfigError("segmenter.root", "the mask3d_inst_seg folder is not set")
        self.root = Path(root)

    def scene_file(self, scene_id: str) -> Path:
        return self.root / f"{scene_id}.pt"

    def check_global(self) -> None:
        self.check_folder(self.root, "mask3d_inst_seg")

    def check_scene(self, scene_id: str, num_points: int) -> None:
        read_inst_seg(self.scene_file(scene_id), num_points)

    def predict(self, scene: Scene) -> list[Instance]:
        path = self.scene_file(scene.scene_id)
        instances = read_inst_seg(path, scene.num_points)
        empty = sum(len(inst.point_ids) == 0 for inst in instances)
        if empty:
            scene.warn(f"{path.name}: {empty} empty instance(s) kept")
        return instances


def read_inst_seg(path: Path, num_points: int) -> list[Instance]:
    """The instances of one ``mask3d_inst_seg`` file, in list order (DataError on any defect)."""
    data = load_pt(path)  # weights_only: a file needing arbitrary unpickling -> DataError
    if not isinstance(data, (list, tuple)):
        raise DataError(path, f"expected a list of dicts, got {type(data).__name__}")
    instances = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "label" not in entry or "segments" not in entry:
            raise DataError(path, f"entry {i}: expected a dict with 'label' and 'segments'")
        label = entry["label"]
        if not isinstance(label, str):
            raise DataError(path, f"entry {i}: 'label' is {type(label).__name__}, not str")
        ids = _point_ids(entry["segments"])
        if ids is None:
            raise DataError(path, f"entry {i}: 'segments' is not a flat list of integer point ids")
        if len(ids) and (ids.min() < 0 or ids.max() >= num_points):
            bad = int(ids.min() if ids.min() < 0 else ids.max())
            raise DataError(path, f"entry {i}: point id {bad} out of range for {num_points} points")
        score = entry.get("score")
        if score is not None:
            try:
                score = float(score)
            except (TypeError, ValueError):
                raise DataError(path, f"entry {i}: 'score' is not a number") from None
        instances.append(Instance(point_ids=ids, label=label, score=score))
    return instances
