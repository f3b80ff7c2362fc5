"""One harness for the layers and models: the checks a reviewer expects of a serialisable Keras
layer, each a named function, and `check_layer`, which runs them all on one layer.

`check_layer` runs, in this order (keras-hub's `run_layer_test` in
`keras_hub/src/tests/test_case.py` has the config, serialisation, symbolic, eager, weight count
and mixed precision checks; the checkpoint and gradient checks are ours):
- `check_config_round_trip`: `from_config(get_config())` gives the same config, and every
  constructor argument is in the config with the value it was given;
- `check_serialization_round_trip`: `serialize_keras_object` -> `json.dumps` -> `json.loads` ->
  `deserialize_keras_object` gives the same config (a `.keras` file and the model dir's config
  hold configs as JSON, so a value JSON cannot hold, or one the constructor cannot take back
  from JSON, fails here);
- `check_symbolic_and_eager`: a symbolic call with `None` height and width, and eager calls at
  odd sizes that agree with the functional model;
- `check_weight_counts`: the trainable and non-trainable variables that the test expects,
  counted by hand from the layer's definition;
- `check_keras_round_trip`: `.keras` saving and reloading with `safe_mode=True` give the same
  outputs and the same config;
- `check_checkpoint_holds_every_variable`: every variable is saved by `tf.train.Checkpoint`
  (the training checkpoints);
- `check_gradients`: a finite, non-zero gradient into every trainable weight (through a random
  projection of the outputs, so that BatchNorm's zero-mean output cannot cancel the gamma
  gradient), and one into the inputs;
- `check_mixed_precision`: under `mixed_bfloat16` and `mixed_float16`, outputs in the policy's
  compute dtype (unless the layer is float32 by design), float32 variables, and every sublayer
  on the layer's policy (one created without `dtype=self.dtype_policy` runs in float32, which
  the output dtype alone does not show when a later sublayer casts back).

The model and backbone tests call `check_gradients` and `check_keras_round_trip` on whole models.
"""

import json
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


def _json(config):
    # Through JSON, as Keras saves it: tuples and lists are the same there.
    return json.dumps(config, sort_keys=True)


def check_config_round_trip(layer_cls, init_kwargs):
    """Every constructor argument is in `get_config()` with the value it was given, and
    `from_config(get_config())` gives the same config. Returns the layer."""
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
    return layer


def check_serialization_round_trip(layer):
    """`serialize_keras_object` -> `json.dumps` -> `json.loads` -> `deserialize_keras_object`
    gives a layer of the same class with the same config (compared as JSON)."""
    name = type(layer).__name__
    try:
        want = _json(layer.get_config())
        text = json.dumps(keras.saving.serialize_keras_object(layer))
    except TypeError as e:
        raise AssertionError(f"{name}.get_config() is not JSON: {e}") from None
    revived = keras.saving.deserialize_keras_object(json.loads(text))
    assert type(revived) is type(layer), (type(revived), type(layer))
    assert _json(revived.get_config()) == want, f"{name}: the config changed through JSON"
    return revived


def check_symbolic_and_eager(layer, make_inputs, sizes, expected_shape=None, atol=1e-5):
    """A symbolic call with `None` height and width (spatial outputs stay dynamic), then eager
    calls at each size: finite, equal to the functional model's, of `expected_shape(h, w)`.

    Returns the functional model around the layer.
    """
    first = make_inputs(*sizes[0])
    multi = isinstance(first, (list, tuple))
    sym = _symbolic_inputs(_as_list(first))
    sym_out = layer(_unwrap(sym, multi))
    for t in _flat(sym_out):
        if len(t.shape) == 4:  # spatial outputs follow the dynamic input size
            assert t.shape[1] is None and t.shape[2] is None, f"static spatial dims: {t.shape}"
    model = keras.Model(_unwrap(sym, multi), sym_out)

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
    return model


def check_weight_counts(layer, trainable, non_trainable):
    """The built layer has `trainable` trainable and `non_trainable` non-trainable variables."""
    got = (len(layer.trainable_weights), len(layer.non_trainable_weights), len(layer.weights))
    want = (trainable, non_trainable, trainable + non_trainable)
    assert got == want, (
        f"{type(layer).__name__}: (trainable, non-trainable, total) variables {got}, "
        f"expected {want}: {[v.path for v in layer.weights]}"
    )


def check_keras_round_trip(model, inputs, atol=1e-5, rtol=1e-5):
    """`.keras` saving and reloading with `safe_mode=True`: the same outputs (the same keys, in
    the same order, for a dict) and the same config. Returns the reloaded model."""
    ref = model(inputs, training=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    got = loaded(inputs, training=False)
    if isinstance(ref, dict):
        assert list(got) == list(ref), (list(got), list(ref))
    ref, got = _flat(ref), _flat(got)
    assert len(got) == len(ref)
    for a, b in zip(ref, got):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=atol, rtol=rtol)
    # The same config (through JSON: Keras reloads build shapes as lists, not tuples).
    assert _json(loaded.get_config()) == _json(model.get_config())
    return loaded


def check_checkpoint_holds_every_variable(layer):
    """Every variable reaches a `tf.train.Checkpoint` (training checkpoints use it; layers held
    in Keras-tracked lists or dicts would silently be left out)."""
    with tempfile.TemporaryDirectory() as tmp:
        tf.train.Checkpoint(layer=layer).write(os.path.join(tmp, "ckpt"))
        saved = [n for n, _ in tf.train.list_variables(os.path.join(tmp, "ckpt"))
                 if n.startswith("layer/")]
    assert len(saved) == len(layer.weights), (
        f"{type(layer).__name__}: tf.train.Checkpoint holds {len(saved)} of "
        f"{len(layer.weights)} variables"
    )


def check_gradients(layer, inputs, watch_inputs=False):
    """In training mode, a random projection of every output gives a finite loss and a finite,
    non-zero gradient into every trainable weight (and, with `watch_inputs`, a gradient into the
    inputs). Returns the outputs.

    The projection is random so that BatchNorm's zero-mean output cannot cancel gamma's
    gradient. A layer with BatchNorm on a globally pooled (1x1) map needs a batch of at least 2:
    in training, BN of a single 1x1 sample is constant and its conv gets no gradient, which this
    check rightly reports.
    """
    inputs = keras.tree.map_structure(tf.constant, inputs)
    sources = _flat(inputs)
    rng = np.random.default_rng(1)
    with tf.GradientTape() as tape:
        tape.watch(sources)
        outputs = layer(inputs, training=True)
        loss = tf.add_n(
            [tf.reduce_sum(o * rng.standard_normal(o.shape).astype("float32"))
             for o in _flat(outputs)]
        )
    assert np.isfinite(float(loss)), f"non-finite loss {float(loss)}"
    weights = layer.trainable_weights
    grads = tape.gradient(loss, weights + (sources if watch_inputs else []))
    missing, zero, non_finite = [], [], []
    for v, g in zip(weights, grads[: len(weights)]):
        if g is None:
            missing.append(v.path)
            continue
        g = np.asarray(tf.convert_to_tensor(g))
        if not np.all(np.isfinite(g)):
            non_finite.append(v.path)
        elif not np.any(g != 0):
            zero.append(v.path)
    assert not missing, f"no gradient for {missing}"
    assert not zero, f"zero gradient for {zero}"
    assert not non_finite, f"non-finite gradient for {non_finite}"
    if watch_inputs:
        assert any(g is not None for g in grads[len(weights):]), "no gradient reaches the inputs"
    return outputs


def check_mixed_precision(
    layer_cls,
    init_kwargs,
    inputs,
    policies=("mixed_bfloat16", "mixed_float16"),
    float32_outputs=False,
    expected_weights=None,
):
    """Under each policy: outputs in its compute dtype (float32 with `float32_outputs`) and
    finite, float32 variables (`expected_weights` of them, when given: the float32 build's), and
    every sublayer on the layer's policy."""
    for policy in policies:
        layer = layer_cls(**init_kwargs, dtype=policy)
        outs = _flat(layer(inputs, training=False))
        want_dtype = "float32" if float32_outputs else keras.DTypePolicy(policy).compute_dtype
        for o in outs:
            assert keras.backend.standardize_dtype(o.dtype) == want_dtype, (policy, o.dtype)
            assert np.all(np.isfinite(np.asarray(tf.cast(o, "float32")))), policy
        for v in layer.weights:
            assert keras.backend.standardize_dtype(v.dtype) == "float32", (policy, v.path)
        if expected_weights is not None:
            check_weight_counts(layer, *expected_weights)
        wrong = {
            sub.name: sub.dtype_policy.name
            for sub in layer._flatten_layers(include_self=False, recursive=True)
            if sub.dtype_policy.name != policy
        }
        assert not wrong, f"{layer_cls.__name__} under {policy}: sublayers on {wrong}"


def check_layer(
    layer_cls,
    init_kwargs,
    make_inputs,
    *,
    expected_weights,
    sizes=((33, 33), (65, 65)),
    expected_shape=None,
    mixed_precision=True,
    float32_outputs=False,
    atol=1e-5,
):
    """Runs every layer check of this module, in the order of its docstring.

    Args:
        layer_cls: the layer class.
        init_kwargs: dict of constructor arguments.
        make_inputs: callable `(h, w) -> np.ndarray or list of np.ndarray`; the inputs of the
            layer for a nominal spatial size (multi-input layers choose their own resolutions).
        expected_weights: `(trainable, non_trainable)` variable counts of the built layer,
            derived by hand from its definition (the test shows the arithmetic).
        sizes: spatial sizes for the eager calls; include odd ones.
        expected_shape: optional callable `(h, w) -> shape or list of shapes` of the outputs.
        mixed_precision: whether to run `check_mixed_precision`.
        float32_outputs: the layer's outputs stay float32 under mixed precision by design.

    Layers with BatchNorm on a globally pooled (1x1) map need a batch of at least 2 from
    `make_inputs` (see `check_gradients`).
    """
    layer = check_config_round_trip(layer_cls, init_kwargs)
    check_serialization_round_trip(layer)
    model = check_symbolic_and_eager(layer, make_inputs, sizes, expected_shape, atol=atol)
    check_weight_counts(layer, *expected_weights)
    check_keras_round_trip(model, make_inputs(*sizes[-1]), atol=atol)
    check_checkpoint_holds_every_variable(layer)
    check_gradients(layer, make_inputs(*sizes[0]), watch_inputs=True)
    if mixed_precision:
        first = keras.tree.map_structure(tf.constant, make_inputs(*sizes[0]))
        check_mixed_precision(
            layer_cls, init_kwargs, first, float32_outputs=float32_outputs,
            expected_weights=expected_weights,
        )
    return layer


def random_image(h, w, c, seed=0):
    return np.random.default_rng(seed).standard_normal((1, h, w, c)).astype("float32")
