"""Which code runs the geometry: the torch code (any device) or its compiled numba twins (CPU).

Each module of :mod:`featurizer.geometry` holds an algorithm in torch and, next to it, its numba
kernels, which give the same numbers; ``backend`` arguments choose (``auto``: the kernels on CPU
when numba is installed, else torch). Kernels are compiled on first use and cached next to their
module (about 10 s once on 2 cores, measured 9.6 s; numba falls back to a per-user cache directory where the
package folder is read-only).
"""

from __future__ import annotations

import torch

from featurizer.errors import ConfigError

try:
    import numba
except ImportError:  # the torch code is used instead
    numba = None

BACKENDS = ("auto", "torch", "numba")


def available() -> bool:
    """Whether numba is installed (else callers use the torch code)."""
    return numba is not None


def njit(fn):
    """Compile ``fn`` with numba (cached on disk, GIL released), or leave it as Python without numba."""
    if numba is None:
        return fn
    # error_model="numpy": x / 0 gives inf or nan as in torch, not ZeroDivisionError; no fastmath
    return numba.njit(cache=True, nogil=True, error_model="numpy")(fn)


def check_backend(backend: str, option: str = "backend") -> None:
    """Raise :class:`ConfigError` for an unknown backend, or ``numba`` where numba is not installed."""
    if backend not in BACKENDS:
        raise ConfigError(option, f"unknown backend '{backend}' (one of {BACKENDS})")
    if backend == "numba" and not available():
        raise ConfigError(option, "numba is not installed (pip install numba), use auto or torch")


def use_kernels(backend: str, device: torch.device) -> bool:
    """Whether to run the compiled CPU kernels rather than the torch code."""
    check_backend(backend)
    if backend == "torch":
        return False
    if backend == "numba":
        if device.type != "cpu":
            raise ConfigError("backend", f"the numba kernels run on CPU, not {device}")
        return True
    return device.type == "cpu" and available()
