"""SyntheticScanNet: a :class:`ScanNetReader` over a generated synthetic dataset, generated in ``prepare``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from featurizer.dataset.scannet import ScanNetReader
from featurizer.dataset.synthetic.generate import generate_dataset, scene_id_of
from featurizer.dataset.synthetic.layout import GENERATOR_VERSION
from featurizer.errors import ConfigError
from featurizer.files import remove_stale, temporary_path

DONE_MARKER = ".done"


class SyntheticScanNet(ScanNetReader):
    """Synthetic ScanNet-layout scenes, generated once under ``data_dir`` by :meth:`prepare`, read by
    ScanNetReader. Constructing one reads and writes nothing: the scene ids follow from the parameters.

    data_dir: where generated datasets live; each parameter set gets its own folder
        (``scannet_synth_v<version>_...``), generated in a temporary folder, completed by a done-marker
        and renamed into place, so a crash never leaves a half dataset that looks finished.
    num_scenes, frames_per_scene, seed, image_size (width, height), num_objects: the generator's parameters.
    split, frame_stride, frames, max_frames, scenes: as for :class:`ScanNetReader`.
    write_sens: also write each scene's ``<scene>.sens`` (:func:`generate_scene`); None (default)
        writes it exactly when ``frames`` is ``sens``. A dataset with streams lives in its own folder.
    ``name`` stays ``scannet``: the data is ScanNet-format and the Chat-Scene files are named so.
    """

    def __init__(
        self,
        data_dir: str,
        num_scenes: int = 3,
        frames_per_scene: int = 24,
        seed: int = 0,
        split: str = "val",
        image_size: tuple[int, int] = (640, 480),
        frame_stride: int = 1,
        num_objects: int = 10,
        frames: str = "exported",
        max_frames: int | None = None,
        scenes: list[str] | None = None,
        write_sens: bool | None = None,
    ):
        if data_dir is None or str(data_dir) in ("", "???"):
            raise ConfigError("dataset.data_dir", "not set")
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
        self.data_dir = Path(data_dir)
        self.generator_params = dict(
            num_scenes=int(num_scenes), frames_per_scene=int(frames_per_scene), seed=int(seed),
            split=str(split), image_size=size, num_objects=int(num_objects),
        )
        if write_sens:  # only when set, so that existing datasets keep their folder names
            self.generator_params["write_sens"] = True
        name = (f"scannet_synth_v{GENERATOR_VERSION}_n{num_scenes}_f{frames_per_scene}_s{seed}_"
                f"{size[0]}x{size[1]}_o{num_objects}_{split}" + ("_sens" if write_sens else ""))
        self.dataset_root = self.data_dir / name
        super().__init__(root=str(self.dataset_root), split=split, scenes=scenes, frame_stride=frame_stride,
                         frames=frames, max_frames=max_frames)

    def read_split_file(self, split_file: str | None) -> list[str]:
        """The generated scenes' ids (what the generator writes to the split file), without reading it."""
        return [scene_id_of(i) for i in range(self.generator_params["num_scenes"])]

    def prepare(self) -> None:
        """Generate the dataset unless a finished one (with its done-marker) is already there."""
        final = self.dataset_root
        if (final / DONE_MARKER).is_file():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        remove_stale(self.data_dir)  # half-generated folders of killed runs
        tmp = temporary_path(final)
        try:
            generate_dataset(tmp, **self.generator_params)
            done = {**self.generator_params, "version": GENERATOR_VERSION}
            (tmp / DONE_MARKER).write_text(json.dumps(done) + "\n")
            if final.exists() and not (final / DONE_MARKER).is_file():
                shutil.rmtree(final)  # an unfinished leftover (never produced by this code's rename)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / DONE_MARKER).is_file():  # lost a race only if the winner finished
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
