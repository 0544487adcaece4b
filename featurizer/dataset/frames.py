"""Reading one RGB-D frame robustly: a bad frame is skipped with a reason, never a crash.

Real ScanNet exports have missing and truncated image files and all-zero depth frames. The 2D stage
reads frames through :func:`read_frame_checked`, which returns the decoded images or a short reason
(one of :data:`REASONS`), and records skipped frames, e.g. with :func:`describe_skipped`.

Truncated images are detected whatever the process-wide setting: PIL's
``ImageFile.LOAD_TRUNCATED_IMAGES`` (which makes PIL fill a truncated image with grey instead of
raising) is forced off while a frame is decoded and restored afterwards.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from featurizer.scene import Frame, load_npy_depth

log = logging.getLogger(__name__)

MISSING = "missing file"
UNREADABLE = "unreadable or truncated image"
DEPTH_ZERO = "depth all zero"
SIZE_MISMATCH = "size mismatch"
REASONS = (MISSING, UNREADABLE, DEPTH_ZERO, SIZE_MISMATCH)
ASPECT_TOL = 0.01  # a colour image whose width/height differs more than this from the frame's is refused


class _Skip(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@contextlib.contextmanager
def strict_truncation():
    """Within the block, PIL raises on truncated image files (``LOAD_TRUNCATED_IMAGES`` off)."""
    from PIL import ImageFile

    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def _open_loaded(path: Path | None, what: str):
    """The fully decoded PIL image of ``path`` (missing -> MISSING, undecodable -> UNREADABLE)."""
    from PIL import Image

    if path is None or not Path(path).is_file():
        raise _Skip(MISSING, f"{what} {path}")
    im = None
    try:
        im = Image.open(path)
        im.load()  # decodes every byte: a truncated file raises here
        return im
    except Exception as e:  # OSError, SyntaxError, ValueError, DecompressionBombError, zlib errors ...
        if im is not None:
            im.close()
        if isinstance(e, FileNotFoundError):  # removed since the check above
            raise _Skip(MISSING, f"{what} {path}") from None
        raise _Skip(UNREADABLE, f"{what} {path}: {type(e).__name__}: {e}") from None


def _read_depth(path: Path) -> np.ndarray:
    """The raw depth array of an image file or a ``.npy`` file (:func:`featurizer.scene.load_npy_depth`)."""
    if Path(path).suffix != ".npy":
        with _open_loaded(path, "depth") as im:
            return np.asarray(im)
    try:
        return load_npy_depth(path)
    except Exception as e:  # ValueError (pickled, bad header or shape), OSError, EOFError ...
        raise _Skip(UNREADABLE, f"depth {path}: {type(e).__name__}: {e}") from None


def _read_files(frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    width, height = frame.image_size
    # check both files exist before decoding either, so a missing file is reported as missing
    for path, what in ((frame.color_path, "colour"), (frame.depth_path, "depth")):
        if path is None or not Path(path).is_file():
            raise _Skip(MISSING, f"{what} {path}")
    depth = _read_depth(frame.depth_path)
    if depth.shape[1::-1] != (width, height):
        raise _Skip(SIZE_MISMATCH, f"depth {frame.depth_path} is {depth.shape[1::-1]}, frame is "
                                   f"{(width, height)}")
    if depth.ndim != 2 or depth.dtype.kind not in "iuf":
        raise _Skip(UNREADABLE,
                    f"depth {frame.depth_path}: not a one-channel image ({depth.dtype} {depth.shape})")
    im = _open_loaded(frame.color_path, "colour")
    with im:
        if im.size != (width, height):
            if abs(im.size[0] / im.size[1] - width / height) > ASPECT_TOL * (width / height):
                raise _Skip(SIZE_MISMATCH,
                            f"colour {frame.color_path} is {im.size}, frame is {(width, height)}")
            rgb = im.convert("RGB").resize((width, height), Image.BILINEAR)  # as Frame.read
        else:
            rgb = im.convert("RGB")
        color = np.asarray(rgb, dtype=np.uint8)
    return color, depth.astype(np.float32) / float(frame.depth_scale)


def _read_source(frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    path = getattr(frame.source, "path", None)
    if path is not None and not Path(path).is_file():
        raise _Skip(MISSING, f"stream {path}")
    try:
        color, depth = frame.source(frame)  # type: ignore[operator]
    except FileNotFoundError as e:
        raise _Skip(MISSING, str(e)) from None
    except Exception as e:  # DataError (short read, bad bytes), OSError, zlib.error, ValueError ...
        raise _Skip(UNREADABLE, f"frame {frame.number}: {type(e).__name__}: {e}") from None
    color, depth = np.asarray(color), np.asarray(depth)
    width, height = frame.image_size
    if color.shape != (height, width, 3) or depth.shape != (height, width):
        raise _Skip(SIZE_MISMATCH, f"frame {frame.number}: colour {color.shape}, depth {depth.shape}, "
                                   f"frame (H, W) = {(height, width)}")
    return color.astype(np.uint8, copy=False), depth.astype(np.float32, copy=False)


def read_frame_checked(frame: Frame) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """Colour (H, W, 3) uint8 and depth (H, W) float32 metres of ``frame``, or the reason it is skipped.

    Returns ``(color, depth, None)``, equal to :meth:`Frame.read`, for a good frame (colour files of
    another size but the same aspect ratio are resized, bilinear, as there; then ``frame.undistort``
    resamples both, when set), and ``(None, None,
    reason)`` otherwise, reason one of :data:`REASONS`:

    - ``"missing file"``: the colour or depth file (or the ``.sens`` stream) does not exist;
    - ``"unreadable or truncated image"``: a file that does not decode completely (PIL raises on a
      truncated JPEG/PNG here, whatever ``ImageFile.LOAD_TRUNCATED_IMAGES`` says), corrupt stream bytes;
    - ``"size mismatch"``: a depth image not of ``frame.image_size``, or a colour image of another
      aspect ratio; for a ``source`` frame, arrays not of ``image_size``;
    - ``"depth all zero"``: no valid depth pixel (the frame would project nothing).

    Never raises for bad data; the reason's details are logged at debug level.
    """
    try:
        with strict_truncation():
            if frame.source is not None:
                color, depth = _read_source(frame)
            else:
                color, depth = _read_files(frame)
        if frame.undistort is not None:
            color, depth = frame.undistort(color, depth)  # type: ignore[operator]
        if not np.any(depth > 0):
            raise _Skip(DEPTH_ZERO, f"frame {frame.number}")
    except _Skip as skip:
        log.debug("frame %s skipped: %s (%s)", frame.number, skip.reason, skip.detail)
        return None, None, skip.reason
    return color, depth, None


def describe_skipped(skipped: dict[int, str], limit: int = 10) -> str | None:
    """One note for frames skipped at read time, grouped by reason; None when nothing was skipped.

    skipped: frame index -> reason (from :func:`read_frame_checked`).
    E.g. ``"skipped 3 frame(s) at read time: missing file: 20, 40; depth all zero: 60"``.
    """
    if not skipped:
        return None
    by_reason: dict[str, list[int]] = {}
    for index, reason in sorted(skipped.items()):
        by_reason.setdefault(reason, []).append(index)
    parts = []
    for reason, indices in by_reason.items():
        more = f" and {len(indices) - limit} more" if len(indices) > limit else ""
        shown = ", ".join(map(str, indices[:limit])) + more
        parts.append(f"{reason}: {shown}")
    return f"skipped {len(skipped)} frame(s) at read time: " + "; ".join(parts)


class MemorySource:
    """A picklable ``Frame.source`` holding one frame's colour (H, W, 3) uint8 and depth (H, W) metres
    in memory (rendered frames in tests and benchmarks)."""

    def __init__(self, color: np.ndarray, depth: np.ndarray):
        self.color, self.depth = color, depth

    def __call__(self, frame) -> tuple[np.ndarray, np.ndarray]:
        return self.color, self.depth
