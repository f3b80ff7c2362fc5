"""`Subsample`: the shortcut of a bottleneck unit that keeps its depth."""

import math

import keras

from deeplab_family import _validation


@keras.saving.register_keras_serializable(package="deeplab_family")
class Subsample(keras.layers.Layer):
    """`x[:, ::s, ::s]`: the shortcut of a unit whose input and output depths match.

    research/deeplab's slim `bottleneck` takes the identity as the shortcut of such a unit and,
    when the unit is strided, subsamples it (`subsample`: a 1x1 max pool with the stride).
    Output pixel i is input pixel s*i, as for the strided convs of the unit, and the output is
    ceil(H / s) x ceil(W / s). With `strides=1` the layer is the identity and adds no op.

    The backbone puts one on the first unit of every stage or cascaded block that keeps its
    depth, whatever its stride, so that the layers (and a checkpoint's object graph, which
    numbers them) do not depend on the output stride: weights trained at OS16 restore into an
    OS8 or OS4 build.

    Args:
        strides: int >= 1, the same along height and width.
        **kwargs: `keras.layers.Layer` arguments (name, dtype).

    Example:

    >>> x = keras.ops.reshape(keras.ops.arange(25.0), (1, 5, 5, 1))
    >>> keras.ops.convert_to_numpy(Subsample(2)(x))[0, :, :, 0].tolist()
    [[0.0, 2.0, 4.0], [10.0, 12.0, 14.0], [20.0, 22.0, 24.0]]

    Reference:
        Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017
        (Sec 3.2: the cascaded blocks copy block4).
    """

    def __init__(self, strides=1, **kwargs):
        _validation.positive_int("strides", strides)
        super().__init__(**kwargs)
        self.strides = strides

    def call(self, inputs):
        if self.strides == 1:
            return inputs
        return inputs[:, :: self.strides, :: self.strides, :]

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        s = self.strides
        return (
            batch,
            None if height is None else math.ceil(height / s),
            None if width is None else math.ceil(width / s),
            channels,
        )

    def get_config(self):
        return {**super().get_config(), "strides": self.strides}
