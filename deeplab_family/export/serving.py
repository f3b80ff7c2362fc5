"""The SavedModel for TF Serving: its two signatures around a Keras segmentation model.

Both signatures take raw pixels; normalisation is inside the model:

- `serving_default`: `image_bytes`, tf.string `[batch]`, each a JPEG or PNG file.
- `serve_image_tensor`: `images`, uint8 `[batch, H, W, 3]`, RGB.

Both return:

- `semantic_predictions`: uint8 `[batch, H, W]`, the class of every pixel;
- `image_sizes`: int32 `[batch, 2]`, each image's (height, width);
- `probabilities`: float32 `[batch, H, W, num_classes]`, only with `export.probabilities`.

A batch of images of different sizes works: each image is run at its own size (so its result
is exactly what it would be alone), and the results are padded to the largest height and
width in the batch, with class 255 (and probability 0) in the padding.
`semantic_predictions[i, :image_sizes[i, 0], :image_sizes[i, 1]]` is image i at its original
size. A batch of same-size images (and every `serve_image_tensor` batch) runs as one batch,
without padding.

`export.scales` and `export.flip` bake multi-scale and left-right flip inference into both
signatures: the logits of every scale (and its mirror) are resized to the original size, turned
into softmax probabilities and averaged (DeepLabv3 Sec 4.3), with the same views and code as
`evaluate` (`inference.multi_scale_probabilities`), so that the SavedModel reproduces the
evaluated mIoU.

`export.window` bakes the experiment's sliding window (`inference.window`) into both
signatures: every scale and flip of every image runs window by window, the windows' logits
averaged where they overlap (`inference.sliding_window_logits`, as `evaluate --window` does),
so the network's memory is bounded by the window (times the batch, for a same-size batch, whose
images go through each window together), not by the largest image a client sends. An image that
one window covers gives exactly what the export without a window gives. `predict`
on such a SavedModel, and any TF Serving client, gets windowed inference without knowing it;
`export_info.json` records the window.

A string that is not a JPEG or a PNG fails the request with an InvalidArgumentError naming its
index (`image_bytes[2] (11 bytes) is neither a JPEG nor a PNG image ...`); a model server
answers that request with the error and keeps serving.
"""

import keras
import tensorflow as tf

from deeplab_family.data.schema import IGNORE_LABEL
from deeplab_family.inference import (
    PNG_MAGIC,
    class_scores,
    multi_scale_probabilities,
    sliding_window_logits,
)

PAD_CLASS = IGNORE_LABEL  # the padding of a mixed-size batch, as the ignore label


def _decode_one(image_bytes, index):
    """One JPEG or PNG to uint8 `(h, w, 3)`; anything else is an error naming `index`."""
    is_jpeg = tf.io.is_jpeg(image_bytes)
    is_png = tf.equal(tf.strings.substr(image_bytes, 0, len(PNG_MAGIC)), PNG_MAGIC)
    check = tf.debugging.Assert(
        tf.logical_or(is_jpeg, is_png),
        [
            tf.strings.format(
                "image_bytes[{}] ({} bytes) is neither a JPEG nor a PNG image: send the "
                "file's bytes unchanged (in a REST request, base64 in {\"b64\": ...})",
                (index, tf.strings.length(image_bytes)),
            )
        ],
        name="check_image_format",
    )
    with tf.control_dependencies([check]):
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_images(image_bytes):
    """A batch of JPEG/PNG strings to uint8 `(B, Hmax, Wmax, 3)` (zero padded) and sizes.

    Returns:
        `(images, sizes)`: sizes int32 `(B, 2)`, each image's (height, width).
    """
    n = tf.size(image_bytes)
    check = tf.debugging.assert_positive(
        n, message="image_bytes is empty: send at least one image"
    )
    with tf.control_dependencies([check]):
        n = tf.identity(n)
    decoded = tf.TensorArray(tf.uint8, size=n, infer_shape=False,
                             element_shape=tf.TensorShape([None, None, 3]))
    sizes = tf.TensorArray(tf.int32, size=n, element_shape=tf.TensorShape([2]))

    def decode(i, decoded, sizes):
        image = _decode_one(image_bytes[i], i)
        return i + 1, decoded.write(i, image), sizes.write(i, tf.shape(image)[:2])

    _, decoded, sizes = tf.while_loop(lambda i, *_: i < n, decode, (0, decoded, sizes))
    sizes = sizes.stack()
    max_size = tf.reduce_max(sizes, axis=0)
    padded = tf.TensorArray(tf.uint8, size=n, element_shape=tf.TensorShape([None, None, 3]))

    def pad(i, padded):
        image = decoded.read(i)
        image = tf.pad(image, [[0, max_size[0] - sizes[i, 0]], [0, max_size[1] - sizes[i, 1]],
                               [0, 0]])
        return i + 1, padded.write(i, image)

    _, padded = tf.while_loop(lambda i, *_: i < n, pad, (0, padded))
    images = padded.stack()
    images.set_shape([None, None, None, 3])
    return images, sizes


def _valid_mask(sizes, height, width):
    rows = tf.range(height)[None, :, None] < sizes[:, 0, None, None]
    cols = tf.range(width)[None, None, :] < sizes[:, 1, None, None]
    return tf.logical_and(rows, cols)


class ServingFunctions:
    """The two serving signatures around a Keras segmentation model.

    Args:
        model: a model of the registry (dict output with "logits").
        scales, flip: multi-scale / flip inference (see `multi_scale_probabilities`).
        probabilities: add the `probabilities` output.
        window: None, or a `config.WindowConfig`: sliding-window inference of every view
            (`inference.sliding_window_logits`).
    """

    def __init__(self, model, scales=(1.0,), flip=False, probabilities=False, window=None):
        self.model = model
        self.scales = tuple(float(s) for s in scales)
        self.flip = bool(flip)
        self.probabilities = bool(probabilities)
        self.window = window
        # One traced copy of the network, called by every scale, flip, window and branch below.
        self._logits = tf.function(
            self._call_model,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
        )
        self._views = (self._logits if window is None
                       else sliding_window_logits(self._logits, window))

    def _call_model(self, images):
        return tf.cast(self.model(images, training=False)["logits"], tf.float32)

    def _scores(self, images):
        """Per-pixel class scores: the averaged probabilities with the probabilities output,
        else `inference.class_scores` (the logits of a single view, as `evaluate` does)."""
        if self.probabilities:
            return multi_scale_probabilities(self._views, images, self.scales, self.flip)
        return class_scores(self._views, images, self.scales, self.flip)

    def _per_image(self, images, sizes):
        """Each image at its own size, padded back to the batch size (score 0)."""
        n, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
        out = tf.TensorArray(tf.float32, size=n, element_shape=tf.TensorShape([None, None, None]))

        def body(i, out):
            h, w = sizes[i, 0], sizes[i, 1]
            scores = self._scores(images[i : i + 1, :h, :w])[0]
            scores = tf.pad(scores, [[0, height - h], [0, width - w], [0, 0]])
            return i + 1, out.write(i, scores)

        _, out = tf.while_loop(lambda i, *_: i < n, body, (0, out))
        return out.stack()

    def _outputs(self, images, sizes):
        images = tf.cast(images, tf.float32)
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        uniform = tf.reduce_all(tf.equal(sizes, tf.stack([height, width])[None]))
        scores = tf.cond(
            uniform,
            lambda: self._scores(images),
            lambda: self._per_image(images, sizes),
        )
        predictions = tf.cast(tf.argmax(scores, axis=-1, output_type=tf.int32), tf.uint8)
        predictions = tf.where(
            _valid_mask(sizes, height, width), predictions, tf.constant(PAD_CLASS, tf.uint8)
        )
        outputs = {"semantic_predictions": predictions, "image_sizes": sizes}
        if self.probabilities:
            outputs["probabilities"] = scores
        return outputs

    def serve_image_bytes(self, image_bytes):
        images, sizes = decode_images(image_bytes)
        return self._outputs(images, sizes)

    def serve_image_tensor(self, images):
        shape = tf.shape(images)
        # The signature says [batch, H, W, 3], but a signature call (or a model server) does
        # not check shapes, and 4 channels would fail deep inside the model. The channel
        # count is computed from the size so that grappler cannot fold the check away using
        # the declared shape.
        pixels = tf.maximum(tf.reduce_prod(shape[:3]), 1)
        channels = tf.size(images, out_type=tf.int32) // pixels
        check = tf.debugging.Assert(
            tf.logical_and(tf.equal(channels, 3), tf.size(images) > 0),
            [tf.strings.format(
                "images must be uint8 [batch, height, width, 3] RGB, not empty; received "
                "shape {}",
                tf.shape(images))],
            name="check_image_channels",
        )
        with tf.control_dependencies([check]):
            images = tf.identity(images)
        sizes = tf.tile(shape[None, 1:3], [shape[0], 1])
        return self._outputs(images, sizes)


def write_endpoints(path, endpoints):
    """Writes a SavedModel whose signatures are `endpoints` to `path`; returns `path`.

    Args:
        path: the SavedModel directory.
        endpoints: `{signature name: (function, input_signature)}`.
    """
    # No `archive.track(model)`: the endpoints' variables are tracked anyway, and tracking the
    # model too saves every weight twice (Keras variables and their captured tf.Variables).
    archive = keras.export.ExportArchive()
    for name, (function, input_signature) in endpoints.items():
        archive.add_endpoint(name, function, input_signature=input_signature)
    archive.write_out(path, verbose=False)
    return path


def write_saved_model(model, path, export_config, window=None):
    """Writes the SavedModel with `serving_default` and `serve_image_tensor` to `path`.

    `window`: None, or the `config.WindowConfig` to bake in (`export()` passes
    `inference.window` when `export.window` is on).
    """
    functions = ServingFunctions(
        model, export_config.scales, export_config.flip, export_config.probabilities, window
    )
    return write_endpoints(path, {
        "serving_default": (
            functions.serve_image_bytes,
            [tf.TensorSpec([None], tf.string, name="image_bytes")],
        ),
        "serve_image_tensor": (
            functions.serve_image_tensor,
            [tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
        ),
    })
