"""Multi-scale + flip inference (DeepLabv3 Sec 4.3), shared by `evaluate` and `export`.

One implementation, so that an exported SavedModel reproduces the evaluated mIoU exactly.
"""

import tensorflow as tf


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
