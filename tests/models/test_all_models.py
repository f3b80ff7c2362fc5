"""Checks every registered model must pass (issue "Every model"), at tiny sizes.

The loop is over `registered_models()`, so a new model is checked as soon as its module is
imported by `deeplab_family.models`, and fails here until it has an entry in `MODELS` of
`tests/tiny.py`:

- a tiny config exists;
- `.keras` round trip with `safe_mode=True`, same outputs;
- a gradient into every trainable weight (batch 2, random projection of every output), no NaN;
- dynamic H/W: an input of shape (None, None, 3), run at odd sizes; logits float32 at the input
  size;
- `build_model(config, dtype="mixed_bfloat16")`: float32 logits, float32 variables, and the
  global policy untouched;
- the output stride at evaluation: weights saved from the OS16 build load into the OS8 build
  of the same config, with the same variables (paths and shapes: zero missing, zero
  unexpected), and the logits are at the input size.
"""

import functools
import os
import tempfile

import keras
import numpy as np
import pytest

from deeplab_family.backbones import ResNetBackbone
from deeplab_family.models import ModelConfig, build_model, registered_models
from tests import tiny
from tests.harness import check_gradients, check_keras_round_trip
from tests.tiny import random_images

NUM_CLASSES = 5


def tiny_config(name, output_stride=16):
    if name not in tiny.MODELS:
        pytest.fail(
            f"registered model {name!r} has no tiny config: add it to MODELS in {tiny.__file__}"
        )
    entry = tiny.MODELS[name]
    backbone = {**tiny.NARROW_BACKBONE, **entry.get("backbone", {}), "output_stride": output_stride}
    return ModelConfig.from_dict(
        {"name": name, "num_classes": NUM_CLASSES, "backbone": backbone,
         "head": dict(entry.get("head", {}))}
    )


@functools.cache
def _model(name, output_stride=16, dtype=None):
    return build_model(tiny_config(name, output_stride), dtype=dtype)


def _check_outputs(outputs, h, w, batch=1):
    assert "logits" in outputs, list(outputs)
    for key, value in outputs.items():
        assert key == "logits" or key.startswith("aux_"), key
        assert keras.backend.standardize_dtype(value.dtype) == "float32", (key, value.dtype)
        assert np.all(np.isfinite(np.asarray(value))), key
    assert tuple(outputs["logits"].shape) == (batch, h, w, NUM_CLASSES)


MODELS = registered_models()


@pytest.mark.parametrize("name", MODELS)
def test_has_a_tiny_config(name):
    tiny_config(name)


def test_no_tiny_config_for_unregistered_names():
    assert sorted(set(tiny.MODELS) - set(MODELS)) == []


@pytest.mark.parametrize("name", MODELS)
def test_keras_round_trip_safe_mode(name):
    model = _model(name)
    images = random_images(33, 33, seed=1)
    _check_outputs(model(images, training=False), 33, 33)
    check_keras_round_trip(model, images)


@pytest.mark.parametrize("name", MODELS)
def test_gradient_into_every_trainable_weight(name):
    model = _model(name)
    assert model.trainable_weights
    outputs = check_gradients(model, random_images(33, 33, batch=2, seed=2))
    _check_outputs(outputs, 33, 33, batch=2)


@pytest.mark.parametrize("name", MODELS)
def test_dynamic_height_and_width(name):
    model = _model(name)
    assert tuple(model.input.shape) == (None, None, None, 3)
    for h, w in [(33, 47), (65, 31), (29, 29)]:
        _check_outputs(model(random_images(h, w, seed=h), training=False), h, w)


@pytest.mark.parametrize("name", MODELS)
def test_mixed_bfloat16_gives_float32_logits(name):
    before = keras.config.dtype_policy().name
    model = _model(name, dtype="mixed_bfloat16")
    assert keras.config.dtype_policy().name == before
    _check_outputs(model(random_images(33, 47), training=False), 33, 47)
    bad = [v.path for v in model.weights if keras.backend.standardize_dtype(v.dtype) != "float32"]
    assert bad == []
    # Same variables as the float32 build, so float32 checkpoints load.
    assert [(v.path, tuple(v.shape)) for v in model.weights] == [
        (v.path, tuple(v.shape)) for v in _model(name).weights
    ]


@pytest.mark.parametrize("name", MODELS)
def test_os16_weights_load_at_os8(name):
    os16, os8 = _model(name, 16), build_model(tiny_config(name, 8))
    for model, want in ((os16, 16), (os8, 8)):
        strides = [l.output_stride for l in model.layers if isinstance(l, ResNetBackbone)]
        assert strides == [want], strides
    paths16 = [(v.path, tuple(v.shape)) for v in os16.weights]
    paths8 = [(v.path, tuple(v.shape)) for v in os8.weights]
    assert sorted(set(paths16) - set(paths8)) == []  # unexpected in the OS8 model
    assert sorted(set(paths8) - set(paths16)) == []  # missing from the OS16 weights
    assert paths16 == paths8
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "os16.weights.h5")
        os16.save_weights(path)
        os8.load_weights(path)
    for a, b in zip(os16.weights, os8.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    _check_outputs(os8(random_images(33, 47), training=False), 33, 47)
