"""Checks shared by the PAN and GCN/ExFuse model tests: tiny configs, whole-model gradient,
`.keras` round trip, symbolic shapes of named layers at a fixed input size."""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tests.backbones.tiny import TINY, random_images  # noqa: F401  (re-exported)


def layer_names(model):
    return {layer.name for layer in model.layers}


def layers_of_type(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


def static_shapes(model, names, image_size=(512, 512), inputs=False):
    """Symbolic output (or input) shapes of the named layers for a fixed image size.

    Nothing runs: the graph is re-traced on a `keras.Input` of that size.
    """
    get = (lambda n: model.get_layer(n).input) if inputs else (lambda n: model.get_layer(n).output)
    sub = keras.Model(model.input, {n: get(n) for n in names})
    out = sub(keras.Input(shape=(*image_size, 3), batch_size=1))
    return {n: tuple(t.shape) for n, t in out.items()}


def assert_forward(model, sizes, batch=2, num_classes=None):
    """Eager inference at each (h, w): float32 outputs at the input size, finite."""
    for h, w in sizes:
        out = model(random_images(h, w, batch=batch), training=False)
        for name, t in out.items():
            assert keras.backend.standardize_dtype(t.dtype) == "float32", (name, t.dtype)
            assert tuple(t.shape[:3]) == (batch, h, w), (name, t.shape, (h, w))
            if num_classes is not None:
                assert t.shape[-1] == num_classes, (name, t.shape)
            assert np.all(np.isfinite(np.asarray(t))), f"non-finite {name} at {(h, w)}"


def assert_gradients_everywhere(model, images):
    """A random projection of every output (training mode) reaches every trainable weight."""
    rng = np.random.default_rng(1)
    with tf.GradientTape() as tape:
        outs = model(images, training=True)
        loss = tf.add_n(
            [
                tf.reduce_sum(o * rng.standard_normal(o.shape).astype("float32"))
                for o in keras.tree.flatten(outs)
            ]
        )
    assert np.isfinite(float(loss))
    weights = model.trainable_weights
    grads = tape.gradient(loss, weights)
    missing = [v.path for v, g in zip(weights, grads) if g is None]
    assert not missing, f"no gradient for {missing}"
    zero = [v.path for v, g in zip(weights, grads) if not np.any(np.asarray(g) != 0)]
    assert not zero, f"zero gradient for {zero}"
    bad = [v.path for v, g in zip(weights, grads) if not np.all(np.isfinite(np.asarray(g)))]
    assert not bad, f"non-finite gradient for {bad}"


def assert_keras_round_trip(model, images, atol=1e-5):
    ref = model(images, training=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    got = loaded(images, training=False)
    assert set(got) == set(ref)
    for key in ref:
        np.testing.assert_allclose(np.asarray(ref[key]), np.asarray(got[key]), atol=atol, rtol=1e-5)
    return loaded


def assert_mixed_precision(model, images, float32_outputs=("logits",)):
    """Every layer runs under the model's `dtype` (mixed_bfloat16), except the input, the
    backbone's float32 normalisation and the float32 casts of the outputs; variables and
    outputs are float32."""
    exempt = {"images", "backbone", "preprocess", *float32_outputs}
    layers = model._flatten_layers(include_self=False, recursive=True)
    wrong = [layer.name for layer in layers if layer.dtype_policy.name != "mixed_bfloat16"]
    assert set(wrong) <= exempt, sorted(set(wrong) - exempt)
    assert {keras.backend.standardize_dtype(w.dtype) for w in model.weights} == {"float32"}
    out = model(images, training=False)
    assert sorted(out) == sorted(float32_outputs)
    for t in out.values():
        assert keras.backend.standardize_dtype(t.dtype) == "float32"
        assert np.all(np.isfinite(np.asarray(t)))
