"""`SqueezeExcitation`: channel gating of Hu et al. (2018), as used in ExFuse's ResNeXt 131."""

import keras
from keras import ops

from deeplab_family import _validation


@keras.saving.register_keras_serializable(package="deeplab_family")
class SqueezeExcitation(keras.layers.Layer):
    """Squeeze-and-Excitation: `x * sigmoid(W2 relu(W1 mean_hw(x)))`.

    Global average pool, a 1x1 conv down to `reduced_filters` (with bias) and ReLU, a 1x1 conv
    back to the input channels (with bias) and a sigmoid gate that rescales each channel. In a
    ResNet unit it sits on the residual branch after the last BN, before the addition (Hu et
    al., Fig. 3), as in Model Garden's `BottleneckBlock`, whose reduced width,
    `max(1, int(channels * se_ratio))`, `plan.se_reduced_filters` reproduces.

    The two projections are 1x1 `Conv2D`s on a 1x1 map (not `Dense`) so their kernels have
    Model Garden's shapes, `(1, 1, C, C_r)` and `(1, 1, C_r, C)`.

    Args:
        reduced_filters: int. Width of the bottleneck of the gate (C * 1/16 in the paper).
        kernel_initializer: initializer of the two projections.

    Example:

    >>> tuple(SqueezeExcitation(4)(keras.ops.ones((1, 9, 9, 64))).shape)
    (1, 9, 9, 64)

    Reference:
        Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018.
    """

    def __init__(self, reduced_filters, kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        _validation.positive_int("reduced_filters", reduced_filters)
        self.reduced_filters = reduced_filters
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.reduce = self._conv(reduced_filters, "relu", "reduce")
        self.expand = None  # needs the input channels: created in build

    def _conv(self, filters, activation, name):
        return keras.layers.Conv2D(
            filters,
            1,
            activation=activation,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"SqueezeExcitation needs known channels. Received: {input_shape}")
        pooled = (input_shape[0], 1, 1, channels)
        self.reduce.build(pooled)
        self.expand = self._conv(channels, "sigmoid", "expand")
        self.expand.build((input_shape[0], 1, 1, self.reduced_filters))

    def call(self, inputs):
        gate = ops.mean(inputs, axis=(1, 2), keepdims=True)
        return inputs * self.expand(self.reduce(gate))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "reduced_filters": self.reduced_filters,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
