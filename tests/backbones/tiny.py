"""Tiny backbone configs for fast tests: full topology (every feature), few channels."""

import numpy as np

from deeplab_family.backbones import BackboneConfig

TINY = dict(
    stage_depths=(1, 1, 2, 3),
    stage_widths=(4, 8, 16, 32),
    stage_channels=(8, 16, 32, 64),
    stem_width=8,
)


def tiny_config(**overrides):
    return BackboneConfig(**{**TINY, **overrides})


def random_images(h, w, batch=1, seed=0):
    """Float32 RGB pixels in [0, 255], the backbone input contract."""
    return np.random.default_rng(seed).uniform(0, 255, (batch, h, w, 3)).astype("float32")
