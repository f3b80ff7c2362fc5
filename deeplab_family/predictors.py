"""Running an exported model: a SavedModel or a `.tflite` file written by `deeplab_family.export`.

The library half of `python -m deeplab_family.predict`, which `deeplab_family.serve` and
`deeplab_family.export.verify` use too:

- `resolve_saved_model`: a SavedModel dir, or the highest version of a TF Serving base path;
- `SavedModelPredictor` (`serving_default` on encoded files, `serve_image_tensor` on pixels) and
  `TFLitePredictor` (a fixed-size model around images of any size; the host takes the argmax of
  a file that ends at `logits` or `probabilities`), `load_predictor` picks by the path;
- `export_spec`: the dataset spec (class names and colours) the export recorded;
- `read_image`: a JPEG or PNG file's bytes and pixels, decoded as the SavedModel decodes them.
"""

import json
import os

import numpy as np
import tensorflow as tf

from deeplab_family.config import TFLITE_OUTPUTS
from deeplab_family.data.spec import DatasetSpec
from deeplab_family.export.export_dir import INFO_FILENAME, versions
from deeplab_family.export.tflite import tflite_output_name
from deeplab_family.inference import JPEG_MAGIC, PNG_MAGIC, fit_to_size, restore_size


class ImageError(ValueError):
    """An input image that cannot be used; the message names the file."""


def read_image(path):
    """The file's bytes and its pixels, uint8 `(H, W, 3)` RGB, decoded as the SavedModel does."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith((JPEG_MAGIC, PNG_MAGIC)):
        raise ImageError(f"{path} is not a JPEG or PNG file ({len(data)} bytes)")
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except tf.errors.OpError as e:
        raise ImageError(f"{path} cannot be decoded: {e.message}") from None
    return data, image


def resolve_saved_model(path):
    """A SavedModel dir, or the highest `<version>` of a TF Serving base path."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    found = [v for v in versions(path)
             if os.path.exists(os.path.join(path, str(v), "saved_model.pb"))]
    if found:
        return os.path.join(path, str(found[-1]))
    raise FileNotFoundError(
        f"{path} is neither a SavedModel directory (with saved_model.pb) nor an export dir "
        "with numbered versions, nor a .tflite file"
    )


class SavedModelPredictor:
    """Runs the `serving_default` signature on encoded image files (`predict`), and
    `serve_image_tensor` on decoded pixels (`predict_pixels`: video frames).

    Args:
        path: SavedModel dir or TF Serving base path (highest version).
    """

    def __init__(self, path):
        self.path = resolve_saved_model(path)
        self._loaded = tf.saved_model.load(self.path)
        self._serve = self._loaded.signatures["serving_default"]
        # Looked up once (a video calls it every frame); None in a SavedModel without it.
        self._serve_pixels = self._loaded.signatures.get("serve_image_tensor")

    def predict(self, image_bytes, image=None):
        """uint8 `(H, W)` classes of one encoded image."""
        out = self._serve(image_bytes=tf.constant([image_bytes]))
        return out["semantic_predictions"][0].numpy()

    def predict_pixels(self, image):
        """uint8 `(H, W)` classes of uint8 RGB pixels `(H, W, 3)` (`serve_image_tensor`)."""
        serve = self._serve_pixels
        if serve is None:
            serve = self._loaded.signatures["serve_image_tensor"]  # the KeyError names it
        out = serve(images=tf.constant(np.asarray(image, np.uint8)[None]))
        return out["semantic_predictions"][0].numpy()


class TFLitePredictor:
    """Runs a fixed-size TFLite model from `export` on images of any size.

    The model's output is `semantic_predictions` (uint8 classes, the argmax inside), or
    `logits` / `probabilities` (float32 `[1, H, W, C]`, `export.tflite_output`), whose argmax
    `run` takes on the host; `output` says which ("classes", "logits" or "probabilities").

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads (None: LiteRT's default).
    """

    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        if not os.path.isfile(path):
            raise FileNotFoundError(f"no TFLite file {path}")
        self.path = path
        self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
        self._runner = self.interpreter.get_signature_runner("serving_default")
        details = self._runner.get_input_details()["images"]
        self.size = tuple(int(v) for v in details["shape"][1:3])
        self.input_dtype = details["dtype"]
        self.input_quantization = details["quantization"]  # (scale, zero_point)
        outputs = self._runner.get_output_details()
        names = {tflite_output_name(kind): kind for kind in TFLITE_OUTPUTS}
        found = [name for name in outputs if name in names]
        if len(found) != 1:
            raise ValueError(
                f"{path}: the TFLite signature's outputs {sorted(outputs)} have none (or more "
                f"than one) of {sorted(names)}: not a model written by deeplab_family.export")
        self.output_name = found[0]
        self.output = names[self.output_name]
        output = outputs[self.output_name]
        if self.output != "classes":
            scale = output["quantization"][0]
            # A quantized score output keeps its argmax as long as the scale is positive.
            if output["dtype"] != np.float32 and not scale > 0:
                raise ValueError(f"{path}: output {self.output_name} is {output['dtype']} "
                                 f"with quantization scale {scale}; the argmax needs scale > 0")

    def scores(self, images):
        """float32 pixels `(1, H, W, 3)` at the model size -> the model's raw output."""
        images = np.asarray(images, np.float32)
        if self.input_dtype != np.float32:
            scale, zero_point = self.input_quantization
            info = np.iinfo(self.input_dtype)
            images = np.clip(np.round(images / scale + zero_point), info.min, info.max)
            images = images.astype(self.input_dtype)
        return self._runner(images=images)[self.output_name]

    def run(self, images):
        """float32 pixels `(1, H, W, 3)` at the model size -> uint8 classes `(1, H, W)`."""
        out = self.scores(images)
        if self.output == "classes":
            return out
        # np.argmax takes the first of tied scores, as TFLite's ARG_MAX does.
        return np.argmax(out, axis=-1).astype(np.uint8)

    def predict(self, image_bytes=None, image=None):
        """uint8 `(h, w)` classes of one image `(h, w, 3)`, fitted around the model size."""
        fitted, fitted_size = fit_to_size(image, self.size)
        mask = self.run(fitted[None])[0]
        return restore_size(mask, fitted_size, image.shape[:2])

    def predict_pixels(self, image):
        """uint8 `(h, w)` classes of uint8 RGB pixels `(h, w, 3)` (a video frame)."""
        return self.predict(image=image)


def export_spec(model_path):
    """The dataset spec in the `export_info.json` of an exported model, or None.

    Looked for beside the SavedModel (`<version>/export_info.json`) and, for a `.tflite` file,
    in the version dir above it (`<version>/tflite/<name>.tflite`).
    """
    if model_path.endswith(".tflite"):
        folder = os.path.dirname(os.path.abspath(model_path))
        candidates = [folder, os.path.dirname(folder)]
    else:
        try:
            candidates = [resolve_saved_model(model_path)]
        except FileNotFoundError:
            return None
    for folder in candidates:
        path = os.path.join(folder, INFO_FILENAME)
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    values = json.load(f).get("dataset_spec")
            except (OSError, ValueError, AttributeError):
                return None
            return DatasetSpec.from_dict(values, source=path) if values else None
    return None


def load_predictor(path, num_threads=None):
    """A `TFLitePredictor` for a `.tflite` file, else a `SavedModelPredictor`."""
    if path.endswith(".tflite"):
        return TFLitePredictor(path, num_threads=num_threads)
    return SavedModelPredictor(path)
