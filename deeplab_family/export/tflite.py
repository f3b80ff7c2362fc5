"""TFLite: the fixed-size model, its conversion in every mode, and the int8 calibration.

Single scale, no flip, the fixed input `export.tflite_size` (513x513 by default), builtin ops
only (conversion fails rather than fall back to Flex ops). Contract:

- input `images`: float32 `[1, H, W, 3]`, RGB 0..255; for int8 with `export.tflite_int8_io`,
  uint8 or int8 quantized pixels (scale and zero point in the input details);
- output (`export.tflite_output`, `TFLITE_OUTPUTS`):
  - "classes" (the default): `semantic_predictions`, uint8 `[1, H, W]`, the argmax taken
    inside the model;
  - "logits": `logits`, float32 `[1, H, W, num_classes]`, the network's scores at the input
    size;
  - "probabilities": `probabilities`, float32 `[1, H, W, num_classes]`, their softmax.

  The last two end the graph without ARG_MAX, which the GPU and NNAPI delegates do not run
  (the whole tail would fall back to the CPU); `predict` takes the argmax on the host. In
  int8 mode their output stays float32: the converter's default output type dequantizes the
  int8 scores (one DEQUANTIZE at the end), so every mode has the same output contract and a
  client needs no scale or zero point (the argmax is the same either way).

Images of another size are fitted around the model by `inference.fit_to_size`: padded at the
bottom and right with the ImageNet mean (as in training), or first shrunk to fit, keeping the
aspect ratio; the mask is cropped (and resized back). Modes (`TFLITE_MODES`):

- `float32`: the float model;
- `float16`: float16 weights (half the size), float32 compute;
- `dynamic`: int8 weights, activations quantized on the fly;
- `int8`: full integer; activation ranges calibrated on `export.representative_samples`
  images drawn from the training TFRecords (`export.representative_pattern` to change),
  fitted to the input size as above. `TFLITE_BUILTINS_INT8` only: every op is integer.

>>> check_modes(["int8", "float16", "int8"])
['int8', 'float16']
>>> tflite_filename("deeplabv3", 8, (513, 513), "int8")
'deeplabv3_os8_513x513_int8.tflite'
>>> tflite_filename("deeplabv3", 8, (513, 513), "float16", "logits")
'deeplabv3_os8_513x513_float16_logits.tflite'
>>> tflite_output_name("probabilities")
'probabilities'
"""

import tempfile

import tensorflow as tf

from deeplab_family import _validation
from deeplab_family.config import INT8_IO, TFLITE_OUTPUTS
from deeplab_family.data import schema
from deeplab_family.export.serving import write_endpoints
from deeplab_family.inference import fit_to_size

TFLITE_MODES = ("float32", "float16", "dynamic", "int8")


def check_modes(modes, what="TFLite mode"):
    """`modes` in their order, each once; a ValueError names the first that is not one of
    `TFLITE_MODES`, as `what` (the command line says "--tflite mode")."""
    modes = list(dict.fromkeys(modes))
    for mode in modes:
        if mode not in TFLITE_MODES:
            raise ValueError(
                f"unknown {what} {mode!r}: mode must be one of {list(TFLITE_MODES)}. "
                f"Received: mode={mode!r}"
            )
    return modes


def representative_pattern(config):
    """The TFRecords of the int8 calibration: `export.representative_pattern`, else the
    experiment's `train_data` (then `eval_data`) file pattern."""
    pattern = config.export.representative_pattern
    for data in (config.train_data, config.eval_data):
        if not pattern and data is not None and data.all_patterns:
            pattern = data.all_patterns
    if not pattern:
        raise ValueError(
            "int8 TFLite needs calibration images: set train_data.file_pattern or "
            "export.representative_pattern (--set export.representative_pattern=GLOB)"
        )
    return pattern


def calibration_images(config):
    """The int8 `representative_dataset` of an experiment: `export.representative_samples`
    images of `representative_pattern(config)`, fitted to `export.tflite_size`."""
    pattern = representative_pattern(config)
    size, count = config.export.tflite_size, config.export.representative_samples

    def dataset():
        return representative_images(pattern, size, count)

    return dataset


def representative_images(file_pattern, size, count, seed=0):
    """Yields up to `count` calibration inputs `[float32 (1, H, W, 3)]` from TFRecords.

    The records are shuffled with a fixed seed (a spread over the shards, the same every run);
    each image is fitted to `size` exactly as `predict` fits images for a TFLite model.
    """
    from deeplab_family.data.pipeline import list_files

    files = list_files(file_pattern)
    features = {schema.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string)}
    ds = tf.data.TFRecordDataset(files).shuffle(max(count * 4, 64), seed=seed)
    ds = ds.take(count).map(lambda r: tf.io.parse_single_example(r, features)[schema.IMAGE_ENCODED])
    for encoded in ds:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
        fitted, _ = fit_to_size(image, size)
        yield [fitted[None]]


def tflite_output_name(output):
    """The name of the TFLite output for `export.tflite_output` `output` (see the module)."""
    _validation.one_of("tflite_output", output, TFLITE_OUTPUTS)
    return "semantic_predictions" if output == "classes" else output


def _tflite_endpoint(model, output="classes"):
    name = tflite_output_name(output)

    def serve(images):
        logits = tf.cast(model(images, training=False)["logits"], tf.float32)
        if output == "logits":
            return {name: logits}
        if output == "probabilities":
            return {name: tf.nn.softmax(logits, axis=-1)}
        return {name: tf.cast(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.uint8)}

    return serve


def write_tflite_saved_model(model, size, path, output="classes"):
    """A SavedModel of `model` at the fixed input `size`, the converter's input.

    One `serving_default` signature, `images` float32 `(1, H, W, 3)` -> for `output`
    "classes", `semantic_predictions` uint8 `(1, H, W)`; for "logits" or "probabilities", an
    output of that name, float32 `(1, H, W, num_classes)`; so that the TFLite file has a
    signature with these names.
    """
    height, width = size
    return write_endpoints(path, {
        "serving_default": (
            _tflite_endpoint(model, output),
            [tf.TensorSpec([1, height, width, 3], tf.float32, name="images")],
        ),
    })


def convert_saved_model(saved_model_dir, mode, representative_dataset=None, int8_io=None):
    """Converts a `write_tflite_saved_model` directory to TFLite `mode`; returns the bytes.

    Args:
        saved_model_dir: from `write_tflite_saved_model`.
        mode: one of `TFLITE_MODES`.
        representative_dataset: for "int8": a callable returning an iterable of
            `[float32 (1, H, W, 3)]`.
        int8_io: for "int8": None (float32 input), "uint8" or "int8".
    """
    check_modes([mode])
    if mode == "int8" and representative_dataset is None:
        raise ValueError("mode='int8' needs a representative_dataset (calibration images)")
    _validation.one_of("int8_io", int8_io, INT8_IO)
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


def convert_tflite(model, mode, size, representative_dataset=None, int8_io=None,
                   output="classes"):
    """`model` at the fixed input `size` to TFLite `mode` (see `convert_saved_model`), ending
    at `output` (`TFLITE_OUTPUTS`)."""
    with tempfile.TemporaryDirectory() as tmp:
        write_tflite_saved_model(model, size, tmp, output)
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


def tflite_signature(model_content):
    """`{"input": {...}, "output": {...}}` of the `serving_default` signature of a TFLite
    flatbuffer, each `{"name", "shape", "dtype"}` as the interpreter reports them (the
    contract `export_info.json` records, read from the file rather than assumed)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model_content).get_signature_runner("serving_default")
    out = {}
    for kind, details in (("input", runner.get_input_details()),
                          ("output", runner.get_output_details())):
        if len(details) != 1:
            raise ValueError(f"the TFLite model has {len(details)} {kind}s {sorted(details)}; "
                             f"export writes one")
        (name, detail), = details.items()
        out[kind] = {"name": name, "shape": [int(v) for v in detail["shape"]],
                     "dtype": detail["dtype"].__name__}
    return out


def tflite_filename(model_name, output_stride, size, mode, output="classes"):
    """`<model>_os<N>_<H>x<W>_<mode>[_<output>].tflite`: the geometry in the name, and the
    output kind unless it is "classes" (so that files of both kinds can sit side by side)."""
    tflite_output_name(output)  # validates
    suffix = "" if output == "classes" else f"_{output}"
    return f"{model_name}_os{output_stride}_{size[0]}x{size[1]}_{mode}{suffix}.tflite"
