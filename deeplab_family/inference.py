"""Inference, as `evaluate`, `export` and `predict` share it.

- `load_inference_model`: the one way to get a model from a training model dir: built at the
  requested output stride with synchronized BN off, the latest checkpoint restored.
- `multi_scale_probabilities` and `class_scores`: multi-scale + flip inference (DeepLabv3
  Sec 4.3). One implementation, so that an exported SavedModel reproduces the evaluated mIoU
  exactly.
- `sliding_window_logits` (with `window_origins`): sliding-window inference
  (`inference.window`), a logits function whose network memory is bounded by the window, for
  the images too large to run whole (Cityscapes at output stride 8, DeepLabv3 Appendix C).
  It is a logits function like the model's, so it composes with multi-scale and flip.
  `window_report` is how the JSON reports record a window.
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
    export build the same network whatever the training config said. The atrous convs are
    dense (`use_dense_atrous_convs`).
    """
    if output_stride is not None:
        model_config = model_config.with_output_stride(output_stride)
    model_config = dataclasses.replace(
        model_config,
        backbone=dataclasses.replace(model_config.backbone, synchronized_bn=False),
    )
    model = build_model(model_config)
    use_dense_atrous_convs(model)
    return model


def use_dense_atrous_convs(model):
    """Switches every `AtrousConv2D` of `model` to the native dilated conv; returns the count.

    ASPP computes its atrous convs tap by tap (`skip_padded_taps`, a speed-up under XLA on
    CPU). Same variables, same function, but exported it becomes, per conv, nine
    STRIDED_SLICE + FULLY_CONNECTED + PAD and an ADD_N in TFLite: BatchNorm no longer folds
    into a CONV_2D, ADD_N has no int8 kernel (a float island with DEQUANTIZE / QUANTIZE in the
    "full integer" model, and int8 mIoU drops), and the model server without XLA gains
    nothing (oneDNN's dilated conv already skips the padding). Inference graphs therefore use one
    dilated CONV_2D per conv (`build_inference_model`), in `evaluate` as in the export: the
    two then run the same kernels and agree to the last pixel (`export.verify`; with taps in
    one and dense convs in the other, float rounding flipped 1 pixel in 7.3 million on the
    demo model). The flag is read at call time, so this only changes the traced graphs, not
    the weights or the config.
    """
    from deeplab_family.layers.conv import AtrousConv2D

    switched = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, AtrousConv2D) and getattr(layer, "skip_padded_taps", False):
            layer.skip_padded_taps = False
            switched += 1
    return switched


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


def window_origins(length, size, stride):
    """Where the windows along one dimension start, and how long they are (mmseg's grid).

    `max(length - size + stride - 1, 0) // stride + 1` windows, the i-th starting at
    `i * stride`; the last is shifted back to end at the border (`length - size`) instead of
    reaching past it, so every window lies inside the image and no padding is ever run through
    the network. A dimension no longer than `size` is one window covering it, of its length.

    Args:
        length: the image's height or width (int or scalar int32 tensor).
        size, stride: the window's size and stride along that dimension (ints).

    Returns:
        `(origins, crop)`: int32 `(n,)` and the window's length, `min(size, length)`.

    >>> origins, crop = window_origins(1024, 513, 342)
    >>> origins.numpy().tolist(), int(crop)
    ([0, 342, 511], 513)
    >>> [o.numpy().tolist() for o in window_origins(300, 513, 342)]
    [[0], 300]
    """
    length = tf.convert_to_tensor(length, tf.int32)
    crop = tf.minimum(length, size)
    count = tf.maximum(length - size + stride - 1, 0) // stride + 1
    return tf.minimum(tf.range(count) * stride, length - crop), crop


def _coverage(length, size, stride):
    """float32 `(length,)`: how many windows cover each position of one dimension."""
    origins, crop = window_origins(length, size, stride)
    positions = tf.range(length)[None, :]
    inside = (positions >= origins[:, None]) & (positions < origins[:, None] + crop)
    return tf.reduce_sum(tf.cast(inside, tf.float32), axis=0)


def sliding_window_logits(logits_fn, window, num_classes=None):
    """`logits_fn` run window by window, its logits averaged where windows overlap.

    The windows (`window.size`, every `window.stride` pixels) follow mmseg's `slide_inference`
    (`window_origins`): along each dimension they start every `stride` pixels, the last one is
    shifted back to end at the border, and a dimension no larger than the window is one window
    covering it. An image that one window covers is therefore run exactly as whole-image
    inference would run it, and gets the same logits bit for bit. Where windows overlap, the
    result is the sum of their logits divided by the number of windows.

    Logits, not probabilities, are averaged: the result is again a logits function (images ->
    logits at input size), so it composes with `multi_scale_probabilities` unchanged, which
    resizes each scale's logits and only then applies the softmax (research/deeplab's order);
    averaging probabilities here would put a softmax before that resize. It is also what mmseg
    does (the sum of the crops' logits over `count_mat`). The two differ only in overlaps, where
    the windows' logits are close anyway.

    The windows run one at a time (`tf.while_loop`, `parallel_iterations=1`) inside the traced
    graph, each through `logits_fn`, and are added into one float32 `(B, H, W, C)` sum, so the
    network's memory is that of one window whatever the image size; only the image and the
    sum grow with it. Height and width are dynamic: one trace serves every image size.

    Args:
        logits_fn: float32 images `(B, h, w, 3)` -> logits `(B, h, w, C)` at the input size.
        window: a `config.WindowConfig` (`size` and `stride`, each a (height, width) pair).
        num_classes: C, if known: the static channel count of the result (the loop hides it).

    Returns:
        A function of the same contract as `logits_fn`, returning float32 logits.

    Example:

    >>> from deeplab_family.config import WindowConfig
    >>> windowed = sliding_window_logits(lambda x: x[..., :2] * 2.0, WindowConfig(4, 3))
    >>> images = tf.reshape(tf.range(2 * 7 * 5 * 3, dtype=tf.float32), (2, 7, 5, 3))
    >>> bool(tf.reduce_all(windowed(images) == images[..., :2] * 2.0))
    True
    """
    size_h, size_w = (int(v) for v in window.size)
    stride_h, stride_w = (int(v) for v in window.stride)

    def windowed(images):
        images = tf.convert_to_tensor(images, tf.float32)
        shape = tf.shape(images)
        height, width = shape[1], shape[2]
        rows, crop_h = window_origins(height, size_h, stride_h)
        cols, crop_w = window_origins(width, size_w, stride_w)

        def loop(count, body):
            # The sums start as a broadcastable zero: the class count is only known inside the
            # loop, and 0 + x == x, so a single window stays bit for bit the network's output.
            return tf.while_loop(
                lambda i, _: i < count,
                body,
                (tf.constant(0), tf.zeros([1, 1, 1, 1], tf.float32)),
                shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, None, None, None])),
                parallel_iterations=1,
            )[1]

        def row(i, total):
            y = rows[i]

            def window(j, strip):
                x = cols[j]
                crop = tf.slice(images, [0, y, x, 0], [-1, crop_h, crop_w, -1])
                logits = tf.cast(logits_fn(crop), tf.float32)
                return j + 1, strip + tf.pad(logits, [[0, 0], [0, 0], [x, width - x - crop_w],
                                                      [0, 0]])

            # One row of windows is summed into a strip of the window's height first: a pad
            # to the whole image per window would move the full-size sum once per window (on
            # small windows, more time than the network).
            strip = loop(tf.size(cols), window)
            return i + 1, total + tf.pad(strip, [[0, 0], [y, height - y - crop_h], [0, 0],
                                                 [0, 0]])

        total = loop(tf.size(rows), row)
        # Windows form a grid, so the count is the product of the per-dimension coverages.
        count = (_coverage(height, size_h, stride_h)[:, None]
                 * _coverage(width, size_w, stride_w)[None, :])
        logits = total / count[None, :, :, None]
        logits.set_shape([images.shape[0], images.shape[1], images.shape[2], num_classes])
        return logits

    return windowed


def window_report(window):
    """`{"size": [H, W], "stride": [H, W]}` of a `WindowConfig`, or None: how the reports
    (`evaluate`'s JSON, `export_info.json`) record the window.

    >>> from deeplab_family.config import WindowConfig
    >>> window_report(WindowConfig(size=(769, 769)))
    {'size': [769, 769], 'stride': [513, 513]}
    """
    if window is None:
        return None
    return {"size": list(window.size), "stride": list(window.stride)}


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
