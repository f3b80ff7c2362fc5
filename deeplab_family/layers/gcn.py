"""Global Convolutional Network blocks ("Large Kernel Matters"): `GlobalConvolution` and
`BoundaryRefinement`, the baseline decoder that ExFuse builds on (ExFuse Sec 3, Fig 2)."""

import keras
from keras import ops

from deeplab_family import _validation
from deeplab_family.layers.conv import ConvNormAct


@keras.saving.register_keras_serializable(package="deeplab_family")
class GlobalConvolution(keras.layers.Layer):
    """Global Convolutional Network block (GCN, Peng et al. 2017, Sec 3.1, Fig 2B).

    A dense k x k receptive field at the cost of 2 x (k + k) taps: the sum of a (k x 1 then
    1 x k) branch and a (1 x k then k x 1) branch. As in GCN, the four convs are plain convs
    with bias, without BatchNorm or activation ("no nonlinearity after convolution layers").
    Every conv outputs `filters` channels (in GCN, the number of classes).

    Args:
        filters: int. Output channels (21 for PASCAL VOC).
        kernel_size: int. The odd k of the separable large kernel (15 in GCN's best setting).

    Example:

    >>> gcn = GlobalConvolution(21, kernel_size=15)
    >>> tuple(gcn(keras.ops.ones((1, 33, 33, 64))).shape)
    (1, 33, 33, 21)

    Reference:
        Peng et al., "Large Kernel Matters -- Improve Semantic Segmentation by Global
        Convolutional Network", CVPR 2017.
    """

    def __init__(self, filters, kernel_size=15, **kwargs):
        super().__init__(**kwargs)
        _validation.positive_int("filters", filters)
        _validation.positive_int("kernel_size", kernel_size)
        # An even "same" kernel is off-centre by half a pixel; GCN only uses odd k (Table 1).
        _validation.odd_int("kernel_size", kernel_size)
        self.filters = filters
        self.kernel_size = kernel_size

        def conv(shape, name):
            return ConvNormAct(
                filters, shape, use_norm=False, activation=None, dtype=self.dtype_policy, name=name
            )

        k = kernel_size
        self.left_1 = conv((k, 1), "left_kx1")
        self.left_2 = conv((1, k), "left_1xk")
        self.right_1 = conv((1, k), "right_1xk")
        self.right_2 = conv((k, 1), "right_kx1")

    def build(self, input_shape):
        mid = (*input_shape[:3], self.filters)
        self.left_1.build(input_shape)
        self.left_2.build(mid)
        self.right_1.build(input_shape)
        self.right_2.build(mid)

    def call(self, inputs):
        left = self.left_2(self.left_1(inputs))
        right = self.right_2(self.right_1(inputs))
        return ops.add(left, right)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="deeplab_family")
class BoundaryRefinement(keras.layers.Layer):
    """Boundary Refinement block (GCN, Peng et al. 2017, Sec 3.2, Fig 2C).

    A residual block `x + conv3x3(relu(conv3x3(x)))` that refines the score map near object
    boundaries. As in GCN it has no BatchNorm; the convs have biases. The channels are those of
    the input (the residual needs it), so they are read in `build` unless given.

    Args:
        filters: int or None. Channels of the input and output; `None` takes them from the
            input. When given, it must match the input.

    Example:

    >>> br = BoundaryRefinement()
    >>> tuple(br(keras.ops.ones((1, 33, 33, 21))).shape)
    (1, 33, 33, 21)

    Reference:
        Peng et al., "Large Kernel Matters -- Improve Semantic Segmentation by Global
        Convolutional Network", CVPR 2017.
    """

    def __init__(self, filters=None, **kwargs):
        super().__init__(**kwargs)
        if filters is not None:
            _validation.positive_int("filters", filters)
        self.filters = filters
        self.conv1 = None
        self.conv2 = None

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"BoundaryRefinement needs a known channel count. Received: {input_shape}"
            )
        if self.filters is not None and self.filters != channels:
            raise ValueError(
                "filters must equal the input channels (the block is residual). Received: "
                f"filters={self.filters}, input channels={channels}"
            )
        self.conv1 = ConvNormAct(
            channels, 3, use_norm=False, activation="relu", dtype=self.dtype_policy, name="conv1"
        )
        self.conv2 = ConvNormAct(
            channels, 3, use_norm=False, activation=None, dtype=self.dtype_policy, name="conv2"
        )
        self.conv1.build(input_shape)
        self.conv2.build(input_shape)

    def call(self, inputs):
        return ops.add(inputs, self.conv2(self.conv1(inputs)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}
