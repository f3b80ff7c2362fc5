"""One harness for every layer: the checks a reviewer expects of a serialisable Keras layer.

`check_layer` runs, for a layer class and its arguments:
- config round trip: `from_config(get_config())` gives the same config, and every constructor
  argument is in the config with the value it was given;
- a symbolic call with `None` height and width, and eager calls at odd sizes;
- `.keras` saving and reloading with `safe_mode=True`, giving the same outputs;
- every variable is saved by `tf.train.Checkpoint` (the training checkpoints);
- a gradient into every trainable weight (through a random projection of the outputs, so that
  BatchNorm's zero-mean output cannot cancel the gamma gradient);
- a run under the `mixed_bfloat16` policy: bfloat16 outputs (unless the layer is float32 by
  design), float32 variables.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _flat(x):
    return keras.tree.flatten(x)


def _symbolic_inputs(arrays):
    return [keras.Input(shape=(None, None, a.shape[-1]), dtype="float32") for a in arrays]


def _unwrap(xs, multi):
    return xs if multi else xs[0]


def check_layer(
    layer_cls,
    init_kwargs,
    make_inputs,
    sizes=((33, 33), (65, 65)),
    expected_shape=None,
    expect_trainable=True,
    check_mixed_precision=True,
    float32_outputs=False,
    atol=1e-5,
):
    """Runs the shared layer checks.

    Args:
        layer_cls: the layer class.
        init_kwargs: dict of constructor arguments.
        make_inputs: callable `(h, w) -> np.ndarray or list of np.ndarray`; the inputs of the
            layer for a nominal spatial size (multi-input layers choose their own resolutions).
        sizes: spatial sizes for the eager calls; include odd ones.
        expected_shape: optional callable `(h, w) -> shape or list of shapes` of the outputs.
        expect_trainable: whether the layer has trainable weights.
        float32_outputs: the layer's outputs stay float32 under mixed precision by design.

    Layers with BatchNorm on a globally pooled (1x1) map need a batch of at least 2 from
    `make_inputs`: in training, BN of a single 1x1 sample is constant and its conv gets no
    gradient, which the gradient check rightly reports.
    """
    # 1. Config round trip.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    for key, value in init_kwargs.items():
        assert key in config, f"{layer_cls.__name__}.get_config() lacks {key!r}"
        got = config[key]
        if isinstance(got, (list, tuple)) and isinstance(value, (int, list, tuple)):
            # Layers may normalise an int to a pair, as Keras does for kernel sizes.
            want = [value] * len(got) if isinstance(value, int) else list(np.ravel(value))
            assert list(np.ravel(got)) == want, (key, got, value)
        elif not isinstance(value, (dict, keras.layers.Layer)):
            assert got == value, (key, got, value)
    rebuilt = layer_cls.from_config(config)
    assert rebuilt.get_config() == config

    # 2. Symbolic call with dynamic H and W.
    first = _as_list(make_inputs(*sizes[0]))
    multi = isinstance(make_inputs(*sizes[0]), (list, tuple))
    sym = _symbolic_inputs(first)
    sym_out = layer(_unwrap(sym, multi))
    for t in _flat(sym_out):
        if len(t.shape) == 4:  # spatial outputs follow the dynamic input size
            assert t.shape[1] is None and t.shape[2] is None, f"static spatial dims: {t.shape}"
    model = keras.Model(_unwrap(sym, multi), sym_out)

    # 3. Eager calls at odd sizes.
    for h, w in sizes:
        xs = _as_list(make_inputs(h, w))
        out = layer(_unwrap([tf.constant(x) for x in xs], multi), training=False)
        out_m = model(_unwrap(xs, multi), training=False)
        for a, b in zip(_flat(out), _flat(out_m)):
            a = np.asarray(a)
            assert np.all(np.isfinite(a)), f"non-finite output at {(h, w)}"
            np.testing.assert_allclose(a, np.asarray(b), atol=atol, rtol=1e-5)
        if expected_shape is not None:
            want = expected_shape(h, w)
            want = want if isinstance(want, list) else [want]
            got = [tuple(np.asarray(t).shape) for t in _flat(out)]
            assert got == [tuple(s) for s in want], f"at {(h, w)}: {got} != {want}"

    # 4. .keras round trip with safe_mode=True.
    xs = _as_list(make_inputs(*sizes[-1]))
    ref = [np.asarray(t) for t in _flat(model(_unwrap(xs, multi), training=False))]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    got = [np.asarray(t) for t in _flat(loaded(_unwrap(xs, multi), training=False))]
    for a, b in zip(ref, got):
        np.testing.assert_allclose(a, b, atol=atol, rtol=1e-5)

    # 4b. Every variable reaches a tf.train.Checkpoint (training checkpoints use it; layers
    # held in Keras-tracked lists or dicts would silently be left out).
    with tempfile.TemporaryDirectory() as tmp:
        tf.train.Checkpoint(layer=layer).write(os.path.join(tmp, "ckpt"))
        saved = [n for n, _ in tf.train.list_variables(os.path.join(tmp, "ckpt"))
                 if n.startswith("layer/")]
    assert len(saved) == len(layer.weights), (
        f"{layer_cls.__name__}: tf.train.Checkpoint holds {len(saved)} of "
        f"{len(layer.weights)} variables"
    )

    # 5. Gradient into every trainable weight.
    weights = layer.trainable_weights
    if expect_trainable:
        assert weights, f"{layer_cls.__name__} has no trainable weights"
    else:
        assert not weights, f"{layer_cls.__name__} should have no weights: {weights}"
    xs_t = [tf.constant(x) for x in _as_list(make_inputs(*sizes[0]))]
    with tf.GradientTape() as tape:
        tape.watch(xs_t)
        outs = _flat(layer(_unwrap(xs_t, multi), training=True))
        rng = np.random.default_rng(1)
        loss = tf.add_n(
            [tf.reduce_sum(o * rng.standard_normal(o.shape).astype("float32")) for o in outs]
        )
    grads = tape.gradient(loss, weights + xs_t)
    for v, g in zip(weights, grads[: len(weights)]):
        assert g is not None, f"no gradient for {v.path}"
        assert np.any(np.asarray(tf.convert_to_tensor(g)) != 0), f"zero gradient for {v.path}"
    assert any(g is not None for g in grads[len(weights):]), "no gradient reaches the inputs"

    # 6. mixed_bfloat16.
    if check_mixed_precision:
        mp = layer_cls(**init_kwargs, dtype="mixed_bfloat16")
        outs = _flat(mp(_unwrap([tf.constant(x) for x in first], multi), training=False))
        want_dtype = "float32" if float32_outputs else "bfloat16"
        for o in outs:
            assert keras.backend.standardize_dtype(o.dtype) == want_dtype, o.dtype
            assert np.all(np.isfinite(np.asarray(tf.cast(o, "float32"))))
        for v in mp.weights:
            assert keras.backend.standardize_dtype(v.dtype) == "float32", v.path
    return layer


def random_image(h, w, c, seed=0):
    return np.random.default_rng(seed).standard_normal((1, h, w, c)).astype("float32")
