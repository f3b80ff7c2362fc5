"""The exported SavedModel as the server holds it: loaded once, its signatures described for
`rest.py`, called with NumPy inputs, its TensorFlow errors turned into `RequestError`s.

`ServedModel(path)` takes what `predict --model` takes: a SavedModel directory or a TF Serving
model base path `<dir>/<version>/` (its highest version; `predict.resolve_saved_model`). The
model's name is the base path's folder name (`exports/deeplab` and `exports/deeplab/3` are both
"deeplab"), its version the version folder's number (1 for a SavedModel outside a numbered
folder).

A request that the SavedModel rejects (`InvalidArgumentError`: a string that is no JPEG or
PNG, a JPEG cut short, a tensor with 4 channels) is the client's fault: a `RequestError` (400)
with the model's own message, freed of the graph's node names. Any other TensorFlow error is
the server's (500).
"""

import os
import time

import numpy as np
import tensorflow as tf

from deeplab_family.data.spec import load_spec
from deeplab_family.inference import JPEG_MAGIC, PNG_MAGIC
from deeplab_family.predictors import export_spec, resolve_saved_model
from deeplab_family.serve.rest import STRING, RequestError

# Keras' ExportArchive adds this one; TF Serving does not list it either.
_HIDDEN_PREFIX = "__"
# The largest image a request may hold, height x width: a 4096 x 4096 image (Cityscapes'
# 1024 x 2048 is an eighth of it).
DEFAULT_MAX_PIXELS = 4096 * 4096


def model_name(path):
    """The model name TF Serving would use for `path` (its `--model_name` is the folder)."""
    path = os.path.normpath(os.path.abspath(path))
    if os.path.basename(path).isdigit() and os.path.exists(os.path.join(path, "saved_model.pb")):
        path = os.path.dirname(path)
    return os.path.basename(path)


def clean_error(message):
    """A TensorFlow error message without the graph's bookkeeping: the text of a failed
    `tf.debugging.Assert` (its first argument), else the message less node names and op ids.

    >>> clean_error("Graph execution error:\\n\\nDetected at node a/Assert defined at (most "
    ...             "recent call last):\\n<stack traces unavailable>\\nassertion failed: "
    ...             "[images must be [b, h, w, 3]; received shape [1 4 4 4]]\\n\\t [[{{node "
    ...             "a/Assert}}]] [Op:__inference_f_12]")
    'images must be [b, h, w, 3]; received shape [1 4 4 4]'
    """
    lines = [
        line for line in message.splitlines()
        if line.strip() and not line.startswith(("Graph execution error", "Detected at node",
                                                 "<stack traces", "\t [["))
    ]
    # An Assert prints its strings C-escaped: `file\'s` for `file's`.
    text = " ".join(lines).strip().replace("\\'", "'").replace('\\"', '"')
    marker = "assertion failed: ["
    if marker in text:
        first = text.split(marker, 1)[1].split("] [", 1)[0].strip()
        return first[:-1].strip() if first.endswith("]") else first
    if " [Op:" in text:
        text = text.rsplit(" [Op:", 1)[0]
    return text


def image_size(data):
    """(height, width) from a JPEG or PNG file's header, without decoding it; None for bytes
    that are neither, or whose header does not parse (the signature's own check then names
    them)."""
    if not isinstance(data, bytes | bytearray):
        return None
    if data.startswith(PNG_MAGIC) and data[12:16] == b"IHDR":  # the first chunk, always
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if data.startswith(JPEG_MAGIC):
        try:  # reads the markers up to the frame header only
            height, width, _ = tf.io.extract_jpeg_shape(data).numpy()
        except tf.errors.OpError:
            return None
        return int(height), int(width)
    return None


def _numpy_dtype(spec):
    return STRING if spec.dtype == tf.string else spec.dtype.as_numpy_dtype


def _signature_defs(path):
    """The SavedModel's signature defs as TF Serving's metadata API shows them (proto JSON)."""
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    defs = proto.meta_graphs[0].signature_def
    out = {}
    for name in sorted(defs):
        if name.startswith(_HIDDEN_PREFIX):
            continue
        try:
            out[name] = json_format.MessageToDict(
                defs[name], preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True)
        except TypeError:  # an older protobuf: the flag had another name
            out[name] = json_format.MessageToDict(defs[name], preserving_proto_field_name=True)
    return out


class ServedModel:
    """An exported SavedModel, loaded once, answering predict calls from worker threads.

    Args:
        path: a SavedModel dir or a TF Serving base path (its highest version is served).
        name: the model name in the URLs; None: the base path's folder name (`model_name`).
        max_pixels: the largest image (height x width) a request may hold; a larger one is a
            400 before anything is decoded (a small file can hold a huge image: a 32 MiB PNG
            decompresses to gigabytes, and the network's activations are many times that).

    Attributes:
        path, name, version: the SavedModel dir, the model name, its version (int).
        inputs: `{signature: {input name: numpy dtype}}` (`rest.STRING` for tf.string).
        spec: the export's `DatasetSpec` (class names and colours), VOC's when it has none.
        load_seconds: how long loading and the warm-up took.

    Example:

        model = ServedModel("exports/deeplab")
        outputs = model.predict("serving_default", {"image_bytes": [open("a.jpg", "rb").read()]})
        outputs["semantic_predictions"].shape   # (1, H, W)
    """

    def __init__(self, path, name=None, max_pixels=DEFAULT_MAX_PIXELS):
        start = time.perf_counter()
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1. Received: {max_pixels}")
        self.max_pixels = int(max_pixels)
        self.path = resolve_saved_model(path)
        self.name = name or model_name(path)
        folder = os.path.basename(os.path.normpath(self.path))
        self.version = int(folder) if folder.isdigit() else 1
        self._loaded = tf.saved_model.load(self.path)
        self.signatures = {k: v for k, v in self._loaded.signatures.items()
                           if not k.startswith(_HIDDEN_PREFIX)}
        self._specs = {name: dict(sorted(sig.structured_input_signature[1].items()))
                       for name, sig in self.signatures.items()}
        self.inputs = {name: {k: _numpy_dtype(s) for k, s in specs.items()}
                       for name, specs in self._specs.items()}
        self.spec = export_spec(self.path) or load_spec("voc")
        self._signature_defs = _signature_defs(self.path)
        self.warm_up()
        self.load_seconds = time.perf_counter() - start

    def warm_up(self):
        """One small call of each signature that takes images, so that the first request does
        not pay for the graph's first run."""
        image = np.full((1, 17, 19, 3), 128, np.uint8)
        for name, inputs in self.inputs.items():
            if len(inputs) != 1:
                continue
            (input_name, dtype), = inputs.items()
            if dtype == STRING:
                self.predict(name, {input_name: [tf.io.encode_png(image[0]).numpy()]})
            elif dtype == np.uint8:
                self.predict(name, {input_name: image})

    def predict(self, signature_name, batch):
        """`{output: array}` of one signature call on `{input: batch}` (as `rest` decodes)."""
        signature = self.signatures[signature_name]
        tensors = {}
        for name, values in batch.items():
            dtype = self.inputs[signature_name][name]
            if dtype == STRING:
                for index, data in enumerate(values):
                    self._check_pixels(image_size(data), f"{name}[{index}]")
                tensors[name] = tf.constant(values, tf.string)
            else:
                values = np.asarray(values, dtype)
                # A signature call does not check shapes, and a wrong rank fails deep inside.
                spec = self._specs[signature_name][name]
                if not spec.shape.is_compatible_with(values.shape):
                    shape = ", ".join("any" if d is None else str(d) for d in spec.shape)
                    raise RequestError(
                        f"{signature_name}: input {name} must be a tensor of shape [{shape}]; "
                        f"received shape {list(values.shape)}")
                if values.ndim == 4:
                    self._check_pixels(values.shape[1:3], name)
                tensors[name] = tf.constant(values)
        try:
            outputs = signature(**tensors)
        except tf.errors.InvalidArgumentError as e:
            raise RequestError(clean_error(e.message)) from None
        except (ValueError, TypeError) as e:  # a rank the signature's input spec refuses
            raise RequestError(f"{signature_name} cannot take the inputs: {e}") from None
        except tf.errors.OpError as e:
            raise RequestError(clean_error(e.message), status=500) from None
        return {k: v.numpy() for k, v in outputs.items()}

    def _check_pixels(self, size, what):
        if size is not None and int(size[0]) * int(size[1]) > self.max_pixels:
            raise RequestError(
                f"{what} is a {int(size[1])}x{int(size[0])} image ({int(size[0]) * int(size[1])} "
                f"pixels), over the server's limit of {self.max_pixels} pixels (--max-pixels)")

    def metadata(self):
        """TF Serving's `GetModelMetadataResponse` as JSON."""
        return {
            "model_spec": {"name": self.name, "signature_name": "", "version": str(self.version)},
            "metadata": {"signature_def": {"signature_def": self._signature_defs}},
        }
