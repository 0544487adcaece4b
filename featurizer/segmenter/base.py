"""The segmenter contract: a segmenter turns a read Scene into a Scene with its instances."""

from __future__ import annotations

from featurizer.scene import Scene


class Segmenter:
    """Replaces ``scene.instances`` by this segmenter's instances, in its order.

    name: the segmenter's tag in every output file name (``gt``, ``mask3d``, ...), as in Chat-Scene.
    max_instances: keep the first ``max_instances`` (paper: 100); ``None`` keeps all.
    """

    name: str = "segmenter"
    is_ground_truth: bool = False

    def __init__(self, max_instances: int | None = 100):
        self.max_instances = max_instances

    def check(self, scene_ids: list[str]) -> None:
        """Validate the segmenter's inputs for these scenes before long work starts (cheap checks)."""

    def predict(self, scene: Scene) -> list:
        """The instances of ``scene`` in this segmenter's order (before truncation)."""
        raise NotImplementedError

    def segment(self, scene: Scene) -> Scene:
        instances = list(self.predict(scene))
        if self.max_instances is not None and len(instances) > self.max_instances:
            instances = instances[: self.max_instances]
        scene.instances = instances
        return scene
