"""The segmenter contract: a segmenter turns a read Scene into a Scene with its instances."""

from __future__ import annotations

from pathlib import Path

from featurizer.errors import DataError
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

    def check_global(self) -> None:
        """Checks of what every scene shares (the segmenter's folder, its label table); DataError."""

    def check_scene(self, scene_id: str, num_points: int) -> None:
        """Check this scene's segmenter file against the mesh's ``num_points`` vertices (DataError),
        with the same parsing as :meth:`predict`."""

    def scene_file(self, scene_id: str) -> Path:
        """The file holding this segmenter's output for ``scene_id`` (segmenters that read files)."""
        raise NotImplementedError

    def input_files(self, scene_id: str) -> list[Path]:
        """The files this segmenter reads for ``scene_id`` (fingerprinted by the stage cache)."""
        return [self.scene_file(scene_id)]

    @staticmethod
    def check_folder(folder: Path, what: str) -> None:
        if not Path(folder).is_dir():
            raise DataError(folder, f"{what} folder not found")

    def predict(self, scene: Scene) -> list:
        """The instances of ``scene`` in this segmenter's order (before truncation)."""
        raise NotImplementedError

    def segment(self, scene: Scene) -> Scene:
        instances = list(self.predict(scene))
        if self.max_instances is not None and len(instances) > self.max_instances:
            instances = instances[: self.max_instances]
        scene.instances = instances
        return scene
