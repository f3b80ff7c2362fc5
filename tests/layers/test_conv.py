"""AtrousConv2D / ConvNormAct: DeepLabv3 Eq. 1 in NumPy, the shared harness, TFLite, bad args."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_family.layers import AtrousConv2D, ConvNormAct
from tests.harness import check_layer, random_image


def np_atrous_conv_same(x, w, rate):
    """DeepLabv3 Eq. 1 as written in Sec 3.1: convolve with the filter upsampled by inserting
    r-1 zeros between taps, zero "same" padding, stride 1. x: (H, W, Cin), w: (k, k, Cin, Cout)."""
    k = w.shape[0]
    ke = (k - 1) * rate + 1
    up = np.zeros((ke, ke) + w.shape[2:], w.dtype)
    up[::rate, ::rate] = w
    pad = (ke - 1) // 2, (ke - 1) - (ke - 1) // 2
    xp = np.pad(x, (pad, pad, (0, 0)))
    h, wd = x.shape[:2]
    out = np.zeros((h, wd, w.shape[3]), np.float64)
    for i in range(ke):
        for j in range(ke):
            out += np.tensordot(xp[i : i + h, j : j + wd], up[i, j], axes=([2], [0]))
    return out


@pytest.mark.parametrize("rate", [1, 2, 6, 12])
@pytest.mark.parametrize("size", [(17, 23), (33, 33)])
def test_atrous_conv_equals_eq1(rate, size):
    x = random_image(*size, 5)
    conv = AtrousConv2D(4, 3, dilation_rate=rate, padding="same", use_bias=False)
    y = np.asarray(conv(x))[0]
    want = np_atrous_conv_same(x[0].astype(np.float64), np.asarray(conv.kernel, np.float64), rate)
    np.testing.assert_allclose(y, want, atol=1e-4, rtol=1e-4)


def test_atrous_conv_equals_keras_conv2d_grouped():
    """Grouped + dilated matches keras' own Conv2D (the SpaceToBatch path) with the same kernel."""
    import keras

    x = random_image(21, 19, 8)
    ours = AtrousConv2D(8, 3, dilation_rate=3, groups=4, padding="same", use_bias=False)
    ref = keras.layers.Conv2D(8, 3, dilation_rate=3, groups=4, padding="same", use_bias=False)
    ours.build(x.shape)
    ref.build(x.shape)
    ref.kernel.assign(ours.kernel)
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(ref(x)), atol=1e-5)


@pytest.mark.parametrize("size", [16, 17])
def test_strided_conv_pads_symmetrically(size):
    """Stride 2 "same": output ceil(H/2), and the taps are centred like keras.applications'
    ZeroPadding2D(k//2) + VALID conv, whatever the parity of H."""
    import keras

    x = random_image(size, size, 3)
    ours = AtrousConv2D(4, 7, strides=2, padding="same", use_bias=False)
    ours.build(x.shape)
    ref = keras.Sequential(
        [keras.layers.ZeroPadding2D(3), keras.layers.Conv2D(4, 7, strides=2, use_bias=False)]
    )
    ref.build(x.shape)
    ref.layers[1].kernel.assign(ours.kernel)
    y = np.asarray(ours(x))
    assert y.shape[1] == -(-size // 2)
    np.testing.assert_allclose(y, np.asarray(ref(x)), atol=1e-5)


def test_native_path_has_no_space_to_batch():
    conv = AtrousConv2D(4, 3, dilation_rate=6, padding="same")
    fn = tf.function(lambda t: conv(t))
    graph = fn.get_concrete_function(tf.TensorSpec([1, 33, 33, 3])).graph
    ops = {op.type for op in graph.get_operations()}
    assert "Conv2D" in ops
    assert not ops & {"SpaceToBatchND", "BatchToSpaceND"}, ops


# Variables: with BN, the bias-free conv's kernel plus BN's gamma and beta are trainable and its
# moving mean and variance are not, (1 + 2, 2); without BN, kernel and bias, (2, 0). The
# activation has no variables.
WITH_NORM, WITHOUT_NORM = (1 + 2, 2), (2, 0)


@pytest.mark.parametrize(
    "kwargs, expected_weights",
    [
        (dict(filters=8, kernel_size=3, dilation_rate=2), WITH_NORM),
        (dict(filters=8, kernel_size=3, strides=2), WITH_NORM),
        (dict(filters=8, kernel_size=(15, 1), activation=None), WITH_NORM),
        (dict(filters=8, kernel_size=3, groups=4, dilation_rate=3, synchronized=True), WITH_NORM),
        (dict(filters=8, kernel_size=1, use_norm=False, activation=None), WITHOUT_NORM),
        (dict(filters=8, kernel_size=3, dilation_rate=12, skip_padded_taps=True), WITH_NORM),
    ],
)
def test_conv_norm_act_harness(kwargs, expected_weights):
    stride = kwargs.get("strides", 1)
    check_layer(
        ConvNormAct,
        kwargs,
        lambda h, w: random_image(h, w, 8),
        expected_weights=expected_weights,
        expected_shape=lambda h, w: (1, -(-h // stride), -(-w // stride), kwargs["filters"]),
    )


def test_atrous_conv_converts_to_tflite_builtin_ops(tmp_path):
    import keras
    from ai_edge_litert.interpreter import Interpreter

    inp = keras.Input((33, 33, 8), batch_size=1)
    out = ConvNormAct(8, 3, dilation_rate=6)(inp)
    out = ConvNormAct(8, 3, dilation_rate=2, groups=2)(out)
    model = keras.Model(inp, out)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    blob = converter.convert()
    path = tmp_path / "atrous.tflite"
    path.write_bytes(blob)
    interp = Interpreter(model_path=str(path))
    ops = {d["op_name"] for d in interp._get_ops_details()}
    assert "CONV_2D" in ops
    assert not any("FLEX" in o.upper() or "SPACE_TO_BATCH" in o for o in ops), ops
    interp.allocate_tensors()
    x = random_image(33, 33, 8)
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, np.asarray(model(x)), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(filters=0), "filters must be an int >= 1. Received: filters=0"),
        (dict(filters=8, dilation_rate=-2), "dilation_rate must be an int >= 1"),
        (dict(filters=8, strides=2, dilation_rate=2), "cannot be combined"),
        (dict(filters=8, groups=3), "groups must divide filters"),
        (dict(filters=8, norm_momentum=1.5), "norm_momentum"),
    ],
)
def test_conv_norm_act_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvNormAct(**kwargs)


def test_groups_must_divide_input_channels():
    with pytest.raises(ValueError, match="groups must divide the input channels"):
        ConvNormAct(8, 3, groups=4)(random_image(9, 9, 6))


@pytest.mark.parametrize("trainable", [True, False])
def test_conv_norm_act_inference_bn_is_fused_and_exact(trainable):
    """At inference ConvNormAct runs BN as one FusedBatchNormV3 (so TF fuses conv + BN + ReLU):
    the same function as Keras' BatchNormalization on the moving statistics, with gradients;
    training=True with a trainable BN still uses the batch statistics."""
    import keras

    layer = ConvNormAct(8, 3, dilation_rate=2, norm_epsilon=1e-5)
    x = tf.constant(random_image(17, 17, 4))
    layer(x)
    rng = np.random.default_rng(0)
    layer.norm.set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(0, 0.5, 8),
                            rng.normal(0, 0.5, 8), rng.uniform(0.5, 2.0, 8)])
    layer.trainable = trainable
    want = keras.activations.relu(layer.norm(layer.conv(x), training=False))
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), np.asarray(want),
                               atol=1e-5, rtol=1e-5)
    graph = tf.function(lambda t: layer(t, training=False)).get_concrete_function(x).graph
    op_types = {op.type for op in graph.get_operations()}
    assert "FusedBatchNormV3" in op_types and "Mul" not in op_types, op_types
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(layer(x, training=False) * rng.standard_normal((1, 17, 17, 8)))
    grads = tape.gradient(y, [x, layer.conv.kernel, layer.norm.gamma, layer.norm.beta])
    assert all(g is not None and np.any(np.asarray(g) != 0) for g in grads)
    batch_stats = layer(x, training=True)
    if trainable:  # normalised by the batch: zero mean per channel before the ReLU
        pre = layer.norm(layer.conv(x), training=True)
        np.testing.assert_allclose(np.asarray(batch_stats),
                                   np.asarray(keras.activations.relu(pre)), atol=1e-5)
    else:  # frozen BN always uses the moving statistics
        np.testing.assert_allclose(np.asarray(batch_stats), np.asarray(want), atol=1e-5,
                                   rtol=1e-5)


@pytest.mark.parametrize(
    "kernel_size, rate, size, groups",
    [
        (3, 6, (33, 33), 1),
        (3, 18, (33, 33), 1),  # side taps read 15 rows
        (3, 12, (17, 23), 1),
        (3, (2, 5), (9, 11), 1),
        (3, 6, (3, 5), 1),  # side taps entirely in the padding: empty slices
        (3, 40, (33, 33), 1),  # rate beyond the map: a 1x1 conv (DeepLabv3 Fig. 4)
        (4, 3, (10, 13), 1),  # even kernel: asymmetric "same" padding
        ((1, 7), 2, (8, 21), 1),
    ],
)
@pytest.mark.parametrize("jit_compile", [False, True])
def test_skip_padded_taps_is_the_same_conv(kernel_size, rate, size, groups, jit_compile):
    """`skip_padded_taps=True` (sum of 1x1 convs on each tap's valid region) equals the dense
    atrous conv, at dynamic sizes, with and without XLA, and has the same variables."""
    x = random_image(*size, 4)
    dense = AtrousConv2D(6, kernel_size, dilation_rate=rate, groups=groups, padding="same")
    taps = AtrousConv2D(6, kernel_size, dilation_rate=rate, groups=groups, padding="same",
                        skip_padded_taps=True)
    dense.build(x.shape)
    taps.build(x.shape)
    assert [v.shape for v in taps.weights] == [v.shape for v in dense.weights]
    for a, b in zip(taps.weights, dense.weights):
        a.assign(b)
    spec = tf.TensorSpec([None, None, None, 4])
    f_dense = tf.function(dense, input_signature=[spec], jit_compile=jit_compile)
    f_taps = tf.function(taps, input_signature=[spec], jit_compile=jit_compile)
    np.testing.assert_allclose(np.asarray(f_taps(x)), np.asarray(f_dense(x)), atol=1e-5,
                               rtol=1e-5)
    assert AtrousConv2D.from_config(taps.get_config()).skip_padded_taps is True


def test_skip_padded_taps_only_for_dilated_stride_1_same():
    """Other convs keep the single native op (the flag is ignored there)."""
    for kwargs in (dict(dilation_rate=1), dict(strides=2), dict(dilation_rate=2, padding="valid"),
                   dict(dilation_rate=2, groups=2)):
        kwargs.setdefault("padding", "same")
        conv = AtrousConv2D(4, 3, skip_padded_taps=True, **kwargs)
        graph = tf.function(conv).get_concrete_function(tf.TensorSpec([1, 17, 17, 4])).graph
        assert [op.type for op in graph.get_operations()].count("Conv2D") == 1, kwargs
    with pytest.raises(ValueError, match="skip_padded_taps must be a bool. Received: "):
        AtrousConv2D(4, 3, skip_padded_taps="yes")
