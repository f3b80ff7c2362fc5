"""The tiny configs of the tests, in one table: every test that builds a backbone or a model at
test size takes its sizes from here.

Each backbone keeps the full topology (four stages, every feature level) with few channels, so
that a build takes a fraction of a second; the entries differ only where a group of tests needs
it, and the comment says why. Per-test variations (a deep stem, groups, an output stride) stay
in the tests, as overrides of these.
"""

import numpy as np

from deeplab_family.backbones import BackboneConfig

# The backbone tests and the per-paper model tests (PAN, GCN, ExFuse, the decoder geometry):
# widths that double per stage as in ResNet; 7 units (1, 1, 2, 3), so that res5 keeps the three
# multi-grid rates and ExFuse's LR has units to move between stages.
BACKBONE = dict(
    stage_depths=(1, 1, 2, 3),
    stage_widths=(4, 8, 16, 32),
    stage_channels=(8, 16, 32, 64),
    stem_width=8,
)

# The loop over every registered model (tests/models/test_all_models.py), which builds each at
# two output strides and in mixed precision: the same units, narrower.
NARROW_BACKBONE = dict(
    stage_depths=(1, 1, 2, 3),
    stage_widths=(4, 8, 8, 8),
    stage_channels=(8, 16, 16, 16),
    stem_width=4,
    output_stride=16,
)

# One entry per registered model name, on NARROW_BACKBONE: {"backbone": overrides, "head": head}.
# Each switches on what its model can vary (multi-grid, cascaded blocks, groups, a deep stem).
MODELS = {
    "deeplabv3": {
        "backbone": {"multi_grid": [1, 2, 4], "stem": "deep"},
        "head": {"aspp_filters": 8, "image_pooling": True, "dropout": 0.1},
    },
    "deeplabv3_cascade": {
        "backbone": {"multi_grid": [1, 2, 1], "cascade_blocks": 2},
        "head": {},
    },
    "pan": {
        "backbone": {"stem": "deep"},
        "head": {"filters": 8},
    },
    "gcn": {
        "backbone": {"groups": 2},
        "head": {"kernel_size": 5},
    },
    "exfuse": {
        "backbone": {"groups": 2},
        "head": {"kernel_size": 5, "ss_filters": 8, "lr_stage_depths": [1, 1, 1, 2]},
    },
}

# DeepLabv3's table rows (tests/models/test_deeplabv3.py: some forty builds, up to three
# cascaded blocks of res5's width each): one unit per stage but 3 in res5, so that multi-grid
# keeps its 3 rates.
SHALLOW_BACKBONE = dict(
    stage_depths=(1, 1, 1, 3),
    stage_widths=(4, 4, 8, 8),
    stage_channels=(8, 8, 16, 16),
    stem_width=4,
)

# The per-paper heads on BACKBONE. ExFuse's LR on the tiny net: its 7 units moved towards the
# early stages, as {3, 4, 23, 3} -> {8, 8, 9, 8} does for ResNeXt-101.
PAN_HEAD = {"filters": 16}
GCN_HEAD = {"kernel_size": 5}
EXFUSE_LR_DEPTHS = (2, 2, 1, 2)
EXFUSE_HEAD = {"kernel_size": 5, "ss_filters": 8, "lr_stage_depths": EXFUSE_LR_DEPTHS}

# Every registered model at a few thousand weights, for the checkpoint, loss and export tests
# (`ModelConfig(name, num_classes, backbone=dict(FLAT_BACKBONE), head=FLAT_HEADS[name])`): one
# unit per stage and one width, the smallest net with every feature level.
FLAT_BACKBONE = {
    "stage_depths": (1, 1, 1, 1),
    "stage_widths": (8, 8, 8, 8),
    "stage_channels": (16, 16, 16, 16),
    "stem_width": 8,
    "output_stride": 16,
}
FLAT_HEADS = {
    "deeplabv3": {"aspp_filters": 8},
    "deeplabv3_cascade": {},
    "pan": {"filters": 8},
    "gcn": {"kernel_size": 3},
    "exfuse": {"kernel_size": 3, "ss_filters": 8, "lr_stage_depths": [1, 1, 1, 1]},
}


def tiny_config(**overrides):
    """`BACKBONE` as a `BackboneConfig`, with `overrides`."""
    return BackboneConfig(**{**BACKBONE, **overrides})


def random_images(h, w, batch=1, seed=0):
    """Float32 RGB pixels in [0, 255], the backbone input contract."""
    return np.random.default_rng(seed).uniform(0, 255, (batch, h, w, 3)).astype("float32")
