"""ResizeLike: the three alignment modes against NumPy, the impulse position, TFLite, config."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_family.layers import ResizeLike
from tests.harness import check_layer, random_image


def np_bilinear_at(x, rows, cols):
    """Bilinear samples of x (h, w, c) at fractional source coordinates, border clamped."""
    h, w = x.shape[:2]
    r = np.clip(rows, 0, h - 1)
    c = np.clip(cols, 0, w - 1)
    r0, c0 = np.floor(r).astype(int), np.floor(c).astype(int)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr, fc = (r - r0)[:, None, None], (c - c0)[None, :, None]
    top = x[r0][:, c0] * (1 - fc) + x[r0][:, c1] * fc
    bottom = x[r1][:, c0] * (1 - fc) + x[r1][:, c1] * fc
    return top * (1 - fr) + bottom * fr


@pytest.mark.parametrize("out_size", [(513, 513), (512, 500), (500, 497)])
def test_stride_aligned_resize_samples_at_p_over_s(out_size):
    s = 16
    h, w = -(-out_size[0] // s), -(-out_size[1] // s)
    x = random_image(h, w, 3)
    ref = np.zeros((1, *out_size, 3), np.float32)
    got = np.asarray(ResizeLike(align_corners=True, stride=s)([x, ref]))[0]
    want = np_bilinear_at(x[0], np.arange(out_size[0]) / s, np.arange(out_size[1]) / s)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_impulse_lands_on_its_image_pixel():
    """Feature pixel i of a stride-16 map is image pixel 16*i: the peak must be there."""
    x = np.zeros((1, 33, 33, 1), np.float32)
    x[0, 10, 20, 0] = 1.0
    for size in (513, 528):
        ref = np.zeros((1, size, size, 1), np.float32)
        y = np.asarray(ResizeLike(align_corners=True, stride=16)([x, ref]))[0, ..., 0]
        assert np.unravel_index(np.argmax(y), y.shape) == (160, 320)
    # Without the stride, align_corners is exact only at 16 * (33 - 1) + 1 = 513.
    ref = np.zeros((1, 513, 513, 1), np.float32)
    y = np.asarray(ResizeLike(align_corners=True)([x, ref]))[0, ..., 0]
    assert np.unravel_index(np.argmax(y), y.shape) == (160, 320)
    # Half-pixel centres at H = 16 * h put the mass at 16 * i + 7.5 (the documented shift).
    ref = np.zeros((1, 528, 528, 1), np.float32)
    y = np.asarray(ResizeLike()([x, ref]))[0, ..., 0]
    profile = y.sum(axis=1)
    centre = (profile * np.arange(528)).sum() / profile.sum()
    assert abs(centre - 167.5) < 1e-3


@pytest.mark.parametrize("size", [(9, 9), (8, 11)])
def test_stride_one_between_equal_sizes_is_the_identity(size):
    """Equal strides (a dilated backbone's res5 into res4): the decoders' resize leaves the
    map exactly as it is, at odd and even sizes."""
    x = random_image(*size, 3, seed=2)
    ref = np.zeros((1, *size, 1), np.float32)
    np.testing.assert_array_equal(
        np.asarray(ResizeLike(align_corners=True, stride=1)([x, ref])), x
    )


def test_align_corners_without_stride_matches_numpy():
    x = random_image(9, 7, 2)
    ref = np.zeros((1, 33, 25, 1), np.float32)
    got = np.asarray(ResizeLike(align_corners=True)([x, ref]))[0]
    want = np_bilinear_at(x[0], np.arange(33) * 8 / 32, np.arange(25) * 6 / 24)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"interpolation": "nearest"}, {"align_corners": True},
     {"align_corners": True, "stride": 4}],
)
def test_resize_like_harness(kwargs):
    check_layer(
        ResizeLike,
        kwargs,
        lambda h, w: [random_image(-(-h // 4), -(-w // 4), 3), random_image(h, w, 1)],
        expected_shape=lambda h, w: (1, h, w, 3),
        expected_weights=(0, 0),  # a resize: no variables
    )


def test_stride_aligned_resize_converts_to_tflite(tmp_path):
    import keras
    from ai_edge_litert.interpreter import Interpreter

    a, b = keras.Input((9, 9, 3), batch_size=1), keras.Input((33, 33, 1), batch_size=1)
    model = keras.Model([a, b], ResizeLike(align_corners=True, stride=4)([a, b]))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    path = tmp_path / "resize.tflite"
    path.write_bytes(converter.convert())
    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    x, ref = random_image(9, 9, 3), random_image(33, 33, 1)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], x if d["shape"][1] == 9 else ref)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, np.asarray(model([x, ref])), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"interpolation": "bicubic"}, "interpolation must be one of"),
        ({"stride": 4}, "stride is only used with align_corners=True"),
        ({"align_corners": True, "stride": 0}, "stride must be an int >= 1"),
    ],
)
def test_resize_like_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResizeLike(**kwargs)
