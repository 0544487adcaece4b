"""The validation pass: cheap checks of every scene's files before any long work starts.

The reader checks what it reads (ply header, meta, segs and aggregation, frame folders and pose
files or the ``.sens`` header) and the segmenter its own files, against the vertex count of the
ply header, with the same parsing their ``load``/``predict`` use. Every bad scene is found in one
pass: ``on_bad_scene=stop`` raises one ValidationError listing them, ``skip`` returns them.
"""

from __future__ import annotations

import sys

from featurizer.errors import ConfigError, DataError, ValidationError

POLICIES = ("stop", "skip")
PROGRESS_FROM = 200  # a progress bar for passes over this many scenes or more


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ConfigError("on_bad_scene", f"unknown value {policy!r}; choose one of {', '.join(POLICIES)}")
    return policy


def scene_problem(reader, segmenter, scene_id: str) -> str | None:
    """One line ``<file>: <problem>`` when the scene's files fail a check, else None."""
    try:
        num_points = reader.check_scene(scene_id)
        segmenter.check_scene(scene_id, num_points)
    except DataError as e:
        return str(e)
    except OSError as e:  # unreadable file or folder (permissions, I/O error)
        return f"{e.filename}: {e.strerror}" if e.filename else str(e)
    return None


def validate_scenes(reader, segmenter, policy: str = "stop") -> dict[str, str]:
    """Check every scene of ``reader`` with ``segmenter``; ``{bad scene: reason}`` (file order).

    Problems shared by all scenes (the labels tsv, the segmenter's folder) raise at once.
    policy: ``stop`` raises a ValidationError naming the bad scenes; ``skip`` returns them (all
    scenes bad is still an error: nothing would be left to process).
    """
    from tqdm import tqdm

    check_policy(policy)
    reader.check_global()
    segmenter.check_global()
    scene_ids = list(reader.scene_ids)
    bad = {}
    bar = tqdm(scene_ids, desc="validating scenes", unit="scene", file=sys.stderr, leave=False,
               disable=len(scene_ids) < PROGRESS_FROM)
    for scene_id in bar:
        problem = scene_problem(reader, segmenter, scene_id)
        if problem is not None:
            bad[scene_id] = problem
            bar.set_postfix(bad=len(bad), refresh=False)
    if bad and (policy == "stop" or len(bad) == len(scene_ids)):
        raise ValidationError(bad, len(scene_ids), skipping=policy == "skip")
    return bad
