"""The per-scene patch-token cache returns exactly what the encoder returns, and only for the same pixels."""

from __future__ import annotations

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONF
from featurizer.encoder2d.cache import TokenCache


def test_cached_tokens_equal_fresh_ones_and_survive_a_restart(tmp_path):
    encoder = instantiate(OmegaConf.load(CONF / "encoder2d" / "tiny.yaml"))
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (3, 96, 128, 3), dtype=np.uint8))
    fresh = encoder.patch_tokens(images)

    cache = TokenCache(encoder, tmp_path / "scene.pt")
    first = cache.patch_tokens(images)
    assert (cache.hits, cache.misses) == (0, 3)
    assert torch.equal(first, fresh)
    assert cache.grid_shape((128, 96)) == encoder.grid_shape((128, 96))  # everything else is the encoder's
    cache.save()

    again = TokenCache(encoder, tmp_path / "scene.pt")  # a new run reads the file
    assert torch.equal(again.patch_tokens(images), fresh)
    assert (again.hits, again.misses) == (3, 0)

    changed = images.clone()
    changed[1, 0, 0, 0] ^= 1  # one pixel differs: never served from the cache
    out = again.patch_tokens(changed)
    assert again.misses == 3
    assert torch.equal(out, encoder.patch_tokens(changed))
    assert not torch.equal(out[1], fresh[1])


def test_corrupt_cache_file_is_rebuilt(tmp_path):
    encoder = instantiate(OmegaConf.load(CONF / "encoder2d" / "tiny.yaml"))
    path = tmp_path / "scene.pt"
    path.write_bytes(b"not a torch file")
    images = torch.zeros((1, 48, 64, 3), dtype=torch.uint8)
    cache = TokenCache(encoder, path)
    assert torch.equal(cache.patch_tokens(images), encoder.patch_tokens(images))
    assert cache.misses == 1
