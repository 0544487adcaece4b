"""Errors a user can cause. Each names the file or option and the problem, in one line."""

from __future__ import annotations

from pathlib import Path


class FeaturizerError(Exception):
    """Base of every error featurizer raises on purpose (bad input, bad configuration)."""


class DataError(FeaturizerError):
    """A file on disk is missing or is not what it must be."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(FeaturizerError):
    """A configuration value is unknown or inconsistent."""

    def __init__(self, option: str, problem: str):
        self.option = option
        self.problem = problem
        super().__init__(f"config option '{option}': {problem}")


class CheckpointError(FeaturizerError):
    """A model checkpoint does not match the architecture it is loaded into."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = "state dict" if path is None else str(path)
        super().__init__(f"{where}: {problem}")


class ValidationError(FeaturizerError):
    """Scenes failed the validation pass before any work: ``bad`` maps each scene to its reason.

    The message lists the first ``shown`` bad scenes (file and problem), then how many more."""

    def __init__(self, bad: dict[str, str], total: int, skipping: bool = False, shown: int = 10):
        self.bad = dict(bad)
        lines = [f"{len(bad)} of {total} scene(s) failed validation; nothing was computed:"]
        lines += [f"  {scene}: {reason}" for scene, reason in list(bad.items())[:shown]]
        if len(bad) > shown:
            lines.append(f"  and {len(bad) - shown} more")
        lines.append("no scene is left to process (on_bad_scene=skip)" if skipping else
                     "fix them, or pass on_bad_scene=skip to process the others "
                     "(each skipped scene and its reason are recorded in summary.json)")
        super().__init__("\n".join(lines))
