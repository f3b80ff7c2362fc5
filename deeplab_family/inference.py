"""Multi-scale + flip inference (DeepLabv3 Sec 4.3), shared by `evaluate` and `export`.

One implementation, so that an exported SavedModel reproduces the evaluated mIoU exactly.
"""

import tensorflow as tf


def scaled_size(size, scale):
    """`round(scale * size)`, at least 1: the size of one scale of multi-scale inference."""
    scaled = tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32)
    return tf.maximum(scaled, 1)


def multi_scale_probabilities(logits_fn, images, scales=(1.0,), flip=False):
    """Softmax probabilities averaged over scales and (optionally) left-right flips.

    Args:
        logits_fn: float32 images `(B, h, w, 3)` -> logits `(B, h, w, C)` at the input size.
        images: float32 `(B, H, W, 3)`, RGB 0..255.
        scales: input scales (1.0 alone = single scale).
        flip: also average the mirrored input of every scale.

    Returns:
        float32 `(B, H, W, C)`. For each scale the images are resized (bilinear) to
        `round(scale * size)`, and the softmax probabilities resized back to `(H, W)`: the
        the averaging of DeepLabv3 Sec 4.3.
    """
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
            probs = tf.nn.softmax(tf.cast(logits_fn(x), tf.float32), axis=-1)
            if scale != 1.0:
                probs = tf.image.resize(probs, size, method="bilinear")
            if mirrored:
                probs = tf.reverse(probs, axis=[2])
            total = probs if total is None else total + probs
            count += 1
    return total if count == 1 else total / float(count)
