"""Atrous Spatial Pyramid Pooling with image-level features: `ASPP` and `aspp_rates`."""

import keras
from keras import ops

from deeplab_family import _validation, defaults
from deeplab_family.layers.conv import ConvNormAct, norm_config, store_norm_settings
from deeplab_family.layers.resize import ResizeLike

# DeepLabv3 Sec 3.3: rates (6, 12, 18) at output_stride 16, "doubled when output_stride = 8".
_BASE_OUTPUT_STRIDE = 16


def aspp_rates(output_stride, base=(6, 12, 18)):
    """ASPP atrous rates for an output stride, scaled from the rates `base` used at OS16.

    DeepLabv3 Sec 3.3 fixes (6, 12, 18) at output stride 16 and doubles them at 8. The rate is a
    distance on the feature map, so it scales inversely with the stride: halving at 32 keeps the
    same field of view in image pixels, and requires every base rate to be even.

    Args:
        output_stride: int. One of `defaults.OUTPUT_STRIDES` (4, 8, 16, 32). At 4 (DeepLabv3
            Appendix C's Cityscapes evaluation) the rule doubles them again: (24, 48, 72).
        base: sequence of ints. The rates at output stride 16.

    Returns:
        A tuple of ints.

    Example:

    >>> aspp_rates(8)
    (12, 24, 36)
    """
    _validation.one_of("output_stride", output_stride, defaults.OUTPUT_STRIDES)
    base = _validation.rates("base", base)
    if output_stride <= _BASE_OUTPUT_STRIDE:
        return tuple(r * (_BASE_OUTPUT_STRIDE // output_stride) for r in base)
    factor = output_stride // _BASE_OUTPUT_STRIDE
    if any(r % factor for r in base):
        raise ValueError(
            f"base rates must be divisible by {factor} to scale them to output_stride="
            f"{output_stride}. Received: base={base}"
        )
    return tuple(r // factor for r in base)


@keras.saving.register_keras_serializable(package="deeplab_family")
class ASPP(keras.layers.Layer):
    """Atrous Spatial Pyramid Pooling augmented with image-level features (DeepLabv3 Sec 3.3).

    Parallel branches on the same feature map, all with `filters` channels and BatchNorm + ReLU
    (Fig. 5): one 1x1 conv, one 3x3 atrous conv per rate, and an image-pooling branch (global
    average pool -> 1x1 conv -> bilinear upsample to the feature map's run-time size). The
    branches are concatenated in that order and projected by a 1x1 conv, followed by dropout.

    The ASPP columns of DeepLabv3 Table 5 are arguments: `rates=(6, 12, 18, 24)` adds the
    fourth branch, `image_pooling=False` removes the image-level features (multi-grid belongs
    to the backbone).

    About BatchNorm in the image-pooling branch: the paper puts BN after the 1x1 conv of the
    pooled 1x1 map, and so do we. Its training statistics are then taken over the batch only
    (one value per image and channel); with batch size 1 in training mode the variance is zero,
    the branch outputs BN's beta whatever the image, and its conv receives no gradient. Train
    with several images per replica (DeepLabv3 Sec 4.1 uses batch 16 to train BN), or with BN
    frozen, as in the paper's final fine-tuning at output stride 8.

    Args:
        filters: int. Channels of every branch and of the output (256 in the paper).
        rates: sequence of ints. One 3x3 atrous branch per rate; see `aspp_rates` for the rates
            that follow the output stride. May be empty.
        image_pooling: bool. Whether to add the image-level feature branch.
        dropout: float in [0, 1). Dropout after the projection. The paper does not give it;
            research/deeplab uses 0.1 there, the default here is 0 (none).
        synchronized, norm_momentum, norm_epsilon: the BatchNorm settings of every branch, as
            `ConvNormAct`'s.

    Example:

    >>> aspp = ASPP(filters=256, rates=aspp_rates(16))
    >>> tuple(aspp(keras.ops.ones((2, 33, 33, 64))).shape)
    (2, 33, 33, 256)

    Reference:
        Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017.
    """

    def __init__(
        self,
        filters=256,
        rates=(6, 12, 18),
        image_pooling=True,
        dropout=0.0,
        synchronized=False,
        norm_momentum=defaults.BN_MOMENTUM,
        norm_epsilon=defaults.BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _validation.positive_int("filters", filters)
        rates = _validation.rates("rates", rates)
        _validation.probability("dropout", dropout)
        self.filters = filters
        self.rates = rates
        self.image_pooling = bool(image_pooling)
        self.dropout = float(dropout)
        unit = store_norm_settings(self, synchronized, norm_momentum, norm_epsilon)
        self.conv1x1 = ConvNormAct(filters, 1, name="conv1x1", **unit)
        # A tuple, not a list: tf.train.Checkpoint does not see layers held in Keras-tracked
        # lists or dicts, and training checkpoints must hold every variable.
        # Tap by tap (`skip_padded_taps`): at rates comparable to the map size most of a dense
        # 3x3 conv multiplies padding (Sec 3.3, Fig. 4). Skipping it is the same function, and
        # faster under XLA on CPU (see AtrousConv2D).
        self.atrous_convs = tuple(
            ConvNormAct(
                filters, 3, dilation_rate=rate, skip_padded_taps=True, name=f"atrous_{i}", **unit
            )
            for i, rate in enumerate(rates)
        )
        if self.image_pooling:
            self.pool = keras.layers.GlobalAveragePooling2D(
                keepdims=True, dtype=self.dtype_policy, name="image_pool"
            )
            self.pool_conv = ConvNormAct(filters, 1, name="image_pool_conv", **unit)
            # Bilinear from a 1x1 map is a broadcast; ResizeLike reads the run-time size, so
            # the branch works with None H and W and needs no Lambda.
            self.pool_resize = ResizeLike("bilinear", dtype=self.dtype_policy, name="image_pool_up")
        else:
            self.pool = self.pool_conv = self.pool_resize = None
        self.project = ConvNormAct(filters, 1, name="project", **unit)
        self.dropout_layer = (
            keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name="dropout")
            if self.dropout > 0
            else None
        )

    @property
    def num_branches(self):
        return 1 + len(self.rates) + int(self.image_pooling)

    def build(self, input_shape):
        batch, height, width, channels = input_shape
        self.conv1x1.build(input_shape)
        for conv in self.atrous_convs:
            conv.build(input_shape)
        if self.image_pooling:
            self.pool_conv.build((batch, 1, 1, channels))
        self.project.build((batch, height, width, self.filters * self.num_branches))

    def call(self, inputs, training=None):
        branches = [self.conv1x1(inputs, training=training)]
        branches += [conv(inputs, training=training) for conv in self.atrous_convs]
        if self.image_pooling:
            pooled = self.pool_conv(self.pool(inputs), training=training)
            branches.append(self.pool_resize([pooled, inputs]))
        x = ops.concatenate(branches, axis=-1) if len(branches) > 1 else branches[0]
        x = self.project(x, training=training)
        if self.dropout_layer is not None:
            x = self.dropout_layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "rates": self.rates,
            "image_pooling": self.image_pooling,
            "dropout": self.dropout,
            **norm_config(self),
        }
