"""SyntheticScanNet: a :class:`ScanNetReader` over a generated synthetic dataset, generated in ``prepare``."""

from __future__ import annotations

import json
import os
import shutil

from featurizer.dataset.scannet import ScanNetReader
from featurizer.dataset.synthetic.generate import generate_dataset, planned_splits
from featurizer.dataset.synthetic.layout import GENERATOR_VERSION
from featurizer.dataset.synthetic_annotations import write_annotation_inputs, write_mask3d_export
from featurizer.errors import ConfigError
from featurizer.files import remove_stale, temporary_path

DONE_MARKER = ".done"
ANNOTATIONS_DIR = "annotations"  # Chat-Scene annotation inputs (annotations.root=${dataset.root}/annotations)
MASK3D_DIR = "mask3d_export"  # imperfect Mask3D predictions (segmenter.root=${dataset.root}/mask3d_export)


class SyntheticScanNet(ScanNetReader):
    """Synthetic ScanNet-layout scenes, generated under ``root`` by :meth:`prepare`, read by ScanNetReader.

    Constructing one reads and writes nothing: the scene ids and splits follow from the parameters.
    :meth:`prepare` writes, once, the scenes (``train`` and ``val``: every third scene is ``val``), the
    annotation inputs in ``<root>/annotations/`` and a Mask3D-format export in ``<root>/mask3d_export/``
    (:mod:`featurizer.dataset.synthetic_annotations`), then a done-marker recording the parameters and
    the generator version. A root without a marker, or whose marker records other parameters, is
    regenerated in a temporary folder and swapped in, so a crash never leaves a half dataset that
    looks finished.

    root: the dataset folder (``conf/dataset/synthetic.yaml`` names it after the parameters).
    num_scenes, frames_per_scene, seed, image_size (width, height), num_objects: the generator's parameters.
    splits, frame_stride, frames, max_frames, scenes: as for :class:`ScanNetReader` (splits of
        ``train`` and ``val``).
    write_sens: also write each scene's ``<scene>.sens`` (:func:`generate_scene`); None (default)
        writes it exactly when ``frames`` is ``sens``.
    ``name`` stays ``scannet``: the data is ScanNet-format and the Chat-Scene files are named so.
    """

    def __init__(
        self,
        root: str,
        num_scenes: int = 3,
        frames_per_scene: int = 24,
        seed: int = 0,
        splits: list[str] | str = ("train", "val"),
        image_size: tuple[int, int] = (640, 480),
        frame_stride: int = 1,
        num_objects: int = 10,
        frames: str = "exported",
        max_frames: int | None = None,
        scenes: list[str] | None = None,
        write_sens: bool | None = None,
    ):
        if int(num_scenes) < 1:
            raise ConfigError("dataset.num_scenes", f"must be >= 1, got {num_scenes}")
        if int(frames_per_scene) < 0:
            raise ConfigError("dataset.frames_per_scene", f"must be >= 0, got {frames_per_scene}")
        try:
            size = (int(image_size[0]), int(image_size[1]))
        except (TypeError, ValueError, IndexError):
            raise ConfigError("dataset.image_size", f"must be [width, height], got {image_size!r}") from None
        if min(size) < 16:
            raise ConfigError("dataset.image_size", f"too small: {size}")
        if int(num_objects) < 1:
            raise ConfigError("dataset.num_objects", f"must be >= 1, got {num_objects}")
        write_sens = (frames == "sens") if write_sens is None else bool(write_sens)
        if write_sens and int(frames_per_scene) < 1:
            raise ConfigError("dataset.frames_per_scene", "must be >= 1 to write .sens streams")
        self.planned = planned_splits(int(num_scenes))
        self.generator_params = dict(num_scenes=int(num_scenes), frames_per_scene=int(frames_per_scene),
                                     seed=int(seed), image_size=size, num_objects=int(num_objects),
                                     write_sens=write_sens)
        super().__init__(root=root, splits=splits, scenes=scenes, frame_stride=frame_stride, frames=frames,
                         max_frames=max_frames)

    def split_scenes(self, split: str, required: bool) -> list[str]:
        """The generated scenes of ``split`` (what the generator writes to its split file), read from the
        parameters: nothing is on disk before :meth:`prepare`."""
        return [s for s, sp in self.planned.items() if sp == split]

    def marker(self) -> dict:
        """What the done-marker records: the generator's parameters and version."""
        return {**self.generator_params, "image_size": list(self.generator_params["image_size"]),
                "version": GENERATOR_VERSION}

    def is_generated(self) -> bool:
        path = self.root / DONE_MARKER
        try:
            return path.is_file() and json.loads(path.read_text()) == self.marker()
        except (OSError, ValueError):
            return False

    def prepare(self) -> None:
        """Generate the dataset, its annotation inputs and its Mask3D export, unless ``root`` holds them
        for these parameters already (a second call does nothing)."""
        if self.is_generated():
            return
        final = self.root
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(final.parent)  # half-generated folders of killed runs
        tmp, old = temporary_path(final), temporary_path(final)
        seed = self.generator_params["seed"]
        try:
            generate_dataset(tmp, **self.generator_params)
            write_annotation_inputs(tmp, tmp / ANNOTATIONS_DIR, seed)
            write_mask3d_export(tmp, tmp / MASK3D_DIR, seed)
            (tmp / DONE_MARKER).write_text(json.dumps(self.marker()) + "\n")
            if final.exists() and not self.is_generated():
                os.rename(final, old)  # unfinished, or generated with other parameters: replaced
            try:
                os.rename(tmp, final)
            except OSError:
                if not self.is_generated():  # lost a race only if the winner finished
                    raise
        finally:
            for path in (tmp, old):
                if path.exists():
                    shutil.rmtree(path, ignore_errors=True)
