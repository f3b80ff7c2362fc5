"""Resizing to a dynamic reference size, without Lambda layers."""

import keras
from keras import ops

from deeplab_family import _validation as _validate


@keras.saving.register_keras_serializable(package="deeplab_family")
class ResizeLike(keras.layers.Layer):
    """Resizes `inputs[0]` to the spatial size of `inputs[1]`, read at run time.

    Used wherever a feature map must follow another's dynamic size: the image-pooling branch of
    ASPP, decoder skips, and the final upsample of logits to the input resolution.

    Alignment matters. The backbones here pad every strided conv and pool symmetrically, so
    feature pixel `i` of a stride-`s` map is centred on image pixel `s * i` (corner
    alignment, as in research/deeplab). Three modes:

    - `align_corners=False` (default): half-pixel centres, as `tf.image.resize`. Feature pixel
      `i` lands on `s * i + (s - 1) / 2`: a shift of 7.5 px at stride 16. Fine between maps
      whose alignment is already half-pixel (and for resizing pooled 1x1 maps, where it does
      not matter).
    - `align_corners=True, stride=None`: research/deeplab's `resize_bilinear(...,
      align_corners=True)`. Exact when `H = s * (h - 1) + 1` (513 at any stride up to 512,
      769, ...), a stretch of under one source pixel otherwise.
    - `align_corners=True, stride=s`: exact for every size. Output pixel `p` samples the source
      at `p / s`; past the last source pixel the border is held (as bilinear clamps). Built
      from builtin TFLite ops: an edge pad of one pixel, an `align_corners` resize from
      `h + 1` to `s * h + 1`, and a crop to `H`. `s` is the ratio of the two maps' strides:
      the output stride for the final logits, stride(high) / stride(low) for the decoders'
      steps (`GlobalAttentionUpsample`, `SemanticEmbeddingBranch`); 1 is the identity.

    `keras.ops.image.resize` has no `align_corners`, hence the TF op for those modes.

    Args:
        interpolation: str. "bilinear" or "nearest".
        align_corners: bool. See above.
        stride: int or None. Ratio of the output grid to the input grid, with
            `align_corners=True`.

    Example:

    >>> x, ref = keras.ops.ones((1, 33, 33, 21)), keras.ops.ones((1, 513, 513, 3))
    >>> tuple(ResizeLike(align_corners=True, stride=16)([x, ref]).shape)
    (1, 513, 513, 21)
    """

    def __init__(self, interpolation="bilinear", align_corners=False, stride=None, **kwargs):
        super().__init__(**kwargs)
        _validate.one_of("interpolation", interpolation, {"bilinear", "nearest"})
        if stride is not None:
            _validate.positive_int("stride", stride)
            if not align_corners:
                raise ValueError(
                    "stride is only used with align_corners=True. "
                    f"Received: align_corners={align_corners}, stride={stride}"
                )
        self.interpolation = interpolation
        self.align_corners = align_corners
        self.stride = stride

    def _resize_corners(self, x, size):
        import tensorflow as tf

        if self.interpolation == "bilinear":
            # ResizeBilinear always returns float32; keep the compute dtype.
            y = tf.compat.v1.image.resize_bilinear(x, size, align_corners=True)
            return ops.cast(y, x.dtype)
        return tf.compat.v1.image.resize_nearest_neighbor(x, size, align_corners=True)

    def _resize_half_pixel(self, x, size):
        import tensorflow as tf

        y = tf.image.resize(x, size, method=self.interpolation)
        return ops.cast(y, x.dtype)

    def call(self, inputs):
        x, reference = inputs
        shape = ops.shape(reference)
        height, width = shape[1], shape[2]
        if not self.align_corners:
            # tf.image.resize, not keras.ops.image.resize: the latter checks `size[0] <= 0` in
            # Python, which fails inside a tf.function whose input H and W are unknown (the
            # SavedModel signatures and tf.function evaluation at native size).
            return self._resize_half_pixel(x, (height, width))
        if self.stride is None:
            return self._resize_corners(x, (height, width))
        s = self.stride
        x = ops.concatenate([x, x[:, -1:]], axis=1)
        x = ops.concatenate([x, x[:, :, -1:]], axis=2)
        src = ops.shape(x)
        y = self._resize_corners(x, ((src[1] - 1) * s + 1, (src[2] - 1) * s + 1))
        return y[:, :height, :width]

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self):
        return {
            **super().get_config(),
            "interpolation": self.interpolation,
            "align_corners": self.align_corners,
            "stride": self.stride,
        }
