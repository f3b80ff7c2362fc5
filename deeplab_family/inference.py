"""Inference, as `evaluate`, `export` and `predict` share it.

- `load_inference_model`: the one way to get a model from a training model dir: built at the
  requested output stride with synchronized BN off, the latest checkpoint restored.
- `multi_scale_probabilities` and `class_scores`: multi-scale + flip inference (DeepLabv3
  Sec 4.3). One implementation, so that an exported SavedModel reproduces the evaluated mIoU
  exactly.
- `fit_to_size` and `restore_size`: an image of any size around a fixed-size model input (the
  TFLite models, their int8 calibration), and the mask back to the image.
- `JPEG_MAGIC` and `PNG_MAGIC`: how the image files that the tools accept begin.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from deeplab_family.data.augment import IMAGENET_MEAN_RGB
from deeplab_family.models import build_model
from deeplab_family.training.checkpoints import restore_model

# The signatures that start every JPEG (SOI + the first marker) and PNG file.
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def build_inference_model(model_config, output_stride=None):
    """The model of `model_config` at `output_stride` (None: the config's), for inference.

    Synchronized BN is turned off: it only changes how training statistics are gathered
    across replicas, and inference uses the moving averages either way, so evaluation and
    export build the same network whatever the training config said.
    """
    if output_stride is not None:
        model_config = model_config.with_output_stride(output_stride)
    model_config = dataclasses.replace(
        model_config,
        backbone=dataclasses.replace(model_config.backbone, synchronized_bn=False),
    )
    return build_model(model_config)


def load_inference_model(model_config, model_dir, output_stride=None):
    """`build_inference_model` with the latest checkpoint of `model_dir` restored.

    The weights do not depend on the output stride: a model trained at 16 is evaluated or
    exported at 8 (DeepLabv3 Sec 4.1).

    Returns:
        `(model, checkpoint prefix)`. Raises as `training.checkpoints.restore_model` does: a
        FileNotFoundError without a checkpoint, a ValueError for one that does not fit.
    """
    model = build_inference_model(model_config, output_stride)
    return model, restore_model(model, model_dir)


def scaled_size(size, scale):
    """`round(scale * size)`, at least 1: the size of one scale of multi-scale inference."""
    scaled = tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32)
    return tf.maximum(scaled, 1)


def multi_scale_probabilities(logits_fn, images, scales=(1.0,), flip=False, resize="logits"):
    """Softmax probabilities averaged over scales and (optionally) left-right flips.

    The order of the steps follows research/deeplab (`predict_labels_multi_scale`): each scale's
    logits are resized bilinearly to the input size, then turned into probabilities, and the
    probabilities are averaged (DeepLabv3 Sec 4.3, "average the predictions"). Resizing the
    logits continues the interpolation that the model already applies to its own logits
    (stride-exact upsampling to the scaled input), so a scale of 1.0 and the other scales are
    treated alike. `resize="probabilities"` (softmax first, then resize) is the other order; the
    two differ only near class boundaries, where the bilinear mix of logits and of
    probabilities disagree: on the `make demo` model the mIoU moved by the amount that the
    README states (`benchmarks/multiscale_order.py`).

    Args:
        logits_fn: float32 images `(B, h, w, 3)` -> logits `(B, h, w, C)` at the input size.
        images: float32 `(B, H, W, 3)`, RGB 0..255.
        scales: input scales (1.0 alone = single scale).
        flip: also average the mirrored input of every scale.
        resize: "logits" (resize, then softmax; default) or "probabilities" (softmax, then
            resize).

    Returns:
        float32 `(B, H, W, C)`. For each scale the images are resized (bilinear) to
        `round(scale * size)` and the scores resized back to `(H, W)` as above.
    """
    if resize not in ("logits", "probabilities"):
        raise ValueError(
            f'resize must be "logits" or "probabilities". Received: resize={resize!r}'
        )
    size = tf.shape(images)[1:3]
    total = None
    count = 0
    for scale in scales:
        if scale == 1.0:
            scaled = images
        else:
            scaled = tf.image.resize(images, scaled_size(size, scale), method="bilinear")
        for mirrored in (False, True) if flip else (False,):
            x = tf.reverse(scaled, axis=[2]) if mirrored else scaled
            scores = tf.cast(logits_fn(x), tf.float32)
            if resize == "probabilities":
                scores = tf.nn.softmax(scores, axis=-1)
            if scale != 1.0:
                scores = tf.image.resize(scores, size, method="bilinear")
            probs = tf.nn.softmax(scores, axis=-1) if resize == "logits" else scores
            if mirrored:
                probs = tf.reverse(probs, axis=[2])
            total = probs if total is None else total + probs
            count += 1
    return total if count == 1 else total / float(count)


def class_scores(logits_fn, images, scales=(1.0,), flip=False, resize="logits"):
    """Per-pixel class scores whose argmax is the prediction: the averaged probabilities of
    `multi_scale_probabilities`, or, for the single view (scale 1.0, no flip), the logits
    themselves (the same argmax, without the softmax's cost and the float ties it can make).
    """
    if tuple(float(s) for s in scales) == (1.0,) and not flip:
        return tf.cast(logits_fn(images), tf.float32)
    return multi_scale_probabilities(logits_fn, images, scales, flip, resize=resize)


def fit_to_size(image, size, mean_pixel=IMAGENET_MEAN_RGB):
    """Fits an image into a fixed model input.

    Args:
        image: uint8 or float `(h, w, 3)`.
        size: (H, W) of the model input.
        mean_pixel: RGB value of the padding.

    Returns:
        `(fitted, (fh, fw))`: float32 `(H, W, 3)` with the image (shrunk with antialiasing,
        aspect kept, if it is larger than the input) at the top left and `mean_pixel` in the
        rest; `(fh, fw)` the size of the image inside it.
    """
    h, w = image.shape[:2]
    height, width = size
    scale = min(height / h, width / w)
    if scale < 1.0:
        fh = min(height, max(1, round(h * scale)))
        fw = min(width, max(1, round(w * scale)))
        resized = tf.image.resize(image, (fh, fw), method="bilinear", antialias=True).numpy()
    else:
        fh, fw = h, w
        resized = image
    fitted = np.empty((height, width, 3), np.float32)
    fitted[...] = np.asarray(mean_pixel, np.float32)
    fitted[:fh, :fw] = resized
    return fitted, (fh, fw)


def restore_size(mask, fitted_size, original_size):
    """Undoes `fit_to_size` on a mask `(H, W)`: crop, then nearest resize if it was shrunk."""
    fh, fw = fitted_size
    mask = np.asarray(mask)[:fh, :fw]
    if (fh, fw) != tuple(original_size):
        mask = tf.image.resize(mask[..., None], original_size, method="nearest").numpy()[..., 0]
    return mask
