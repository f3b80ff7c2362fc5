"""The streaming confusion matrix: NumPy reference, 255 never counts, absent classes."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_family.training.metrics import StreamingConfusionMatrix, scores_from_confusion


def _np_scores(labels, predictions, num_classes, ignore=255):
    """mIoU and pixel accuracy the direct way: per class, over the valid pixels."""
    valid = labels != ignore
    ious = []
    for c in range(num_classes):
        gt, pr = (labels == c) & valid, (predictions == c) & valid
        union = (gt | pr).sum()
        if union:
            ious.append((gt & pr).sum() / union)
    return np.mean(ious), (labels == predictions)[valid].mean()


def _random(seed, shape=(3, 17, 23), classes=6):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, shape)
    predictions = np.where(rng.random(shape) < 0.6, labels, rng.integers(0, classes, shape))
    labels[rng.random(shape) < 0.2] = 255
    return labels.astype("int32"), predictions.astype("int32")


def test_streamed_miou_equals_numpy_on_the_same_predictions():
    matrix = StreamingConfusionMatrix(6)
    all_labels, all_predictions = [], []
    for seed in range(4):  # several batches, different sizes
        labels, predictions = _random(seed, shape=(2, 11 + seed, 13))
        matrix.update(labels, predictions)
        all_labels.append(labels.ravel())
        all_predictions.append(predictions.ravel())
    labels, predictions = np.concatenate(all_labels), np.concatenate(all_predictions)
    miou, accuracy = _np_scores(labels, predictions, 6)
    result = matrix.result()
    np.testing.assert_allclose(result["miou"], miou, rtol=1e-12)
    np.testing.assert_allclose(matrix.miou(), miou, rtol=1e-12)  # the progress line's figure
    np.testing.assert_allclose(result["pixel_accuracy"], accuracy, rtol=1e-12)
    assert result["num_pixels"] == int((labels != 255).sum())


def test_255_never_counts():
    labels, predictions = _random(7)
    base = StreamingConfusionMatrix(6).update(labels, predictions).result()
    other = np.where(labels == 255, (predictions + 1) % 6, predictions)  # change only void
    assert StreamingConfusionMatrix(6).update(labels, other).result() == base
    void = np.full_like(labels, 255)
    empty = StreamingConfusionMatrix(6).update(void, predictions).result()
    assert empty["num_pixels"] == 0 and np.isnan(empty["miou"])
    assert np.isnan(StreamingConfusionMatrix(6).update(void, predictions).miou())


def test_absent_classes_have_no_iou_and_stay_out_of_the_mean():
    labels = np.array([[0, 0, 1, 1]])
    predictions = np.array([[0, 1, 1, 1]])
    result = StreamingConfusionMatrix(4).update(labels, predictions).result(["a", "b", "c", "d"])
    assert result["per_class_iou"] == {"a": 0.5, "b": 2 / 3, "c": None, "d": None}
    np.testing.assert_allclose(result["miou"], (0.5 + 2 / 3) / 2)


def test_a_label_outside_the_classes_is_an_error():
    labels = np.array([[0, 7]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside 0..3"):
        StreamingConfusionMatrix(4).update(labels, np.array([[0, 1]]))
    with pytest.raises(ValueError, match="same shape"):
        StreamingConfusionMatrix(4).update(labels, np.array([0, 1]))


def test_scores_from_confusion_names_classes():
    with pytest.raises(ValueError, match="2 class names for a 3-class"):
        scores_from_confusion(np.eye(3), ["a", "b"])
