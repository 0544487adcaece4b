"""Hugging Face vision backbones (DINOv2, DINOv2 with registers, CLIP, SigLIP) as patch encoders.

Two ways to feed a frame to the network (``mode``):

- ``processor``: exactly the model card's image processor (DINOv2: shortest edge -> 256 bicubic,
  centre crop 224; CLIP: shortest edge -> 224, centre crop 224; SigLIP: 224x224, no crop), then
  rescale 1/255 and mean/std. Only the crop is encoded (DESIGN.md section 6.1).
- ``full_frame``: the whole frame resized to a patch multiple (no crop), same rescale/normalise.

Pre-processing runs in torch on the model's device but reproduces the slow (PIL) processor bit for
bit: the resize is Pillow's own arithmetic (:mod:`featurizer.encoder2d.resize`), the crop offset is
``(h' - crop) // 2`` and the resize output size is ``int(short_target * long / short)``, exactly as
transformers computes them. :meth:`HFPatchEncoder.pixel_to_patch` uses the same numbers, so a
frame pixel maps to the patch that actually encodes it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from featurizer.encoder2d.base import PatchEncoder
from featurizer.encoder2d.resize import BICUBIC, pil_resize
from featurizer.errors import CheckpointError, ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class _Family:
    model_class: str  # transformers class name
    config_class: str
    model_types: tuple[str, ...]  # accepted config.model_type values
    # model card processor, used when the model is built from random_init_config
    processor_class: str
    processor_kwargs: dict
    interpolate_kwarg: bool  # forward takes interpolate_pos_encoding (DINOv2 always interpolates)


def _crop_processor(shortest_edge: int, mean, std) -> dict:
    """Model-card kwargs of a processor that resizes the shortest edge (bicubic), crops 224x224."""
    return dict(
        size={"shortest_edge": shortest_edge},
        crop_size={"height": 224, "width": 224},
        do_center_crop=True,
        resample=BICUBIC,
        image_mean=list(mean),
        image_std=list(std),
    )


_DINOV2_PROCESSOR = _crop_processor(256, IMAGENET_MEAN, IMAGENET_STD)

FAMILIES: dict[str, _Family] = {
    "dinov2": _Family(
        "Dinov2Model", "Dinov2Config", ("dinov2",), "BitImageProcessorPil", _DINOV2_PROCESSOR, False
    ),
    "dinov2_reg": _Family(
        "Dinov2WithRegistersModel",
        "Dinov2WithRegistersConfig",
        ("dinov2_with_registers",),
        "BitImageProcessorPil",
        _DINOV2_PROCESSOR,
        False,
    ),
    "clip": _Family(
        "CLIPVisionModel",
        "CLIPVisionConfig",
        ("clip", "clip_vision_model"),
        "CLIPImageProcessorPil",
        _crop_processor(224, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
        True,
    ),
    "siglip": _Family(
        "SiglipVisionModel",
        "SiglipVisionConfig",
        ("siglip", "siglip_vision_model"),
        "SiglipImageProcessorPil",
        dict(size={"height": 224, "width": 224}, resample=BICUBIC, image_mean=[0.5] * 3, image_std=[0.5] * 3),
        True,
    ),
}

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


class HFPatchEncoder(PatchEncoder):
    """A Hugging Face ViT backbone as a :class:`PatchEncoder`.

    Args:
        model: hub id (``facebook/dinov2-large``) or local folder holding ``config.json``, the
            weights and ``preprocessor_config.json`` (as written by ``save_pretrained``).
        family: ``dinov2`` | ``dinov2_reg`` | ``clip`` | ``siglip``.
        mode: ``processor`` (model card preprocessing, centre crop) or ``full_frame``.
        full_frame_size: (W, H) network input in ``full_frame`` mode, multiples of the patch size;
            default per frame size: the frame scaled so its short side is the model card's input
            size (e.g. 224), each side rounded to the nearest patch multiple (640x480 -> 294x224).
        batch_size: frames per forward pass.
        bf16: bf16 autocast (CUDA only).
        name: tag for logs and file names (default: ``family``).
        random_init_config: build the model from this config dict with seeded random weights,
            and the processor from the family's model card defaults (tiny demo, no download).
        seed: seed of the random initialisation.
    """

    def __init__(
        self,
        model: str = "facebook/dinov2-large",
        family: str = "dinov2",
        mode: str = "full_frame",
        full_frame_size: list[int] | None = None,
        batch_size: int = 16,
        bf16: bool = False,
        name: str | None = None,
        random_init_config: dict | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if family not in FAMILIES:
            raise ConfigError("encoder2d.family", f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
        if mode not in MODES:
            raise ConfigError("encoder2d.mode", f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        if int(batch_size) < 1:
            raise ConfigError("encoder2d.batch_size", f"must be >= 1, got {batch_size}")
        self.family = family
        self.mode = mode
        self.batch_size = int(batch_size)
        self.bf16 = bool(bf16)
        self.name = name or family
        # "auto": Pillow itself for CPU tensors, the bit-exact torch port on GPUs; tests pin "torch"
        self.resize_impl = "auto"
        self.model_id = str(model)
        self._spec = FAMILIES[family]
        if random_init_config is not None:
            self.model, processor = self._build_random(dict(random_init_config), int(seed))
        else:
            self.model, processor = self._load(self.model_id)
        self.model.eval().requires_grad_(False)
        self.processor = processor
        self.prep = Preprocessing.from_processor(processor)
        config = self.model.config
        self.dim = int(config.hidden_size)
        self.patch_size = int(config.patch_size)
        self.num_prefix_tokens = {"dinov2": 1, "clip": 1, "siglip": 0}.get(family)
        if family == "dinov2_reg":
            self.num_prefix_tokens = 1 + int(config.num_register_tokens)
        w_in, h_in = self.prep.input_size(640, 480)
        self.native_size = min(w_in, h_in)  # the model card's input side, e.g. 224
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
    def _build_random(self, config: dict, seed: int):
        import transformers

        config_cls = getattr(transformers, self._spec.config_class)
        model_cls = getattr(transformers, self._spec.model_class)
        try:
            cfg = config_cls(**config)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = model_cls(cfg)
        except Exception as e:  # transformers' strict config validation raises its own error types
            first = str(e).strip().replace("\n", " ")
            raise ConfigError(
                "encoder2d.random_init_config", f"not a valid {self._spec.config_class}: {first}"
            ) from None
        processor = getattr(transformers, self._spec.processor_class)(**self._spec.processor_kwargs)
        return net, processor

    def _load(self, model: str):
        import transformers

        if _looks_local(model):
            path = Path(model).expanduser()
            if not (path / "config.json").is_file():
                raise ConfigError(
                    "encoder2d.model", f"{path}: not a model folder (no such folder or no config.json in it)"
                )
            model = str(path)
        try:
            config = transformers.AutoConfig.from_pretrained(model)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                "encoder2d.model",
                f"{model}: cannot load a model config (not a local folder, and not a hub id that can be "
                f"downloaded or is cached): {first}",
            ) from None
        if config.model_type not in self._spec.model_types:
            raise ConfigError(
                "encoder2d.family",
                f"{model} holds a {config.model_type!r} model, but family {self.family!r} expects "
                f"{' or '.join(self._spec.model_types)}",
            )
        model_cls = getattr(transformers, self._spec.model_class)
        verbosity = transformers.logging.get_verbosity()
        try:
            # quiet: a full CLIP / SigLIP checkpoint lists its text tower as unexpected keys; what
            # matters (missing or mismatched vision weights) is checked below
            transformers.logging.set_verbosity_error()
            net, info = model_cls.from_pretrained(model, output_loading_info=True)
            processor = transformers.AutoImageProcessor.from_pretrained(model, backend="pil")
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                "encoder2d.model", f"{model}: cannot load weights or image processor: {first}"
            ) from None
        finally:
            transformers.logging.set_verbosity(verbosity)
        bad = sorted(info.get("missing_keys") or [])
        bad += sorted(str(k) for k in info.get("mismatched_keys") or [])
        if bad:
            shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
            raise CheckpointError(
                model, f"{len(bad)} {self._spec.model_class} weight(s) missing or mismatched: {shown}"
            )
        return net, processor

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
        kwargs = {"interpolate_pos_encoding": True} if self._spec.interpolate_kwarg else {}
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
