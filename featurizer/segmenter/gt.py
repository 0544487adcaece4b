"""Ground-truth instances from ScanNet's aggregation + segs (read by the dataset reader)."""

from __future__ import annotations

from featurizer.scene import Scene
from featurizer.segmenter.base import Segmenter


class GroundTruth(Segmenter):
    """Keeps the reader's GT instances, in aggregation order, truncated to ``max_instances``."""

    name = "gt"
    is_ground_truth = True

    def input_files(self, scene_id: str) -> list:
        return []  # the reader's aggregation and segs, already among the reader's input files

    def predict(self, scene: Scene) -> list:
        if not scene.instances and scene.split != "test":
            scene.warn("no ground-truth instances (no aggregation/segs?)")
        return scene.instances
