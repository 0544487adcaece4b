"""Uni3D point-cloud encoder (per instance), pure PyTorch (DESIGN.md section 5).

The module's state-dict keys are exactly those of the published checkpoints
(``BAAI/Uni3D`` ``modelzoo/uni3d-<size>/model.pt``, after stripping ``module.``), so loading is a
strict ``load_state_dict`` after clear checks. Pipeline per instance: :func:`preprocess` (centre,
unit-sphere scale, rgb/255, self-concatenate to >= 64 points), farthest point sampling of
``num_group`` centres, kNN groups of ``group_size``, a PointNet patch encoder, an EVA transformer
(packed SwiGLU for ti/s, split SwiGLU for b/l, GELU for g), ``fc_norm`` of token 0 and
``trans2embed``. Instances are bucketed by size and batched; identical groups (a cloud with fewer
points than centres repeats centres) are encoded once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from featurizer.encoder3d.base import PointEncoder
from featurizer.encoder3d.grouping import group
from featurizer.errors import CheckpointError, ConfigError
from featurizer.ptfile import load_pt

MIN_CLOUD = 64  # the reference self-concatenates clouds smaller than this
LN_EPS = 1e-6
BLOCK_STYLES = ("packed_swiglu", "split_swiglu", "gelu")


@dataclass(frozen=True)
class Arch:
    width: int
    depth: int
    num_heads: int
    mlp_hidden: int
    block_style: str


# sizes.md: the five published backbones.
SIZES: dict[str, Arch] = {
    "ti": Arch(192, 12, 3, 512, "packed_swiglu"),
    "s": Arch(384, 12, 6, 1024, "packed_swiglu"),
    "b": Arch(768, 12, 12, 2048, "split_swiglu"),
    "l": Arch(1024, 24, 16, 2730, "split_swiglu"),
    "g": Arch(1408, 40, 16, 6144, "gelu"),
}
# Unused-but-present keys depend on the timm family of each block style:
# visual.pos_embed length (224/14)^2+1, (448/14)^2+1, (560/14)^2+1; visual.head only in b/l/g.
_POS_EMBED_LEN = {"packed_swiglu": 257, "split_swiglu": 1025, "gelu": 1601}
_HAS_HEAD = {"packed_swiglu": False, "split_swiglu": True, "gelu": True}


def preprocess(xyz: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """The reference's per-instance input.

    xyz: (N, 3) aligned coordinates; rgb: (N, 3) colours 0..255 (uint8 or float).
    returns: (N', 6) float32 ``[xyz - mean, divided by the max point norm, rgb / 255]``,
    concatenated with itself while N' < 64. A cloud whose points all coincide (max norm 0) is
    left unscaled instead of becoming NaN.
    """
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    rgb = np.asarray(rgb).reshape(-1, 3)
    if len(xyz) == 0:
        raise ValueError("preprocess: an instance with no points (the pipeline skips < 10 points)")
    if len(rgb) != len(xyz):
        raise ValueError(f"preprocess: {len(xyz)} points but {len(rgb)} colours")
    xyz = xyz - xyz.mean(axis=0)
    m = np.max(np.sqrt(np.sum(xyz**2, axis=1)))
    if m > 0:
        xyz = xyz / m
    pts = np.concatenate([xyz, rgb.astype(np.float32) / 255.0], axis=1).astype(np.float32)
    while len(pts) < MIN_CLOUD:
        pts = np.concatenate([pts, pts], axis=0)
    return pts


# --------------------------------------------------------------------------------------------
# modules (names mirror the checkpoint keys)


class Attention(nn.Module):
    """EVA attention. fused: ``qkv.weight`` (3W, W) + ``q_bias``/``v_bias``; split: q/k/v_proj."""

    def __init__(self, width: int, num_heads: int, fused: bool):
        super().__init__()
        self.num_heads = num_heads
        self.fused = fused
        if fused:
            self.qkv = nn.Linear(width, 3 * width, bias=False)
            self.q_bias = nn.Parameter(torch.zeros(width))
            self.v_bias = nn.Parameter(torch.zeros(width))
        else:
            self.q_proj = nn.Linear(width, width)
            self.k_proj = nn.Linear(width, width, bias=False)
            self.v_proj = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, W) -> (B, T, W)."""
        b, t, w = x.shape
        h = self.num_heads
        if self.fused:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
            qkv = F.linear(x, self.qkv.weight, bias).reshape(b, t, 3, h, w // h).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
        else:
            q = self.q_proj(x).reshape(b, t, h, w // h).transpose(1, 2)
            k = self.k_proj(x).reshape(b, t, h, w // h).transpose(1, 2)
            v = self.v_proj(x).reshape(b, t, h, w // h).transpose(1, 2)
        x = F.scaled_dot_product_attention(q, k, v)  # scale head_dim^-0.5
        return self.proj(x.transpose(1, 2).reshape(b, t, w))


class Mlp(nn.Module):
    """packed_swiglu: fc1 (2H) -> silu(a) * b -> fc2; split_swiglu: silu(fc1_g) * fc1_x -> norm -> fc2;
    gelu: fc1 -> GELU (exact) -> fc2."""

    def __init__(self, width: int, hidden: int, style: str):
        super().__init__()
        self.style = style
        if style == "packed_swiglu":
            self.fc1 = nn.Linear(width, 2 * hidden)
        elif style == "split_swiglu":
            self.fc1_g = nn.Linear(width, hidden)
            self.fc1_x = nn.Linear(width, hidden)
            self.norm = nn.LayerNorm(hidden, eps=LN_EPS)
        else:
            self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, W) -> (B, T, W)."""
        if self.style == "packed_swiglu":
            a, b = self.fc1(x).chunk(2, dim=-1)
            x = F.silu(a) * b
        elif self.style == "split_swiglu":
            x = self.norm(F.silu(self.fc1_g(x)) * self.fc1_x(x))
        else:
            x = F.gelu(self.fc1(x))
        return self.fc2(x)


class Block(nn.Module):
    """``x + attn(norm1(x))``, ``x + mlp(norm2(x))``: no rope, no layer scale."""

    def __init__(self, width: int, num_heads: int, mlp_hidden: int, style: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=LN_EPS)
        self.attn = Attention(width, num_heads, fused=style != "split_swiglu")
        self.norm2 = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = Mlp(width, mlp_hidden, style)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """The image patch embedding of the timm backbone: in every checkpoint, unused for points."""

    def __init__(self, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=14, stride=14)


class Visual(nn.Module):
    """The EVA backbone: ``blocks`` and ``fc_norm`` are used; ``cls_token``, ``pos_embed``,
    ``patch_embed`` and ``head`` only exist so that the published checkpoints load strictly."""

    def __init__(self, arch: Arch):
        super().__init__()
        w = arch.width
        self.cls_token = nn.Parameter(torch.zeros(1, 1, w))
        self.pos_embed = nn.Parameter(torch.zeros(1, _POS_EMBED_LEN[arch.block_style], w))
        self.patch_embed = PatchEmbed(w)
        self.blocks = nn.ModuleList(
            Block(w, arch.num_heads, arch.mlp_hidden, arch.block_style) for _ in range(arch.depth)
        )
        self.fc_norm = nn.LayerNorm(w, eps=LN_EPS)
        if _HAS_HEAD[arch.block_style]:
            self.head = nn.Linear(w, 1000)


class GroupEncoder(nn.Module):
    """PointNet over each group: Conv1d(6,128)-BN-ReLU-Conv1d(128,256), max, [global, local],
    Conv1d(512,512)-BN-ReLU-Conv1d(512,C), max. (Module names match the checkpoint.)"""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.first_conv = nn.Sequential(
            nn.Conv1d(6, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Conv1d(128, 256, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Conv1d(512, channels, 1)
        )

    @staticmethod
    def _conv_bn(conv: nn.Conv1d, bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
        """(out, in) weight and (out,) bias of a 1x1 conv followed by an eval-mode BatchNorm."""
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return conv.weight[:, :, 0] * s[:, None], (conv.bias - bn.running_mean) * s + bn.bias

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        """groups: (U, K, 6) -> (U, C). Eval-mode maths as point-major matmuls; the concat's
        global half is applied once per group (W [g; f] = W_g g + W_f f)."""
        u, k, _ = groups.shape
        c0, bn0, _, c1 = self.first_conv
        c2, bn2, _, c3 = self.second_conv
        w0, b0 = self._conv_bn(c0, bn0)
        w2, b2 = self._conv_bn(c2, bn2)
        f = F.relu(F.linear(groups, w0, b0))
        f = F.linear(f, c1.weight[:, :, 0], c1.bias)  # (U, K, 256)
        g = f.amax(dim=1, keepdim=True)  # (U, 1, 256)
        h = F.linear(f, w2[:, 256:]) + F.linear(g, w2[:, :256], b2)
        h = F.linear(F.relu_(h), c3.weight[:, :, 0], c3.bias)  # (U, K, C)
        return h.amax(dim=1)


class PointcloudEncoder(nn.Module):
    """Uni3D's ``point_encoder``: grouping, patch encoder, EVA blocks, fc_norm, trans2embed."""

    def __init__(self, arch: Arch, pc_encoder_dim: int, embed_dim: int, num_group: int, group_size: int):
        super().__init__()
        w = arch.width
        self.num_group = num_group
        self.group_size = group_size
        # groups per patch-encoder call on the CPU (x8 on a GPU): bounds the (chunk*K, 512) activations
        self.group_chunk = 512
        self.cls_token = nn.Parameter(torch.zeros(1, 1, w))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, w))
        self.encoder = GroupEncoder(pc_encoder_dim)
        self.encoder2trans = nn.Linear(pc_encoder_dim, w)
        self.trans2embed = nn.Linear(w, embed_dim)
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, w))
        self.visual = Visual(arch)

    def group_tokens(self, points: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points: (B, N, 6) padded past lengths (B,). returns centres (B, G, 3) and patch
        features (B, G, C). A group is fixed by (instance, centre index), so repeated centres
        are encoded once."""
        b, n, _ = points.shape
        g, k = self.num_group, self.group_size
        with torch.autocast(points.device.type, enabled=False):  # neighbours chosen in float32
            cidx, centers, nbr = group(points.float(), g, k, lengths)
        key = (torch.arange(b, device=points.device)[:, None] * n + cidx).reshape(-1)  # (B*G,)
        uniq, inverse = torch.unique(key, return_inverse=True)
        first = torch.full((len(uniq),), b * g, dtype=torch.long, device=points.device)
        first.scatter_reduce_(0, inverse, torch.arange(b * g, device=points.device), "amin")
        flat_pts = points.reshape(b * n, 6)
        flat_nbr = nbr.reshape(b * g, k)
        flat_ctr = centers.reshape(b * g, 3)
        chunk = self.group_chunk * (1 if points.device.type == "cpu" else 8)
        feats = []
        for s in range(0, len(first), chunk):
            rep = first[s : s + chunk]  # (u,) representative (instance, group) rows
            rows = (rep // g) * n
            grp = flat_pts[rows[:, None] + flat_nbr[rep]]  # (u, K, 6)
            grp = torch.cat([grp[..., :3] - flat_ctr[rep][:, None, :], grp[..., 3:]], dim=-1)
            feats.append(self.encoder(grp.to(self.cls_token.dtype)))
        tokens = torch.cat(feats)[inverse].reshape(b, g, -1)
        return centers, tokens

    def forward(self, points: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """points: (B, N, 6) float32 preprocessed clouds padded past lengths (B,) -> (B, embed_dim)."""
        centers, tokens = self.group_tokens(points, lengths)
        x = self.encoder2trans(tokens)
        b = x.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        pos = torch.cat([self.cls_pos.expand(b, -1, -1), self.pos_embed(centers)], dim=1)
        x = x + pos
        for blk in self.visual.blocks:
            x = blk(x)
        return self.trans2embed(self.visual.fc_norm(x[:, 0]))


# --------------------------------------------------------------------------------------------
# the public encoder


def _resolve_arch(size, width, depth, num_heads, mlp_hidden, block_style) -> Arch:
    if size is not None and size not in SIZES:
        raise ConfigError("encoder3d.size",
                          f"unknown size '{size}'; choose one of {', '.join(SIZES)} or null")
    base = SIZES[size] if size is not None else None
    given = dict(width=width, depth=depth, num_heads=num_heads, mlp_hidden=mlp_hidden,
                 block_style=block_style)
    values = {}
    for key, value in given.items():
        if value is None:
            if base is None:
                raise ConfigError(f"encoder3d.{key}", "required when encoder3d.size is null")
            value = getattr(base, key)
        values[key] = value
    if values["block_style"] not in BLOCK_STYLES:
        raise ConfigError("encoder3d.block_style",
                          f"unknown '{values['block_style']}'; choose one of {', '.join(BLOCK_STYLES)}")
    for key in ("width", "depth", "num_heads", "mlp_hidden"):
        if int(values[key]) <= 0:
            raise ConfigError(f"encoder3d.{key}", f"must be positive, got {values[key]}")
        values[key] = int(values[key])
    if values["width"] % values["num_heads"]:
        raise ConfigError("encoder3d.num_heads",
                          f"width {values['width']} is not divisible by {values['num_heads']} heads")
    return Arch(**values)


class Uni3D(PointEncoder):
    """Uni3D point encoder of object instances.

    size: ti|s|b|l|g picks the published architecture (sizes.md); width/depth/num_heads/
    mlp_hidden/block_style override it (all five required when size is None).
    checkpoint: the published ``model.pt`` (``ckpt["module"]`` or a bare state dict, ``module.``
    prefixed or not, fp16 or fp32), loaded strictly; None keeps the seeded random init.
    batch_size: instances per forward. bf16: autocast to bfloat16 on CUDA (ignored on CPU).

    Attributes: ``name`` (file tag, "uni3d"), ``dim`` (= embed_dim), ``arch``.
    """

    def __init__(self, size: str | None = "g", width: int | None = None, depth: int | None = None,
                 num_heads: int | None = None, mlp_hidden: int | None = None, block_style: str | None = None,
                 pc_encoder_dim: int = 512, embed_dim: int = 1024, num_group: int = 512, group_size: int = 64,
                 checkpoint: str | None = None, batch_size: int = 32, bf16: bool = False, seed: int = 0,
                 name: str = "uni3d"):
        super().__init__(name)
        self.arch = _resolve_arch(size, width, depth, num_heads, mlp_hidden, block_style)
        # the published size this is, None when overrides changed it (used in error messages)
        self.size = size if size is not None and SIZES[size] == self.arch else None
        for key, value in (("pc_encoder_dim", pc_encoder_dim), ("embed_dim", embed_dim),
                           ("num_group", num_group), ("batch_size", batch_size)):
            if int(value) <= 0:
                raise ConfigError(f"encoder3d.{key}", f"must be positive, got {value}")
        if not 1 <= int(group_size) <= MIN_CLOUD:
            raise ConfigError("encoder3d.group_size",
                              f"must be in 1..{MIN_CLOUD} (clouds are only padded to {MIN_CLOUD} points), "
                              f"got {group_size}")
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise CheckpointError(checkpoint, "checkpoint file not found (option encoder3d.checkpoint)")
        self.dim = int(embed_dim)
        self.batch_size = int(batch_size)
        self.bf16 = bool(bf16)
        self.checkpoint = checkpoint
        # With a checkpoint every tensor is overwritten: build on meta, skip the (slow, 1B-parameter
        # for g) random init, then allocate on the default device and load.
        device = torch.get_default_device()
        build_on = torch.device("meta") if checkpoint is not None else device
        with torch.random.fork_rng(devices=[]), torch.device(build_on):
            torch.manual_seed(seed)
            self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
            self.point_encoder = PointcloudEncoder(self.arch, int(pc_encoder_dim), int(embed_dim),
                                                   int(num_group), int(group_size))
            for p in (self.point_encoder.cls_token, self.point_encoder.cls_pos,
                      self.point_encoder.visual.cls_token, self.point_encoder.visual.pos_embed):
                nn.init.trunc_normal_(p, std=0.02)
        if checkpoint is not None:
            if device.type != "meta":
                self.to_empty(device=device)
            load_uni3d_state_dict(checkpoint, self)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.point_encoder.cls_token.device

    def forward(self, points: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """points: (B, N, 6) preprocessed, padded past lengths (B,) -> (B, dim) raw embeddings."""
        return self.point_encoder(points, lengths)

    def encode(self, xyz: list[np.ndarray], rgb: list[np.ndarray]) -> torch.Tensor:
        """Features of instances.

        xyz[i]: (N_i, 3) float32 aligned coordinates of instance i; rgb[i]: (N_i, 3) uint8.
        returns: (I, dim) float32 on CPU, the raw ``trans2embed`` outputs (not L2-normalised).
        Instances are sorted by size and batched ``batch_size`` at a time (padding to the largest
        of each batch), under ``torch.inference_mode()``.
        """
        if len(xyz) != len(rgb):
            raise ValueError(f"encode: {len(xyz)} point arrays but {len(rgb)} colour arrays")
        clouds = [preprocess(p, c) for p, c in zip(xyz, rgb)]
        out = torch.zeros(len(clouds), self.dim, dtype=torch.float32)
        if not clouds:
            return out
        device = self.device
        order = np.argsort([len(c) for c in clouds], kind="stable")
        autocast = self.bf16 and device.type == "cuda"
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            for s in range(0, len(order), self.batch_size):
                ids = order[s : s + self.batch_size]
                lengths = torch.tensor([len(clouds[i]) for i in ids], dtype=torch.long)
                padded = np.zeros((len(ids), int(lengths.max()), 6), dtype=np.float32)
                for row, i in enumerate(ids):
                    padded[row, : len(clouds[i])] = clouds[i]
                points = torch.from_numpy(padded).to(device)
                feats = self.point_encoder(points, lengths.to(device))
                out[torch.from_numpy(ids)] = feats.float().cpu()
        return out


# --------------------------------------------------------------------------------------------
# checkpoint loading

_BLOCK_RE = re.compile(r"point_encoder\.visual\.blocks\.(\d+)\.")


def _describe(sd: dict[str, torch.Tensor]) -> Arch | None:
    """The architecture a state dict holds (None when it does not look like Uni3D)."""
    tok = sd.get("point_encoder.cls_token")
    if tok is None or tok.dim() == 0:
        return None
    blocks = {int(m.group(1)) for k in sd if (m := _BLOCK_RE.match(k))}
    depth = max(blocks) + 1 if blocks else 0
    fc1 = sd.get("point_encoder.visual.blocks.0.mlp.fc1.weight")
    fc2 = sd.get("point_encoder.visual.blocks.0.mlp.fc2.weight")
    hidden = int(fc2.shape[-1]) if fc2 is not None and fc2.dim() == 2 else 0
    if "point_encoder.visual.blocks.0.mlp.fc1_g.weight" in sd:
        style = "split_swiglu"
    elif fc1 is not None and fc1.dim() == 2 and int(fc1.shape[0]) == 2 * hidden:
        style = "packed_swiglu"
    else:
        style = "gelu"
    return Arch(int(tok.shape[-1]), depth, 0, hidden, style)


def _size_of(arch: Arch) -> str | None:
    for name, a in SIZES.items():
        if (a.width, a.depth, a.block_style) == (arch.width, arch.depth, arch.block_style):
            return name
    return None


def _architecture_problem(found: Arch, expected: Arch, model_size: str | None) -> str | None:
    guess = _size_of(found)
    hint = f": is this uni3d-{guess}?" if guess else ""
    model = f" (the model is uni3d-{model_size})" if model_size else ""
    if found.width != expected.width:
        return f"width {found.width} in checkpoint, {expected.width} expected{hint}{model}"
    if found.depth != expected.depth:
        return f"depth {found.depth} in checkpoint, {expected.depth} expected{hint}{model}"
    if found.block_style != expected.block_style:
        return f"block style {found.block_style} in checkpoint, {expected.block_style} expected{hint}{model}"
    return None


def _load_file(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found")
    return load_pt(path, CheckpointError, mmap=True)


def load_uni3d_state_dict(path_or_dict, model: Uni3D) -> None:
    """Load a published Uni3D checkpoint into ``model`` strictly.

    path_or_dict: a file path, or an already loaded object: ``{"module": state_dict, ...}`` or a
    bare state dict; keys may carry a ``module.`` prefix; tensors fp16 or fp32 (cast to the
    model's dtype). Raises CheckpointError naming the file and the first offending keys on a
    missing key, an unexpected key or a wrong shape, and names the size when the checkpoint holds
    another architecture.
    """
    path = None
    obj = path_or_dict
    if isinstance(path_or_dict, (str, Path)):
        path = Path(path_or_dict)
        obj = _load_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("module"), dict):
        obj = obj["module"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(path, "not a state dict (expected ckpt['module'] or a dict of tensors)")
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}

    expected = model.state_dict()
    found = _describe(sd)
    if found is not None:
        problem = _architecture_problem(found, model.arch, model.size)
        if problem:
            raise CheckpointError(path, problem)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]

    def _listed(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    if missing:
        raise CheckpointError(path, f"missing key(s) {_listed(missing)}")
    if unexpected:
        raise CheckpointError(path, f"unexpected key(s) {_listed(unexpected)}")
    wrong = [f"{k} has shape {tuple(sd[k].shape)} in checkpoint, {tuple(v.shape)} expected"
             for k, v in expected.items() if tuple(sd[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(path, "wrong shape: " + "; ".join(wrong[:3])
                              + (f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else ""))
    model.load_state_dict(sd, strict=True)
