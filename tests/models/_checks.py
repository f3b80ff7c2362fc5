"""Checks shared by the PAN and GCN/ExFuse model tests: eager inference, mixed precision, the
symbolic shapes of named layers at a fixed input size. (The gradient and `.keras` checks are
the harness's, `tests/harness.py`; the tiny configs are in `tests/tiny.py`.)"""

import keras
import numpy as np

from tests.tiny import random_images


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
