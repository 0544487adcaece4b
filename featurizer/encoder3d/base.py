"""The contract every 3D encoder follows (the 3D stage, :func:`featurizer.module.stage3d`, uses only this)."""

from __future__ import annotations

import numpy as np
import torch

from featurizer.errors import ConfigError


class PointEncoder(torch.nn.Module):
    """Encodes object instances' coloured point clouds into one feature vector each.

    name: the encoder's tag in the feature file's name (``scannet_<segmenter>_<name>_feats.pt``; Chat-Scene
        calls Uni3D's "uni3d"); required: an encoder without one is refused at construction.
    dim: the feature dimension D.
    """

    dim: int = 0

    def __init__(self, name: str | None):
        super().__init__()
        if not name or not str(name).strip():
            raise ConfigError("encoder3d.name", "not set: the 3D encoder's name is part of the feature file's name")
        self.name = str(name)

    def encode(self, xyz: list[np.ndarray], rgb: list[np.ndarray]) -> torch.Tensor:
        """Features of instances given as lists of (N_i, 3) float32 aligned xyz and (N_i, 3) uint8 colours.

        returns: (I, dim) float32 on the CPU, in the order of the lists.
        """
        raise NotImplementedError
