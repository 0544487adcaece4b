"""The synthetic datasets' readers: each dataset's real reader over synthetic scenes written in its layout,
generated in ``prepare``.

``conf/dataset/synthetic.yaml`` targets :class:`SyntheticDataset`, which picks the class of ``layout``:
:class:`SyntheticScanNet` (the default), :class:`SyntheticScanNetPP`, :class:`SyntheticRScan`,
:class:`SyntheticMatterport` or :class:`SyntheticNerfstudio`. Each is :class:`SyntheticData` (the
generator's parameters, the planned splits, the done-marker and the atomic generation) over the real
reader of its dataset, so the scenes are read exactly as that dataset's files are, and the outputs are
named after it (``scannetpp_...``).
"""

from __future__ import annotations

import json
import os
import shutil

from featurizer.dataset.base import SceneReader
from featurizer.dataset.matterport import MatterportReader
from featurizer.dataset.nerfstudio import NerfstudioReader
from featurizer.dataset.rscan import RScanReader
from featurizer.dataset.scannet import ScanNetReader
from featurizer.dataset.scannetpp import ScanNetPPReader
from featurizer.dataset.synthetic.generate import LAYOUTS, generate_dataset, generate_layout, planned_splits
from featurizer.dataset.synthetic.layout import GENERATOR_VERSION
from featurizer.dataset.synthetic_annotations import write_annotation_inputs, write_mask3d_export
from featurizer.errors import ConfigError
from featurizer.files import remove_stale, temporary_path

DONE_MARKER = ".done"
ANNOTATIONS_DIR = "annotations"  # Chat-Scene annotation inputs (annotations.root=${dataset.root}/annotations)
MASK3D_DIR = "mask3d_export"  # imperfect Mask3D predictions (segmenter.root=${dataset.root}/mask3d_export)


class SyntheticData:
    """Synthetic scenes of one layout, generated under ``root`` by :meth:`prepare`, read by the layout's
    reader (the class this one is mixed into, :attr:`reader_class`).

    Constructing one reads and writes nothing: the scene ids and splits follow from the parameters.
    :meth:`prepare` writes, once, the scenes (``train`` and ``val``: every third scene is ``val``) with
    the dataset's split files, the annotation inputs in ``<root>/annotations/`` and a Mask3D-format
    export in ``<root>/mask3d_export/`` (:mod:`featurizer.dataset.synthetic_annotations`, read back
    through the layout's reader), then a done-marker recording the parameters and the generator version.
    A root without a marker, or whose marker records other parameters, is regenerated in a temporary
    folder and swapped in, so a crash never leaves a half dataset that looks finished.

    root: the dataset folder (``conf/dataset/synthetic.yaml`` names it after the parameters).
    num_scenes, frames_per_scene, seed, image_size (width, height), num_objects: the generator's
        parameters; scene ``i`` is the same model in every layout.
    splits, frame_stride, max_frames, scenes: as for the layout's reader (splits of ``train`` and ``val``).
    frames: a key of :attr:`frame_modes` (``exported``: the layout's own frames; ``none``), given to the
        reader as its own mode.
    ``name`` is the layout's reader's: the outputs are named after the dataset.
    """

    reader_class: type[SceneReader]
    layout = ""
    frame_modes = {"exported": "exported", "none": "none"}  # synthetic `frames` -> the reader's `frames`

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
        if frames not in self.frame_modes:
            choices = ", ".join(self.frame_modes)
            raise ConfigError("dataset.frames", f"unknown mode {frames!r} for layout {self.layout}; choose "
                                                f"one of {choices}")
        self.planned = planned_splits(int(num_scenes), self.layout)
        self.generator_params = dict(num_scenes=int(num_scenes), frames_per_scene=int(frames_per_scene),
                                     seed=int(seed), image_size=size, num_objects=int(num_objects))
        self.init_reader(root=root, splits=splits, scenes=scenes, frame_stride=frame_stride,
                         frames=self.frame_modes[frames], max_frames=max_frames)

    def init_reader(self, **kwargs) -> None:
        """Construct the layout's reader part (its ``__init__``, which lists the scenes by
        :meth:`split_scenes`)."""
        self.reader_class.__init__(self, **kwargs)

    def split_scenes(self, split: str, required: bool) -> list[str]:
        """The generated scenes of ``split`` (what the generator writes to its split file), read from the
        parameters: nothing is on disk before :meth:`prepare`."""
        return [s for s, sp in self.planned.items() if sp == split]

    def marker(self) -> dict:
        """What the done-marker records: the generator's parameters, the layout and the version."""
        return {**self.generator_params, "image_size": list(self.generator_params["image_size"]),
                "layout": self.layout, "version": GENERATOR_VERSION}

    def is_generated(self) -> bool:
        path = self.root / DONE_MARKER
        try:
            return path.is_file() and json.loads(path.read_text()) == self.marker()
        except (OSError, ValueError):
            return False

    def generate(self, root) -> None:
        """Write the scenes, the split files and the labels tsv under ``root``."""
        generate_layout(root, self.layout, **self.generator_params)

    def frameless_reader(self, root) -> SceneReader:
        """The layout's real reader over the generated scenes at ``root``, all of them, without frames."""
        return self.reader_class(root=str(root), scenes=sorted(self.planned), frames="none")

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
            self.generate(tmp)
            reader = self.frameless_reader(tmp)
            write_annotation_inputs(reader, tmp / ANNOTATIONS_DIR, seed)
            write_mask3d_export(reader, tmp / MASK3D_DIR, seed)
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


class SyntheticScanNet(SyntheticData, ScanNetReader):
    """Synthetic scenes in the ScanNet layout (:func:`generate_dataset`), read by ScanNetReader.

    frames: ``exported`` (``scannet_2d/``), ``sens`` (also writes each ``<scene>.sens`` and reads it) or
    ``none``. write_sens: also write the ``.sens`` streams; None (default) writes them exactly when
    ``frames`` is ``sens``. The done-marker records no layout (as before layouts existed).
    """

    reader_class = ScanNetReader
    layout = "scannet"
    frame_modes = {"exported": "exported", "sens": "sens", "none": "none"}

    def __init__(self, root: str, *args, write_sens: bool | None = None, **kwargs):
        frames = kwargs.get("frames", "exported")
        self.write_sens = (frames == "sens") if write_sens is None else bool(write_sens)
        if self.write_sens and int(kwargs.get("frames_per_scene", 24)) < 1:
            raise ConfigError("dataset.frames_per_scene", "must be >= 1 to write .sens streams")
        super().__init__(root, *args, **kwargs)
        self.generator_params["write_sens"] = self.write_sens

    def marker(self) -> dict:
        marker = super().marker()
        del marker["layout"]
        return marker

    def generate(self, root) -> None:
        generate_dataset(root, **self.generator_params)


class SyntheticScanNetPP(SyntheticData, ScanNetPPReader):
    """Synthetic scenes in the ScanNet++ layout (:mod:`.layout_scannetpp`: aligned mesh, COLMAP
    world-to-camera poses, colour twice the depth size, an overlapping segGroup), read by ScanNetPPReader.
    frames: ``exported`` (the iPhone frames), ``render`` (also writes and reads ``render_depth``) or
    ``none``."""

    reader_class = ScanNetPPReader
    layout = "scannetpp"
    frame_modes = {"exported": "iphone", "render": "render", "none": "none"}

    def __init__(self, root: str, *args, **kwargs):
        super().__init__(root, *args, **kwargs)
        self.generator_params["render_depth"] = self.frames == "render"


class SyntheticRScan(SyntheticData, RScanReader):
    """Synthetic scans in the 3RScan layout (:mod:`.layout_rscan`: textured OBJ, labels PLY, rolled
    sensor, non-square depth pixels, 16:9 colour), read by RScanReader."""

    reader_class = RScanReader
    layout = "3rscan"
    frame_modes = {"exported": "sequence", "none": "none"}


class SyntheticMatterport(SyntheticData, MatterportReader):
    """Synthetic houses of one region in the Matterport3D layout (:mod:`.layout_matterport`: per-face
    labels, OpenGL ``.conf`` poses, depth / 4000), read by MatterportReader (mpcat40 labels)."""

    reader_class = MatterportReader
    layout = "matterport"
    frame_modes = {"exported": "undistorted", "none": "none"}

    def _assign_splits(self, scenes):
        """The planned regions (the reader lists a house's regions from disk, absent before prepare)."""
        return self.assign_splits(scenes)


class SyntheticNerfstudio(SyntheticData, NerfstudioReader):
    """Synthetic captures in nerfstudio's format (:mod:`.layout_nerfstudio`: OpenGL camera axes, pixel
    centres at +0.5, ``instances.npz``), one folder per scene, read by NerfstudioReader. nerfstudio has
    no split files: the scenes' splits are the planned ones. frames: ``exported`` or ``none`` (the frames
    are written, not read)."""

    reader_class = NerfstudioReader
    layout = "nerfstudio"

    def init_reader(self, root, splits, scenes, frame_stride, frames, max_frames) -> None:
        self.frames = frames
        self.splits = self.split_names(splits)
        self._split_of = self.assign_splits(scenes)
        NerfstudioReader.__init__(self, root=root, splits=self.splits[:1], frame_stride=frame_stride,
                                  max_frames=max_frames)
        self.splits = self.split_names(splits)

    def _captures(self):
        return {s: self.root / s for s in self._split_of}

    def split_of(self, scene_id: str) -> str:
        return SceneReader.split_of(self, scene_id)

    def frameless_reader(self, root) -> SceneReader:
        return NerfstudioReader(root=str(root), scenes=sorted(self.planned))

    def input_files(self, scene_id: str, frames: bool = True):
        return super().input_files(scene_id, frames and self.frames != "none")

    def _frames(self, *args, **kwargs):
        return [] if self.frames == "none" else super()._frames(*args, **kwargs)


READERS = {cls.layout: cls for cls in (SyntheticScanNet, SyntheticScanNetPP, SyntheticRScan,
                                       SyntheticMatterport, SyntheticNerfstudio)}
assert tuple(READERS) == LAYOUTS


class SyntheticDataset:
    """The synthetic dataset of ``conf/dataset/synthetic.yaml`` (one class, as every option names):
    constructing one returns the reader of ``layout``, an instance of that layout's :class:`SyntheticData`
    class (a reader of that dataset); ``kwargs``: that class's arguments."""

    def __new__(cls, layout: str = "scannet", **kwargs) -> SyntheticData:
        if layout not in READERS:
            raise ConfigError("dataset.layout",
                              f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        if layout != "scannet" and int(kwargs.get("frames_per_scene", 24)) < 1:
            raise ConfigError("dataset.frames_per_scene",
                              f"must be >= 1 for layout {layout} (its files need a frame)")
        return READERS[layout](**kwargs)
