"""Geometry through the decoders: feature pixel i of a stride-s map sits on image pixel s * i.

An impulse at pixel i of a stride-s map is fed through each decoder step of the built models
(PAN's GAUs, ExFuse's SEB gates, the GCN decoder's x2 steps and their alignment, the final
logits resize), with weights that make the step a clean spatial identity (the low-level path
zeroed, identity-centre kernels). The response must be centred on image pixel s * i, at odd
(513-like) and even (512-like) input sizes. Every interpolation used is symmetric, so the
centroid is exact; a half-pixel resize moves it by (r - 1) / 2 pixels of the finer map.
"""

import keras
import numpy as np
import pytest

from deeplab_family.models import ModelConfig, build_model
from deeplab_family.models.common import full_resolution
from tests.tiny import BACKBONE

SIZES = (129, 128)  # 513-like (16 * 8 + 1) and 512-like
NUM_CLASSES = 3
TOL = 0.02  # image pixels


def _model(name, head, output_stride):
    config = ModelConfig(
        name=name,
        num_classes=NUM_CLASSES,
        backbone={**BACKBONE, "output_stride": output_stride},
        head=head,
    )
    return build_model(config)


def _features(model, size):
    images = np.zeros((1, size, size, 3), "float32")
    backbone = model.get_layer("backbone")
    return images, {k: np.asarray(v) for k, v in backbone(images).items()}, backbone


def _impulse(shape, i, channel=0):
    """One-hot at (i, i) of channel `channel`, i.e. on the map's diagonal pixel i."""
    x = np.zeros(shape, "float32")
    x[0, i, i, channel] = 1.0
    return x


def _centroid(y, channel=0):
    """Centroid (row, col) of a non-negative response, in pixels of its own map."""
    y = np.asarray(y)[0, ..., channel].astype(np.float64)
    assert y.min() >= -1e-6 and y.sum() > 1e-3, "no response"
    rows, cols = np.indices(y.shape)
    return (rows * y).sum() / y.sum(), (cols * y).sum() / y.sum()


def _assert_on_image_pixel(y, stride, want, what):
    r, c = _centroid(y)
    got = (stride * r, stride * c)
    assert abs(got[0] - want) < TOL and abs(got[1] - want) < TOL, (
        f"{what}: response centred on image pixel {got}, expected ({want}, {want})"
    )


def _interior(n):
    """A pixel far enough from both borders that no tent of the decoder is cut."""
    return max(1, n // 2 - 1)


# ---------------------------------------------------------------------------------------------
# PAN: GAU res5 -> res4 -> res3 -> res2, then the logits conv and the final resize


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("output_stride", [16, 32])
def test_pan_gau_chain_keeps_the_impulse_on_its_image_pixel(size, output_stride):
    """OS16: 16 -> 16 (equal strides) -> 8 -> 4; OS32: 32 -> 16 -> 8 -> 4; then the logits
    conv (channel 0 -> class 0) and the stride-4 logits resize to the image."""
    model = _model("pan", {"filters": 8}, output_stride)
    images, features, backbone = _features(model, size)
    strides = backbone.feature_strides
    assert strides["res5"] == output_stride
    i = _interior(features["res5"].shape[1])
    want = strides["res5"] * i
    x = _impulse((1, *features["res5"].shape[1:3], 8), i)
    for key in ("res4", "res3", "res2"):
        gau = model.get_layer(f"gau_{key}")
        gau.low_conv.conv.kernel.assign(np.zeros(gau.low_conv.conv.kernel.shape))  # low path off
        x = np.asarray(gau([features[key], x], training=False))
        assert x.shape[1:3] == features[key].shape[1:3]
        _assert_on_image_pixel(x, strides[key], want, f"after gau_{key}")
    conv = model.get_layer("logits_conv")
    kernel = np.zeros(conv.kernel.shape, "float32")
    kernel[0, 0, 0, 0] = 1.0
    conv.kernel.assign(kernel)
    conv.bias.assign(np.zeros(conv.bias.shape))
    logits = model.get_layer("logits_resize")([conv(x), images])
    assert logits.shape[1:3] == (size, size)
    _assert_on_image_pixel(logits, 1, want, "PAN logits")


# ---------------------------------------------------------------------------------------------
# ExFuse: the SEB gate of every higher level, into res2, res3 and res4

SEB_PAIRS = [("res2", "res3"), ("res2", "res4"), ("res2", "res5"), ("res3", "res4"),
             ("res3", "res5"), ("res4", "res5")]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("output_stride", [32, 16])
def test_exfuse_seb_gates_sit_on_their_image_pixel(size, output_stride):
    """Low = ones; the gate of the high level under test is an identity-centre 3x3 conv of an
    impulse, every other gate the constant 1 (zero kernel, bias 1): the output is the
    upsampled impulse alone. OS16 has res5 and res4 at the same stride (ratio 1)."""
    head = {"ss": False, "lr": False, "seb": True, "ecre": "off", "dap": False,
            "kernel_size": 5}
    model = _model("exfuse", head, output_stride)
    _, features, backbone = _features(model, size)
    strides = backbone.feature_strides
    order = ("res2", "res3", "res4", "res5")
    for low_key, high_key in SEB_PAIRS:
        seb = model.get_layer(f"seb_{low_key}")
        highs = order[order.index(low_key) + 1 :]
        low = np.ones_like(features[low_key])
        inputs = [low]
        for conv, key in zip(seb.convs, highs):
            kernel = np.zeros(conv.conv.kernel.shape, "float32")
            if key == high_key:
                kernel[1, 1, 0, 0] = 1.0
                conv.conv.bias.assign(np.zeros(conv.conv.bias.shape))
                i = _interior(features[key].shape[1])
                inputs.append(_impulse(features[key].shape, i))
            else:
                conv.conv.bias.assign(np.ones(conv.conv.bias.shape))
                inputs.append(np.zeros_like(features[key]))
            conv.conv.kernel.assign(kernel)
        y = seb(inputs)
        _assert_on_image_pixel(
            y, strides[low_key], strides[high_key] * i, f"SEB {high_key} into {low_key}"
        )


# ---------------------------------------------------------------------------------------------
# GCN decoder: each x2 deconvolution and its alignment (crop, or every second pixel)

# The corner-aligned bilinear x2 kernel of a k=4 "same" Conv2DTranspose, whose taps land on
# output pixels 2i - 1, 2i, 2i + 1, 2i + 2: weights 1/2, 1, 1/2, 0 put input pixel i on 2i.
BILINEAR_X2 = np.array([0.5, 1.0, 0.5, 0.0], "float32")


def _set_bilinear_deconv(layer):
    kernel = np.zeros(layer.kernel.shape, "float32")  # (k, k, out, in)
    for c in range(min(kernel.shape[2], kernel.shape[3])):
        kernel[:, :, c, c] = np.outer(BILINEAR_X2, BILINEAR_X2)
    layer.kernel.assign(kernel)
    layer.bias.assign(np.zeros(layer.bias.shape))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_gcn_decoder_steps_keep_pixels_in_place(size, output_stride):
    """up_<res> + align_<res> from each level to the next (half the stride: crop; the same
    stride, dilated: every second pixel), and up_half -> up_full -> crop_full to the image."""
    model = _model("gcn", {"kernel_size": 5}, output_stride)
    images, features, backbone = _features(model, size)
    strides = backbone.feature_strides
    for upper, key in (("res5", "res4"), ("res4", "res3"), ("res3", "res2")):
        i = _interior(features[upper].shape[1])
        up = model.get_layer(f"up_{key}")
        _set_bilinear_deconv(up)
        x = _impulse((1, *features[upper].shape[1:3], NUM_CLASSES), i)
        y = model.get_layer(f"align_{key}")([up(x), features[key]])
        assert y.shape[1:3] == features[key].shape[1:3]
        _assert_on_image_pixel(y, strides[key], strides[upper] * i, f"{upper} -> {key}")
    i = _interior(features["res2"].shape[1])
    x = _impulse((1, *features["res2"].shape[1:3], NUM_CLASSES), i)
    for name in ("up_half", "up_full"):
        _set_bilinear_deconv(model.get_layer(name))
        x = model.get_layer(name)(x)
    y = model.get_layer("crop_full")([x, images])
    assert y.shape[1:3] == (size, size)
    _assert_on_image_pixel(y, 1, strides["res2"] * i, "res2 -> image")


# ---------------------------------------------------------------------------------------------
# The final logits resize, shared by every model


@pytest.mark.parametrize("size", (129, 128, 65, 64))
@pytest.mark.parametrize("stride", [4, 8, 16])
def test_full_resolution_puts_feature_pixel_i_on_image_pixel_s_i(size, stride):
    n = -(-size // stride)  # the backbone's ceil(size / stride)
    i = _interior(n)
    x_in = keras.Input((None, None, 1))
    img_in = keras.Input((None, None, 3))
    model = keras.Model([x_in, img_in], full_resolution(x_in, img_in, "t", stride=stride))
    y = model([_impulse((1, n, n, 1), i), np.zeros((1, size, size, 3), "float32")])
    assert y.shape[1:3] == (size, size) and y.dtype == "float32"
    _assert_on_image_pixel(y, 1, stride * i, f"stride {stride} at {size}")
