"""The contract every 2D backbone follows (the 2D stage and the fusion strategies use only this).

Pixel convention: integer pixel (u, v) = (column, row) of a frame of size ``image_size = (W, H)``
covers the continuous square [u, u+1) x [v, v+1); its centre is (u + 0.5, v + 0.5). A resize by
factors (sx, sy) maps continuous x to x * sx; a crop at offset (x0, y0) maps x to x - x0.
"""

from __future__ import annotations

import numpy as np
import torch


class PatchEncoder(torch.nn.Module):
    """A vision backbone that turns frames into a grid of patch tokens.

    Attributes:
        name: short tag used in logs and file names (e.g. ``dinov2``).
        dim: token dimension D.
        patch_size: pixels per patch side in the *network input*.
    """

    name: str = "encoder2d"
    dim: int = 0
    patch_size: int = 14

    def grid_shape(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of the patch grid produced for frames of ``image_size = (W, H)``."""
        raise NotImplementedError

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens of a batch of frames.

        images: (B, H, W, 3) uint8, all of one size.
        returns: (B, rows, cols, D) float32 (registers and CLS dropped).
        """
        raise NotImplementedError

    def pixel_to_patch(
        self, u: torch.Tensor, v: torch.Tensor, image_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The patch that encodes each frame pixel, through the exact resize/crop of preprocessing.

        u, v: (P,) integer pixel columns and rows of a frame of ``image_size``.
        returns: rows (P,) int64, cols (P,) int64, valid (P,) bool (False where the crop drops the
        pixel; rows/cols are clamped into the grid there).
        """
        raise NotImplementedError

    def encoded_region(self, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the frame region, in frame pixels, that the grid covers."""
        raise NotImplementedError

    def embed(self, images: list[np.ndarray]) -> torch.Tensor:
        """Global embeddings (CLS, or pooled output) of images of any sizes: (B, D) float32."""
        raise NotImplementedError
