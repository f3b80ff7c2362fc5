"""Streaming confusion matrix and the mIoU / per-class IoU / pixel accuracy read from it.

The confusion matrix `cm[true, predicted]` (int64, `num_classes x num_classes`) is the only
state: images are added one batch at a time, so memory does not grow with the dataset, and the
figures are exact sums, not averages of per-image scores. Pixels labelled `ignore_label` (255:
VOC's void border, evaluation padding) are never counted. A label outside `0..num_classes-1`
that is not `ignore_label` is an error, not a silently dropped pixel.

IoU of class c = cm[c, c] / (row c + column c - cm[c, c]) (TP / (TP + FP + FN)). A class that is
neither in the ground truth nor predicted has no IoU (None / NaN) and is left out of the mean,
as in research/deeplab's `tf.metrics.mean_iou`.
"""

import numpy as np
import tensorflow as tf

from deeplab_family._validation import positive_int
from deeplab_family.data.schema import IGNORE_LABEL


class StreamingConfusionMatrix:
    """Accumulates a confusion matrix over batches of labels and predictions.

    Args:
        num_classes: int. Classes of the predictions.
        ignore_label: int. Ground-truth label that is not scored.

    Example:

    >>> import numpy as np
    >>> cm = StreamingConfusionMatrix(3)
    >>> labels = np.array([[[0, 1], [2, 255]]])  # int (batch, H, W); 255 is not scored
    >>> predictions = np.array([[[0, 1], [1, 0]]])
    >>> cm.update(labels, predictions).result()["miou"]  # any number of updates; IoU 1, 1/2, 0
    0.5
    """

    def __init__(self, num_classes, ignore_label=IGNORE_LABEL):
        self.num_classes = positive_int("num_classes", num_classes)
        self.ignore_label = ignore_label
        self.matrix = np.zeros((num_classes, num_classes), np.int64)
        self._batch_matrix = tf.function(self._batch_confusion, reduce_retracing=True)

    def _batch_confusion(self, labels, predictions):
        labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
        predictions = tf.reshape(tf.cast(predictions, tf.int64), [-1])
        keep = tf.not_equal(labels, self.ignore_label)
        labels = tf.boolean_mask(labels, keep)
        predictions = tf.boolean_mask(predictions, keep)
        n = self.num_classes
        checks = [
            tf.debugging.assert_less(
                labels, tf.constant(n, tf.int64),
                message=f"a ground-truth label is outside 0..{n - 1} and is not the ignore "
                        f"label {self.ignore_label}: the data and model.num_classes disagree",
            ),
            tf.debugging.assert_non_negative(labels, message="negative ground-truth label"),
        ]
        with tf.control_dependencies(checks):
            index = labels * n + predictions
        return tf.reshape(tf.math.bincount(index, minlength=n * n, maxlength=n * n,
                                           dtype=tf.int64), [n, n])

    def update(self, labels, predictions):
        """Adds a batch: `labels` and `predictions` int, same shape (e.g. (batch, H, W))."""
        labels = tf.convert_to_tensor(labels)
        predictions = tf.convert_to_tensor(predictions)
        if labels.shape != predictions.shape:
            raise ValueError(
                f"labels and predictions must have the same shape. Received: "
                f"{labels.shape} and {predictions.shape}"
            )
        self.matrix += self._batch_matrix(labels, predictions).numpy()
        return self

    def reset(self):
        self.matrix[:] = 0

    def miou(self):
        """The mean IoU so far (NaN before any scored pixel): `result()["miou"]`, cheaper."""
        cm = self.matrix.astype(np.float64)
        tp = np.diag(cm)
        union = cm.sum(0) + cm.sum(1) - tp
        seen = union > 0
        return float(np.mean(tp[seen] / union[seen])) if seen.any() else float("nan")

    def result(self, class_names=None):
        return scores_from_confusion(self.matrix, class_names)


def scores_from_confusion(matrix, class_names=None):
    """mIoU, per-class IoU and pixel accuracy from a confusion matrix `cm[true, predicted]`.

    Returns a dict: "miou" (float, NaN when no class has an IoU), "pixel_accuracy",
    "per_class_iou" ({name: float or None}, None for a class absent from both ground truth and
    predictions), "num_pixels" and "confusion_matrix" (a list of lists).
    """
    cm = np.asarray(matrix, np.float64)
    n = cm.shape[0]
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}-class confusion matrix")
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = cm.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "per_class_iou": {
            name: (None if np.isnan(v) else float(v)) for name, v in zip(names, iou)
        },
        "num_pixels": int(total),
        "confusion_matrix": np.asarray(matrix, np.int64).tolist(),
    }
