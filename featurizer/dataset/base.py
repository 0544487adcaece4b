"""The dataset contract: a scene reader lists a dataset's scenes by split, checks them and reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featurizer.errors import ConfigError, DataError
from featurizer.files import read_lines
from featurizer.scene import Scene


class SceneReader:
    """What every reader (``conf/dataset/*.yaml``) provides to run.py, the validation pass and the stages.

    name: the dataset's tag in every output file name (``scannet`` -> ``scannet_<seg>_..._feats.pt``), as
        Chat-Scene names its files; a subclass must set it (construction fails otherwise).
    splits: the split names this reader covers, in order (``["val"]``, ``["train", "val"]``).
    scene_ids: the scenes of the run, in order; run.py may narrow it (``on_bad_scene=skip``).

    Order of use: construct (cheap, reads no scene and writes nothing), :meth:`prepare` once,
    :meth:`check_global` and :meth:`check_scene` per scene (the validation pass), then :meth:`load`.
    """

    name: str = ""
    splits: list[str]
    scene_ids: list[str]
    # the option that leaves ground-truth objects out (a benchmark label set: ``dataset.labels=scannet200``),
    # or None when every object is kept; the task annotations index objects in the dataset's order and
    # refuse a reader that leaves some out
    object_filter: str | None = None

    def __init__(self):
        if not type(self).name:
            raise ConfigError("dataset.name", f"{type(self).__name__} sets no 'name' (the tag of its output "
                                              f"file names): give the class a name = '...' attribute")

    @property
    def split(self) -> str:
        """The run's one split; ConfigError when the reader covers several (use :meth:`split_of`)."""
        if len(self.splits) != 1:
            raise ConfigError("dataset.splits", f"{len(self.splits)} splits {self.splits}: this step needs "
                                                f"one; ask each scene's split with split_of(scene_id)")
        return self.splits[0]

    def split_of(self, scene_id: str) -> str:
        """The split of ``scene_id`` (one of :attr:`splits`); readers that fill ``self._split_of`` (scene ->
        split, in the run's order) need not override it."""
        try:
            return self._split_of[scene_id]
        except (AttributeError, KeyError):
            raise ConfigError("dataset.scenes", f"{scene_id} is not a scene of this run") from None

    # what split files are called in messages: the dataset's name, what a file lists, how to do without one
    title = "dataset"
    split_unit = "scenes"
    split_hint = "pass dataset.split_dir=... or dataset.scenes=[...]"

    def split_file(self, split: str) -> Path:
        """The path of the split file of ``split``."""
        raise NotImplementedError

    def split_scenes(self, split: str, required: bool) -> list[str] | None:
        """The ids the split file of ``split`` lists (:meth:`split_file`); None when it is missing and not
        ``required``. DataError naming ``dataset.root`` when that folder is missing (the file under it
        would be reported instead), else the file when a required one is missing or empty. Used by
        :meth:`listed_splits`."""
        path = self.split_file(split)
        if not path.is_file():
            if not required:
                return None
            if not self.root.is_dir():
                raise DataError(self.root, f"{self.title} root folder not found (dataset.root)")
            raise DataError(path, f"split file not found ({self.split_hint})")
        ids = read_lines(path)
        if required and not ids:
            raise DataError(path, f"split file lists no {self.split_unit}")
        return ids

    def listed_splits(self, required: bool) -> dict[str, str]:
        """Id -> split of every id the split files list (:meth:`split_scenes`), in split order, then file
        order; an id listed twice keeps its first split."""
        listed: dict[str, str] = {}
        for split in self.splits:
            for scene_id in self.split_scenes(split, required) or []:
                listed.setdefault(scene_id, split)
        return listed

    def assign_splits(self, scenes: list[str] | str | None) -> dict[str, str]:
        """Scene id -> split, in run order: the split files' scenes (split order, then file order; a scene
        listed twice keeps its first split), or the explicit ``scenes`` (each given the split whose file
        lists it, else the first split)."""
        if isinstance(scenes, str):  # dataset.scenes=a,b from the command line
            scenes = scenes.replace(",", " ").split()
        listed = self.listed_splits(required=scenes is None)
        if scenes is None:
            return listed
        return {str(s): listed.get(str(s), self.splits[0]) for s in scenes}

    @staticmethod
    def check_options(root, what: str, frames: str | None = None, frame_modes: tuple[str, ...] = (),
                      frame_stride: int = 1, max_frames: int | None = None) -> Path:
        """The options most readers share, checked (ConfigError naming the option); returns ``root``."""
        if root is None or str(root) in ("", "???"):
            raise ConfigError("dataset.root", f"the {what} folder is not set: pass dataset.root=/path")
        if frames is not None and frames not in frame_modes:
            raise ConfigError("dataset.frames",
                              f"unknown mode {frames!r}; choose one of {', '.join(frame_modes)}")
        if int(frame_stride) < 1:
            raise ConfigError("dataset.frame_stride", f"must be >= 1, got {frame_stride}")
        if max_frames is not None and int(max_frames) < 1:
            raise ConfigError("dataset.max_frames", f"must be >= 1 or null, got {max_frames}")
        return Path(root)

    @staticmethod
    def split_names(splits) -> list[str]:
        """``[train, val]`` from a list or a string (``dataset.splits=train,val`` on the command line),
        without repeats; ConfigError when empty."""
        if isinstance(splits, str):
            splits = splits.replace(",", " ").split()
        names = list(dict.fromkeys(str(s) for s in splits))
        if not names:
            raise ConfigError("dataset.splits", "no split given: list at least one, e.g. [val]")
        return names

    def prepare(self) -> None:
        """One-time work before any check or read (e.g. generating synthetic data); run.py calls it
        once right after construction. Must be idempotent: a second call does nothing."""

    def check_global(self) -> None:
        """Cheap checks of what every scene shares (label table, folders); raises DataError."""

    def check_scene(self, scene_id: str) -> int:
        """Cheap checks of one scene's files, parsed as :meth:`load` parses them (DataError); returns
        the scene's number of points (checked against the segmenter's files)."""
        raise NotImplementedError

    def check(self) -> None:
        """Every check of :meth:`check_global` and :meth:`check_scene`; raises the first DataError."""
        self.check_global()
        for scene_id in self.scene_ids:
            self.check_scene(scene_id)

    def load(self, scene_id: str) -> Scene:
        """Read one scene (points, colours, alignment, ground-truth instances, frames), its ``split``
        set to :meth:`split_of`."""
        raise NotImplementedError

    def input_files(self, scene_id: str, frames: bool = True) -> list[Path]:
        """The files :meth:`load` reads for ``scene_id`` (fingerprinted by the stage cache,
        :mod:`featurizer.store`); with ``frames`` False, only those the 3D stage needs (no frames)."""
        raise NotImplementedError

    def make_scene(self, scene_id: str, points, colors, instances: list, frames: list, notes: list[str],
                   axis_align=None) -> Scene:
        """The loaded :class:`Scene` of ``scene_id`` (its split from :meth:`split_of`; ``axis_align`` None:
        identity), each of ``notes`` warned once, the frames of non-finite poses dropped."""
        scene = Scene(scene_id=scene_id, points=points, colors=colors,
                      axis_align=np.eye(4) if axis_align is None else axis_align, instances=instances,
                      frames=frames, split=self.split_of(scene_id))
        for note in notes:
            scene.warn(note)
        scene.drop_non_finite_poses()
        return scene

    def gt_object_count(self, scene_id: str) -> int:
        """How many ground-truth objects the scene has, read cheaply before long work (0 without GT); the
        annotation inputs' object ids are checked against it."""
        raise NotImplementedError

    def scene_cost(self, scene_id: str) -> float:
        """A cheap estimate of the scene's work, comparable across scenes (header reads and folder listings
        only); job shares are balanced by it (:mod:`featurizer.shards`). Default: every scene costs 1."""
        return 1.0
