"""Resizing and cropping to a dynamic reference size, without Lambda layers: `ResizeLike` and
`CropLike`."""

import keras
from keras import ops

from deeplab_family import _validation

INTERPOLATIONS = ("bilinear", "nearest")  # ResizeLike's


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
        interpolation: str. "bilinear" or "nearest" (`INTERPOLATIONS`).
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
        _validation.one_of("interpolation", interpolation, INTERPOLATIONS)
        if stride is not None:
            _validation.positive_int("stride", stride)
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


@keras.saving.register_keras_serializable(package="deeplab_family")
class CropLike(keras.layers.Layer):
    """Takes every `step`-th pixel of `inputs[0]` from the top-left corner, then crops it to
    the spatial size of `inputs[1]`.

    The decoder's x2 upsampling of a level with n pixels gives 2n, while the next level has
    2n or 2n - 1 (the backbone's stride-2 layers give ceil(size / 2)). Its strided layers pad
    symmetrically, so pixel i of a level sits on pixel 2i of the level below, which the
    decoder takes to be pixel 2i of the upsampled map (see `models.gcn.gcn_decoder`): cropping
    the extra last row/column (`step=1`) keeps every pixel in place, where a bilinear resize
    from 2n to 2n - 1 would shift the map by up to half a pixel. When the next level has the
    same stride (a dilated backbone), `step=2` takes pixels 0, 2, 4, ...: pixel 2i of the
    upsampled map, the one that sits on the level's pixel i. `inputs[0]` must have at least
    `step` times the size of `inputs[1]`.

    Args:
        step: int. Subsampling step before the crop (1: crop only).

    Example:

    >>> tuple(CropLike()([keras.ops.ones((1, 6, 6, 21)), keras.ops.ones((1, 5, 5, 8))]).shape)
    (1, 5, 5, 21)
    >>> up, level = keras.ops.ones((1, 6, 6, 21)), keras.ops.ones((1, 3, 3, 8))
    >>> tuple(CropLike(step=2)([up, level]).shape)
    (1, 3, 3, 21)
    """

    def __init__(self, step=1, **kwargs):
        super().__init__(**kwargs)
        _validation.positive_int("step", step)
        self.step = step

    def call(self, inputs):
        x, reference = inputs
        shape = ops.shape(reference)
        if self.step > 1:
            x = x[:, :: self.step, :: self.step, :]
        return x[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self):
        return {**super().get_config(), "step": self.step}
