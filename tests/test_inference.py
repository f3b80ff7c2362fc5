"""Multi-scale + flip averaging (deeplab_family/inference.py): the order of resize and softmax."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_family import inference

RNG = np.random.default_rng(0)
# A fixed per-pixel linear "model" with sharp class changes: logits = images @ W * 0.2.
WEIGHTS = tf.constant(RNG.normal(size=(3, 5)), tf.float32)


def _logits(x):
    return tf.einsum("bhwc,ck->bhwk", x, WEIGHTS) * 0.2


def _reference(images, scales, flip, softmax_first):
    h, w = images.shape[1:3]
    views = []
    for s in scales:
        x = images if s == 1.0 else tf.image.resize(images, (round(h * s), round(w * s)))
        for mirror in (False, True) if flip else (False,):
            v = x[:, :, ::-1] if mirror else x
            scores = _logits(v)
            if softmax_first:
                scores = tf.nn.softmax(scores)
            if s != 1.0:
                scores = tf.image.resize(scores, (h, w))
            probs = scores if softmax_first else tf.nn.softmax(scores)
            views.append((probs[:, :, ::-1] if mirror else probs).numpy())
    return np.mean(views, axis=0)


def test_logits_are_resized_before_the_softmax_by_default():
    images = tf.constant(RNG.uniform(0, 255, size=(2, 19, 23, 3)), tf.float32)
    scales = (0.5, 1.0, 1.75)
    got = inference.multi_scale_probabilities(_logits, images, scales, flip=True).numpy()
    want = _reference(images, scales, True, softmax_first=False)
    np.testing.assert_allclose(got, want, atol=1e-5)
    other = inference.multi_scale_probabilities(
        _logits, images, scales, flip=True, resize="probabilities").numpy()
    np.testing.assert_allclose(other, _reference(images, scales, True, True), atol=1e-5)
    assert np.abs(got - other).max() > 1e-3  # the two orders really differ
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


def test_single_scale_is_the_plain_softmax():
    images = tf.constant(RNG.uniform(0, 255, size=(1, 9, 7, 3)), tf.float32)
    got = inference.multi_scale_probabilities(_logits, images).numpy()
    np.testing.assert_allclose(got, tf.nn.softmax(_logits(images)).numpy(), atol=1e-6)


def test_unknown_order_is_refused():
    with pytest.raises(ValueError, match="resize must be .* Received: resize='both'"):
        inference.multi_scale_probabilities(_logits, tf.zeros((1, 4, 4, 3)), resize="both")
