"""Chat-Scene's task annotations: the published datasets' records matched to a run's instances.

One module per published builder script (``preprocess/prepare_*_annos.py``), each a
:class:`~featurizer.annotations.base.Builder` with the same interface::

    builder = ScanRefer(name="scanrefer")
    builder.split_inputs(root, split) -> list[Path]  # published input files under annotations.root
    builder.check(root, scenes_by_split, gt_counts_by_split) -> list[DataError]   # bad input
    builder.build(split, inst_attrs, gt_attrs, root, prompts, rng, train_iou_thres, max_obj_num)
        -> (records, stats)                         # what Chat-Scene reads; stats incl. upper bound
    builder.output_name(seg, split) -> str          # e.g. scanrefer_mask3d_val.json
    builder.extra_files(root, split) -> {name: JSON content}   # scan2cap_val_corpus.json

Facts (names, fields, rules): ``reference/chat_scene_annotations.md``. Inputs keep the published
names in Chat-Scene's ``annotations/`` sub-folders, so ``annotations.root`` may be that folder:
``scanrefer/ScanRefer_filtered_{split}.json``, ``multi3drefer/multi3drefer_{split}.json``,
``scanqa/ScanQA_v1.0_{split}.json``, ``sqa3d/v1_balanced_{questions,sqa_annotations}_{split}_
scannetv2.json``, ``referit3d/{nr3d,sr3d}.csv``, ``scannet/scannetv2_{split}.txt``.

Two deliberate differences from the published scripts:

- **Seeded.** Each (builder, split) draws from its own ``random.Random(f"{seed}/{builder}/{split}")``
  (:func:`rng_for`; a string seed is hashed with SHA-512 by ``random``, so it is the same on every
  machine and Python run). Adding, removing or reordering builders or splits changes no other
  file. The draws happen at the published points (e.g. scanrefer draws before any skip).
- **Sorted scenes.** scan2cap iterates its scenes sorted (the script iterates a ``set``); obj_align
  iterates the GT attributes' scenes sorted (the script: file order).

Also: ``capitalize_sentences`` splits sentences with a small regex instead of ``nltk.sent_tokenize``
(:func:`featurizer.annotations.match.split_sentences`); a record whose scene has no predicted box
at all is skipped (the published attributes always hold at least one row, zeros, so this never
differs there); nr3d / sr3d take ``max_obj_num`` from the config (100, the loader's) where the
script's default is 150.

Config layout (``conf/annotations/``)::

    conf/annotations/chat_scene.yaml     # the group option: root, prompts, tasks, thresholds, builders
    conf/annotations/none.yaml           # tasks: [] (no annotations)
    conf/annotations/builders/<name>.yaml   # one per builder: _target_ + kwargs (name, ...)
    conf/annotations/prompts/featurizer.yaml  # featurizer's prompt lists

``chat_scene.yaml`` puts every builder under ``annotations.builders.<name>`` through its defaults
list; ``annotations.tasks`` (run_prepare.sh's seven by default) names the ones to build, so an
experiment or the command line picks the set: ``annotations.tasks=[scanrefer,scan2cap]``.
:func:`build_annotations` is the call that builds and writes them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from featurizer.annotations.base import Builder
from featurizer.annotations.prompts import load_prompts
from featurizer.errors import ConfigError, DataError

__all__ = ["AnnotationJob", "Builder", "rng_for", "select_builders", "check_annotations", "build_annotations"]


def rng_for(seed: int, builder: str, split: str) -> random.Random:
    """The random source of one (builder, split): independent of every other builder and split."""
    return random.Random(f"{int(seed)}/{builder}/{split}")


def select_builders(builders: dict[str, Builder], tasks: list[str]) -> list[Builder]:
    """The builders named in ``tasks``, in that order (ConfigError for an unknown name)."""
    unknown = [t for t in tasks if t not in builders]
    if unknown:
        raise ConfigError("annotations.tasks", f"unknown task(s) {unknown}; known: {sorted(builders)}")
    return [builders[t] for t in tasks]


def builder_prompts(builders: list[Builder], prompts: str | Path | None) -> dict:
    """The prompt lists of ``prompts`` (:func:`load_prompts`), every list the builders draw from checked."""
    return load_prompts(prompts, sorted({name for b in builders for name in b.prompt_lists}))


def check_annotations(builders: list[Builder], root: str | Path, scenes_by_split: dict[str, set[str]],
                      gt_counts: dict[str, dict[str, int]], on_bad_input: str = "error") -> list[str]:
    """Check every builder's inputs before long work. ``on_bad_input="error"`` raises the first
    problem (DataError: file, record index, problem); ``"skip"`` returns them all as lines (the
    builders then leave the bad records out and count them as ``skipped``). gt_counts: per split,
    each scene's number of GT objects."""
    if on_bad_input not in ("error", "skip"):
        raise ConfigError("annotations.on_bad_input", f"must be error or skip, got {on_bad_input!r}")
    problems = [p for b in builders for p in b.check(root, scenes_by_split, gt_counts)]
    if problems and on_bad_input == "error":
        raise problems[0]
    return [str(p) for p in problems]


def build_annotations(builders: list[Builder], splits: list[str], inst_attrs: dict[str, dict],
                      gt_attrs: dict[str, dict], root: str | Path, out_dir: str | Path, seg: str,
                      seed: int = 0, prompts: str | Path | None = None, train_iou_thres: float = 0.5,
                      max_obj_num: int = 100) -> list[dict]:
    """Build and write every builder's files for every split it has among ``splits``.

    inst_attrs / gt_attrs: split -> ``{scene: {"objects", "locs"}}``; seg: the segmenter tag in the
    file names; prompts: a prompts file (``.py``: Chat-Scene's, parsed; ``.yaml``: featurizer's),
    None for featurizer's. Files are JSON with ``indent=4``, written atomically. Returns one stats
    dict per (task, split), with ``file``.
    """
    from featurizer.files import atomic_write_text

    prompt_lists = builder_prompts(builders, prompts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_stats = []
    for b in builders:
        for split in (s for s in splits if s in b.splits):
            if split not in inst_attrs or split not in gt_attrs:
                raise DataError(out_dir, f"{b.name}: no attributes of the {split} split")
            records, stats = b.build(split, inst_attrs[split], gt_attrs[split], Path(root), prompt_lists,
                                     rng_for(seed, b.name, split), train_iou_thres, max_obj_num)
            name = b.output_name(seg, split)
            atomic_write_text(json.dumps(records, indent=4), out_dir / name)
            for extra, content in b.extra_files(Path(root), split).items():
                atomic_write_text(json.dumps(content, indent=4), out_dir / extra)
            all_stats.append({**stats, "file": name})
    return all_stats


class AnnotationJob:
    """The task annotations one run builds: inputs checked before long work, files built after the merge.

    builders: every configured builder by name; tasks: the ones to build, in order; root: the published
    datasets' files (Chat-Scene's ``annotations/`` layout); required: the user named ``root`` (a missing
    folder is then an error; otherwise the annotations are left out with a note, for runs that only
    want features). The other arguments are :func:`build_annotations`'.
    """

    def __init__(self, builders: dict[str, Builder], tasks: list[str], root: str | Path | None,
                 prompts: str | Path | None = None, seed: int = 0, train_iou_thres: float = 0.5,
                 max_obj_num: int = 100, on_bad_input: str = "error", required: bool = False):
        self.builders = select_builders(builders, list(tasks))
        self.root = None if root is None else Path(root)
        self.prompts, self.seed = prompts, int(seed)
        self.train_iou_thres, self.max_obj_num = float(train_iou_thres), int(max_obj_num)
        self.on_bad_input = on_bad_input
        self.required = bool(required)
        self.note: str | None = None  # why nothing is built, when nothing is
        self.problems: list[str] = []

    @property
    def active(self) -> bool:
        return bool(self.builders) and self.note is None

    def check(self, scene_splits: dict[str, str], gt_counts: dict[str, int]) -> None:
        """Before long work: the root, every input file and record (:func:`check_annotations`), and the
        prompts. scene_splits: each scene's split; gt_counts: each scene's number of GT objects."""
        if not self.builders:
            return
        if self.root is None or not self.root.is_dir():
            where = "annotations.root is not set" if self.root is None else f"{self.root} not found"
            if self.required:
                raise DataError(self.root or Path("annotations.root"), "annotation inputs folder not found")
            self.note = f"{where}: task annotations not built (pass annotations.root=<folder>)"
            return
        scenes_by_split: dict[str, set[str]] = {}
        counts: dict[str, dict[str, int]] = {}
        for scene, split in scene_splits.items():
            scenes_by_split.setdefault(split, set()).add(scene)
            counts.setdefault(split, {})[scene] = gt_counts[scene]
        self.problems = check_annotations(self.builders, self.root, scenes_by_split, counts,
                                          self.on_bad_input)
        builder_prompts(self.builders, self.prompts)

    def build(self, attributes: dict, gt_attributes: dict | None, scene_splits: dict[str, str],
              out_dir: str | Path, seg: str) -> list[dict]:
        """Write the annotation files of every split of the run; one stats dict per (task, split)."""
        if not self.active:
            return []
        inst: dict[str, dict] = {}
        gt: dict[str, dict] = {}
        for scene, split in scene_splits.items():
            inst.setdefault(split, {})[scene] = attributes[scene]
            if gt_attributes and scene in gt_attributes:
                gt.setdefault(split, {})[scene] = gt_attributes[scene]
        splits = [s for s in ("train", "val", "test") if s in inst and s in gt]
        return build_annotations(self.builders, splits, inst, gt, self.root, out_dir, seg, seed=self.seed,
                                 prompts=self.prompts, train_iou_thres=self.train_iou_thres,
                                 max_obj_num=self.max_obj_num)
