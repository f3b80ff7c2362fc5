"""Resizing to a dynamic reference size, without Lambda layers."""

import keras
from keras import ops

from deeplab_family.layers import _validate


@keras.saving.register_keras_serializable(package="deeplab_family")
class ResizeLike(keras.layers.Layer):
    """Resizes `inputs[0]` to the spatial size of `inputs[1]`, read at run time.

    Used wherever a feature map must follow another's dynamic size: the image-pooling branch of
    ASPP, decoder skips, and the final upsample of logits to the input resolution. Resizing uses
    half-pixel centres (`align_corners=False`), as `tf.image.resize` does; this is what avoids the
    half-pixel mask shift that `align_corners=True` ports show at odd sizes.

    Args:
        interpolation: str. "bilinear" or "nearest".

    Example:

    >>> x, ref = keras.ops.ones((1, 17, 17, 21)), keras.ops.ones((1, 129, 129, 3))
    >>> ResizeLike()([x, ref]).shape
    (1, 129, 129, 21)
    """

    def __init__(self, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        _validate.one_of("interpolation", interpolation, {"bilinear", "nearest"})
        self.interpolation = interpolation

    def call(self, inputs):
        x, reference = inputs
        shape = ops.shape(reference)
        return ops.image.resize(x, (shape[1], shape[2]), interpolation=self.interpolation)

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation}
