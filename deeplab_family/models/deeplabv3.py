"""DeepLabv3 (Chen et al. 2017): "deeplabv3" (ASPP, Sec 3.3) and "deeplabv3_cascade" (Sec 3.2).

Both are functional `keras.Model`s: images (float32 RGB 0..255, any size) -> backbone ->
[ASPP] -> 1x1 conv to the logits -> bilinear upsample to the input size, in float32.

Layer names are stable, so sub-models and weight mappings can rely on them:

- "backbone": the `ResNetBackbone` (nested model, see `deeplab_family.backbones`);
- "aspp": the `ASPP` layer ("deeplabv3" only);
- "logits_conv": the 1x1 conv to `num_classes`, i.e. the logits at 1 / output_stride;
- "logits_resize" and "logits": the (corner-aligned, stride-exact) upsample to the input size
  and the float32 cast.

With `backbone: {stem: deep, stride_in_1x1: false, norm_epsilon: 1e-3}` "deeplabv3" is
TensorFlow Model Garden's DeepLabV3 (DilatedResNet stem "v1" + ASPP + SegmentationHead with no
convs) exactly: the same variables, and with the same weights the same logits before the final
upsample (tests/models/test_deeplabv3.py). Two differences remain, both outside the weights:
Model Garden normalises images in its input pipeline (ours inside the model, see
`ImageNormalization`), and it pads stride-2 layers with TF "same" padding, which is asymmetric
on even sizes (ours is symmetric at every size; the two agree on odd sizes such as 513).

Every row of DeepLabv3 Tables 1, 2, 3 and 5 is a `ModelConfig`; for example Table 5's best row
(MG (1, 2, 4), ASPP (6, 12, 18), image pooling, 77.21%):

    ModelConfig.from_dict({
        "name": "deeplabv3", "num_classes": 21,
        "backbone": {"depth": 101, "output_stride": 16, "multi_grid": [1, 2, 4]},
        "head": {"image_pooling": True}})

and Table 3's best (block7, MG (1, 2, 1), 76.66%):

    ModelConfig.from_dict({
        "name": "deeplabv3_cascade", "num_classes": 21,
        "backbone": {"depth": 101, "output_stride": 16, "multi_grid": [1, 2, 1],
                     "cascade_blocks": 3}})
"""

import dataclasses

import keras

from deeplab_family import _validation
from deeplab_family.backbones import build_backbone
from deeplab_family.layers import ASPP, aspp_rates
from deeplab_family.models.common import full_resolution, image_input
from deeplab_family.models.registry import register_model

# DeepLabv3 Sec 3.3: three 3x3 branches at rates (6, 12, 18) at output stride 16; Table 5's
# "ASPP (6, 12, 18, 24)" adds a fourth. Both are scaled with the output stride by `aspp_rates`.
BASE_RATES = (6, 12, 18)
FOURTH_RATE = 24


@dataclasses.dataclass(frozen=True)
class DeepLabV3Head:
    """Head options of "deeplabv3": ASPP (+ image pooling) on res5, then the logits.

    Multi-grid, depth and output stride belong to the backbone config. BatchNorm settings
    (momentum, epsilon, synchronisation) of the ASPP are the backbone's, so one config sets
    them for the whole net.

    Args:
        aspp_rates: None (default): the rates follow the backbone's output stride, (6, 12, 18)
            at OS16, doubled at OS8, halved at OS32 (Sec 3.3), so an OS16-trained model
            evaluated at OS8 gets the paper's rates. A tuple: these rates, as given, at every
            output stride.
        fourth_rate: add the rate-24 branch of Table 5's "ASPP (6, 12, 18, 24)" (scaled with
            the output stride like the others). Only with `aspp_rates=None`.
        image_pooling: the image-level feature branch (Sec 3.3, Table 5 "Image Pooling").
        aspp_filters: channels of every ASPP branch and of its projection (256).
        dropout: dropout after the ASPP projection. The paper does not give one; Model
            Garden's default is 0 and research/deeplab uses 0.1. Default 0.
    """

    aspp_rates: tuple[int, ...] | None = None
    fourth_rate: bool = False
    image_pooling: bool = True
    aspp_filters: int = 256
    dropout: float = 0.0

    def __post_init__(self):
        if self.aspp_rates is not None:
            rates = _validation.explained(
                _validation.rates, "aspp_rates", self.aspp_rates,
                "aspp_rates must be None or a sequence of ints >= 1.",
            )
            object.__setattr__(self, "aspp_rates", rates)
            _validation.require(
                not self.fourth_rate,
                "fourth_rate=True only applies to the derived rates (aspp_rates=None); with "
                f"explicit rates list all of them. Received: aspp_rates={rates}, fourth_rate=True",
            )
        for name in ("fourth_rate", "image_pooling"):
            _validation.boolean(name, getattr(self, name))
        _validation.positive_int("aspp_filters", self.aspp_filters)
        _validation.probability("dropout", self.dropout)

    def rates_for(self, output_stride):
        """The ASPP rates at `output_stride`: explicit, or derived from it (Sec 3.3)."""
        if self.aspp_rates is not None:
            return self.aspp_rates
        base = BASE_RATES + ((FOURTH_RATE,) if self.fourth_rate else ())
        return aspp_rates(output_stride, base)


@dataclasses.dataclass(frozen=True)
class DeepLabV3CascadeHead:
    """Head options of "deeplabv3_cascade" (Sec 3.2): the logits straight from the last block.

    The cascade itself (block5..block7 = `cascade_blocks` 1..3), multi-grid and output stride
    are backbone options.

    Args:
        dropout: dropout before the logits conv (not in the paper; default 0).
    """

    dropout: float = 0.0

    def __post_init__(self):
        _validation.probability("dropout", self.dropout)


def _logits(x, images, num_classes, dropout, output_stride, dtype):
    if dropout > 0:
        x = keras.layers.Dropout(dropout, dtype=dtype, name="dropout")(x)
    # A 1x1 conv with bias (Sec 3.3: "the final 1x1 convolution which generates the final
    # logits"). N(0, 0.01) init as Model Garden's and research/deeplab's logits layers.
    x = keras.layers.Conv2D(
        num_classes,
        1,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        dtype=dtype,
        name="logits_conv",
    )(x)
    # Corner-aligned and stride-exact (see `full_resolution`): no mask shift at any input size.
    return full_resolution(x, images, "logits", dtype=dtype, stride=output_stride)


@register_model("deeplabv3", DeepLabV3Head)
def build_deeplabv3(config, head, dtype=None):
    """DeepLabv3 with ASPP (Sec 3.3, Fig. 5): backbone -> ASPP on res5 -> logits -> upsample."""
    backbone_config = config.backbone
    images = image_input()
    features = build_backbone(backbone_config, dtype=dtype, name="backbone")(images)
    x = ASPP(
        filters=head.aspp_filters,
        rates=head.rates_for(backbone_config.output_stride),
        image_pooling=head.image_pooling,
        dropout=head.dropout,
        synchronized=backbone_config.synchronized_bn,
        norm_momentum=backbone_config.norm_momentum,
        norm_epsilon=backbone_config.norm_epsilon,
        dtype=dtype,
        name="aspp",
    )(features["res5"])
    logits = _logits(x, images, config.num_classes, 0.0, backbone_config.output_stride, dtype)
    return keras.Model(images, {"logits": logits}, name="deeplabv3")


@register_model("deeplabv3_cascade", DeepLabV3CascadeHead)
def build_deeplabv3_cascade(config, head, dtype=None):
    """DeepLabv3 without ASPP (Sec 3.2, Fig. 3): the logits from the last cascaded block.

    `features["res5"]` is the last block's output: block4 (res5) itself with
    `cascade_blocks=0`, block7 with 3 (see `backbones.resnet.feature_layout`).
    """
    images = image_input()
    features = build_backbone(config.backbone, dtype=dtype, name="backbone")(images)
    logits = _logits(
        features["res5"], images, config.num_classes, head.dropout,
        config.backbone.output_stride, dtype,
    )
    return keras.Model(images, {"logits": logits}, name="deeplabv3_cascade")
