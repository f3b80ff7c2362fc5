"""Backbones: dilated ResNet / ResNeXt / SE-ResNeXt, presets, and `import_weights` (pretrained
weights of every format `deeplab_family.weights` reads).

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


def import_weights(backbone, path, format="auto"):
    """Imports pretrained weights into `backbone`: `deeplab_family.weights.import_weights`
    (keras.applications, Model Garden, slim, torch safetensors, our own `.weights.h5`)."""
    from deeplab_family.weights import import_weights as _import_weights

    return _import_weights(backbone, path, format)


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
    "import_weights",
    "layer_rearranged_widths",
    "plan_macs",
    "plan_params",
    "stage_plan",
]
