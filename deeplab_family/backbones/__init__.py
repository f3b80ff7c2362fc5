"""Backbones: dilated ResNet / ResNeXt / SE-ResNeXt, presets, keras.applications import.

Importing this package registers the backbone's Keras layers, so a saved backbone loads after
`import deeplab_family.backbones`. Its pure-Python modules (`config`, `plan`, `presets`: the
stage plan, its cost and the Layer Rearrangement search) import no Keras themselves
(`tests/test_import_graph.py` checks it).
"""

from deeplab_family.backbones.config import BackboneConfig
from deeplab_family.backbones.image_normalization import ImageNormalization
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
from deeplab_family.backbones.resnet import ResNetBackbone, build_backbone
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
