"""Pieces every model shares: the image input, the float32 logits at input resolution, and
head-option checks whose message explains the paper's rule."""

import keras

from deeplab_family.layers import ResizeLike


def image_input(name="images"):
    """The model input: RGB float32 pixels in 0..255, any height and width."""
    return keras.Input(shape=(None, None, 3), dtype="float32", name=name)


def full_resolution(x, images, name, dtype=None, stride=None):
    """Bilinearly resizes `x` to the size of `images` and casts it to float32.

    DeepLabv3 Sec 4.1 / Appendix A: the logits are upsampled to the input size inside the
    model, so the loss sees the untouched ground truth instead of a downsampled one. The cast
    keeps logits (and therefore losses) in float32 under mixed precision.

    The resize is corner-aligned, as the backbones are (feature pixel i of a stride-s map is
    image pixel s*i); with `stride` it is exact at every input size, so masks are not shifted
    (a half-pixel resize would move them by (s - 1) / 2 pixels). See `ResizeLike`.
    """
    x = ResizeLike(
        "bilinear", align_corners=True, stride=stride, dtype=dtype, name=f"{name}_resize"
    )([x, images])
    return keras.layers.Activation("linear", dtype="float32", name=name)(x)
