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
