"""ExFuse layers: SEB (Eq 2), SS (Fig 3), SubPixelUpsample (ECRE) and DAP (Eq 3) against NumPy,
the shared harness, TFLite builtins and bad arguments."""

import keras
import numpy as np
import pytest

from deeplab_family.layers import (
    DenselyAdjacentPrediction,
    SemanticEmbeddingBranch,
    SemanticSupervision,
    SubPixelUpsample,
)
from tests.harness import (
    check_config_round_trip,
    check_keras_round_trip,
    check_layer,
    check_serialization_round_trip,
    check_weight_counts,
    random_image,
)
from tests.layers._numpy import np_conv_same, np_resize_half_pixel, np_resize_stride_exact
from tests.layers._tflite import run_tflite_builtins


def _ceil_div(a, b):
    return -(-a // b)


# ---------------------------------------------------------------------------------------------
# NumPy references


def np_depth_to_space(x, s):
    """(N, H, W, C*s*s) -> (N, H*s, W*s, C): out[n, i*s+a, j*s+b, c] = x[n, i, j, (a*s+b)*C+c]."""
    n, h, w, cs = x.shape
    c = cs // (s * s)
    return x.reshape(n, h, w, s, s, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h * s, w * s, c)


def np_dap(x, k, border):
    """ExFuse Eq 3, index by index; positions outside the map contribute nothing."""
    n, h, w, ck = x.shape
    c = ck // (k * k)
    p = k // 2
    r = np.zeros((n, h, w, c))
    for b in range(n):
        for i in range(h):
            for j in range(w):
                acc = np.zeros(c)
                valid = 0
                for l in range(k):
                    for m in range(k):
                        ii, jj = i + l - p, j + m - p
                        if 0 <= ii < h and 0 <= jj < w:
                            g = l * k + m
                            acc += x[b, ii, jj, g * c : (g + 1) * c]
                            valid += 1
                r[b, i, j] = acc / (k * k) if border == "zero" else acc / valid
    return r


# ---------------------------------------------------------------------------------------------
# Semantic Embedding Branch


def _seb_inputs(num_high):
    def make(h, w):
        xs = [random_image(h, w, 4, seed=0)]
        for i in range(num_high):
            f = 2 ** (i + 1)
            xs.append(random_image(_ceil_div(h, f), _ceil_div(w, f), 6 + 2 * i, seed=i + 1))
        return xs

    return make


@pytest.mark.parametrize("num_high, kwargs", [(1, dict()), (2, dict(filters=4)), (3, dict())])
def test_seb_harness(num_high, kwargs):
    check_layer(
        SemanticEmbeddingBranch,
        kwargs,
        _seb_inputs(num_high),
        # One 3x3 conv without BN per high-level input, kernel and bias each.
        expected_weights=(2 * num_high, 0),
        expected_shape=lambda h, w: (1, h, w, 4),
    )


@pytest.mark.parametrize("upsample_ratios", [None, (2, 4), (1, 4), "half_pixel"])
def test_seb_equals_numpy_product_of_upsampled_convs(upsample_ratios):
    """Eq 2 / Fig 4 with known weights: low * prod_i bilinear_up(conv3x3(high_i) + bias_i),
    the upsampling stride-exact by each ratio (None: 2, 4), or half-pixel (legacy)."""
    low = random_image(9, 11, 3, seed=0)[0]
    first = (9, 11) if upsample_ratios == (1, 4) else (5, 6)
    highs = [random_image(*first, 4, seed=1)[0], random_image(3, 3, 5, seed=2)[0]]
    seb = SemanticEmbeddingBranch(upsample_ratios=upsample_ratios)
    seb.build([(1, 9, 11, 3), (1, *first, 4), (1, 3, 3, 5)])
    ratios = (2, 4) if upsample_ratios is None else upsample_ratios
    want = low.astype(np.float64)
    rng = np.random.default_rng(7)
    for i, (conv, high) in enumerate(zip(seb.convs, highs)):
        assert conv.norm is None and conv.act is None  # plain 3x3 conv with bias
        w = rng.uniform(-0.3, 0.3, (3, 3, high.shape[-1], 3)).astype("float32")
        b = np.full((3,), 0.5, "float32")
        conv.conv.kernel.assign(w)
        conv.conv.bias.assign(b)
        gate = np_conv_same(high.astype(np.float64), w, b)
        if ratios == "half_pixel":
            want = want * np_resize_half_pixel(gate, 9, 11)
        else:
            want = want * np_resize_stride_exact(gate, 9, 11, ratios[i])
    got = np.asarray(seb([low[None], *(h[None] for h in highs)]))[0]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_seb_errors():
    with pytest.raises(ValueError, match="at least one high-level input"):
        SemanticEmbeddingBranch()([random_image(9, 9, 4)])
    with pytest.raises(ValueError, match="filters must equal the low-level input's channels"):
        SemanticEmbeddingBranch(filters=8)([random_image(9, 9, 4), random_image(5, 5, 6)])
    with pytest.raises(
        ValueError, match="kernel_size must be an odd int >= 1. Received: kernel_size=2"
    ):
        SemanticEmbeddingBranch(kernel_size=2)
    with pytest.raises(
        ValueError, match=r"upsample_ratios must be .*Received: upsample_ratios=\(2, 0\)"
    ):
        SemanticEmbeddingBranch(upsample_ratios=(2, 0))
    with pytest.raises(ValueError, match="one ratio per high-level input. Received: "):
        SemanticEmbeddingBranch(upsample_ratios=(2,))(
            [random_image(9, 9, 4), random_image(5, 5, 6), random_image(3, 3, 6)]
        )


def test_seb_config_saved_without_ratios_loads_half_pixel():
    config = SemanticEmbeddingBranch(upsample_ratios=(2, 4)).get_config()
    assert config["upsample_ratios"] == [2, 4]
    del config["upsample_ratios"]
    assert SemanticEmbeddingBranch.from_config(config).upsample_ratios == "half_pixel"


# ---------------------------------------------------------------------------------------------
# Semantic Supervision


def test_ss_harness_features_only():
    check_layer(
        SemanticSupervision,
        dict(filters=8, kernel_size=3, synchronized=True),
        lambda h, w: random_image(h, w, 6),
        # Two conv + BN units of (3, 2): kernel, gamma, beta; moving mean and variance.
        expected_weights=(2 * 3, 2 * 2),
        expected_shape=lambda h, w: (1, h, w, 8),
    )


def test_ss_features_are_the_second_conv_output():
    ss = SemanticSupervision(filters=8, kernel_size=1, num_classes=5)
    x = random_image(17, 19, 6)
    out = ss(x, training=False)
    assert set(out) == {"features", "logits"}
    want = ss.conv2(ss.conv1(x, training=False), training=False)
    np.testing.assert_allclose(np.asarray(out["features"]), np.asarray(want), atol=1e-6)
    assert tuple(ss.conv1.conv.kernel.shape) == (1, 1, 6, 8)
    assert tuple(ss.classifier.kernel.shape) == (8, 5)


def test_ss_with_classification_head_round_trips():
    """The head's logits are (batch, classes), which the shared harness (spatial outputs only)
    does not cover; the same checks by hand."""
    kwargs = dict(filters=8, num_classes=10)
    layer = check_config_round_trip(SemanticSupervision, kwargs)
    assert layer.get_config()["num_classes"] == 10
    check_serialization_round_trip(layer)

    inp = keras.Input((None, None, 6))
    out = layer(inp)
    assert out["features"].shape[1:] == (None, None, 8)
    assert out["logits"].shape[1:] == (10,)
    # Two conv + BN units of (3, 2), and the classifier's kernel and bias.
    check_weight_counts(layer, 2 * 3 + 2, 2 * 2)
    model = keras.Model(inp, out)
    x = np.concatenate([random_image(33, 33, 6, seed=0), random_image(33, 33, 6, seed=1)])
    ref = model(x, training=False)
    assert ref["features"].shape == (2, 33, 33, 8) and ref["logits"].shape == (2, 10)
    check_keras_round_trip(model, x, atol=1e-5, rtol=1e-7)


def test_ss_bad_arguments():
    with pytest.raises(
        ValueError, match="num_classes must be an int >= 1. Received: num_classes=0"
    ):
        SemanticSupervision(num_classes=0)
    with pytest.raises(ValueError, match="filters must be an int >= 1"):
        SemanticSupervision(filters=-8)


# ---------------------------------------------------------------------------------------------
# Sub-pixel upsample


@pytest.mark.parametrize("scale", [2, 3])
def test_subpixel_harness(scale):
    check_layer(
        SubPixelUpsample,
        dict(scale=scale),
        lambda h, w: random_image(h, w, 2 * scale * scale),
        sizes=((17, 17), (33, 21)),
        expected_shape=lambda h, w: (1, h * scale, w * scale, 2),
        expected_weights=(0, 0),  # a reshape: no variables
    )


@pytest.mark.parametrize("scale", [2, 4])
def test_subpixel_equals_numpy_reshape_transpose(scale):
    x = np.random.default_rng(0).standard_normal((2, 5, 7, 3 * scale * scale)).astype("float32")
    got = np.asarray(SubPixelUpsample(scale)(x))
    np.testing.assert_array_equal(got, np_depth_to_space(x, scale))
    # And one element by the explicit formula.
    c = 3
    n, i, j, a, b, ch = 1, 4, 2, scale - 1, 1, 2
    assert got[n, i * scale + a, j * scale + b, ch] == x[n, i, j, (a * scale + b) * c + ch]


def test_subpixel_channels_must_divide():
    with pytest.raises(
        ValueError, match=r"divisible by scale\*\*2 = 4. Received: input channels=6"
    ):
        SubPixelUpsample(2)(random_image(5, 5, 6))
    with pytest.raises(ValueError, match="scale must be an int >= 1. Received: scale=0"):
        SubPixelUpsample(0)


# ---------------------------------------------------------------------------------------------
# Densely Adjacent Prediction


@pytest.mark.parametrize("kernel_size, border", [(3, "zero"), (3, "average"), (5, "zero")])
def test_dap_harness(kernel_size, border):
    groups = kernel_size * kernel_size
    check_layer(
        DenselyAdjacentPrediction,
        dict(kernel_size=kernel_size, border=border),
        lambda h, w: random_image(h, w, 2 * groups),
        expected_shape=lambda h, w: (1, h, w, 2),
        expected_weights=(0, 0),  # shifted sums of channel groups: no variables
    )


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("border", ["zero", "average"])
def test_dap_equals_eq3_loop(kernel_size, border):
    """Every output index, borders included, against the direct loop over Eq 3."""
    k = kernel_size
    x = np.random.default_rng(3).standard_normal((2, 7, 9, 3 * k * k)).astype("float32")
    got = np.asarray(DenselyAdjacentPrediction(k, border=border)(x))
    assert got.shape == (2, 7, 9, 3)
    np.testing.assert_allclose(got, np_dap(x.astype(np.float64), k, border), atol=1e-5)


def test_dap_group_layout_and_borders():
    """Group g = l*k+m (group-major channels) sends position (a, b) to (a - l + 1, b - m + 1);
    at the corner, zero-border divides 4 neighbours by 9, average-border by 4."""
    k, c = 3, 2
    x = np.zeros((1, 5, 5, c * 9), "float32")
    l, m = 0, 2  # group 2 at (i, j) holds the score for (i + 1, j - 1)
    x[0, 2, 2, (l * k + m) * c + 1] = 9.0
    y = np.asarray(DenselyAdjacentPrediction(3)(x))[0]
    nz = np.argwhere(y != 0)
    assert nz.tolist() == [[2 - l + 1, 2 - m + 1, 1]]
    assert y[3, 1, 1] == pytest.approx(1.0)

    ones = np.ones((1, 5, 5, c * 9), "float32")
    zero = np.asarray(DenselyAdjacentPrediction(3, border="zero")(ones))[0, :, :, 0]
    avg = np.asarray(DenselyAdjacentPrediction(3, border="average")(ones))[0, :, :, 0]
    assert zero[0, 0] == pytest.approx(4 / 9) and zero[0, 2] == pytest.approx(6 / 9)
    assert zero[2, 2] == pytest.approx(1.0)
    np.testing.assert_allclose(avg, 1.0, atol=1e-6)


def test_dap_paper_setting_189_to_21():
    assert DenselyAdjacentPrediction(3)(random_image(17, 17, 189)).shape == (1, 17, 17, 21)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kernel_size=4), "kernel_size must be an odd int >= 1. Received: kernel_size=4"),
        (dict(kernel_size=0), "kernel_size must be an int >= 1. Received: kernel_size=0"),
        (
            dict(border="reflect"),
            r"border must be one of \['average', 'zero'\]. Received: border='reflect'",
        ),
    ],
)
def test_dap_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DenselyAdjacentPrediction(**kwargs)


def test_dap_channels_must_be_multiple_of_groups():
    with pytest.raises(
        ValueError, match="multiple of kernel_size\\*\\*2 = 9. Received: input channels=20"
    ):
        DenselyAdjacentPrediction(3)(random_image(7, 7, 20))


# ---------------------------------------------------------------------------------------------
# TFLite


@pytest.mark.parametrize(
    "layer, channels, builtin",
    [
        (DenselyAdjacentPrediction(3), 27, "STRIDED_SLICE"),
        (DenselyAdjacentPrediction(3, border="average"), 27, "STRIDED_SLICE"),
        (SubPixelUpsample(2), 12, "DEPTH_TO_SPACE"),
    ],
    ids=["dap-zero", "dap-average", "subpixel"],
)
def test_converts_to_tflite_builtin_ops(tmp_path, layer, channels, builtin):
    inp = keras.Input((7, 9, channels), batch_size=1)
    model = keras.Model(inp, layer(inp))
    x = random_image(7, 9, channels)
    got, ops = run_tflite_builtins(model, x, tmp_path / "layer.tflite")
    assert builtin in ops, ops
    np.testing.assert_allclose(got, np.asarray(model(x)), atol=1e-5)
