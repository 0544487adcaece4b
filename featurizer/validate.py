"""The validation pass: cheap checks of every scene's files before any long work starts.

The reader checks what it reads (ply header, meta, segs and aggregation, frame folders and pose
files or the ``.sens`` header) and the segmenter its own files, against the vertex count of the
ply header, with the same parsing their ``load``/``predict`` use. Every bad scene is found in one
pass: ``on_bad_scene=stop`` raises one ValidationError listing them, ``skip`` returns them.
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os
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


def validate_scenes(reader, segmenter, policy: str = "stop", workers: int | None = None) -> dict[str, str]:
    """Check every scene of ``reader`` with ``segmenter``; ``{bad scene: reason}`` (file order).

    Problems shared by all scenes (the labels tsv, the segmenter's folder) raise at once.
    policy: ``stop`` raises a ValidationError naming the bad scenes; ``skip`` returns them (all
    scenes bad is still an error: nothing would be left to process).
    workers: processes checking scenes in parallel (the checks parse JSON and text: CPU-bound);
        None = every core, up to 16; passes of fewer than :data:`PROGRESS_FROM` scenes run inline.
    """
    from tqdm import tqdm

    check_policy(policy)
    reader.check_global()
    segmenter.check_global()
    scene_ids = list(reader.scene_ids)
    workers = min(os.cpu_count() or 1, 16) if workers is None else max(1, int(workers))
    check = functools.partial(scene_problem, reader, segmenter)
    pool = None
    if workers > 1 and len(scene_ids) >= PROGRESS_FROM:
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    problems = pool.map(check, scene_ids, chunksize=8) if pool else map(check, scene_ids)
    bad = {}
    bar = tqdm(zip(scene_ids, problems), total=len(scene_ids), desc="validating scenes", unit="scene",
               file=sys.stderr, leave=False, disable=len(scene_ids) < PROGRESS_FROM)
    try:
        for scene_id, problem in bar:
            if problem is not None:
                bad[scene_id] = problem
                bar.set_postfix(bad=len(bad), refresh=False)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if bad and (policy == "stop" or len(bad) == len(scene_ids)):
        raise ValidationError(bad, len(scene_ids), skipping=policy == "skip")
    return bad
