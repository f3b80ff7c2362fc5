"""Dilated ResNet / ResNeXt / SE-ResNeXt backbones (DeepLabv3 Sec 3.1-3.2, ExFuse, PAN).

`build_backbone` builds the Keras model from `plan.stage_plan`, the one place where
`output_stride`, multi-grid and cascaded blocks become strides and atrous rates; `plan_macs`
and `plan_params` count the same plan's cost without Keras.
"""

import functools

import keras

from deeplab_family.backbones.config import BackboneConfig
from deeplab_family.backbones.image_normalization import ImageNormalization
from deeplab_family.backbones.plan import (  # noqa: F401  (re-exported: the model's geometry)
    FEATURE_KEYS,
    STAGE_NAMES,
    STEM_STRIDE,
    StageSpec,
    UnitSpec,
    feature_channels,
    feature_layout,
    feature_strides,
    plan_macs,
    plan_params,
    se_reduced_filters,
    stage_plan,
    stem_specs,
)
from deeplab_family.backbones.squeeze_excitation import SqueezeExcitation
from deeplab_family.backbones.subsample import Subsample
from deeplab_family.layers.conv import ConvNormAct

# --------------------------------------------------------------------------------------------
# Model


def _build_features(images, config, dtype):
    conv = functools.partial(
        ConvNormAct,
        synchronized=config.synchronized_bn,
        norm_momentum=config.norm_momentum,
        norm_epsilon=config.norm_epsilon,
        dtype=dtype,
    )
    # Normalisation stays float32 under mixed precision (see ImageNormalization).
    x = ImageNormalization(config.preprocessing, name="preprocess")(images)
    for name, filters, kernel, stride in stem_specs(config):
        x = conv(filters, kernel, strides=stride, name=name)(x)
    # keras.applications / Caffe pad the max pool by 1 on each side. After a ReLU, zero padding
    # acts as -inf padding, and unlike TF's "same" it is symmetric on even sizes as well.
    x = keras.layers.ZeroPadding2D(1, dtype=dtype, name="stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, dtype=dtype, name="stem_pool")(x)

    outputs = {}
    for stage in stage_plan(config):
        for unit in stage.units:
            x = _bottleneck(x, unit, config, conv, dtype)
            if unit.name == stage.output_unit:
                outputs[stage.name] = x
    return {key: outputs[stage] for key, stage in feature_layout(config)}


def _bottleneck(x, unit, config, conv, dtype):
    name = unit.name
    stride_1x1 = unit.stride if config.stride_in_1x1 else 1
    stride_3x3 = 1 if config.stride_in_1x1 else unit.stride
    shortcut = x
    if unit.shortcut == "projection":
        shortcut = conv(
            unit.out_channels, 1, strides=unit.stride, activation=None, name=f"{name}_shortcut"
        )(x)
    elif unit.stride_position:
        # slim's `subsample` (pixel s*i, as the strided convs); at stride 1 the identity. Present
        # at every stride, so that the layer list does not depend on the output stride.
        shortcut = Subsample(unit.stride, dtype=dtype, name=f"{name}_shortcut")(x)
    y = conv(unit.width, 1, strides=stride_1x1, name=f"{name}_conv1")(x)
    y = conv(
        unit.width,
        3,
        strides=stride_3x3,
        dilation_rate=unit.dilation_rate,
        groups=config.groups,
        name=f"{name}_conv2",
    )(y)
    y = conv(unit.out_channels, 1, activation=None, name=f"{name}_conv3")(y)
    if config.se_ratio is not None:
        reduced = se_reduced_filters(unit.out_channels, config.se_ratio)
        y = SqueezeExcitation(reduced, dtype=dtype, name=f"{name}_se")(y)
    y = keras.layers.Add(dtype=dtype, name=f"{name}_add")([y, shortcut])
    return keras.layers.Activation("relu", dtype=dtype, name=f"{name}_out")(y)


@keras.saving.register_keras_serializable(package="deeplab_family")
class ResNetBackbone(keras.Model):
    """A functional ResNet-family backbone: images -> {"res2", "res3", "res4", "res5", ...}.

    Built from a `BackboneConfig`: ResNet-50/101/152 v1, ResNeXt, SE, the deep stem, output
    stride 4/8/16/32 (and up to 256 with cascaded blocks), multi-grid and cascaded blocks.
    The input is float32 RGB in [0, 255]; the first layer normalises it as the weights expect
    (`config.preprocessing`: "caffe", "tf", "torch", "slim" or "deeplab").
    Outputs are a dict in the order res2, res3, res4, res5 (+ "block4".. with cascade); the
    strides are in `feature_strides`, the channels in `feature_channels`.

    The variables (names, shapes, order) do not depend on `output_stride`, `multi_grid` or the
    stride placement, and neither does the list of layers (see `Subsample`), so a checkpoint
    trained at OS16 loads into an OS8 or OS4 build.

    Layer names are stable: "preprocess", "stem_conv1".., "stem_pool", then
    "<stage>_unit<j>_{shortcut,conv1,conv2,conv3,se,add,out}" with stage in res2..res5,
    block5..block7; each conv is a `ConvNormAct` with sublayers `.conv` and `.norm`.
    "<unit>_shortcut" is a `ConvNormAct` where the unit changes depth (the first unit of each
    standard stage), a `Subsample` on the unit that carries a stage's stride where it keeps its
    depth (the first unit of a cascaded block; with `stride_unit="last"` the last unit of
    res2..res4: the identity, subsampled when strided), and absent on the other units.

    Args:
        config: a `BackboneConfig` or its dict.
        image_shape: the input shape without batch; height and width may be None.
        dtype: dtype policy of the layers (e.g. "mixed_bfloat16"); None = the global policy
            at build time.

    Example:

    >>> backbone = build_backbone(BackboneConfig(depth=50, output_stride=16))
    >>> {k: tuple(v.shape) for k, v in backbone(keras.ops.zeros((1, 65, 65, 3))).items()}
    {'res2': (1, 17, 17, 256), 'res3': (1, 9, 9, 512), 'res4': (1, 5, 5, 1024),
     'res5': (1, 5, 5, 2048)}

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
        Xie et al., "Aggregated Residual Transformations for Deep Neural Networks", CVPR 2017.
        Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017.
    """

    def __init__(self, config=None, image_shape=(None, None, 3), dtype=None, **kwargs):
        config = BackboneConfig() if config is None else BackboneConfig.from_dict(config)
        image_shape = tuple(image_shape)
        policy = keras.dtype_policies.get(dtype) if dtype is not None else None
        policy = policy or keras.config.dtype_policy()
        images = keras.Input(shape=image_shape, dtype="float32", name="images")
        features = _build_features(images, config, policy.name)
        kwargs.setdefault("name", "resnet_backbone")
        super().__init__(inputs=images, outputs=features, **kwargs)
        self.backbone_config = config
        self.image_shape = image_shape
        self.layer_dtype = policy.name
        self._feature_strides = feature_strides(config)
        self._feature_channels = feature_channels(config)

    @property
    def feature_strides(self):
        """{"res2": 4, "res3": 8, "res4": 16, "res5": output_stride, ...}."""
        return dict(self._feature_strides)

    @property
    def feature_channels(self):
        return dict(self._feature_channels)

    @property
    def output_stride(self):
        return self.backbone_config.output_stride

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "config": self.backbone_config.to_dict(),
            "image_shape": list(self.image_shape),
            "dtype": self.layer_dtype,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def build_backbone(config=None, image_shape=(None, None, 3), dtype=None, name=None):
    """Builds a `ResNetBackbone` from a `BackboneConfig`, its dict, or a preset name.

    Args:
        config: `BackboneConfig`, dict (unknown keys are an error) or a preset name such as
            "resnet101" (see `presets.PRESETS`). None = ResNet-50 at output stride 32.
        image_shape: input shape without batch; H and W may be None.
        dtype: dtype policy for the layers, e.g. "mixed_bfloat16". The global policy is never
            changed here.
        name: model name.
    """
    if isinstance(config, str):
        from deeplab_family.backbones.presets import backbone_preset

        config = backbone_preset(config)
    kwargs = {"name": name} if name else {}
    return ResNetBackbone(config, image_shape=image_shape, dtype=dtype, **kwargs)
