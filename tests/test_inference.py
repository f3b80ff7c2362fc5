"""deeplab_family/inference.py: multi-scale + flip averaging (the order of resize and softmax), and
images fitted around a fixed-size input and their masks mapped back."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_family import inference
from deeplab_family.data.augment import IMAGENET_MEAN_RGB

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


def test_fit_to_size_pads_or_shrinks_and_restores():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)
    fitted, size = inference.fit_to_size(small, (65, 65))
    assert fitted.shape == (65, 65, 3) and fitted.dtype == np.float32 and size == (30, 41)
    np.testing.assert_array_equal(fitted[:30, :41], small)  # untouched: no resampling
    np.testing.assert_allclose(fitted[30:, 0], np.broadcast_to(IMAGENET_MEAN_RGB, (35, 3)))
    mask = rng.integers(0, 21, (65, 65)).astype(np.uint8)
    np.testing.assert_array_equal(inference.restore_size(mask, size, (30, 41)), mask[:30, :41])

    large = rng.integers(0, 256, (100, 260, 3), dtype=np.uint8)
    fitted, size = inference.fit_to_size(large, (65, 65))
    assert size == (25, 65)  # the aspect ratio is kept
    restored = inference.restore_size(mask, size, (100, 260))
    assert restored.shape == (100, 260)
    # Nearest neighbour: every original pixel takes the class of the pixel it was shrunk into.
    np.testing.assert_array_equal(restored[::4, ::4][:25, :65], mask[:25, :65])
