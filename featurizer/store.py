"""The stage cache: one shard per (stage, scene), keyed by configuration and by the scene's input files.

Layout::

    <cache_dir>/<stage>/<config hash>/<scene>.<inputs fingerprint>.pt

The config hash covers every config section the stage depends on (:func:`stage_hashes`), so a
fusion sweep shares the 3D shards. The inputs fingerprint (:func:`fingerprint`) covers the files
the stage reads for the scene (path, size, modification time, and the content of small files), so
a frame put back, a mesh replaced or a segmenter file rewritten makes exactly the stages that read
it recompute that scene, and nothing else. Because both are part of the path and shards are
written atomically, "is this stage done for this scene" is one ``stat``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from featurizer.files import atomic_save

# Bump when a stage's algorithm changes in a way that invalidates cached shards (3d 2: the GT attributes
# hold every GT object; 2d 2: fusion=paper sums in float32 as the reference does).
STAGE_VERSIONS = {"3d": 2, "2d": 2}
SMALL_FILE = 64 * 1024  # files up to this size are fingerprinted by content too (poses, meta, intrinsics)


def config_hash(*parts: Any) -> str:
    """Stable 16-hex-digit hash of JSON-serialisable config parts."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def stage_hashes(sections: dict[str, Any], with_2d: bool) -> dict[str, str]:
    """Config hash of each stage from the resolved config sections it depends on.

    3D: dataset, segmenter, encoder3d. 2D: dataset, segmenter, encoder2d, fusion. A fusion sweep
    therefore reuses the 3D shards; changing the segmenter recomputes both.
    """
    base = (sections["dataset"], sections["segmenter"])
    hashes = {"3d": config_hash("3d", STAGE_VERSIONS["3d"], *base, sections["encoder3d"])}
    if with_2d:
        hashes["2d"] = config_hash("2d", STAGE_VERSIONS["2d"], *base, sections["encoder2d"], sections["fusion"])
    return hashes


def fingerprint(paths: Iterable[str | Path]) -> str:
    """16 hex digits over the files' paths, sizes and modification times, and the bytes of the small ones.

    A missing file is part of the fingerprint too (it is read as "missing"), so a file that appears
    or disappears changes it.
    """
    h = hashlib.sha1()
    for p in sorted({str(p) for p in paths}):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            h.update(f"{p}\0missing\n".encode())
            continue
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        if st.st_size <= SMALL_FILE:
            with open(p, "rb") as f:
                h.update(hashlib.sha1(f.read()).digest())
    return h.hexdigest()[:16]


class StageStore:
    """Shards of each (stage, scene) under ``<cache_dir>/<stage>/<hash>/<scene>.<fingerprint>.pt``.

    hashes: stage name -> config hash; a stage absent from ``hashes`` is not run.
    inputs: ``inputs(stage, scene_id) -> paths`` of the files the stage reads for the scene; None
        fingerprints nothing (every shard is valid whatever the files hold).
    """

    def __init__(self, cache_dir: str | Path, hashes: dict[str, str],
                 inputs: Callable[[str, str], Iterable[Path]] | None = None):
        self.root = Path(cache_dir)
        self.hashes = dict(hashes)
        self.inputs = inputs

    @property
    def stages(self) -> list[str]:
        return list(self.hashes)

    def folder(self, stage: str) -> Path:
        return self.root / stage / self.hashes[stage]

    def fingerprint(self, stage: str, scene_id: str) -> str:
        return "any" if self.inputs is None else fingerprint(self.inputs(stage, scene_id))

    def path(self, stage: str, scene_id: str, inputs: str | None = None) -> Path:
        """The shard's path; ``inputs`` is the scene's fingerprint for the stage (computed when None)."""
        inputs = self.fingerprint(stage, scene_id) if inputs is None else inputs
        return self.folder(stage) / f"{scene_id}.{inputs}.pt"

    def load(self, stage: str, scene_id: str) -> dict | None:
        """The shard for the scene's current inputs, or None when absent, unreadable, or of another config."""
        path = self.path(stage, scene_id)
        if not path.exists():
            return None
        try:
            shard = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a corrupt shard is recomputed, never trusted
            return None
        if not isinstance(shard, dict) or shard.get("hash") != self.hashes[stage]:
            return None
        return shard

    def fingerprints(self, scene_id: str) -> dict[str, str]:
        """The scene's current inputs fingerprint of every stage."""
        return {s: self.fingerprint(s, scene_id) for s in self.stages}

    def missing_stages(self, scene_id: str, inputs: dict[str, str] | None = None) -> list[str]:
        """Stages without a shard for this configuration and these inputs (the hash and the fingerprint
        are part of the path, and shards are written atomically, so existence is enough)."""
        inputs = self.fingerprints(scene_id) if inputs is None else inputs
        return [s for s in self.stages if not self.path(s, scene_id, inputs[s]).exists()]

    def save(self, stage: str, scene_id: str, payload: dict, inputs: str) -> None:
        """Write the shard for inputs fingerprint ``inputs``; the scene's shards of older inputs go."""
        path = self.path(stage, scene_id, inputs)
        atomic_save({**payload, "hash": self.hashes[stage], "scene_id": scene_id, "inputs": inputs,
                     "created": time.time()}, path)
        for old in path.parent.glob(f"{scene_id}.*.pt"):
            if old != path and old.name.count(".") == 2:  # <scene>.<fingerprint>.pt, never a temporary
                old.unlink(missing_ok=True)
