"""Backbones: dilated ResNet / ResNeXt / SE-ResNeXt, presets, keras.applications import."""

from deeplab_family.backbones.config import BackboneConfig
from deeplab_family.backbones.image_normalization import ImageNormalization
from deeplab_family.backbones.presets import (
    PRESETS,
    backbone_preset,
    layer_rearranged_widths,
)
from deeplab_family.backbones.resnet import (
    ResNetBackbone,
    build_backbone,
    feature_channels,
    feature_strides,
    plan_macs,
    plan_params,
    stage_plan,
)
from deeplab_family.backbones.squeeze_excitation import SqueezeExcitation
from deeplab_family.backbones.weights import (
    import_keras_applications_weights,
    keras_applications_resnet,
)

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
