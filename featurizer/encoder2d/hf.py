"""Any Hugging Face ViT backbone with a patch grid (DINOv2, DINOv3, CLIP, SigLIP, ...) as a patch encoder.

One class for every backbone that transformers' Auto classes load: the model's ``config.json`` names
its class (the vision tower of a two-tower CLIP / SigLIP checkpoint), the patch size comes from the
config, the tokens before the patch grid (CLS, registers) are counted on the loaded model, and the
preprocessing comes from the folder's ``preprocessor_config.json`` (through transformers' PIL
processor where the family has one, else the file's settings). A new backbone is one YAML file.

Two ways to feed a frame to the network (``mode``):

- ``processor``: exactly the model card's image processor (DINOv2: shortest edge -> 256 bicubic,
  centre crop 224; CLIP: shortest edge -> 224, centre crop 224; SigLIP: 224x224, no crop), then
  rescale 1/255 and mean/std. Only the crop is encoded (DESIGN.md section 6.1).
- ``full_frame``: the whole frame resized to a patch multiple (no crop), same rescale/normalise.

Pre-processing runs in torch on the model's device but reproduces the slow (PIL) processor bit for
bit: the resize is Pillow's own arithmetic (:mod:`featurizer.encoder2d.resize`), the crop offset is
``(h' - crop) // 2`` and the resize output size is ``int(short_target * long / short)``, exactly as
transformers computes them. :meth:`HFPatchEncoder.pixel_to_patch` uses the same numbers, so a
frame pixel maps to the patch that actually encodes it. Families whose only processor needs
torchvision (DINOv3: rescale, then an antialiased float resize) get the same settings applied the
PIL way (uint8 resize, then rescale), which differs from theirs by the uint8 rounding of the resize.
"""

from __future__ import annotations

import inspect
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from urllib.parse import urlparse

import numpy as np
import torch

from featurizer.encoder2d.base import PatchEncoder
from featurizer.encoder2d.resize import BICUBIC, pil_resize
from featurizer.errors import CheckpointError, ConfigError
from featurizer.files import read_json

MODES = ("processor", "full_frame")


@dataclass(frozen=True)
class Preprocessing:
    """The numbers of a slow (PIL) Hugging Face image processor that decide pixels and geometry.

    resize: ("shortest_edge", s) or ("size", (height, width)) or None (no resize).
    crop: (height, width) of the centre crop, or None.
    """

    resample: int
    resize: tuple | None
    crop: tuple[int, int] | None
    rescale_factor: float | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None

    @classmethod
    def from_processor(cls, processor, where: str = "encoder2d.model") -> Preprocessing:
        """Read a transformers image processor (any backend) into plain numbers."""
        size = getattr(processor, "size", None)
        resize = None
        if getattr(processor, "do_resize", False):
            short = _get(size, "shortest_edge")
            if short and _get(size, "longest_edge"):
                raise ConfigError(
                    where, f"processor size {dict(size)} (shortest + longest edge) is not supported"
                )
            if short:
                resize = ("shortest_edge", int(short))
            elif _get(size, "height") and _get(size, "width"):
                resize = ("size", (int(_get(size, "height")), int(_get(size, "width"))))
            else:
                raise ConfigError(
                    where, f"processor size {size} is not supported (shortest_edge or height/width)"
                )
        crop = None
        if getattr(processor, "do_center_crop", False):
            cs = processor.crop_size
            crop = (int(_get(cs, "height")), int(_get(cs, "width")))
        resample = getattr(processor, "resample", BICUBIC)
        resample = BICUBIC if resample is None else int(resample)
        if resample not in (1, 2, 3):
            raise ConfigError(where, f"processor resample filter {resample} is not supported (1, 2, 3)")
        rescale = float(processor.rescale_factor) if getattr(processor, "do_rescale", False) else None
        mean = std = None
        if getattr(processor, "do_normalize", False):
            mean = _three(processor.image_mean)
            std = _three(processor.image_std)
        return cls(resample, resize, crop, rescale, mean, std)

    def native_side(self) -> int | None:
        """The short side of the network input the processor makes (e.g. 224), None without resize/crop."""
        if self.crop is not None:
            return min(self.crop)
        if self.resize is None:
            return None
        kind, value = self.resize
        return int(value) if kind == "shortest_edge" else min(value)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(w', h') after the processor's resize of a (width, height) frame (transformers' rounding)."""
        if self.resize is None:
            return width, height
        kind, value = self.resize
        if kind == "size":
            return value[1], value[0]
        # transformers.image_transforms.get_resize_output_image_size(default_to_square=False)
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = value, int(value * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """(W_in, H_in) of the network input for a (width, height) frame."""
        if self.crop is not None:
            return self.crop[1], self.crop[0]
        return self.resized_size(width, height)

    def crop_offset(self, width: int, height: int) -> tuple[int, int]:
        """(x0, y0) of the crop in the resized image; negative where the crop pads (transformers' rule)."""
        rw, rh = self.resized_size(width, height)
        if self.crop is None:
            return 0, 0
        return (rw - self.crop[1]) // 2, (rh - self.crop[0]) // 2

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, H, W) float32, as the slow processor does it.

        Rescale in float64 then cast to float32, normalise in float32 (transformers' numpy order).
        """
        x = images.permute(0, 3, 1, 2)
        if self.rescale_factor is not None:
            x = (x.to(torch.float64) * self.rescale_factor).to(torch.float32)
        else:
            x = x.to(torch.float32)
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x.contiguous()


def _get(size, key: str):
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


def _three(values) -> tuple[float, float, float]:
    v = [float(x) for x in (values if isinstance(values, (list, tuple)) else [values] * 3)]
    return (v[0], v[1], v[2])


def centre_crop(images: torch.Tensor, offset: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Crop (B, H, W, C) at (x0, y0) to (height, width); out-of-image parts are 0, as transformers pads."""
    x0, y0 = offset
    ch, cw = size
    b, h, w, c = images.shape
    if x0 >= 0 and y0 >= 0 and x0 + cw <= w and y0 + ch <= h:
        return images[:, y0 : y0 + ch, x0 : x0 + cw]
    out = images.new_zeros((b, ch, cw, c))
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + ch, h), min(x0 + cw, w)
    out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = images[:, sy0:sy1, sx0:sx1]
    return out


def _looks_local(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~", ".\\")) or os.path.exists(model)


def _hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hugging Face endpoint accepts a connection (one try: no retries, no waiting)."""
    from huggingface_hub import constants

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # behind a proxy a direct connection says nothing: let the download try
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _locate(model: str) -> tuple[str, bool]:
    """(what ``from_pretrained`` gets, local_files_only): a local folder, a hub id found in the
    Hugging Face cache (never goes online), or a hub id to download (only when the hub answers)."""
    if _looks_local(model):
        path = Path(model).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(
                "encoder2d.model", f"{path}: not a model folder (no such folder or no config.json in it)"
            )
        return str(path), True
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, "config.json")
    except ValueError:  # not a valid hub id
        cached = None
    if isinstance(cached, str):
        return model, True
    if constants.HF_HUB_OFFLINE:
        why = "HF_HUB_OFFLINE is set"
    elif not _hub_reachable():
        why = f"{constants.ENDPOINT} cannot be reached"
    else:
        return model, False
    raise ConfigError(
        "encoder2d.model",
        f"{model} is neither a local folder nor in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
        f"and {why}: pass a local folder (encoder2d.model=/path/to/model), or download it once with "
        f"`hf download {model}` (older huggingface_hub: `huggingface-cli download {model}`); "
        "set HF_HUB_OFFLINE=1 to never try the network",
    )


def _plain(value):
    """Mappings and lists (Hydra's DictConfig / ListConfig included) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# family names of the YAML files that are not a transformers model_type
_FAMILY_MODEL_TYPE = {"dinov2_reg": "dinov2_with_registers"}


class HFPatchEncoder(PatchEncoder):
    """A Hugging Face ViT backbone as a :class:`PatchEncoder`.

    Args:
        model: hub id (``facebook/dinov2-large``) or local folder holding ``config.json``, the
            weights and ``preprocessor_config.json`` (as written by ``save_pretrained``). A hub id
            is read from the Hugging Face cache when it is there; it is downloaded only otherwise.
        family: expected kind of model, checked against the config's ``model_type`` (``dinov2``,
            ``dinov2_reg``, ``dinov3_vit``, ``clip``, ``siglip``, ...); None accepts any.
        mode: ``processor`` (model card preprocessing, centre crop) or ``full_frame``.
        full_frame_size: (W, H) network input in ``full_frame`` mode, multiples of the patch size;
            default per frame size: the frame scaled so its short side is the model card's input
            size (e.g. 224), each side rounded to the nearest patch multiple (640x480 -> 294x224).
        batch_size: frames per forward pass.
        bf16: bf16 autocast (CUDA only).
        name: tag for logs and file names (default: ``family``, else the config's model_type).
        random_init_config: build the model from this config dict (keys of the family's transformers
            config; ``model_type`` defaults to ``family``) with seeded random weights (no download).
        processor: preprocessing settings with the keys of ``preprocessor_config.json`` (``size``,
            ``resample``, ``do_center_crop``, ``crop_size``, ``rescale_factor``, ``image_mean``, ...):
            with ``random_init_config`` all of them (a missing ``do_*`` is off), with a model they
            override the folder's.
        seed: seed of the random initialisation.
    """

    def __init__(
        self,
        model: str = "facebook/dinov2-large",
        family: str | None = None,
        mode: str = "full_frame",
        full_frame_size: list[int] | None = None,
        batch_size: int = 16,
        bf16: bool = False,
        name: str | None = None,
        random_init_config: dict | None = None,
        processor: dict | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if mode not in MODES:
            raise ConfigError("encoder2d.mode", f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        if int(batch_size) < 1:
            raise ConfigError("encoder2d.batch_size", f"must be >= 1, got {batch_size}")
        self.family = family
        self.mode = mode
        self.batch_size = int(batch_size)
        self.bf16 = bool(bf16)
        # "auto": Pillow itself for CPU tensors, the bit-exact torch port on GPUs; tests pin "torch"
        self.resize_impl = "auto"
        self.model_id = str(model)
        overrides = _plain(processor or {})
        if random_init_config is not None:
            self.model = self._build_random(_plain(random_init_config), int(seed))
            if processor is None:
                raise ConfigError("encoder2d.processor", "random_init_config needs preprocessing settings")
            settings = SimpleNamespace(**overrides)
        else:
            self.model, settings = self._load(self.model_id, overrides)
        self.model.eval().requires_grad_(False)
        config = self.model.config
        self.name = name or family or config.model_type
        self.dim = int(config.hidden_size)
        self.patch_size = int(config.patch_size)
        args = inspect.signature(self.model.forward).parameters
        needs = [k for k, a in args.items() if k != "pixel_values" and a.default is inspect.Parameter.empty
                 and a.kind not in (a.VAR_KEYWORD, a.VAR_POSITIONAL)]
        if needs:
            raise ConfigError(
                "encoder2d.model",
                f"{self.model_id}: {type(self.model).__name__} needs {', '.join(needs)} besides pixel_values "
                "(a patch-sequence model such as SigLIP2 NaFlex); only backbones taking an image grid work",
            )
        self._interpolate = "interpolate_pos_encoding" in args  # DINOv2 and RoPE models always do
        self.prep = Preprocessing.from_processor(settings)
        self.num_prefix_tokens = self._count_prefix_tokens()
        self.native_size = self.prep.native_side() or int(config.image_size)  # e.g. 224
        self.full_frame_size: tuple[int, int] | None = None
        if full_frame_size is not None:
            ffs = tuple(int(x) for x in full_frame_size)
            if len(ffs) != 2 or min(ffs) < self.patch_size or any(x % self.patch_size for x in ffs):
                raise ConfigError(
                    "encoder2d.full_frame_size",
                    f"{list(ffs)} must be (W, H), positive multiples of the patch size {self.patch_size}",
                )
            self.full_frame_size = (ffs[0], ffs[1])

    # ------------------------------------------------------------------ loading
    def _count_prefix_tokens(self) -> int:
        """Tokens before the patch grid (CLS, registers), counted on a 2x2-patch input."""
        p = self.patch_size
        with torch.inference_mode():
            hidden = self._forward(torch.zeros(1, 3, 2 * p, 2 * p)).last_hidden_state
        return int(hidden.shape[1]) - 4

    def _check_family(self, config, where: str) -> None:
        if self.family is None:
            return
        vision = getattr(config, "vision_config", None) or config
        types = {config.model_type, vision.model_type}
        wanted = _FAMILY_MODEL_TYPE.get(self.family, self.family)
        if not types & {wanted, f"{wanted}_vision_model"}:
            raise ConfigError(
                "encoder2d.family",
                f"{where} holds a {vision.model_type!r} model, but family {self.family!r} expects {wanted!r}",
            )

    @staticmethod
    def _vision_class(config, where: str):
        """The transformers class of the config's vision tower (CLIPVisionModel for a full CLIP)."""
        import transformers

        vision = getattr(config, "vision_config", None) or config
        try:
            return vision, transformers.MODEL_MAPPING[type(vision)]
        except KeyError:
            raise ConfigError(
                "encoder2d.model", f"{where}: transformers has no model class for {vision.model_type!r}"
            ) from None

    def _build_random(self, config: dict, seed: int):
        import transformers

        model_type = config.pop("model_type", None) or _FAMILY_MODEL_TYPE.get(self.family, self.family)
        try:
            cfg = transformers.AutoConfig.for_model(model_type, **config)
            vision, model_cls = self._vision_class(cfg, "encoder2d.random_init_config")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = model_cls(vision)
        except ConfigError:
            raise
        except Exception as e:  # transformers' strict config validation raises its own error types
            raise ConfigError(
                "encoder2d.random_init_config", f"not a valid {model_type!r} config: {_first_line(e)}"
            ) from None
        return net

    def _load(self, model: str, overrides: dict):
        import transformers

        source, local_only = _locate(model)
        try:
            config = transformers.AutoConfig.from_pretrained(source, local_files_only=local_only)
        except (OSError, ValueError) as e:
            problem = f"{model}: cannot load a model config: {_first_line(e)}"
            raise ConfigError("encoder2d.model", problem) from None
        self._check_family(config, model)
        _, model_cls = self._vision_class(config, model)
        verbosity = transformers.logging.get_verbosity()
        try:
            # quiet: a full CLIP / SigLIP checkpoint lists its text tower as unexpected keys; what
            # matters (missing or mismatched vision weights) is checked below
            transformers.logging.set_verbosity_error()
            net, info = model_cls.from_pretrained(
                source, output_loading_info=True, local_files_only=local_only
            )
            settings = self._processor_settings(source, local_only, overrides)
        except (OSError, ValueError) as e:
            raise ConfigError(
                "encoder2d.model", f"{model}: cannot load weights or image processor: {_first_line(e)}"
            ) from None
        finally:
            transformers.logging.set_verbosity(verbosity)
        bad = sorted(info.get("missing_keys") or [])
        bad += sorted(str(k) for k in info.get("mismatched_keys") or [])
        if bad:
            shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
            problem = f"{len(bad)} {model_cls.__name__} weight(s) missing or mismatched: {shown}"
            raise CheckpointError(model, problem)
        return net, settings

    @staticmethod
    def _processor_settings(source: str, local_only: bool, overrides: dict):
        """The family's PIL image processor, or (where it has none) the preprocessor_config.json settings."""
        import transformers
        from transformers.utils import cached_file

        try:
            return transformers.AutoImageProcessor.from_pretrained(
                source, backend="pil", local_files_only=local_only, **overrides
            )
        except ImportError:  # the family's only processor needs torchvision (DINOv3)
            path = cached_file(source, "preprocessor_config.json", local_files_only=local_only)
            return SimpleNamespace(**{**read_json(path, expect=dict), **overrides})

    # ------------------------------------------------------------------ geometry
    def _net_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(W', H') the frame is resized to in full_frame mode."""
        if self.full_frame_size is not None:
            return self.full_frame_size
        w, h = int(image_size[0]), int(image_size[1])
        s = self.native_size / min(w, h)
        p = self.patch_size
        return (max(1, math.floor(w * s / p + 0.5)) * p, max(1, math.floor(h * s / p + 0.5)) * p)

    def grid_shape(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of the patch grid for frames of ``image_size = (W, H)``."""
        if self.mode == "full_frame":
            w, h = self._net_size(image_size)
        else:
            w, h = self.prep.input_size(int(image_size[0]), int(image_size[1]))
        return h // self.patch_size, w // self.patch_size

    def _transform(self, image_size: tuple[int, int]) -> tuple[float, float, int, int]:
        """(sx, sy, x0, y0): net x = frame x * sx - x0 (continuous coordinates)."""
        w, h = int(image_size[0]), int(image_size[1])
        if self.mode == "full_frame":
            nw, nh = self._net_size(image_size)
            return nw / w, nh / h, 0, 0
        rw, rh = self.prep.resized_size(w, h)
        x0, y0 = self.prep.crop_offset(w, h)
        return rw / w, rh / h, x0, y0

    def pixel_to_patch(
        self, u: torch.Tensor, v: torch.Tensor, image_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Patch (row, col) encoding each frame pixel, through the exact resize/crop of preprocessing.

        u, v: (P,) integer columns / rows of a frame of ``image_size = (W, H)``.
        returns: rows (P,) int64, cols (P,) int64, valid (P,) bool (False outside the frame or
        where the crop drops the pixel; rows/cols clamped into the grid there).
        """
        w, h = int(image_size[0]), int(image_size[1])
        rw, rh = (self._net_size(image_size) if self.mode == "full_frame" else self.prep.resized_size(w, h))
        x0, y0 = (0, 0) if self.mode == "full_frame" else self.prep.crop_offset(w, h)
        rows, cols = self.grid_shape(image_size)
        u = torch.as_tensor(u)
        v = torch.as_tensor(v)
        p = self.patch_size
        # pixel centre (u + 0.5) scaled by exactly the resize factor rw / w, then the crop shift
        xn = (u.to(torch.float64) + 0.5) * rw / w - x0
        yn = (v.to(torch.float64) + 0.5) * rh / h - y0
        c = torch.floor(xn / p).to(torch.int64)
        r = torch.floor(yn / p).to(torch.int64)
        valid = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        valid &= (c >= 0) & (c < cols) & (r >= 0) & (r < rows)
        return r.clamp(0, rows - 1), c.clamp(0, cols - 1), valid

    def encoded_region(self, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the frame region, in frame pixels, that the grid covers."""
        w, h = int(image_size[0]), int(image_size[1])
        sx, sy, x0, y0 = self._transform(image_size)
        rows, cols = self.grid_shape(image_size)
        p = self.patch_size
        fx0, fx1 = x0 / sx, (x0 + cols * p) / sx
        fy0, fy1 = y0 / sy, (y0 + rows * p) / sy
        return (max(0.0, fx0), max(0.0, fy0), min(float(w), fx1), min(float(h), fy1))

    # ------------------------------------------------------------------ pixels
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Network input of a batch of frames, in this encoder's mode.

        images: (B, H, W, 3) uint8 (any device). returns: (B, 3, H_in, W_in) float32 on that device.
        In ``processor`` mode this equals the model card processor's ``pixel_values``.
        """
        _check_images(images)
        h, w = int(images.shape[1]), int(images.shape[2])
        if self.mode == "full_frame":
            nw, nh = self._net_size((w, h))
            x = pil_resize(images, (nh, nw), self.prep.resample, impl=self.resize_impl)
        else:
            x = self._processor_pixels(images)
        return self.prep.normalise(x)

    def _processor_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Resize + centre crop of the model card processor on (B, H, W, 3) uint8."""
        h, w = int(images.shape[1]), int(images.shape[2])
        x = images
        if self.prep.resize is not None:
            rw, rh = self.prep.resized_size(w, h)
            x = pil_resize(images, (rh, rw), self.prep.resample, impl=self.resize_impl)
        if self.prep.crop is not None:
            x = centre_crop(x, self.prep.crop_offset(w, h), self.prep.crop)
        return x

    def _forward(self, pixel_values: torch.Tensor):
        device = self.device
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        autocast = self.bf16 and device.type == "cuda"
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            return self.model(pixel_values=pixel_values.to(device), **kwargs)

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens of a batch of frames.

        images: (B, H, W, 3) uint8, all of one size (torch or numpy).
        returns: (B, rows, cols, D) float32 on the images' device (CLS and registers dropped).
        """
        images = torch.as_tensor(images)
        _check_images(images)
        h, w = int(images.shape[1]), int(images.shape[2])
        rows, cols = self.grid_shape((w, h))
        out = []
        with torch.inference_mode():
            for i in range(0, images.shape[0], self.batch_size):
                chunk = images[i : i + self.batch_size].to(self.device, non_blocking=True)
                hidden = self._forward(self.preprocess(chunk)).last_hidden_state
                tokens = hidden[:, self.num_prefix_tokens :]
                if tokens.shape[1] != rows * cols:
                    raise RuntimeError(
                        f"{self.name}: {tokens.shape[1]} patch tokens for a {rows}x{cols} grid"
                    )
                out.append(tokens.float().reshape(-1, rows, cols, self.dim).to(images.device))
        if not out:
            return torch.zeros((0, rows, cols, self.dim), dtype=torch.float32)
        return torch.cat(out)

    def embed(self, images: list[np.ndarray]) -> torch.Tensor:
        """Global embeddings of images of any sizes, through the model card processor.

        images: list of (H_i, W_i, 3) uint8 arrays. returns: (B, D) float32 on the CPU: the final
        layernormed CLS for DINOv2, ``pooler_output`` for CLIP / SigLIP (mean of the tokens when a
        SigLIP model has no head).
        """
        pixels = []
        for img in images:
            t = torch.as_tensor(np.ascontiguousarray(img))[None]
            _check_images(t)
            pixels.append(self.prep.normalise(self._processor_pixels(t.to(self.device)))[0])
        out = []
        with torch.inference_mode():
            i = 0
            while i < len(pixels):
                shape = pixels[i].shape
                j = i
                while j < len(pixels) and j - i < self.batch_size and pixels[j].shape == shape:
                    j += 1
                res = self._forward(torch.stack(pixels[i:j]))
                pooled = res.pooler_output
                if pooled is None:
                    pooled = res.last_hidden_state[:, self.num_prefix_tokens :].mean(dim=1)
                out.append(pooled.float().cpu())
                i = j
        if not out:
            return torch.zeros((0, self.dim), dtype=torch.float32)
        return torch.cat(out)


def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
        raise ValueError(
            f"expected (B, H, W, 3) uint8 images, got shape {tuple(images.shape)} dtype {images.dtype}"
        )
