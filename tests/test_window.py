"""Sliding-window inference (`inference.window`): mmseg's grid and logit averaging against a NumPy
reference, a covering window equal to whole-image inference bit for bit (alone, with
multi-scale + flip, in `evaluate` and in the exported SavedModel), overlapping windows in
`evaluate` and the export, and the command line's window errors."""

import json
import os
import re
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_family import evaluate
from deeplab_family import export as export_lib
from deeplab_family.config import ExperimentConfig, WindowConfig
from deeplab_family.inference import (
    class_scores,
    multi_scale_probabilities,
    sliding_window_logits,
    window_origins,
)
from deeplab_family.models import build_model
from deeplab_family.training import checkpoints
from tests import export_fixtures as ef
from tests.training.helpers import (
    TEST_OVERRIDES,
    TINY_CONFIG,
    build_synthetic_shards,
    data_overrides,
    tiny_config,
)

SIGNATURE = [tf.TensorSpec([None, None, None, 3], tf.float32)]
RNG = np.random.default_rng(0)
KERNEL = tf.constant(RNG.normal(size=(3, 3, 3, 5)) * 0.01, tf.float32)
POOLED = tf.constant(RNG.normal(size=(3, 5)) * 0.02, tf.float32)


def _toy_logits(x):
    """A cheap network whose output depends on where the crop is: a 3x3 conv with zero padding
    (the crop's borders differ from the image's) plus the crop's mean colour, as image pooling
    adds it (every window sees its own context)."""
    x = tf.convert_to_tensor(x, tf.float32)
    pooled = tf.einsum("bc,ck->bk", tf.reduce_mean(x, axis=[1, 2]), POOLED)
    return tf.nn.conv2d(x, KERNEL, 1, "SAME") + pooled[:, None, None, :]


def np_slide(logits_fn, images, size, stride):
    """mmseg's `slide_inference` (mmseg/models/segmentors/encoder_decoder.py), in NumPy: the
    grid, the last window shifted back to the border, the sum of logits over the count."""
    images = np.asarray(images, np.float32)
    batch, height, width = images.shape[:3]
    (h_crop, w_crop), (h_stride, w_stride) = size, stride
    h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    total, count = None, np.zeros((batch, height, width, 1))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * h_stride, w_idx * w_stride
            y2, x2 = min(y1 + h_crop, height), min(x1 + w_crop, width)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            logits = np.asarray(logits_fn(images[:, y1:y2, x1:x2]), np.float64)
            if total is None:
                total = np.zeros((batch, height, width, logits.shape[-1]))
            total[:, y1:y2, x1:x2] += logits
            count[:, y1:y2, x1:x2] += 1
    assert (count > 0).all()
    return total / count


def _perturbed(model, seed=0):
    """Weights away from the symmetric init (BN at identity), so that windows really differ."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if "variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        else:
            w.assign(w.numpy() + rng.standard_normal(w.shape).astype("float32") * 0.05)
    return model


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    return _perturbed(build_model(ef.tiny_model_config().with_output_stride(8)))


def _model_logits(model):
    return lambda x: tf.cast(model(x, training=False)["logits"], tf.float32)


@pytest.fixture(scope="module")
def traced_logits(tiny_model):
    """The tiny model's logits as one traced function (any size), as the SavedModel calls it."""
    return tf.function(_model_logits(tiny_model), input_signature=SIGNATURE)


@pytest.fixture(scope="module")
def whole_and_covering(tiny_model):
    """Whole-image and windowed inference of the tiny model, each one graph with the network
    inlined, as `evaluate.make_predictor` traces it; the window covers every test image."""
    logits = _model_logits(tiny_model)
    whole = tf.function(logits, input_signature=SIGNATURE)
    windowed = tf.function(sliding_window_logits(logits, WindowConfig(size=(65, 97))),
                           input_signature=SIGNATURE)
    return whole, windowed


# ------------------------------------------------------------------------------------------
# The wrapper


@pytest.mark.parametrize("length,size,stride", [
    (1024, 513, 342), (2048, 513, 342), (23, 10, 7), (31, 12, 5), (12, 12, 5), (13, 12, 12),
    (8, 10, 7), (1, 3, 2), (100, 7, 7),
])
def test_window_origins_are_mmseg_grid(length, size, stride):
    origins, crop = window_origins(length, size, stride)
    grids = max(length - size + stride - 1, 0) // stride + 1
    want = []
    for i in range(grids):
        end = min(i * stride + size, length)
        want.append(max(end - size, 0))
    assert origins.numpy().tolist() == want
    assert int(crop) == min(size, length)
    covered = np.zeros(length, int)
    for o in want:
        covered[o : o + int(crop)] += 1
    assert covered.min() >= 1 and want[-1] + int(crop) == length  # inside, ending at the border


@pytest.mark.parametrize("shape,size,stride", [
    ((2, 23, 31), (10, 12), (7, 5)),    # overlaps on both axes, sizes not multiples of stride
    ((1, 8, 40), (10, 12), (10, 9)),    # height inside one window, width without overlap
    ((1, 25, 17), (9, 17), (4, 17)),    # width exactly one window, heavy overlap in height
])
def test_windowed_logits_match_numpy_slide_inference(shape, size, stride):
    images = RNG.uniform(0, 255, (*shape, 3)).astype("float32")
    window = WindowConfig(size=size, stride=stride)
    want = np_slide(_toy_logits, images, size, stride)

    # Eagerly, the loop runs the network window by window: count the crops and their shapes.
    crops = []

    def spy(x):
        crops.append(tuple(x.shape[1:3]))
        return _toy_logits(x)

    got = sliding_window_logits(spy, window, num_classes=5)(images)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    assert got.shape == (*shape, 5) and got.dtype == tf.float32
    grids = [max(n - s + t - 1, 0) // t + 1 for n, s, t in zip(shape[1:], size, stride)]
    assert len(crops) == grids[0] * grids[1]
    assert set(crops) == {(min(size[0], shape[1]), min(size[1], shape[2]))}  # never larger

    # The same in a graph, with one trace for every image size.
    traced = tf.function(sliding_window_logits(_toy_logits, window), input_signature=SIGNATURE)
    np.testing.assert_allclose(traced(images).numpy(), want, rtol=1e-5, atol=1e-5)
    other = RNG.uniform(0, 255, (1, shape[1] + 7, shape[2] + 3, 3)).astype("float32")
    np.testing.assert_allclose(traced(other).numpy(), np_slide(_toy_logits, other, size, stride),
                               rtol=1e-5, atol=1e-5)
    assert traced.experimental_get_tracing_count() == 1
    # The windows matter: whole-image logits are not the averaged windows.
    assert np.abs(_toy_logits(images).numpy() - want).max() > 1e-2


@pytest.mark.parametrize("height,width", [(33, 47), (65, 97), (1, 5), (64, 1)])
def test_covering_window_is_whole_image_inference_bit_for_bit(whole_and_covering, height,
                                                              width):
    whole, windowed = whole_and_covering
    images = RNG.uniform(0, 255, (2, height, width, 3)).astype("float32")
    np.testing.assert_array_equal(windowed(images).numpy(), whole(images).numpy())


def test_window_composes_with_multi_scale_and_flip(traced_logits):
    """Windows run inside each scale and flip (the windowed network is the `logits_fn` that
    `multi_scale_probabilities` calls per view): a window covering the largest scale gives the
    unwindowed ensemble exactly; an overlapping one gives, per view, mmseg's windows."""
    logits = traced_logits
    scales = (0.75, 1.0, 1.25)
    images = tf.constant(RNG.uniform(0, 255, (1, 37, 53, 3)), tf.float32)
    covering = sliding_window_logits(logits, WindowConfig(size=(47, 67)))  # 1.25 * (37, 53)
    # Eagerly (graphs are the covering test's and the export's: tracing six views is slow).
    for fn in (multi_scale_probabilities, class_scores):
        np.testing.assert_array_equal(fn(covering, images, scales, True).numpy(),
                                      fn(logits, images, scales, True).numpy())

    size, stride = (24, 30), (16, 20)
    overlapping = sliding_window_logits(logits, WindowConfig(size=size, stride=stride))
    got = multi_scale_probabilities(overlapping, images, scales, True).numpy()
    want = multi_scale_probabilities(
        lambda x: tf.constant(np_slide(logits, x, size, stride), tf.float32),
        images, scales, True).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    plain = multi_scale_probabilities(logits, images, scales, True).numpy()
    assert np.abs(plain - want).max() > 1e-2


# ------------------------------------------------------------------------------------------
# evaluate


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory):
    """Synthetic val shards (72x96 images) and a model dir with a random OS16 checkpoint."""
    folder = tmp_path_factory.mktemp("window_eval")
    shards = build_synthetic_shards(str(folder / "data"))
    config = tiny_config(shards)
    keras.utils.set_random_seed(0)
    model = _perturbed(build_model(config.model.with_output_stride(16)))
    model_dir = str(folder / "model")
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                               checkpoints.checkpoint_dir(model_dir), 1).save()
    return {"shards": shards, "config": config, "model_dir": model_dir}


def _val(shards):
    from deeplab_family.data.pipeline import InputConfig, make_dataset

    dataset = make_dataset(InputConfig(file_pattern=shards["val"], batch_size=1), training=False)
    return [(image.numpy(), label.numpy()) for image, label in dataset]


def _sets(shards):
    return [a for s in [*TEST_OVERRIDES, *data_overrides(shards)] for a in ("--set", s)]


def test_evaluate_with_a_covering_window_scores_as_without(eval_setup):
    config, model_dir = eval_setup["config"], eval_setup["model_dir"]
    whole = evaluate.evaluate(config, model_dir, output_stride=8, scales=[1.0], flip=False)
    # The synthetic images are 80-100% of 72x96, a quarter of them portrait.
    sizes = {tuple(image.shape[1:3]) for image, _ in _val(eval_setup["shards"])}
    assert max(h for h, _ in sizes) <= 96 and max(w for _, w in sizes) <= 96 and len(sizes) > 1
    window = WindowConfig(size=(96, 96), stride=(50, 50))
    covered = evaluate.evaluate(config, model_dir, output_stride=8, scales=[1.0], flip=False,
                                window=window)
    assert covered["confusion_matrix"] == whole["confusion_matrix"]
    assert covered["miou"] == whole["miou"]
    assert whole["window"] is None and whole["precision"] == "float32"
    assert covered["window"] == {"size": [96, 96], "stride": [50, 50]}
    assert os.path.basename(whole["results_file"]) == "eval_os8_scales1.json"
    assert os.path.basename(covered["results_file"]) == "eval_os8_scales1_win96x96s50x50.json"
    with open(covered["results_file"]) as f:
        assert json.load(f)["window"] == covered["window"]


def test_evaluate_cli_overlapping_window_matches_numpy(eval_setup, capsys):
    """`--window 40,48 --window-stride 24,32`: the confusion matrix of mmseg's windows over the
    OS8 model, computed in NumPy; and it is not the whole-image one."""
    shards, config, model_dir = eval_setup["shards"], eval_setup["config"], eval_setup["model_dir"]
    code = evaluate.main(["--config", TINY_CONFIG, "--model-dir", model_dir, "--output-stride",
                          "8", "--scales", "1.0", "--set", "evaluation.flip=false",
                          "--window", "40,48", "--window-stride", "24,32", *_sets(shards)])
    assert code == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["window"] == {"size": [40, 48], "stride": [24, 32]}
    assert os.path.basename(last["results_file"]) == "eval_os8_scales1_win40x48s24x32.json"
    with open(last["results_file"]) as f:
        report = json.load(f)

    logits = tf.function(_model_logits(evaluate_model(config, model_dir)),
                         input_signature=SIGNATURE)  # a graph for speed; the grid is NumPy's
    want = np.zeros((21, 21), np.int64)
    whole = np.zeros((21, 21), np.int64)
    for image, label in _val(shards):
        label = label.ravel()
        valid = label != 255
        predicted = np_slide(logits, image, (40, 48), (24, 32)).argmax(-1).ravel()
        np.add.at(want, (label[valid], predicted[valid]), 1)
        plain = logits(image).numpy().argmax(-1).ravel()
        np.add.at(whole, (label[valid], plain[valid]), 1)
    got = np.asarray(report["confusion_matrix"])
    # float64 (NumPy) and float32 (the graph) sums may flip a near-tie: at most 0.1% of pixels.
    assert np.abs(got - want).sum() <= 2e-3 * want.sum()
    assert np.abs(whole - want).sum() > 0.01 * want.sum()  # the windows change the predictions


def evaluate_model(config, model_dir):
    from deeplab_family.inference import load_inference_model

    return load_inference_model(config.model, model_dir, 8)[0]


def test_evaluate_reads_inference_window_and_precision_from_the_config(eval_setup, tmp_path,
                                                                        monkeypatch):
    """`inference.window` from the config (and `window=None` turns it off); bfloat16 goes
    through `precision.for_inference` (imported only then) and names the report `_bf16`."""
    import dataclasses
    import types

    config, model_dir = eval_setup["config"], str(tmp_path)
    model = evaluate_model(config, eval_setup["model_dir"])
    windowed = dataclasses.replace(config, inference=dataclasses.replace(
        config.inference, window=WindowConfig(size=(72, 96))))
    # float32 never imports the precision module (it may not exist): a poisoned import passes.
    monkeypatch.setitem(sys.modules, "deeplab_family.precision", None)
    report = evaluate.evaluate(windowed, model_dir, output_stride=8, scales=[1.0], flip=False,
                               max_images=1, model=model)
    assert report["window"] == {"size": [72, 96], "stride": [48, 64]}  # the default stride
    assert os.path.basename(report["results_file"]) == "eval_os8_scales1_win72x96s48x64.json"
    off = evaluate.evaluate(windowed, model_dir, output_stride=8, scales=[1.0], flip=False,
                            window=None, max_images=1, model=model)
    assert off["window"] is None and off["precision"] == "float32"

    calls = []

    def for_inference(model, precision):
        calls.append(precision)
        return model

    monkeypatch.setitem(sys.modules, "deeplab_family.precision",
                        types.SimpleNamespace(for_inference=for_inference))
    bf16 = evaluate.evaluate(config, model_dir, output_stride=8, scales=[1.0], flip=False,
                             precision="bfloat16", max_images=1, model=model)
    assert calls == ["bfloat16"] and bf16["precision"] == "bfloat16"
    assert os.path.basename(bf16["results_file"]) == "eval_os8_scales1_bf16.json"
    # From the config, and the command line's flag reaches it.
    assert evaluate.parse_args(["--model-dir", "m", "--precision", "bfloat16"]).precision == (
        "bfloat16")
    config_bf16 = dataclasses.replace(config, evaluation=dataclasses.replace(
        config.evaluation, precision="bfloat16"))
    evaluate.evaluate(config_bf16, model_dir, flip=False, max_images=1, model=model)
    assert calls == ["bfloat16"] * 2


@pytest.mark.parametrize("args,status,message", [
    (["--window", "32", "--window-stride", "40"], 2, r"stride must not exceed size"),
    (["--window-stride", "24"], 2, r"--window-stride needs a window"),
    (["--window", "none", "--window-stride", "24"], 2, r"--window none"),
    (["--window", "0"], 2, r"--window takes HEIGHT,WIDTH"),
    (["--window", "3,4,5"], 2, r"--window takes HEIGHT,WIDTH"),
    (["--set", "inference.window={size: [32, 32], stride: [40, 40]}"], 1,
     r"stride must not exceed size"),
])
def test_window_errors_on_the_command_line(eval_setup, capsys, args, status, message):
    """A bad window is one `error:` line (or argparse's usage error) and the exit status of
    `deeplab_family.cli`: 2 for the command line's flags, 1 for a config that does not
    validate."""
    try:
        code = evaluate.main(["--config", TINY_CONFIG, "--model-dir", eval_setup["model_dir"],
                              *_sets(eval_setup["shards"]), *args])
    except SystemExit as e:  # argparse rejects the value itself
        code = e.code
    assert code == status
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------
# The SavedModel


@pytest.fixture(scope="module")
def export_setup(tmp_path_factory):
    """A model dir (random weights, a few thousand of them) and colour-coded images of
    different sizes."""
    folder = str(tmp_path_factory.mktemp("window_export"))
    keras.utils.set_random_seed(0)
    records = ef.colour_coded_records(os.path.join(folder, "data"), num_train=1, num_val=3)
    model_dir = os.path.join(folder, "model")
    config = ef.make_model_dir(model_dir, records, train=False)
    model = _perturbed(build_model(config.model))
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                               os.path.join(model_dir, "checkpoints"), 1).save()
    data = []
    for path in records["val_images"]:
        with open(path, "rb") as f:
            data.append(f.read())
    return {"folder": folder, "model_dir": model_dir, "config": config, "data": data}


def _with(config, window, export_window, scales=(1.0,), flip=False):
    values = config.to_dict()
    values["inference"] = {"window": window}
    values["export"] = {**values["export"], "window": export_window, "scales": list(scales),
                        "flip": flip, "probabilities": True}
    return ExperimentConfig.from_dict(values)


def test_exported_window_covering_equals_no_window_and_overlapping_runs(export_setup):
    config, model_dir, data = (export_setup[k] for k in ("config", "model_dir", "data"))
    images = [tf.io.decode_image(d, channels=3).numpy() for d in data]
    assert len({im.shape for im in images}) == len(images)  # a mixed-size batch
    base = os.path.join(export_setup["folder"], "export")

    def export(window, export_window, scales=(1.0,), flip=False):
        info = export_lib.export(_with(config, window, export_window, scales, flip), model_dir,
                                 base, log=lambda m: None)
        with open(os.path.join(info["path"], export_lib.INFO_FILENAME)) as f:
            assert json.load(f)["window"] == info["window"]
        return info, tf.saved_model.load(info["path"]).signatures

    covering = {"size": [100, 100], "stride": [60, 60]}  # larger than every image
    # A window in the config but export.window off: nothing baked in.
    plain_info, plain = export(covering, False)
    assert plain_info["window"] is None
    covering_info, covered = export(covering, True)
    assert covering_info["window"] == covering
    for name, kwargs in (("serving_default", {"image_bytes": tf.constant(data)}),
                         ("serve_image_tensor", {"images": tf.constant(images[0][None])})):
        want, got = plain[name](**kwargs), covered[name](**kwargs)
        for key in ("probabilities", "semantic_predictions", "image_sizes"):
            np.testing.assert_array_equal(got[key].numpy(), want[key].numpy(), err_msg=key)

    # Overlapping windows inside every view (a resized scale and its mirror) of every image of
    # a mixed-size batch. (Two views keep the export fast; the composition with more scales is
    # `test_window_composes_with_multi_scale_and_flip`'s.)
    size, stride, scales = (24, 32), (16, 20), (0.75,)
    info, windowed = export({"size": list(size), "stride": list(stride)}, True, scales, True)
    assert info["window"] == {"size": [24, 32], "stride": [16, 20]}
    got = windowed["serving_default"](image_bytes=tf.constant(data))
    keras_model = export_lib.build_export_model(config, model_dir)[0]
    logits = tf.function(_model_logits(keras_model), input_signature=SIGNATURE)
    for i, image in enumerate(images):
        h, w = image.shape[:2]
        x = tf.constant(image[None], tf.float32)
        want = multi_scale_probabilities(
            lambda v: tf.constant(np_slide(logits, v, size, stride), tf.float32),
            x, scales, True).numpy()[0]
        np.testing.assert_allclose(got["probabilities"][i, :h, :w].numpy(), want, atol=1e-5)
        # The windows matter (probabilities near 1/21 here: 1e-3 is a 2% change).
        whole = multi_scale_probabilities(logits, x, scales, True).numpy()[0]
        assert np.abs(whole - want).max() > 1e-3
    assert got["image_sizes"].numpy().tolist() == [list(im.shape[:2]) for im in images]


def test_export_window_without_inference_window_is_an_error(export_setup, tmp_path):
    with pytest.raises(ValueError, match="export.window is true but inference.window is not"):
        export_lib.export(_with(export_setup["config"], None, True), export_setup["model_dir"],
                          str(tmp_path / "export"), log=lambda m: None)
    assert not os.listdir(tmp_path / "export") if (tmp_path / "export").exists() else True
