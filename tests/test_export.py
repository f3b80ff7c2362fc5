"""Export: the SavedModel (TF Serving layout, both signatures, fresh-process parity with Keras,
the REST payload as TF Serving decodes it, multi-scale + flip as written, bad input), TFLite
parity in every mode (the README's op list, int8 within 1 mIoU point of float), and every
registered model converting to builtin-only TFLite."""

import base64
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from deeplab_family import export as export_lib
from deeplab_family.config import ExportConfig
from deeplab_family.export import cli as export_cli
from deeplab_family.export import export_dir as export_dir_lib
from deeplab_family.inference import fit_to_size, multi_scale_probabilities, restore_size
from deeplab_family.models import build_model, registered_models
from deeplab_family.predict import TFLitePredictor
from tests import export_fixtures as ef


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return ef.exported(str(tmp_path_factory.getbasetemp() / "export_fixture"))


@pytest.fixture(scope="module")
def keras_model(fx):
    return ef.keras_export_model(fx)


@pytest.fixture(scope="module")
def loaded(fx):
    return tf.saved_model.load(fx["saved_model"])


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _decode(data):
    return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()


def _keras_probabilities(model, image):
    logits = model(np.asarray(image, np.float32)[None], training=False)["logits"]
    return tf.nn.softmax(logits, axis=-1).numpy()[0]


def _image_files(fx, tmp_path):
    """The val JPEGs (different sizes) and one of them re-encoded as PNG."""
    paths = list(fx["records"]["val_images"][:3])
    png = tmp_path / "as_png.png"
    png.write_bytes(ef.encode(_decode(_read(paths[0])), "PNG"))
    return paths + [str(png)]


# ------------------------------------------------------------------------------------------
# SavedModel


def test_tf_serving_layout(fx, keras_model):
    export_dir = fx["export_dir"]
    assert fx["saved_model"] == os.path.join(export_dir, "1")
    for name in ("saved_model.pb", "variables", export_lib.INFO_FILENAME):
        assert os.path.exists(os.path.join(fx["saved_model"], name)), name
    # Nothing half-written is left where a model server looks.
    assert [n for n in os.listdir(export_dir) if n.startswith(".tmp")] == []
    info = json.loads(_read(os.path.join(fx["saved_model"], export_lib.INFO_FILENAME)))
    assert info["output_stride"] == 8 and info["num_classes"] == ef.NUM_CLASSES
    assert sorted(info["tflite"]) == sorted(export_lib.TFLITE_MODES)
    # Every weight once (Keras' ExportArchive would also save the tracked model's copies).
    saved = tf.train.list_variables(os.path.join(fx["saved_model"], "variables", "variables"))
    assert len([n for n, _ in saved if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]) == len(
        keras_model.weights)
    assert oct(os.stat(fx["saved_model"]).st_mode & 0o777) == oct(0o755)


_FRESH = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf

    saved_model, out, *files = sys.argv[1:]
    loaded = tf.saved_model.load(saved_model)
    serve = loaded.signatures["serving_default"]
    tensor = loaded.signatures["serve_image_tensor"]
    data = [open(f, "rb").read() for f in files]
    result = {f"batch_{k}": v.numpy() for k, v in serve(image_bytes=tf.constant(data)).items()}
    for i, d in enumerate(data):
        single = serve(image_bytes=tf.constant([d]))
        image = tf.io.decode_image(d, channels=3, expand_animations=False)
        pixels = tensor(images=image[None])
        for k in ("semantic_predictions", "probabilities"):
            result[f"single{i}_{k}"] = single[k].numpy()
            result[f"tensor{i}_{k}"] = pixels[k].numpy()
    assert "deeplab_family" not in sys.modules
    np.savez(out, **result)
""")


def test_saved_model_in_a_fresh_process_matches_keras(fx, keras_model, tmp_path):
    files = _image_files(fx, tmp_path)
    out = tmp_path / "fresh.npz"
    # A new interpreter that never imports deeplab_family: the SavedModel stands alone.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-c", _FRESH, fx["saved_model"], str(out), *files],
                         capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    got = np.load(out)

    images = [_decode(_read(f)) for f in files]
    sizes = np.array([im.shape[:2] for im in images])
    assert len({tuple(s) for s in sizes}) > 1, "the batch must mix image sizes"
    np.testing.assert_array_equal(got["batch_image_sizes"], sizes)
    height, width = sizes.max(axis=0)
    assert got["batch_semantic_predictions"].shape == (len(files), height, width)
    assert got["batch_semantic_predictions"].dtype == np.uint8
    for i, image in enumerate(images):
        h, w = image.shape[:2]
        want = _keras_probabilities(keras_model, image)
        want_classes = want.argmax(-1)
        # A mixed-size batch: each image at its own size, padded with 255 / probability 0.
        batch_probs = got["batch_probabilities"][i]
        np.testing.assert_allclose(batch_probs[:h, :w], want, atol=1e-4)
        np.testing.assert_array_equal(got["batch_semantic_predictions"][i, :h, :w], want_classes)
        assert np.all(got["batch_semantic_predictions"][i, h:] == 255)
        assert np.all(got["batch_semantic_predictions"][i, :, w:] == 255)
        assert np.all(batch_probs[h:] == 0) and np.all(batch_probs[:, w:] == 0)
        # One image per request, bytes or pixels: exactly its size.
        for prefix in ("single", "tensor"):
            np.testing.assert_allclose(got[f"{prefix}{i}_probabilities"][0], want, atol=1e-4)
            np.testing.assert_array_equal(got[f"{prefix}{i}_semantic_predictions"][0],
                                          want_classes)
    # Not a degenerate model: the predictions are not all one class.
    assert len(np.unique(got["batch_semantic_predictions"][got["batch_semantic_predictions"]
                                                          != 255])) > 1


def test_saved_model_cli_lists_both_signatures(fx):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([cli, "show", "--dir", fx["saved_model"], "--all"],
                         capture_output=True, text=True, env=env, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    text = run.stdout
    for signature, input_name, dtype in (("serving_default", "image_bytes", "DT_STRING"),
                                         ("serve_image_tensor", "images", "DT_UINT8")):
        block = text.split(f"signature_def['{signature}']:", 1)[1].split("signature_def[", 1)[0]
        assert f"inputs['{input_name}'] tensor_info:" in block, block
        assert f"dtype: {dtype}" in block, block
        for output in ("semantic_predictions", "image_sizes", "probabilities"):
            assert f"outputs['{output}'] tensor_info:" in block, (output, block)
        assert "dtype: DT_UINT8" in block.split("outputs['semantic_predictions']")[1]


def tf_serving_predict(loaded, body):
    """The REST `:predict` call as TF Serving handles it, for string inputs.

    TF Serving (api_rest.md, "Predict API" and "Encoding binary values"): the body names an
    optional `signature_name` (default "serving_default") and either row-format `instances`
    or columnar `inputs`. With a single named input, each instance is that input's value
    (or an object keyed by the input name); a binary value is `{"b64": <base64>}`, decoded to
    the raw bytes of a DT_STRING element. The row-format response is `{"predictions": [...]}`,
    one object per instance (keyed by output name when there are several outputs).
    """
    request = json.loads(body)
    signature = loaded.signatures[request.get("signature_name", "serving_default")]
    (input_name, spec), = signature.structured_input_signature[1].items()
    assert spec.dtype == tf.string

    def value(v):
        if isinstance(v, dict) and set(v) == {"b64"}:
            return base64.b64decode(v["b64"])
        return v.encode() if isinstance(v, str) else v

    if "instances" in request:
        rows = [r[input_name] if isinstance(r, dict) and input_name in r else r
                for r in request["instances"]]
        outputs = signature(**{input_name: tf.constant([value(r) for r in rows], tf.string)})
        names = sorted(outputs)
        return json.dumps({"predictions": [
            {k: outputs[k][i].numpy().tolist() for k in names} for i in range(len(rows))]})
    inputs = request["inputs"]
    inputs = inputs[input_name] if isinstance(inputs, dict) and "b64" not in inputs else inputs
    outputs = signature(**{input_name: tf.constant([value(v) for v in inputs], tf.string)})
    return json.dumps({"outputs": {k: v.numpy().tolist() for k, v in outputs.items()}})


def test_rest_payload_with_b64_instances(fx, loaded, keras_model, tmp_path):
    files = _image_files(fx, tmp_path)[1:]  # two JPEGs of different sizes and a PNG
    data = [_read(f) for f in files]
    b64 = [base64.b64encode(d).decode("ascii") for d in data]
    bodies = [
        # What docs/serving.md sends with curl: single named input, bare b64 objects.
        {"signature_name": "serving_default", "instances": [{"b64": s} for s in b64]},
        # The same keyed by the input name, and the columnar form.
        {"instances": [{"image_bytes": {"b64": s}} for s in b64]},
        {"signature_name": "serving_default", "inputs": {"image_bytes": [{"b64": s} for s in b64]}},
    ]
    for body in bodies:
        response = json.loads(tf_serving_predict(loaded, json.dumps(body)))
        if "predictions" in response:
            rows = response["predictions"]
        else:
            cols = response["outputs"]
            rows = [{k: cols[k][i] for k in cols} for i in range(len(files))]
        assert len(rows) == len(files)
        for row, d in zip(rows, data):
            image = _decode(d)
            h, w = row["image_sizes"]
            assert (h, w) == image.shape[:2]
            mask = np.array(row["semantic_predictions"], np.uint8)[:h, :w]
            np.testing.assert_array_equal(
                mask, _keras_probabilities(keras_model, image).argmax(-1))


def test_multi_scale_and_flip_are_baked_in(fx, keras_model):
    """The signature graph (what `write_saved_model` saves) with scales and flip."""
    image = _decode(_read(fx["records"]["val_images"][0]))
    config = ExportConfig(scales=(0.75, 1.0, 1.25), flip=True, probabilities=True)
    functions = export_lib.ServingFunctions(keras_model, config.scales, config.flip, True)
    serve = tf.function(functions.serve_image_tensor,
                        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    got = serve(image[None])
    # The reference, view by view: resize, run, resize the logits back, soft-max, un-mirror,
    # average (research/deeplab's order; see inference.multi_scale_probabilities).
    x = tf.constant(image[None], tf.float32)
    size = image.shape[:2]
    views = []
    for scale in config.scales:
        scaled = tf.image.resize(
            x, [max(1, round(size[0] * scale)), max(1, round(size[1] * scale))])
        for mirror in (False, True):
            view = scaled[:, :, ::-1] if mirror else scaled
            logits = tf.image.resize(keras_model(view, training=False)["logits"], size)
            probs = tf.nn.softmax(logits, axis=-1)
            views.append(probs[:, :, ::-1] if mirror else probs)
    want = np.mean([v.numpy() for v in views], axis=0)
    np.testing.assert_allclose(got["probabilities"].numpy(), want, atol=1e-4)
    np.testing.assert_array_equal(got["semantic_predictions"].numpy(), want.argmax(-1))
    single = _keras_probabilities(keras_model, image)
    assert np.abs(want[0] - single).max() > 1e-3  # the ensemble is not a no-op


def test_written_saved_model_keeps_scales_and_flip(fx, keras_model, tmp_path):
    """`export.scales` and `export.flip` as `export` writes them: the reloaded SavedModel gives
    (for a mixed-size batch, so each image through the per-image path) the probabilities of
    `inference.multi_scale_probabilities` on the Keras model, what `evaluate` computes."""
    scales = (0.75, 1.0, 1.25)
    config = dataclasses.replace(fx["config"], export=dataclasses.replace(
        fx["config"].export, scales=scales, flip=True, probabilities=True))
    info = export_lib.export(config, fx["model_dir"], str(tmp_path / "export"),
                             log=lambda m: None)
    assert info["scales"] == list(scales) and info["flip"] is True
    serve = tf.saved_model.load(info["path"]).signatures["serving_default"]

    def keras_views(image, scales, flip):
        x = tf.constant(image[None], tf.float32)
        return multi_scale_probabilities(
            lambda v: keras_model(v, training=False)["logits"], x, scales, flip).numpy()[0]

    data = [_read(p) for p in fx["records"]["val_images"][:2]]
    images = [_decode(d) for d in data]
    assert images[0].shape != images[1].shape
    got = serve(image_bytes=tf.constant(data))
    wants = [keras_views(image, scales, True) for image in images]
    for i, (image, want) in enumerate(zip(images, wants)):
        h, w = image.shape[:2]
        np.testing.assert_allclose(got["probabilities"][i, :h, :w].numpy(), want, atol=1e-4)
        np.testing.assert_array_equal(got["semantic_predictions"][i, :h, :w], want.argmax(-1))
    # Dropping either choice moves the probabilities by far more than the tolerance.
    for other_scales, other_flip in ((scales, False), ((1.0,), True), ((1.0,), False)):
        other = keras_views(images[0], other_scales, other_flip)
        assert np.abs(other - wants[0]).max() > 1e-2, (other_scales, other_flip)


# ------------------------------------------------------------------------------------------
# Bad input


def test_undecodable_image_is_an_error_naming_it_and_serving_goes_on(fx, loaded):
    serve = loaded.signatures["serving_default"]
    good = _read(fx["records"]["val_images"][0])
    for bad, expected in (
        (b"this is not an image", r"image_bytes\[1\] \(20 bytes\) is neither a JPEG nor a PNG"),
        (b"", r"image_bytes\[1\] \(0 bytes\) is neither a JPEG nor a PNG"),
        (good[: len(good) // 3], r"Invalid JPEG data"),  # a JPEG cut short
    ):
        with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
            serve(image_bytes=tf.constant([good, bad]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_bytes is empty"):
        serve(image_bytes=tf.constant([], tf.string))
    # The process (a model server) is still up and answers the next request.
    assert serve(image_bytes=tf.constant([good]))["semantic_predictions"].shape[0] == 1


def test_serve_image_tensor_rejects_wrong_dtype_and_channels(loaded):
    serve = loaded.signatures["serve_image_tensor"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor"):
        serve(images=tf.zeros([1, 16, 16, 3], tf.float32))
    for channels in (1, 4):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"images must be uint8 \[batch, height, width, 3\].*"
                                 rf"\[1 16 16 {channels}\]"):
            serve(images=tf.zeros([1, 16, 16, channels], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="not empty"):
        serve(images=tf.zeros([0, 16, 16, 3], tf.uint8))
    assert serve(images=tf.zeros([2, 9, 11, 3], tf.uint8))["semantic_predictions"].shape == (
        2, 9, 11)


# ------------------------------------------------------------------------------------------
# Export directory, command line


def test_versions_increase_and_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
    export_dir = tmp_path / "export"
    for name in ("1", "3", "notes", ".tmp-export-old"):
        (export_dir / name).mkdir(parents=True)
    tmp = export_dir / ".tmp-export-new"
    tmp.mkdir()
    assert export_dir_lib._publish(str(tmp), str(export_dir)) == str(export_dir / "4")
    assert export_lib.versions(str(export_dir)) == [1, 3, 4]
    assert export_lib.latest_version_dir(str(export_dir)) == str(export_dir / "4")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    config = ef.make_model_dir(str(tmp_path / "model"), {"train": "unused", "val": "unused"},
                               train=False)
    monkeypatch.setattr(export_dir_lib, "write_saved_model", broken)
    before = sorted(os.listdir(export_dir))
    with pytest.raises(RuntimeError, match="disk full"):
        export_lib.export(config, str(tmp_path / "model"), str(export_dir), log=lambda m: None)
    assert sorted(os.listdir(export_dir)) == before


def test_cli_reads_the_model_dir_config_and_writes_the_next_version(fx, keras_model, tmp_path,
                                                                    capsys):
    # Into a copy of the shared export dir: the fixture keeps version 1 alone for every test.
    export_dir = str(tmp_path / "export")
    shutil.copytree(fx["export_dir"], export_dir)
    assert export_cli.main(["--model-dir", fx["model_dir"], "--export-dir", export_dir,
                            "--set", "export.probabilities=false"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == {"saved_model": os.path.join(export_dir, "2"), "tflite": {}}
    assert export_lib.versions(export_dir) == [1, 2]
    assert export_lib.versions(fx["export_dir"]) == [1]
    serve = tf.saved_model.load(summary["saved_model"]).signatures["serving_default"]
    assert sorted(serve.structured_outputs) == ["image_sizes", "semantic_predictions"]
    # Without probabilities, a single view takes the argmax of the logits: the same classes.
    data = [_read(f) for f in fx["records"]["val_images"][:3]]
    got = serve(image_bytes=tf.constant(data))
    for i, d in enumerate(data):
        image = _decode(d)
        h, w = image.shape[:2]
        want = keras_model(image[None].astype(np.float32), training=False)["logits"]
        np.testing.assert_array_equal(got["semantic_predictions"][i, :h, :w],
                                      want.numpy()[0].argmax(-1))


def test_cli_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(SystemExit):
        export_cli.main(["--model-dir", str(tmp_path), "--export-dir", str(tmp_path / "e"),
                         "--tflite", "float32,int4"])
    assert "unknown --tflite mode 'int4'" in capsys.readouterr().err
    assert export_cli.main(["--model-dir", str(tmp_path), "--export-dir",
                            str(tmp_path / "e")]) == 2
    assert f"no config.yaml in {tmp_path}" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# TFLite


def _agreement(a, b):
    return float(np.mean(np.asarray(a) == np.asarray(b)))


@pytest.fixture(scope="module")
def val_fitted(fx, keras_model):
    """`[(fitted image, fitted size, native label, Keras classes on the fitted image)]`: val
    images fitted to the TFLite size, as predict and the calibration fit them."""
    out = []
    for image, label in ef.val_examples(fx):
        fitted, size = fit_to_size(image, ef.TFLITE_SIZE)
        classes = keras_model(fitted[None], training=False)["logits"].numpy()[0].argmax(-1)
        out.append((fitted, size, label, classes.astype(np.uint8)))
    return out


def _background_agreement(val_fitted):
    """The agreement with Keras of a model that predicts background everywhere."""
    return float(np.mean(np.concatenate([(k == 0).ravel() for *_, k in val_fitted])))


def _miou(masks, labels, num_classes=ef.NUM_CLASSES, ignore=255):
    """Mean IoU over the classes present in the labels or the predictions (255 ignored), from
    the confusion matrix summed over the images."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for mask, label in zip(masks, labels):
        keep = label != ignore
        index = label[keep].astype(np.int64) * num_classes + mask[keep].astype(np.int64)
        matrix += np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)
    inter = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - inter
    return float(np.mean(inter[union > 0] / union[union > 0]))


# The README's parity targets (float32 >= 99.9%, float16 >= 99.5%) hold for the tiny model too;
# it measured 100%, 99.97%, 99.93% (dynamic) and 99.5% (int8), where predicting background
# everywhere agrees on 71.6%. The int8 floor leaves room for the small class margins of 8-16
# channels and 150 training steps (the "caffe" normalisation gave 95%); the README's int8
# target itself (mIoU within 1 point of float) is `test_tflite_int8_miou_within_one_point_of_float`.
# Every floor is checked to be well above the all-background agreement, so that a conversion
# that lost the objects cannot pass.
FLOORS = {"float32": 0.999, "float16": 0.995, "dynamic": 0.99, "int8": 0.9}
ABOVE_BACKGROUND = 0.1


@pytest.mark.parametrize("mode", export_lib.TFLITE_MODES)
def test_tflite_parity_with_keras(fx, val_fitted, mode):
    predictor = TFLitePredictor(fx["tflite"][mode], num_threads=1)
    assert predictor.size == ef.TFLITE_SIZE
    assert predictor.input_dtype == np.float32
    agreements = []
    for fitted, _, _, want in val_fitted:
        got = predictor.run(fitted[None])
        assert got.shape == (1, *ef.TFLITE_SIZE) and got.dtype == np.uint8
        agreements.append(_agreement(got[0], want))
    background = _background_agreement(val_fitted)
    assert FLOORS[mode] >= background + ABOVE_BACKGROUND, (FLOORS[mode], background)
    assert np.mean(agreements) >= FLOORS[mode], (mode, agreements, background)


# The README's TFLite op list for DeepLabV3 ("Export, serving and TFLite"), on a model with its
# demo's normalisation ("tf": the MUL and SUB of x / 127.5 - 1; "caffe"'s RGB -> BGR would add
# a REVERSE_V2). Every atrous conv is one dilated CONV_2D with its BN folded in: ASPP's
# tap-by-tap form would add FULLY_CONNECTED (and ADD_N, a float island in int8). Dynamic range
# keeps the float32 list (its hybrid kernels take the int8 weights).
README_OPS = {"ADD", "ARG_MAX", "CAST", "CONCATENATION", "CONV_2D", "MAX_POOL_2D", "MEAN", "MUL",
              "PAD", "RESIZE_BILINEAR", "STRIDED_SLICE", "SUB"}
README_MODE_OPS = {"float32": set(), "float16": {"DEQUANTIZE"}, "dynamic": set(),
                   "int8": {"QUANTIZE"}}


@pytest.mark.parametrize("mode", export_lib.TFLITE_MODES)
def test_tflite_ops_are_the_readme_list(fx, mode):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=fx["tflite"][mode])
    ops = {d["op_name"] for d in interpreter._get_ops_details()}
    assert ops == README_OPS | README_MODE_OPS[mode], sorted(ops)
    assert fx["info"]["tflite"][mode]["ops"] == sorted(ops)  # export_info.json says the same


def test_tflite_int8_miou_within_one_point_of_float(fx, val_fitted):
    """The README's int8 target on the fixture's model: int8 mIoU at most 1 point below the
    float Keras model's, on the val images (fitted inputs, masks mapped back to the native
    labels), as `benchmarks/tflite_parity.py` measures it. The model is first checked to beat
    an all-background prediction by far more than that point, so that an int8 model which lost
    the objects fails (measured: float 26.8%, int8 27.0%, all background 9.8%)."""
    labels = [label for _, _, label, _ in val_fitted]

    def native(mask, size, label):
        return restore_size(mask, size, label.shape)

    float_miou = _miou([native(k, size, lb) for _, size, lb, k in val_fitted], labels)
    background_miou = _miou([np.zeros_like(lb) for lb in labels], labels)
    assert float_miou >= background_miou + 0.05, (float_miou, background_miou)
    predictor = TFLitePredictor(fx["tflite"]["int8"], num_threads=1)
    int8_miou = _miou([native(predictor.run(f[None])[0], size, lb)
                       for f, size, lb, _ in val_fitted], labels)
    print(f"mIoU: float {float_miou:.4f}, int8 {int8_miou:.4f}, "
          f"all background {background_miou:.4f}")
    assert float_miou - int8_miou <= 0.01, (float_miou, int8_miou)


def test_tflite_int8_with_integer_input(fx, keras_model, val_fitted, tmp_path):
    saved = export_lib.write_tflite_saved_model(keras_model, ef.TFLITE_SIZE, str(tmp_path / "sm"))
    pattern = fx["records"]["train"]

    def calibration():
        return export_lib.representative_images(pattern, ef.TFLITE_SIZE, 6)

    # "int8" I/O is the same converter flag with tf.int8; one conversion is enough here.
    path = tmp_path / "uint8_io.tflite"
    path.write_bytes(export_lib.convert_saved_model(saved, "int8", calibration, "uint8"))
    predictor = TFLitePredictor(str(path), num_threads=1)
    assert predictor.input_dtype == np.uint8
    scale, zero_point = predictor.input_quantization
    # Calibrated on real pixels, the uint8 input is (nearly) the raw 0..255 pixels.
    assert abs(scale - 1.0) < 0.05 and abs(zero_point) <= 3, (scale, zero_point)
    agreements = [_agreement(predictor.run(f[None])[0], want) for f, _, _, want in val_fitted]
    assert np.mean(agreements) >= FLOORS["int8"], agreements


def test_int8_needs_calibration_data(fx):
    with pytest.raises(ValueError, match="representative_dataset"):
        export_lib.convert_saved_model("unused", "int8")
    with pytest.raises(ValueError, match="mode must be one of"):
        export_lib.convert_saved_model("unused", "int4")


@pytest.mark.parametrize("name", registered_models())
def test_every_registered_model_converts_to_builtin_tflite(name, tmp_path):
    """ASPP, cascade, FPA/GAU, GCN/BR, SEB/SS/ECRE sub-pixel/DAP: float32, builtins only."""
    assert name in ef.TINY_HEADS, f"add a tiny config for {name!r} to tests/tiny.py (FLAT_HEADS)"
    model = build_model(ef.tiny_model_config(name).with_output_stride(8))
    size = (48, 56)
    content = export_lib.convert_tflite(model, "float32", size)
    ops = export_lib.tflite_ops(content)  # raises on Flex / custom ops
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(content)
    x = np.random.default_rng(0).uniform(0, 255, (1, *size, 3)).astype(np.float32)
    want = model(x, training=False)["logits"].numpy().argmax(-1)
    got = TFLitePredictor(str(path), num_threads=1).run(x)
    assert _agreement(got, want) >= 0.99, (name, ops)


@pytest.mark.parametrize("name", registered_models())
def test_every_registered_model_runs_in_a_graph_at_unknown_size(name):
    """What the SavedModel signatures need: one trace for every H and W."""
    model = build_model(ef.tiny_model_config(name).with_output_stride(8))
    fn = tf.function(lambda x: model(x, training=False)["logits"],
                     input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    for h, w in ((37, 45), (24, 24)):
        x = np.random.default_rng(h).uniform(0, 255, (1, h, w, 3)).astype(np.float32)
        want = model(x, training=False)["logits"].numpy()
        # Untrained, BN at its identity init: logits reach 1e9 (ExFuse), and the traced graph
        # sums in another order than eager (up to 4e-6 of the largest logit, measured on a
        # Xeon with AMX, where an absolute 1e-4 failed): tolerance relative to the largest.
        np.testing.assert_allclose(fn(x).numpy(), want, rtol=0,
                                   atol=1e-5 * np.abs(want).max(), err_msg=name)
