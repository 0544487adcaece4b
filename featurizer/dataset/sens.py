"""ScanNet's ``.sens`` RGB-D stream (SensorData, version 4), read frame by frame without exporting.

Layout (DESIGN.md section 4; all little-endian)::

    header: version uint32 (= 4), strlen uint64, sensor name (strlen bytes),
            intrinsic_color, extrinsic_color, intrinsic_depth, extrinsic_depth (4x4 float32 each),
            color_compression_type int32 (2 = jpeg), depth_compression_type int32 (1 = zlib_ushort),
            color_width, color_height, depth_width, depth_height uint32, depth_shift float32,
            num_frames uint64
    frame:  camera_to_world 4x4 float32, timestamp_color uint64, timestamp_depth uint64,
            color_size_bytes uint64, depth_size_bytes uint64, color bytes, depth bytes

Opening a file reads only the header and the 96-byte head of every frame (it seeks past the image
bytes), so indexing a multi-GB stream is fast. Images are decoded on demand.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featurizer.errors import ConfigError, DataError
from featurizer.scene import Frame

SENS_VERSION = 4
COLOR_COMPRESSION = {-1: "unknown", 0: "raw", 1: "png", 2: "jpeg"}
DEPTH_COMPRESSION = {-1: "unknown", 0: "raw_ushort", 1: "zlib_ushort", 2: "occi_ushort"}
SUPPORTED_COLOR = {0, 1, 2}
SUPPORTED_DEPTH = {0, 1}
_FRAME_HEAD = struct.Struct("<16f4Q")  # pose, timestamp_color, timestamp_depth, color_size, depth_size
_FIXED_HEADER = struct.Struct("<64f2i4If Q")  # 4 matrices .. num_frames (after version + name)


def decode_color(data: bytes, compression: int, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 colour of one frame (raw bytes or an image file); ``size`` = (width, height)."""
    w, h = size
    if compression == 0:
        if len(data) != w * h * 3:
            raise ValueError(f"raw colour has {len(data)} bytes, expected {w}x{h}x3 = {w * h * 3}")
        return np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3).copy()
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if rgb.shape[:2] != (h, w):
        raise ValueError(f"colour image is {rgb.shape[1]}x{rgb.shape[0]}, header says {w}x{h}")
    return rgb


def decode_depth(data: bytes, compression: int, size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint16 raw depth of one frame; ``size`` = (width, height)."""
    w, h = size
    raw = zlib.decompress(data) if compression == 1 else data
    if len(raw) != w * h * 2:
        raise ValueError(f"depth has {len(raw)} bytes, expected {w}x{h}x2 = {w * h * 2}")
    return np.frombuffer(raw, dtype="<u2").reshape(h, w).astype(np.uint16)


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise DataError(path, f"offset {offset}: expected {size} bytes, file ends after {len(data)}")
    return data


@dataclass(frozen=True)
class SensFrameSource:
    """Picklable ``Frame.source`` of one ``.sens`` frame (DataLoader workers pickle frames).

    Holds only the file path, this frame's byte ranges and the decoding parameters; opens the file
    on each call. ``self(frame)`` -> colour (H, W, 3) uint8 resized (bilinear) to the depth
    resolution, depth (H, W) float32 metres (raw / depth_shift, 0 = invalid).
    """

    path: str
    frame: int
    color_offset: int
    color_size: int
    depth_offset: int
    depth_size: int
    color_compression: int
    depth_compression: int
    color_wh: tuple[int, int]
    depth_wh: tuple[int, int]
    depth_shift: float

    def read_color(self) -> np.ndarray:
        """(Hc, Wc, 3) uint8 colour at the colour stream's own resolution."""
        data = _read_at(Path(self.path), self.color_offset, self.color_size)
        try:
            return decode_color(data, self.color_compression, self.color_wh)
        except (ValueError, OSError) as e:
            where = f"frame {self.frame} (offset {self.color_offset})"
            raise DataError(self.path, f"{where}: bad colour: {e}") from None

    def read_depth(self) -> np.ndarray:
        """(Hd, Wd) uint16 raw depth."""
        data = _read_at(Path(self.path), self.depth_offset, self.depth_size)
        try:
            return decode_depth(data, self.depth_compression, self.depth_wh)
        except (ValueError, zlib.error) as e:
            where = f"frame {self.frame} (offset {self.depth_offset})"
            raise DataError(self.path, f"{where}: bad depth: {e}") from None

    def __call__(self, frame: Frame | None = None) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        color = self.read_color()
        if (color.shape[1], color.shape[0]) != self.depth_wh:
            color = np.asarray(Image.fromarray(color).resize(self.depth_wh, Image.BILINEAR), dtype=np.uint8)
        depth = self.read_depth().astype(np.float32) / np.float32(self.depth_shift)
        return color, depth


class SensFile:
    """Header and frame index of one ``.sens`` file; frames are decoded on demand.

    Attributes: version, sensor_name, intrinsic_color, extrinsic_color, intrinsic_depth,
    extrinsic_depth ((4, 4) float32 each), color_compression_type, depth_compression_type (int codes,
    names in COLOR_COMPRESSION / DEPTH_COMPRESSION), color_width, color_height, depth_width,
    depth_height, depth_shift, num_frames (frames readable: fewer than ``header_num_frames`` when
    the file is truncated), poses (F, 4, 4) float32 camera-to-world, timestamps_color/depth (F,),
    notes (data problems found, e.g. truncation; also emitted as warnings).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.notes: list[str] = []
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            raise DataError(self.path, ".sens file not found") from None
        with f:
            file_size = os.fstat(f.fileno()).st_size
            self._read_header(f)
            self._index_frames(f, file_size)

    # -- parsing -------------------------------------------------------------------------------

    def _read_exact(self, f, size: int, what: str) -> bytes:
        offset = f.tell()
        data = f.read(size)
        if len(data) != size:
            raise DataError(self.path, f"truncated header: {what} at offset {offset} needs {size} bytes")
        return data

    def _read_header(self, f) -> None:
        (self.version,) = struct.unpack("<I", self._read_exact(f, 4, "version"))
        if self.version != SENS_VERSION:
            raise DataError(
                self.path, f"offset 0: .sens version {self.version}, only version {SENS_VERSION} is supported"
            )
        (strlen,) = struct.unpack("<Q", self._read_exact(f, 8, "sensor name length"))
        if strlen > 1 << 16:
            raise DataError(self.path, f"offset 4: implausible sensor name length {strlen}")
        self.sensor_name = self._read_exact(f, strlen, "sensor name").decode("utf-8", errors="replace")
        fixed_at = f.tell()
        values = _FIXED_HEADER.unpack(self._read_exact(f, _FIXED_HEADER.size, "header fields"))
        mats = np.asarray(values[:64], dtype=np.float32).reshape(4, 4, 4)
        self.intrinsic_color, self.extrinsic_color, self.intrinsic_depth, self.extrinsic_depth = mats
        self.color_compression_type, self.depth_compression_type = values[64], values[65]
        self.color_width, self.color_height, self.depth_width, self.depth_height = values[66:70]
        self.depth_shift = float(values[70])
        self.header_num_frames = int(values[71])
        for at, what, value, names, supported in (
            (256, "colour", self.color_compression_type, COLOR_COMPRESSION, SUPPORTED_COLOR),
            (260, "depth", self.depth_compression_type, DEPTH_COMPRESSION, SUPPORTED_DEPTH),
        ):
            if value not in supported:
                allowed = ", ".join(names[c] for c in sorted(supported))
                raise DataError(
                    self.path,
                    f"offset {fixed_at + at}: unsupported {what} compression {value} "
                    f"({names.get(value, 'invalid')}); supported: {allowed}",
                )
        if min(self.color_width, self.color_height, self.depth_width, self.depth_height) == 0:
            raise DataError(self.path, f"offset {fixed_at + 264}: zero image size in the header")
        if not (np.isfinite(self.depth_shift) and self.depth_shift > 0):
            raise DataError(self.path, f"offset {fixed_at + 280}: depth_shift {self.depth_shift} is not > 0")

    def _index_frames(self, f, file_size: int) -> None:
        n = self.header_num_frames
        # never trust num_frames for an allocation: each frame needs >= 96 bytes
        cap = min(n, max(0, (file_size - f.tell()) // _FRAME_HEAD.size))
        poses = np.empty((cap, 4, 4), dtype=np.float32)
        table = np.empty((cap, 6), dtype=np.int64)  # ts_color, ts_depth, c_off, c_size, d_off, d_size
        offset = f.tell()
        count = 0
        problem = None
        for i in range(n):
            head = f.read(_FRAME_HEAD.size)
            if len(head) != _FRAME_HEAD.size:
                problem = (
                    f"frame {i} at offset {offset}: header cut after {len(head)} of {_FRAME_HEAD.size} bytes"
                )
                break
            values = _FRAME_HEAD.unpack(head)
            c_size, d_size = values[18], values[19]
            c_off = offset + _FRAME_HEAD.size
            d_off = c_off + c_size
            end = d_off + d_size
            if end > file_size:
                problem = f"frame {i} at offset {offset}: needs bytes up to {end}, file has {file_size}"
                break
            poses[count] = np.asarray(values[:16], dtype=np.float32).reshape(4, 4)
            table[count] = (values[16], values[17], c_off, c_size, d_off, d_size)
            count += 1
            offset = end
            f.seek(end)
        self.num_frames = count
        self.poses = poses[:count]
        self._table = table[:count]
        self.timestamps_color = self._table[:, 0].astype(np.uint64)
        self.timestamps_depth = self._table[:, 1].astype(np.uint64)
        if problem is not None:
            self.warn(
                f"truncated .sens: {problem}; kept the {count} complete frame(s) of {n} "
                f"and dropped the rest"
            )

    def warn(self, message: str) -> None:
        self.notes.append(message)
        warnings.warn(f"{self.path}: {message}", stacklevel=3)

    # -- access --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.num_frames

    def _check_index(self, i: int) -> int:
        if not 0 <= i < self.num_frames:
            raise IndexError(f"{self.path}: frame {i} out of range (0 .. {self.num_frames - 1})")
        return int(i)

    @property
    def color_size(self) -> tuple[int, int]:
        """(width, height) of the colour stream."""
        return int(self.color_width), int(self.color_height)

    @property
    def depth_size(self) -> tuple[int, int]:
        """(width, height) of the depth stream."""
        return int(self.depth_width), int(self.depth_height)

    def pose(self, i: int) -> np.ndarray:
        """(4, 4) float32 camera-to-world of frame ``i`` (may hold ``-inf`` in real data)."""
        return self.poses[self._check_index(i)].copy()

    def source(self, i: int) -> SensFrameSource:
        """The picklable reader of frame ``i``."""
        ts_c, ts_d, c_off, c_size, d_off, d_size = (int(x) for x in self._table[self._check_index(i)])
        return SensFrameSource(
            path=str(self.path),
            frame=int(i),
            color_offset=c_off,
            color_size=c_size,
            depth_offset=d_off,
            depth_size=d_size,
            color_compression=int(self.color_compression_type),
            depth_compression=int(self.depth_compression_type),
            color_wh=self.color_size,
            depth_wh=self.depth_size,
            depth_shift=self.depth_shift,
        )

    def read_color(self, i: int) -> np.ndarray:
        """(Hc, Wc, 3) uint8 colour of frame ``i`` (JPEG decoded with PIL)."""
        return self.source(i).read_color()

    def read_depth(self, i: int) -> np.ndarray:
        """(Hd, Wd) uint16 raw depth of frame ``i`` (metres = value / depth_shift)."""
        return self.source(i).read_depth()

    def frames(self, stride: int = 1, max_frames: int | None = None) -> list[Frame]:
        """Every ``stride``-th frame (0, stride, 2*stride, ...), at most ``max_frames`` of them.

        Frames have the depth resolution and intrinsics, ``depth_scale = depth_shift`` and a
        :class:`SensFrameSource`. Frames with non-finite poses are kept here; the reader drops them
        with ``Scene.drop_non_finite_poses``.
        """
        if int(stride) < 1:
            raise ConfigError("stride", f"frame stride must be >= 1, got {stride}")
        if max_frames is not None and int(max_frames) < 0:
            raise ConfigError("max_frames", f"must be >= 0 or null, got {max_frames}")
        indices = range(0, self.num_frames, int(stride))
        if max_frames is not None:
            indices = indices[: int(max_frames)]
        intrinsics = self.intrinsic_depth[:3, :3].astype(np.float64)
        return [
            Frame(
                number=i,
                pose=self.poses[i],
                intrinsics=intrinsics,
                image_size=self.depth_size,
                depth_scale=self.depth_shift,
                source=self.source(i),
            )
            for i in indices
        ]


def sens_frames(path: str | Path, stride: int = 1, max_frames: int | None = None) -> list[Frame]:
    """Frames of a ``.sens`` file (see :meth:`SensFile.frames`); truncation is warned, not raised."""
    return SensFile(path).frames(stride=stride, max_frames=max_frames)


def _as_4x4(m, what: str) -> np.ndarray:
    m = np.asarray(m, dtype=np.float32)
    if m.shape == (3, 3):
        out = np.eye(4, dtype=np.float32)
        out[:3, :3] = m
        return out
    if m.shape != (4, 4):
        raise ValueError(f"{what} must be (3, 3) or (4, 4), got {m.shape}")
    return m


def write_sens(
    path: str | Path,
    color_frames: list[np.ndarray],
    depth_frames: list[np.ndarray],
    poses,
    intrinsic_color,
    intrinsic_depth,
    depth_shift: float = 1000.0,
    jpeg_quality: int = 95,
    sensor_name: str = "featurizer",
) -> None:
    """Write a version-4 ``.sens`` (JPEG colour, zlib_ushort depth), atomically.

    color_frames: F arrays (Hc, Wc, 3) uint8; depth_frames: F arrays (Hd, Wd) uint16;
    poses: (F, 4, 4) camera-to-world; intrinsic_color / intrinsic_depth: (3, 3) or (4, 4).
    Extrinsics are identity; timestamps are frame * 33333 (microseconds at 30 Hz).
    """
    import io

    from PIL import Image

    path = Path(path)
    poses = np.asarray(poses, dtype=np.float32).reshape(-1, 4, 4)
    if not (len(color_frames) == len(depth_frames) == len(poses)):
        raise ValueError(f"{len(color_frames)} colour, {len(depth_frames)} depth frames, {len(poses)} poses")
    if not color_frames:
        raise ValueError("write_sens needs at least one frame")
    hc, wc = np.asarray(color_frames[0]).shape[:2]
    hd, wd = np.asarray(depth_frames[0]).shape[:2]
    name = sensor_name.encode()
    header = struct.pack("<IQ", SENS_VERSION, len(name)) + name
    mats = [_as_4x4(intrinsic_color, "intrinsic_color"), np.eye(4, dtype=np.float32),
            _as_4x4(intrinsic_depth, "intrinsic_depth"), np.eye(4, dtype=np.float32)]
    header += _FIXED_HEADER.pack(
        *np.concatenate([m.reshape(-1) for m in mats]).tolist(), 2, 1, wc, hc, wd, hd, float(depth_shift),
        len(poses),
    )
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            for i, (color, depth, pose) in enumerate(zip(color_frames, depth_frames, poses)):
                color = np.asarray(color, dtype=np.uint8)
                depth = np.asarray(depth)
                if color.shape != (hc, wc, 3):
                    raise ValueError(f"colour frame {i} is {color.shape}, expected {(hc, wc, 3)}")
                if depth.shape != (hd, wd) or depth.dtype != np.uint16:
                    raise ValueError(
                        f"depth frame {i} is {depth.dtype} {depth.shape}, expected uint16 {(hd, wd)}"
                    )
                buf = io.BytesIO()
                Image.fromarray(color).save(buf, format="JPEG", quality=int(jpeg_quality))
                c_bytes = buf.getvalue()
                d_bytes = zlib.compress(depth.astype("<u2").tobytes())
                stamp = i * 33333
                head = _FRAME_HEAD.pack(*pose.reshape(-1).tolist(), stamp, stamp, len(c_bytes), len(d_bytes))
                f.write(head)
                f.write(c_bytes)
                f.write(d_bytes)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
