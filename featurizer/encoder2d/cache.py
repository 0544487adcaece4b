"""Patch tokens cached per scene, so a fusion sweep encodes each frame once.

The cache folder is keyed by the encoder's configuration hash (``<cache_dir>/tokens/<hash>/``), and
each frame's tokens by the SHA-1 of its decoded pixels, so a changed frame or encoder never reuses
stale tokens. Tokens are kept in float32: a cached run gives bit-identical features. Disk cost per
scene: frames x rows x cols x D x 4 bytes (DINOv2-L, 150 frames, 16x16: about 160 MB), which is why
``cache_tokens`` is on for the demo and sweeps and off in ``experiment=chat_scene``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from featurizer.files import atomic_save


class TokenCache:
    """Wraps a PatchEncoder for one scene: ``patch_tokens`` reads cached tokens when every frame of
    the batch is cached, else encodes the batch and remembers it; every other attribute is the
    encoder's own. Call :meth:`save` at the end of the scene."""

    def __init__(self, encoder, path: str | Path):
        self._encoder = encoder
        self._path = Path(path)
        self._tokens: dict[str, torch.Tensor] = {}
        self._dirty = False
        self.hits = 0
        self.misses = 0
        if self._path.exists():
            try:
                self._tokens = torch.load(self._path, map_location="cpu", weights_only=True)
            except Exception:  # a corrupt cache file is rebuilt, never trusted
                self._tokens = {}

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    @staticmethod
    def _key(image: torch.Tensor) -> str:
        return hashlib.sha1(image.detach().cpu().contiguous().numpy().tobytes()).hexdigest()

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, H, W, 3) uint8 -> (B, rows, cols, D) float32 on the images' device."""
        keys = [self._key(img) for img in images]
        if all(k in self._tokens for k in keys):
            self.hits += len(keys)
            return torch.stack([self._tokens[k] for k in keys]).to(images.device)
        tokens = self._encoder.patch_tokens(images)
        self.misses += len(keys)
        for k, t in zip(keys, tokens.detach().float().cpu()):
            self._tokens[k] = t.clone()
        self._dirty = True
        return tokens

    def save(self) -> None:
        if self._dirty:
            atomic_save(self._tokens, self._path)
            self._dirty = False
