"""`ImageNormalization`: raw RGB pixels in, the normalisation the backbone weights expect out."""

import keras
from keras import ops

from deeplab_family import _validation
from deeplab_family.backbones.config import (  # noqa: F401  (re-exported)
    CAFFE_BGR_MEAN,
    PREPROCESSING,
    zero_pixel,
)

# The modes, their constants and `zero_pixel` live in the Keras-free config module, so configs
# can pad with the right pixel without importing Keras; they are re-exported here.


@keras.saving.register_keras_serializable(package="deeplab_family")
class ImageNormalization(keras.layers.Layer):
    """First layer of every backbone: maps float32 RGB pixels in [0, 255] to the weights' input.

    - "caffe": RGB -> BGR, then subtract the ImageNet BGR mean; exactly
      `keras.applications.resnet.preprocess_input` (no scaling).
    - "tf": `x / 127.5 - 1`, i.e. [-1, 1].

    Being a layer (not a Lambda and not a tf.data step) keeps exported SavedModels and TFLite
    files on raw pixels (ARCHITECTURE.md, "Images into models"). It computes in float32 by
    default even under a mixed policy: the mean subtraction would otherwise round in bfloat16.

    Args:
        mode: str. "caffe" or "tf".

    Example:

    >>> x = ImageNormalization("tf")(keras.ops.full((1, 2, 2, 3), 255.0))
    >>> keras.ops.convert_to_numpy(x)[0, 0, 0].tolist()
    [1.0, 1.0, 1.0]
    """

    def __init__(self, mode="caffe", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        _validation.one_of("mode", mode, PREPROCESSING)
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
            return x - ops.convert_to_tensor(CAFFE_BGR_MEAN, dtype=self.compute_dtype)
        return x / 127.5 - 1.0

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
