"""Export a trained model: a SavedModel for TF Serving, and TFLite models.

    python -m deeplab_family.export [--config YAML] --model-dir DIR --export-dir DIR
                                    [--tflite float32,float16,dynamic,int8] [--set k=v ...]

The latest checkpoint of `<model-dir>/checkpoints/` is restored into the model built at
`export.output_stride` (8 by default, as the papers evaluate: the weights do not depend on the
output stride). Without `--config`, the resolved `<model-dir>/config.yaml` is used.

What is written, in the TF Serving layout (the model server loads the highest version):

    <export-dir>/<version>/                 an increasing integer: 1, 2, ...
        saved_model.pb, variables/          the SavedModel
        tflite/<name>_os<N>_<H>x<W>_<mode>.tflite   one per --tflite mode
        export_info.json                    config, checkpoint, signatures, TFLite contracts

The version is assembled in `<export-dir>/.tmp-export-*` and renamed when complete, so a
model server polling `<export-dir>` never sees a half-written version.

SavedModel signatures (both take raw pixels; normalisation is inside the model):

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
`evaluate` (`inference.multi_scale_probabilities`).

A string that is not a JPEG or a PNG fails the request with an InvalidArgumentError naming its
index (`image_bytes[2] (11 bytes) is neither a JPEG nor a PNG image ...`); a model server
answers that request with the error and keeps serving.

TFLite (`--tflite`): single scale, no flip, the fixed input `export.tflite_size` (513x513 by
default), builtin ops only (conversion fails rather than fall back to Flex ops). Contract:

- input `images`: float32 `[1, H, W, 3]`, RGB 0..255; for int8 with `export.tflite_int8_io`,
  uint8 or int8 quantized pixels (scale and zero point in the input details);
- output `semantic_predictions`: uint8 `[1, H, W]`, the argmax taken inside the model.

Images of another size are fitted around the model by `predict.fit_to_size`: padded at the
bottom and right with the ImageNet mean (as in training), or first shrunk to fit, keeping the
aspect ratio; the mask is cropped (and resized back). Modes:

- `float32`: the float model;
- `float16`: float16 weights (half the size), float32 compute;
- `dynamic`: int8 weights, activations quantized on the fly;
- `int8`: full integer; activation ranges calibrated on `export.representative_samples`
  images drawn from the training TFRecords (`export.representative_pattern` to change),
  fitted to the input size as above. `TFLITE_BUILTINS_INT8` only: every op is integer.
"""

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile

import keras
import tensorflow as tf

from deeplab_family import config as config_lib
from deeplab_family.data import schema
from deeplab_family.inference import multi_scale_probabilities
from deeplab_family.models import build_model
from deeplab_family.training.checkpoints import restore_model

TFLITE_MODES = ("float32", "float16", "dynamic", "int8")
INFO_FILENAME = "export_info.json"
TFLITE_SUBDIR = "tflite"
PAD_CLASS = 255  # the padding of a mixed-size batch, as the ignore label
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------
# Inference inside the SavedModel: multi-scale + flip is `inference.multi_scale_probabilities`,
# shared with `evaluate`, so that the SavedModel reproduces the evaluated mIoU.


def _decode_one(image_bytes, index):
    """One JPEG or PNG to uint8 `(h, w, 3)`; anything else is an error naming `index`."""
    is_jpeg = tf.io.is_jpeg(image_bytes)
    is_png = tf.equal(tf.strings.substr(image_bytes, 0, len(_PNG_MAGIC)), _PNG_MAGIC)
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
    """

    def __init__(self, model, scales=(1.0,), flip=False, probabilities=False):
        self.model = model
        self.scales = tuple(float(s) for s in scales)
        self.flip = bool(flip)
        self.probabilities = bool(probabilities)
        # One traced copy of the network, called by every scale, flip and branch below.
        self._logits = tf.function(
            self._call_model,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
        )

    def _call_model(self, images):
        return tf.cast(self.model(images, training=False)["logits"], tf.float32)

    def _scores(self, images):
        """Per-pixel class scores: the averaged probabilities, or, for a single view without
        the probabilities output, the logits (the same argmax, without softmax's cost and
        float ties, as `evaluate` does)."""
        if self.scales == (1.0,) and not self.flip and not self.probabilities:
            return self._logits(images)
        return multi_scale_probabilities(self._logits, images, self.scales, self.flip)

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


def write_saved_model(model, path, export_config):
    """Writes the SavedModel with `serving_default` and `serve_image_tensor` to `path`."""
    functions = ServingFunctions(
        model, export_config.scales, export_config.flip, export_config.probabilities
    )
    # No `archive.track(model)`: the endpoints' variables are tracked anyway, and tracking the
    # model too saves every weight twice (Keras variables and their captured tf.Variables).
    archive = keras.export.ExportArchive()
    archive.add_endpoint(
        "serving_default",
        functions.serve_image_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
    )
    archive.add_endpoint(
        "serve_image_tensor",
        functions.serve_image_tensor,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
    )
    archive.write_out(path, verbose=False)
    return path


# ------------------------------------------------------------------------------------------
# TFLite


def representative_images(file_pattern, size, count, seed=0):
    """Yields up to `count` calibration inputs `[float32 (1, H, W, 3)]` from TFRecords.

    The records are shuffled with a fixed seed (a spread over the shards, the same every run);
    each image is fitted to `size` exactly as `predict` fits images for a TFLite model.
    """
    from deeplab_family.data.pipeline import list_files
    from deeplab_family.predict import fit_to_size

    files = list_files(file_pattern)
    features = {schema.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string)}
    ds = tf.data.TFRecordDataset(files).shuffle(max(count * 4, 64), seed=seed)
    ds = ds.take(count).map(lambda r: tf.io.parse_single_example(r, features)[schema.IMAGE_ENCODED])
    for encoded in ds:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
        fitted, _ = fit_to_size(image, size)
        yield [fitted[None]]


def _tflite_endpoint(model):
    def serve(images):
        logits = model(images, training=False)["logits"]
        return {
            "semantic_predictions": tf.cast(
                tf.argmax(logits, axis=-1, output_type=tf.int32), tf.uint8
            )
        }

    return serve


def write_tflite_saved_model(model, size, path):
    """A SavedModel of `model` at the fixed input `size`, the converter's input.

    One `serving_default` signature, `images` float32 `(1, H, W, 3)` -> `semantic_predictions`
    uint8 `(1, H, W)`, so that the TFLite file has a signature with these names.
    """
    height, width = size
    # No `archive.track(model)`: the endpoints' variables are tracked anyway, and tracking the
    # model too saves every weight twice (Keras variables and their captured tf.Variables).
    archive = keras.export.ExportArchive()
    archive.add_endpoint(
        "serving_default",
        _tflite_endpoint(model),
        input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name="images")],
    )
    archive.write_out(path, verbose=False)
    return path


def convert_saved_model(saved_model_dir, mode, representative_dataset=None, int8_io=None):
    """Converts a `write_tflite_saved_model` directory to TFLite `mode`; returns the bytes.

    Args:
        saved_model_dir: from `write_tflite_saved_model`.
        mode: one of `TFLITE_MODES`.
        representative_dataset: for "int8": a callable returning an iterable of
            `[float32 (1, H, W, 3)]`.
        int8_io: for "int8": None (float32 input), "uint8" or "int8".
    """
    if mode not in TFLITE_MODES:
        raise ValueError(f"mode must be one of {list(TFLITE_MODES)}. Received: mode={mode!r}")
    if mode == "int8" and representative_dataset is None:
        raise ValueError("mode='int8' needs a representative_dataset (calibration images)")
    if int8_io not in (None, "uint8", "int8"):
        raise ValueError(f"int8_io must be None, 'uint8' or 'int8'. Received: {int8_io!r}")
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, ["serving_default"])
    # Builtins only: an op without a builtin kernel fails the conversion here, instead of
    # pulling in the Flex delegate (which phones do not ship).
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io is not None:
            converter.inference_input_type = {"uint8": tf.uint8, "int8": tf.int8}[int8_io]
    return converter.convert()


def convert_tflite(model, mode, size, representative_dataset=None, int8_io=None):
    """`model` at the fixed input `size` to TFLite `mode` (see `convert_saved_model`)."""
    with tempfile.TemporaryDirectory() as tmp:
        write_tflite_saved_model(model, size, tmp)
        return convert_saved_model(tmp, mode, representative_dataset, int8_io)


def tflite_ops(model_content):
    """The sorted op names of a TFLite flatbuffer; raises if any is a Flex or custom op."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_content)
    ops = sorted({d["op_name"] for d in interpreter._get_ops_details()})
    bad = [op for op in ops if op.upper().startswith("FLEX") or "CUSTOM" in op.upper()]
    if bad:
        raise ValueError(f"the TFLite model uses non-builtin ops {bad}")
    return ops


def tflite_filename(model_name, output_stride, size, mode):
    return f"{model_name}_os{output_stride}_{size[0]}x{size[1]}_{mode}.tflite"


# ------------------------------------------------------------------------------------------
# The export directory


def versions(export_dir):
    """The integer version directories of `export_dir`, sorted."""
    if not os.path.isdir(export_dir):
        return []
    return sorted(
        int(name) for name in os.listdir(export_dir)
        if name.isdigit() and os.path.isdir(os.path.join(export_dir, name))
    )


def latest_version_dir(export_dir):
    """`<export_dir>/<highest version>`, or None."""
    found = versions(export_dir)
    return os.path.join(export_dir, str(found[-1])) if found else None


def _publish(tmp, export_dir):
    """Renames the finished `tmp` to the next free version; returns its path."""
    for _ in range(100):
        found = versions(export_dir)
        target = os.path.join(export_dir, str(found[-1] + 1 if found else 1))
        if os.path.exists(target):  # e.g. a stray file with a numeric name
            continue
        try:
            os.rename(tmp, target)
            return target
        except OSError:  # another export took this version between listing and renaming
            continue
    raise RuntimeError(f"could not find a free version number in {export_dir}")


def use_dense_atrous_convs(model):
    """Switches every `AtrousConv2D` of `model` to the native dilated conv; returns the count.

    ASPP computes its atrous convs tap by tap (`skip_padded_taps`, a speed-up under XLA on
    CPU). Same variables, same function, but exported it becomes, per conv, nine
    STRIDED_SLICE + FULLY_CONNECTED + PAD and an ADD_N in TFLite: BatchNorm no longer folds
    into a CONV_2D, ADD_N has no int8 kernel (a float island with DEQUANTIZE / QUANTIZE in the
    "full integer" model, and int8 mIoU drops), and the model server without XLA gains
    nothing (oneDNN's dilated conv already skips the padding). Export graphs therefore use one
    dilated CONV_2D per conv. The flag is read at call time, so this only changes the traced
    graphs, not the weights or the config.
    """
    from deeplab_family.layers.conv import AtrousConv2D

    switched = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, AtrousConv2D) and getattr(layer, "skip_padded_taps", False):
            layer.skip_padded_taps = False
            switched += 1
    return switched


def build_export_model(config, model_dir):
    """The model at `config.export.output_stride`, with the latest checkpoint restored, and
    dense atrous convs (`use_dense_atrous_convs`)."""
    model = build_model(config.model.with_output_stride(config.export.output_stride))
    use_dense_atrous_convs(model)
    checkpoint = restore_model(model, model_dir)
    return model, checkpoint


def _representative_pattern(config):
    pattern = config.export.representative_pattern
    for data in (config.train_data, config.eval_data):
        if not pattern and data is not None and data.file_pattern:
            pattern = data.file_pattern
    if not pattern:
        raise ValueError(
            "int8 TFLite needs calibration images: set train_data.file_pattern or "
            "export.representative_pattern (--set export.representative_pattern=GLOB)"
        )
    return pattern


def export(config, model_dir, export_dir, tflite_modes=(), log=print):
    """Restores the latest checkpoint of `model_dir` and writes a new version.

    Returns:
        The info dict also written to `<version>/export_info.json` (with "path").
    """
    modes = list(dict.fromkeys(tflite_modes))
    for mode in modes:
        if mode not in TFLITE_MODES:
            raise ValueError(f"unknown TFLite mode {mode!r}; choose from {list(TFLITE_MODES)}")
    if config.model.num_classes > PAD_CLASS:
        raise ValueError(
            f"num_classes={config.model.num_classes} does not fit the uint8 predictions "
            f"(at most {PAD_CLASS} classes)"
        )
    export_config = config.export
    model, checkpoint = build_export_model(config, model_dir)
    os.makedirs(export_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=export_dir)
    try:
        log(f"export: {checkpoint} -> SavedModel (output stride {export_config.output_stride}, "
            f"scales {list(export_config.scales)}, flip {export_config.flip})")
        write_saved_model(model, tmp, export_config)
        info = {
            "checkpoint": checkpoint,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "model": config.model.name,
            "num_classes": config.model.num_classes,
            "output_stride": export_config.output_stride,
            "scales": list(export_config.scales),
            "flip": export_config.flip,
            "signatures": {
                "serving_default": {"inputs": {"image_bytes": "string [batch]"}},
                "serve_image_tensor": {"inputs": {"images": "uint8 [batch, H, W, 3]"}},
                "outputs": {
                    "semantic_predictions": "uint8 [batch, H, W]; 255 = padding of a "
                                            "mixed-size batch",
                    "image_sizes": "int32 [batch, 2]",
                    **({"probabilities": "float32 [batch, H, W, num_classes]"}
                       if export_config.probabilities else {}),
                },
            },
            "tflite": {},
            "config": config.to_dict(),
        }
        if modes:
            os.makedirs(os.path.join(tmp, TFLITE_SUBDIR))
            fixed = write_tflite_saved_model(
                model, export_config.tflite_size, os.path.join(tmp, ".tflite-saved-model"))
        for mode in modes:
            representative = None
            int8_io = None
            if mode == "int8":
                pattern = _representative_pattern(config)
                count = export_config.representative_samples
                log(f"export: calibrating int8 on {count} images from {pattern}")

                def representative(pattern=pattern, count=count):
                    return representative_images(pattern, export_config.tflite_size, count)

                int8_io = export_config.tflite_int8_io
            log(f"export: TFLite {mode} at {export_config.tflite_size[0]}x"
                f"{export_config.tflite_size[1]}")
            content = convert_saved_model(fixed, mode, representative, int8_io)
            name = tflite_filename(config.model.name, export_config.output_stride,
                                   export_config.tflite_size, mode)
            with open(os.path.join(tmp, TFLITE_SUBDIR, name), "wb") as f:
                f.write(content)
            info["tflite"][mode] = {
                "file": f"{TFLITE_SUBDIR}/{name}",
                "bytes": len(content),
                "input": {"name": "images", "shape": [1, *export_config.tflite_size, 3],
                          "dtype": int8_io or "float32"},
                "output": {"name": "semantic_predictions",
                           "shape": [1, *export_config.tflite_size], "dtype": "uint8"},
                "ops": tflite_ops(content),
            }
        if modes:
            shutil.rmtree(fixed)
        with open(os.path.join(tmp, INFO_FILENAME), "w") as f:
            json.dump(info, f, indent=1)
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the version from a server's user
        path = _publish(tmp, export_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # The final path is only known after the rename; export_info.json stays relative.
    info["path"] = path
    return info


# ------------------------------------------------------------------------------------------
# Command line


def _modes(values):
    modes = []
    for value in values or ():
        modes += [m.strip() for m in value.split(",") if m.strip()]
    for mode in modes:
        if mode not in TFLITE_MODES:
            raise argparse.ArgumentTypeError(
                f"unknown --tflite mode {mode!r}; choose from {', '.join(TFLITE_MODES)}"
            )
    return modes


def load_experiment_config(config_path, model_dir, overrides=None):
    """`--config` if given, else the resolved `<model_dir>/config.yaml` that training wrote."""
    path = config_path or os.path.join(model_dir, config_lib.CONFIG_FILENAME)
    if not config_path and not os.path.exists(path):
        raise FileNotFoundError(
            f"no --config given and no {config_lib.CONFIG_FILENAME} in {model_dir}: pass the "
            "experiment's YAML with --config"
        )
    return config_lib.load_config(path, overrides)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m deeplab_family.export", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", help="experiment YAML (default: <model-dir>/config.yaml)")
    parser.add_argument("--model-dir", required=True, help="training dir with checkpoints/")
    parser.add_argument("--export-dir", required=True,
                        help="TF Serving base path; a new <version>/ is written in it")
    parser.add_argument("--tflite", action="append", metavar="MODE[,MODE]", nargs="+",
                        help=f"also convert to TFLite: {', '.join(TFLITE_MODES)}")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. export.tflite_size=[257,257]")
    args = parser.parse_args(argv)
    try:
        modes = _modes([v for group in args.tflite or () for v in group])
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    try:
        config = load_experiment_config(args.config, args.model_dir, args.set)
        info = export(config, args.model_dir, args.export_dir, modes,
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    except (FileNotFoundError, ValueError) as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 2
    summary = {"saved_model": info["path"],
               "tflite": {m: os.path.join(info["path"], t["file"])
                          for m, t in info["tflite"].items()}}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
