"""Backbones: dilated ResNet / ResNeXt / SE-ResNeXt, presets, keras.applications import.

The config, the presets and the plan (`stage_plan`, `plan_macs`, `plan_params`,
`feature_strides`, ...) are pure Python: importing them, or searching over configs, loads no
Keras. The Keras parts (`build_backbone`, `ResNetBackbone` and its layers, the weight import)
are imported on first use; importing `deeplab_family.models` (or
`deeplab_family.backbones.resnet`) registers the backbone's layers for `.keras` loading.
"""

import importlib

from deeplab_family.backbones.config import BackboneConfig
from deeplab_family.backbones.plan import (
    feature_channels,
    feature_strides,
    plan_macs,
    plan_params,
    stage_plan,
)
from deeplab_family.backbones.presets import (
    PRESETS,
    backbone_preset,
    layer_rearranged_widths,
)

_LAZY = {
    "ImageNormalization": "image_normalization",
    "ResNetBackbone": "resnet",
    "build_backbone": "resnet",
    "SqueezeExcitation": "squeeze_excitation",
    "import_keras_applications_weights": "weights",
    "keras_applications_resnet": "weights",
}

__all__ = [
    "PRESETS",
    "BackboneConfig",
    "ImageNormalization",
    "ResNetBackbone",
    "SqueezeExcitation",
    "backbone_preset",
    "build_backbone",
    "feature_channels",
    "feature_strides",
    "import_keras_applications_weights",
    "keras_applications_resnet",
    "layer_rearranged_widths",
    "plan_macs",
    "plan_params",
    "stage_plan",
]


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"deeplab_family.backbones.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'deeplab_family.backbones' has no attribute {name!r}")
