"""PAN layers: FeaturePyramidAttention (Sec 3.1, Table 1) and GlobalAttentionUpsample (Sec 3.2,
Table 3): harness for every ablation row, pyramid geometry, kernels, TFLite, bad args."""

import keras
import numpy as np
import pytest

from deeplab_family.layers import FeaturePyramidAttention, GlobalAttentionUpsample
from tests.harness import check_layer, random_image
from tests.layers._numpy import np_conv_same, np_resize_half_pixel, np_resize_stride_exact
from tests.layers._tflite import run_tflite_builtins

C357, C333 = (7, 5, 3), (3, 3, 3)

# PAN Table 1: every row but the plain ResNet101 baseline, as FPA arguments.
TABLE1_ROWS = {
    "SE": dict(attention="se", global_pooling=False),
    "C333+MAX": dict(kernel_sizes=C333, pooling="max", global_pooling=False),
    "C333+AVE": dict(kernel_sizes=C333, pooling="avg", global_pooling=False),
    "C333+MAX+GP": dict(kernel_sizes=C333, pooling="max", global_pooling=True),
    "C333+AVE+GP": dict(kernel_sizes=C333, pooling="avg", global_pooling=True),
    "C357+MAX": dict(kernel_sizes=C357, pooling="max", global_pooling=False),
    "C357+AVE": dict(kernel_sizes=C357, pooling="avg", global_pooling=False),
    "C357+MAX+GP": dict(kernel_sizes=C357, pooling="max", global_pooling=True),
    "C357+AVE+GP": dict(kernel_sizes=C357, pooling="avg", global_pooling=True),
}
# Variables of those rows. A conv + BN unit has (3, 2): kernel, gamma, beta trainable; moving
# mean and variance not. The pyramid has master + 3 down + 3 level convs + attention_proj =
# 8 units; GP adds gp_conv and (merge "concat", the default) gp_project = 10 units. SE: master
# (3, 2) + squeeze and excite, two 1x1 convs with bias and no BN, (2, 0) each.
TABLE1_WEIGHTS = {
    "SE": (3 + 2 + 2, 2),
    **{f"{c}+{p}": (8 * 3, 8 * 2) for c in ("C333", "C357") for p in ("MAX", "AVE")},
    **{f"{c}+{p}+GP": (10 * 3, 10 * 2) for c in ("C333", "C357") for p in ("MAX", "AVE")},
}


def _batch2(c):
    # Batch 2: BN on globally pooled 1x1 maps (GP branch, GAU gate) is degenerate at batch 1 in
    # training mode and its conv would get no gradient (see the layers' docstrings).
    def make(h, w):
        return np.concatenate([random_image(h, w, c, seed=0), random_image(h, w, c, seed=1)])

    return make


@pytest.mark.parametrize("row", list(TABLE1_ROWS))
def test_fpa_table1_rows_harness(row):
    kwargs = dict(filters=8, pyramid_filters=4, **TABLE1_ROWS[row])
    if kwargs.get("attention") == "se":
        kwargs["se_ratio"] = 4
    check_layer(
        FeaturePyramidAttention,
        kwargs,
        _batch2(6),
        expected_weights=TABLE1_WEIGHTS[row],
        expected_shape=lambda h, w: (2, h, w, 8),
    )


@pytest.mark.parametrize(
    "kwargs, expected_weights",
    [
        # The default pyramid and GP concat: 10 conv + BN units.
        (dict(filters=8, global_pooling_merge="concat", synchronized=True), (10 * 3, 10 * 2)),
        # SE (3 + 2 + 2, 2) and GP concat, two more units.
        (
            dict(
                filters=8,
                attention="se",
                se_ratio=2,
                global_pooling=True,
                global_pooling_merge="concat",
            ),
            (3 + 2 + 2 + 2 * 3, 2 + 2 * 2),
        ),
        # A two-level pyramid: master + 2 down + 2 level + attention_proj + gp_conv + gp_project.
        (dict(filters=8, kernel_sizes=(5, 3), norm_momentum=0.99), (8 * 3, 8 * 2)),
    ],
)
def test_fpa_variants_harness(kwargs, expected_weights):
    check_layer(
        FeaturePyramidAttention,
        kwargs,
        _batch2(6),
        expected_weights=expected_weights,
        sizes=((33, 33), (17, 23)),
        expected_shape=lambda h, w: (2, h, w, 8),
    )


@pytest.mark.parametrize(
    "size, levels", [((32, 32), [16, 8, 4]), ((33, 31), [(17, 16), (9, 8), (5, 4)])]
)
def test_fpa_pyramid_geometry(size, levels):
    """PAN 4.1.1: "the resolutions of feature maps in the pyramid structure are 16x16, 8x8,
    4x4" for a 32x32 input (512 crop at output stride 16); odd sizes round up and still merge."""
    fpa = FeaturePyramidAttention(8, pyramid_filters=4)
    x = random_image(*size, 6)
    merged = fpa.pyramid_features(x)
    got = [tuple(t.shape[1:3]) for t in merged]
    want = [(s, s) if isinstance(s, int) else s for s in levels]
    assert got == want
    assert all(t.shape[-1] == 4 for t in merged)
    assert fpa(x).shape == (1, *size, 8)


@pytest.mark.parametrize("kernel_sizes", [C357, C333])
def test_fpa_kernel_sizes_on_built_layers(kernel_sizes):
    fpa = FeaturePyramidAttention(16, kernel_sizes=kernel_sizes)
    fpa.build((None, None, None, 32))
    assert fpa._pyramid_width == 4  # filters // 4 by default
    in_ch = 32
    for k, down, level in zip(kernel_sizes, fpa.down_convs, fpa.level_convs):
        assert tuple(down.conv.kernel.shape) == (k, k, in_ch, 4)
        assert tuple(level.conv.kernel.shape) == (k, k, 4, 4)
        in_ch = 4
    assert tuple(fpa.master.conv.kernel.shape) == (1, 1, 32, 16)
    assert tuple(fpa.attention_proj.conv.kernel.shape) == (1, 1, 4, 16)
    assert tuple(fpa.gp_conv.conv.kernel.shape) == (1, 1, 32, 16)


@pytest.mark.parametrize("pooling, cls", [("avg", "AveragePooling2D"), ("max", "MaxPooling2D")])
def test_fpa_pooling_type(pooling, cls):
    fpa = FeaturePyramidAttention(8, pooling=pooling)
    assert [type(p).__name__ for p in fpa.pools] == [cls] * 3
    assert all(tuple(p.strides) == (2, 2) for p in fpa.pools)


def test_fpa_global_pooling_switch_and_merge():
    x = np.concatenate([random_image(9, 9, 6, seed=0), random_image(9, 9, 6, seed=1)])
    off = FeaturePyramidAttention(8, global_pooling=False)
    off(x)
    assert off.gp_conv is None and not any("gp_" in w.path for w in off.weights)
    add = FeaturePyramidAttention(8, global_pooling=True, global_pooling_merge="add")
    add(x)
    assert add.gp_project is None
    # The default is Sec 3.1's "concatenated": [attended, gp] -> 1x1 conv back to filters.
    cat = FeaturePyramidAttention(8, global_pooling=True)
    cat(x)
    assert cat.global_pooling_merge == "concat"
    assert tuple(cat.gp_project.conv.kernel.shape) == (1, 1, 16, 8)


def test_fpa_se_attention_replaces_pyramid():
    fpa = FeaturePyramidAttention(32, attention="se", global_pooling=False)
    x = random_image(9, 11, 6)
    y = fpa(x)
    assert y.shape == (1, 9, 11, 32)
    assert not fpa.down_convs and not fpa.level_convs and fpa.attention_proj is None
    assert tuple(fpa.se_squeeze.conv.kernel.shape) == (1, 1, 6, 2)  # 32 // se_ratio 16
    assert tuple(fpa.se_excite.conv.kernel.shape) == (1, 1, 2, 32)
    gate = np.asarray(fpa.se_excite(fpa.se_squeeze(fpa.se_pool(x))))
    assert gate.shape == (1, 1, 1, 32) and np.all((gate > 0) & (gate < 1))
    master = np.asarray(fpa.master(x, training=False))
    np.testing.assert_allclose(np.asarray(y), master * gate, atol=1e-6)


def test_fpa_converts_to_tflite_builtin_ops(tmp_path):
    inp = keras.Input((32, 32, 16), batch_size=1)
    model = keras.Model(inp, FeaturePyramidAttention(8)(inp))
    x = random_image(32, 32, 16)
    got, ops = run_tflite_builtins(model, x, tmp_path / "fpa.tflite")
    assert {"CONV_2D", "AVERAGE_POOL_2D", "RESIZE_BILINEAR"} <= ops, ops
    np.testing.assert_allclose(got, np.asarray(model(x)), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(filters=8, pooling="sum"),
            r"pooling must be one of \['avg', 'max'\]. Received: pooling='sum'",
        ),
        (
            dict(filters=8, kernel_sizes=(7, 4, 3)),
            r"kernel_sizes must be a non-empty sequence of odd ints >= 1. "
            r"Received: kernel_sizes=\(7, 4, 3\)",
        ),
        (dict(filters=8, kernel_sizes=()), "kernel_sizes must be a non-empty sequence"),
        (
            dict(filters=8, attention="cbam"),
            "attention must be one of .*Received: attention='cbam'",
        ),
        (
            dict(filters=8, global_pooling_merge="mul"),
            "global_pooling_merge must be one of .*Received: global_pooling_merge='mul'",
        ),
        (
            dict(filters=8, pyramid_filters=0),
            "pyramid_filters must be an int >= 1. Received: pyramid_filters=0",
        ),
        (dict(filters=-1), "filters must be an int >= 1. Received: filters=-1"),
        (dict(filters=8, se_ratio=0), "se_ratio must be an int >= 1. Received: se_ratio=0"),
    ],
)
def test_fpa_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeaturePyramidAttention(**kwargs)


# ---------------------------------------------------------------------------------------------
# Global Attention Upsample


def _gau_inputs(low_c, high_c):
    def make(h, w):
        low = _batch2(low_c)(h, w)
        high = _batch2(high_c)(-(-h // 2), -(-w // 2))
        return [low, high]

    return make


# Variables: conv + BN units of (3, 2) each: low_conv, gate_conv with GP, and high_proj when the
# high input's channels differ from filters (8).
@pytest.mark.parametrize(
    "kwargs, high_c, expected_weights",
    [
        # Table 3 row 4 (GP + 3x3), identity high path: low + gate.
        (dict(filters=8), 8, (2 * 3, 2 * 2)),
        # Table 3 row 3 (GP + 1x1), projected high: low + gate + projection.
        (dict(filters=8, low_kernel_size=1), 12, (3 * 3, 3 * 2)),
        # Table 3 row 2 (no GP): low + projection.
        (dict(filters=8, global_pooling=False), 12, (2 * 3, 2 * 2)),
        (dict(filters=8, synchronized=True, norm_epsilon=1e-3), 8, (2 * 3, 2 * 2)),
    ],
)
def test_gau_harness(kwargs, high_c, expected_weights):
    check_layer(
        GlobalAttentionUpsample,
        kwargs,
        _gau_inputs(6, high_c),
        expected_weights=expected_weights,
        expected_shape=lambda h, w: (2, h, w, 8),
    )


def test_gau_without_global_pooling_has_no_gate_weights():
    x = _gau_inputs(6, 8)(9, 11)
    on = GlobalAttentionUpsample(8)
    on(x)
    off = GlobalAttentionUpsample(8, global_pooling=False)
    off(x)
    assert any("gate" in w.path for w in on.weights)
    assert off.gate_conv is None and not any("gate" in w.path for w in off.weights)
    # Without the gate: ReLU(BN(conv(low)) + up(high)).
    low, high = x
    want = np.maximum(
        np.asarray(off.low_conv(low, training=False)) + np.asarray(off.resize([high, low])), 0
    )
    np.testing.assert_allclose(np.asarray(off(x, training=False)), want, atol=1e-5)


@pytest.mark.parametrize("low_kernel_size", [1, 3])
def test_gau_low_kernel_size(low_kernel_size):
    gau = GlobalAttentionUpsample(8, low_kernel_size=low_kernel_size)
    gau.build([(None, None, None, 6), (None, None, None, 16)])
    k = low_kernel_size
    assert tuple(gau.low_conv.conv.kernel.shape) == (k, k, 6, 8)
    assert tuple(gau.gate_conv.conv.kernel.shape) == (1, 1, 16, 8)
    assert gau.gate_conv.act is not None and gau.gate_conv.norm is not None  # BN + nonlinearity
    assert tuple(gau.high_proj.conv.kernel.shape) == (1, 1, 16, 8)


def test_gau_projects_high_only_when_channels_differ():
    same = GlobalAttentionUpsample(8)
    same.build([(None, None, None, 6), (None, None, None, 8)])
    assert same.high_proj is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(filters=8, low_kernel_size=2),
            "low_kernel_size must be an odd int >= 1. Received: low_kernel_size=2",
        ),
        (dict(filters=0), "filters must be an int >= 1. Received: filters=0"),
    ],
)
def test_gau_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GlobalAttentionUpsample(**kwargs)


def test_gau_needs_two_inputs():
    with pytest.raises(ValueError, match=r"takes \[low, high\]"):
        GlobalAttentionUpsample(8)([random_image(9, 9, 4)] * 3)


# ---------------------------------------------------------------------------------------------
# NumPy references of the FPA pyramid and the GAU gate, with fixed weights


def _set_unit(unit, rng):
    """Fixed random weights on a ConvNormAct (kernel, bias or BN's four vectors)."""
    unit.conv.kernel.assign(rng.uniform(-0.5, 0.5, unit.conv.kernel.shape).astype("float32"))
    if unit.conv.bias is not None:
        unit.conv.bias.assign(rng.uniform(-0.2, 0.2, unit.conv.bias.shape).astype("float32"))
    if unit.norm is not None:
        n = unit.filters
        unit.norm.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
        unit.norm.beta.assign(rng.uniform(-0.3, 0.3, n).astype("float32"))
        unit.norm.moving_mean.assign(rng.uniform(-0.2, 0.2, n).astype("float32"))
        unit.norm.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))


def np_unit(x, unit):
    """ConvNormAct in inference mode: stride-1 "same" odd-kernel conv, BN on the moving
    statistics, then the activation. x: (H, W, Cin)."""
    bias = 0.0 if unit.conv.bias is None else np.asarray(unit.conv.bias)
    y = np_conv_same(x, np.asarray(unit.conv.kernel, np.float64), bias)
    if unit.norm is not None:
        bn = unit.norm
        y = (y - np.asarray(bn.moving_mean)) / np.sqrt(
            np.asarray(bn.moving_variance, np.float64) + bn.epsilon
        ) * np.asarray(bn.gamma) + np.asarray(bn.beta)
    if unit.activation == "relu":
        y = np.maximum(y, 0)
    elif unit.activation == "sigmoid":
        y = 1 / (1 + np.exp(-y))
    return y


def np_pool2(x, mode):
    """2x2 stride-2 "same" pooling: ceil(H / 2), a cut last window over the pixels it has."""
    h, w = x.shape[:2]
    xp = np.pad(x, ((0, h % 2), (0, w % 2), (0, 0)), constant_values=np.nan)
    blocks = xp.reshape(xp.shape[0] // 2, 2, xp.shape[1] // 2, 2, x.shape[2])
    return (np.nanmean if mode == "avg" else np.nanmax)(blocks, axis=(1, 3))


def np_pyramid(x, fpa):
    """The merged level-1 map: each level pools the one above 2x2/2 and convs it twice (the
    first conv feeds the next level); from the coarsest up, finer + half-pixel up(coarser)."""
    levels, y = [], x
    for down, level in zip(fpa.down_convs, fpa.level_convs):
        y = np_unit(np_pool2(y, fpa.pooling), down)
        levels.append(np_unit(y, level))
    merged = levels[-1]
    for finer in reversed(levels[:-1]):
        merged = finer + np_resize_half_pixel(merged, *finer.shape[:2])
    return merged


def np_fpa(x, fpa):
    """Fig 3b: master * up(attention_proj(U-shaped pyramid)) [+ or concat] up(GP)."""
    h, w = x.shape[:2]
    master = np_unit(x, fpa.master)
    attention = np_resize_half_pixel(np_unit(np_pyramid(x, fpa), fpa.attention_proj), h, w)
    out = master * attention
    if fpa.global_pooling:
        gp = np_unit(x.mean(axis=(0, 1), keepdims=True), fpa.gp_conv)
        gp = np.broadcast_to(gp, (h, w, gp.shape[-1]))
        if fpa.global_pooling_merge == "add":
            out = out + gp
        else:
            out = np_unit(np.concatenate([out, gp], axis=-1), fpa.gp_project)
    return out


@pytest.mark.parametrize(
    "kwargs, size",
    [
        (dict(kernel_sizes=C357, pooling="avg"), (9, 10)),  # GP concatenated (default)
        (dict(kernel_sizes=C333, pooling="max", global_pooling_merge="add"), (12, 7)),
        (dict(kernel_sizes=C357, pooling="avg", global_pooling=False), (16, 16)),
    ],
)
def test_fpa_equals_numpy_reference(kwargs, size):
    """The whole FPA (pool, conv, BN in inference mode, the pyramid's U-shaped merge, the
    attention multiply, the GP branch) against NumPy with fixed weights; odd sizes too."""
    fpa = FeaturePyramidAttention(4, pyramid_filters=3, **kwargs)
    x = random_image(*size, 5, seed=3)
    fpa(x)
    rng = np.random.default_rng(11)
    units = [fpa.master, *fpa.down_convs, *fpa.level_convs, fpa.attention_proj]
    units += [u for u in (fpa.gp_conv, fpa.gp_project) if u is not None]
    for unit in units:
        _set_unit(unit, rng)
    x64 = x[0].astype(np.float64)
    # The pyramid's attention is not a constant map on these weights.
    assert np.std(np_unit(np_pyramid(x64, fpa), fpa.attention_proj)) > 1e-3
    want = np_fpa(x64, fpa)
    got = np.asarray(fpa(x, training=False))[0]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_fpa_pyramid_features_equal_numpy_merge():
    """`pyramid_features`: level k's conv output plus the upsampled merged level k + 1."""
    fpa = FeaturePyramidAttention(4, pyramid_filters=3, kernel_sizes=C357)
    x = random_image(13, 11, 5, seed=4)
    fpa(x)
    rng = np.random.default_rng(5)
    for unit in (*fpa.down_convs, *fpa.level_convs):
        _set_unit(unit, rng)
    got = [np.asarray(t)[0] for t in fpa.pyramid_features(x, training=False)]
    np.testing.assert_allclose(
        got[0], np_pyramid(x[0].astype(np.float64), fpa), atol=1e-4, rtol=1e-4
    )


def np_gau(low, high, gau):
    """Fig 4: ReLU(BN(conv(low)) * gate(high) + up(high [projected])), up stride-exact."""
    x = np_unit(low, gau.low_conv)
    if gau.gate_conv is not None:
        x = x * np_unit(high.mean(axis=(0, 1), keepdims=True), gau.gate_conv)
    if gau.high_proj is not None:
        high = np_unit(high, gau.high_proj)
    up = np_resize_stride_exact(high, *low.shape[:2], gau.upsample_ratio)
    return np.maximum(x + up, 0)


@pytest.mark.parametrize(
    "kwargs, high_c, ratio",
    [
        (dict(), 4, 2),  # GP + 3x3, identity high path, stride 16 -> 8
        (dict(low_kernel_size=1), 7, 2),  # GP + 1x1, projected high
        (dict(), 4, 1),  # equal strides (res5 -> res4 of a dilated backbone)
        (dict(global_pooling=False), 7, 2),  # Table 3's first GAU row
    ],
)
def test_gau_equals_numpy_reference(kwargs, high_c, ratio):
    """The gate (pool -> 1x1 conv -> BN -> ReLU, multiplied into BN(conv(low))), the
    stride-exact upsample and the sum against NumPy with fixed weights."""
    gau = GlobalAttentionUpsample(4, upsample_ratio=ratio, **kwargs)
    low = random_image(9, 11, 3, seed=6)
    high = random_image(-(-9 // ratio), -(-11 // ratio), high_c, seed=7)
    gau([low, high])
    rng = np.random.default_rng(13)
    for unit in (gau.low_conv, gau.gate_conv, gau.high_proj):
        if unit is not None:
            _set_unit(unit, rng)
    want = np_gau(low[0].astype(np.float64), high[0].astype(np.float64), gau)
    got = np.asarray(gau([low, high], training=False))[0]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    if gau.gate_conv is not None:  # the gate is not the identity on these weights
        gate = np_unit(high[0].mean(axis=(0, 1), keepdims=True), gau.gate_conv)
        assert np.ptp(gate) > 0.1 and np.all(np.abs(gate - 1) > 1e-3)


def test_gau_upsample_ratio_config_and_errors():
    config = GlobalAttentionUpsample(8, upsample_ratio=1).get_config()
    assert config["upsample_ratio"] == 1
    del config["upsample_ratio"]  # saved before the ratio existed
    assert GlobalAttentionUpsample.from_config(config).upsample_ratio == "half_pixel"
    with pytest.raises(ValueError, match="upsample_ratio must be an int >= 1. Received: "):
        GlobalAttentionUpsample(8, upsample_ratio=0)
