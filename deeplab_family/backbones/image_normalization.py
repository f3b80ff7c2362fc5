"""`ImageNormalization`: raw RGB pixels in, the normalisation the backbone weights expect out."""

import keras
from keras import ops

from deeplab_family import _validation
from deeplab_family.backbones.config import (  # noqa: F401  (re-exported)
    CAFFE_BGR_MEAN,
    DEEPLAB_MEAN_RGB,
    PREPROCESSING,
    SLIM_MEAN_RGB,
    TORCH_MEAN_RGB,
    TORCH_STD_RGB,
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
    - "torch": `(x - TORCH_MEAN_RGB) / TORCH_STD_RGB` in RGB: torchvision's
      `Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])` on [0, 255] pixels,
      also timm's, mmseg's and Model Garden's.
    - "slim": `x - SLIM_MEAN_RGB` (slim's vgg_preprocessing means, RGB, no scaling).
    - "deeplab": `x - DEEPLAB_MEAN_RGB` (research/deeplab's `_MEAN_RGB`, RGB, no scaling).

    Being a layer (not a Lambda and not a tf.data step) keeps exported SavedModels and TFLite
    files on raw pixels (ARCHITECTURE.md, "Images into models"). It computes in float32 by
    default even under a mixed policy: the mean subtraction would otherwise round in bfloat16.

    Args:
        mode: str, one of `PREPROCESSING`: "caffe", "tf", "torch", "slim", "deeplab".

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

        def constant(values):
            return ops.convert_to_tensor(values, dtype=self.compute_dtype)

        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - constant(CAFFE_BGR_MEAN)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            return (x - constant(TORCH_MEAN_RGB)) / constant(TORCH_STD_RGB)
        return x - constant(SLIM_MEAN_RGB if self.mode == "slim" else DEEPLAB_MEAN_RGB)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
