"""Evaluation: mIoU == NumPy, 255/padding never scored, multi-scale + flip, OS8 from OS16."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_family import evaluate, evaluation, inference
from deeplab_family.data.classes import VOC_CLASSES
from deeplab_family.data.pipeline import InputConfig, make_dataset
from deeplab_family.models import build_model
from deeplab_family.training import checkpoints
from tests.training.helpers import (
    TEST_OVERRIDES,
    TINY_CONFIG,
    build_synthetic_shards,
    data_overrides,
    tiny_config,
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return build_synthetic_shards(str(tmp_path_factory.mktemp("eval_synthetic")))


def _sets(shards):
    return [a for s in [*TEST_OVERRIDES, *data_overrides(shards)] for a in ("--set", s)]


def _random_model(config, output_stride=16, seed=0):
    keras.utils.set_random_seed(seed)
    model = build_model(config.model.with_output_stride(output_stride))
    rng = np.random.default_rng(seed)
    for w in model.weights:  # break the symmetry of a fresh init (BN at identity, etc.)
        if "variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        else:
            w.assign(w.numpy() + rng.standard_normal(w.shape).astype("float32") * 0.05)
    return model


def _save(model, model_dir, step=7):
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, step=tf.Variable(step, dtype=tf.int64)),
        checkpoints.checkpoint_dir(model_dir), max_to_keep=1)
    return manager.save(checkpoint_number=step)


def _np_miou(labels, predictions, num_classes):
    valid = labels != 255
    ious = []
    for c in range(num_classes):
        gt, pr = (labels == c) & valid, (predictions == c) & valid
        if (gt | pr).sum():
            ious.append((gt & pr).sum() / (gt | pr).sum())
    return float(np.mean(ious)), float((labels == predictions)[valid].mean())


def _images(shards):
    dataset = make_dataset(InputConfig(file_pattern=shards["val"], batch_size=1), training=False)
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_single_scale_without_flip_is_plain_argmax(shards):
    model = _random_model(tiny_config(shards), output_stride=8)
    predict = evaluate.make_predictor(model, scales=[1.0], flip=False)
    for image, _ in _images(shards)[:3]:
        want = np.argmax(model(image, training=False)["logits"].numpy(), -1)
        np.testing.assert_array_equal(predict(tf.constant(image)).numpy(), want)


def test_multi_scale_and_flip_average_softmax_probabilities(shards):
    model = _random_model(tiny_config(shards), output_stride=8)
    scales = (0.5, 1.0, 1.25)
    predict = evaluate.make_predictor(model, scales=scales, flip=True)
    images = _images(shards)
    for image, _ in images[:2]:
        h, w = image.shape[1:3]
        total = 0
        for s in scales:
            size = (round(h * s), round(w * s))
            scaled = tf.image.resize(image, size) if s != 1.0 else image
            for flip in (False, True):
                x = scaled[:, :, ::-1] if flip else scaled
                logits = model(np.asarray(x), training=False)["logits"]
                if s != 1.0:  # logits resized back, then the softmax (research/deeplab)
                    logits = tf.image.resize(logits, (h, w))
                probs = tf.nn.softmax(logits).numpy()
                if flip:
                    probs = probs[:, :, ::-1]
                total = total + probs
        want = np.argmax(total, -1)
        got = predict(tf.constant(image)).numpy()
        assert got.shape == (1, h, w)
        assert (got == want).mean() > 0.999  # float summation order only
    # Every image size goes through one trace: nothing grows from image to image.
    for image, _ in images:
        predict(tf.constant(image))
    assert predict.experimental_get_tracing_count() == 1
    assert len({im.shape for im, _ in images}) > 1


def test_evaluate_os8_from_os16_weights_matches_numpy(shards, tmp_path, capsys):
    config = tiny_config(shards)
    model_dir = str(tmp_path / "model")
    prefix = _save(_random_model(config, output_stride=16), model_dir)

    report = evaluate.evaluate(config, model_dir, output_stride=8, scales=[1.0], flip=False)
    assert report["checkpoint"] == prefix and report["step"] == 7
    assert report["output_stride"] == 8 and report["num_images"] == 6
    assert list(report["per_class_iou"]) == list(VOC_CLASSES)
    with open(report["results_file"]) as f:
        assert json.load(f)["miou"] == report["miou"]
    assert os.path.basename(report["results_file"]) == "eval_os8_scales1.json"

    # The same predictions scored by NumPy.
    os8 = inference.build_inference_model(config.model, 8)
    checkpoints.restore_model(os8, model_dir)
    labels, predictions = [], []
    for image, label in _images(shards):
        labels.append(label.ravel())
        predictions.append(np.argmax(os8(image, training=False)["logits"].numpy(), -1).ravel())
    miou, accuracy = _np_miou(np.concatenate(labels), np.concatenate(predictions), 21)
    np.testing.assert_allclose(report["miou"], miou, rtol=1e-12)
    np.testing.assert_allclose(report["pixel_accuracy"], accuracy, rtol=1e-12)
    assert report["num_pixels"] == int((np.concatenate(labels) != 255).sum())

    # The command line: multi-scale + flip at OS8, a final JSON line on stdout.
    code = evaluate.main(["--config", TINY_CONFIG, "--model-dir", model_dir, "--output-stride",
                          "8", "--scales", "0.75,1.0", "--flip",
                          *_sets(shards)])
    assert code == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["scales"] == [0.75, 1.0] and last["flip"] is True and last["output_stride"] == 8
    assert 0 <= last["miou"] <= 1 and set(last["per_class_iou"]) == set(VOC_CLASSES)
    assert os.path.exists(os.path.join(model_dir, "eval_os8_scales0.75-1_flip.json"))


def test_evaluate_os4_from_os16_weights_cli(shards, tmp_path, capsys):
    """DeepLabv3 Appendix C evaluates Cityscapes at output stride 4: `--output-stride 4` restores
    OS16-trained weights into an OS4 build, and its mIoU is that model's, scored by NumPy."""
    config = tiny_config(shards)
    model_dir = str(tmp_path / "model")
    _save(_random_model(config, output_stride=16), model_dir)
    code = evaluate.main(["--config", TINY_CONFIG, "--model-dir", model_dir, "--output-stride",
                          "4", "--scales", "1.0", *_sets(shards), "--set", "evaluation.flip=false"])
    assert code == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["output_stride"] == 4 and last["num_images"] == 6 and last["flip"] is False
    assert 0 <= last["miou"] <= 1
    assert os.path.exists(os.path.join(model_dir, "eval_os4_scales1.json"))

    os4 = inference.build_inference_model(config.model, 4)
    assert os4.get_layer("backbone").feature_strides["res5"] == 4
    checkpoints.restore_model(os4, model_dir)
    labels, predictions = [], []
    for image, label in _images(shards):
        logits = os4(image, training=False)["logits"].numpy()
        assert logits.shape[1:3] == image.shape[1:3]
        labels.append(label.ravel())
        predictions.append(np.argmax(logits, -1).ravel())
    miou, _ = _np_miou(np.concatenate(labels), np.concatenate(predictions), 21)
    np.testing.assert_allclose(last["miou"], miou, rtol=1e-12)


def test_padding_and_void_are_never_scored(shards, tmp_path):
    """A per-pixel model gives the same predictions on real pixels whatever the padding: the
    scores at native size and padded to a fixed size must be identical."""
    inputs = keras.Input((None, None, 3))
    logits = keras.layers.Conv2D(21, 1, kernel_initializer=keras.initializers.RandomNormal(
        seed=1))(inputs)
    model = keras.Model(inputs, {"logits": logits})
    native = evaluate.evaluate(tiny_config(shards), str(tmp_path / "a"), model=model, flip=False)
    padded = evaluate.evaluate(tiny_config(shards, "eval_data.eval_crop_size=[100, 100]"),
                               str(tmp_path / "b"), model=model, flip=False)
    assert native["num_pixels"] == padded["num_pixels"]
    assert native["confusion_matrix"] == padded["confusion_matrix"]
    assert native["miou"] == padded["miou"]


def test_no_checkpoint_is_a_clear_error(shards, tmp_path, capsys):
    code = evaluate.main(["--config", TINY_CONFIG, "--model-dir", str(tmp_path),
                          *_sets(shards)])
    assert code == 1
    assert "no checkpoint in" in capsys.readouterr().err


def test_expected_count_reads_the_builders_manifests(shards, tmp_path):
    # The val shards hold the 6 val images of the synthetic layout (see build_synthetic_shards).
    assert evaluate.expected_count(shards["val"]) == 6 == len(_images(shards))
    assert evaluate.expected_count(str(tmp_path / "none-*.tfrecord")) is None
    # Shards from another tool (no manifest entry): no total, and no error.
    foreign = tmp_path / "other-00000-of-00001.tfrecord"
    foreign.write_bytes(b"")
    (tmp_path / "junk-manifest.json").write_text("[1, 2]")
    assert evaluate.expected_count(str(tmp_path / "*.tfrecord")) is None


def test_evaluation_progress_lines_in_logs(shards, tmp_path):
    """Not a terminal: one line every `every` images and a final line, with count/total,
    running mIoU and speed."""
    import io

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, {"logits": keras.layers.Conv2D(21, 1)(inputs)})
    stream = io.StringIO()
    report = evaluate.evaluate(tiny_config(shards), str(tmp_path), model=model, flip=False,
                               stream=stream)
    lines = [line for line in stream.getvalue().splitlines() if line.startswith("evaluate ")]
    assert len(lines) == 1  # 6 images < every=50: the final line only
    assert lines[0].startswith("evaluate 6/6 [") and "img/s" in lines[0]
    assert f"mIoU {report['miou']:.4f}" in lines[0]

    progress = evaluate.EvalProgress(100, io.StringIO(), every=50)  # total = a multiple
    for count in range(1, 101):
        progress.update(count, 0.5)
    progress.update(100, 0.5, final=True)
    assert [t.split(" [")[0] for t in progress.stream.getvalue().splitlines()] == [
        "evaluate 50/100", "evaluate 100/100"]

    progress = evaluate.EvalProgress(120, io.StringIO(), every=50)
    for count in range(1, 121):
        progress.update(count, 0.5)
    progress.update(120, 0.5, final=True)
    text = progress.stream.getvalue().splitlines()
    assert [t.split(" [")[0] for t in text] == ["evaluate 50/120", "evaluate 100/120",
                                                "evaluate 120/120"]
    assert "ETA" in text[0] and "ETA" not in text[-1]


def test_evaluate_and_export_restore_the_same_model(shards, tmp_path, monkeypatch):
    """`evaluate` and `export` get their model from `inference.load_inference_model`: from one
    model dir whose config asks for synchronized BN, the same network (plain BN, the same
    weights) and the same logits; export only switches the atrous convs to the dense form."""
    from deeplab_family import export as export_lib

    config = tiny_config(shards, "model.backbone.synchronized_bn=true",
                         "evaluation.output_stride=8", "export.output_stride=8")
    model_dir = str(tmp_path / "model")
    _save(_random_model(config, output_stride=16), model_dir)

    def batch_norms(model):
        norms = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
                 if isinstance(layer, keras.layers.BatchNormalization)]
        assert norms
        return norms

    # The config really asks for it: a plain build has synchronized BN.
    assert all(bn.synchronized for bn in batch_norms(build_model(config.model)))

    evaluated = []
    make_predictor = evaluate.make_predictor

    def spy(model, *args, **kwargs):
        evaluated.append(model)
        return make_predictor(model, *args, **kwargs)

    monkeypatch.setattr(evaluation, "make_predictor", spy)
    evaluate.evaluate(config, model_dir, scales=[1.0], flip=False, max_images=1)
    exported, _ = export_lib.build_export_model(config, model_dir)
    (scored,) = evaluated
    for model in (scored, exported):
        assert not any(bn.synchronized for bn in batch_norms(model))
    assert [w.shape for w in scored.weights] == [w.shape for w in exported.weights]
    for a, b in zip(scored.weights, exported.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    image = _images(shards)[0][0]
    want = exported(image, training=False)["logits"].numpy()
    np.testing.assert_allclose(scored(image, training=False)["logits"].numpy(), want, atol=1e-5)
    # With the same conv form, the very same logits.
    export_lib.use_dense_atrous_convs(scored)
    np.testing.assert_array_equal(scored(image, training=False)["logits"].numpy(), want)
