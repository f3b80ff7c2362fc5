"""Our own `.weights.h5` (convert's output), the `python -m deeplab_family.weights` commands,
detection of every format, and training's use of the weights: `model.backbone_weights`, and the
stop for a full-size backbone that would start from random weights."""

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from deeplab_family.backbones import BackboneConfig, build_backbone, import_weights
from deeplab_family.weights import (
    WeightsError,
    detect_format,
    inspect,
    save_backbone,
)
from deeplab_family.weights.cli import main
from tests.tiny import BACKBONE, random_images

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _randomised(config, seed=0):
    """A backbone with seeded random kernels and BN statistics (BN init is the identity)."""
    backbone = build_backbone(config)
    rng = np.random.default_rng(seed)
    for v in backbone.weights:
        shape = tuple(v.shape)
        if v.path.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, shape)
        elif v.path.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.3, shape)
        v.assign(value.astype("float32"))
    return backbone


def _weights(model):
    return [np.asarray(v).copy() for v in model.weights]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    config = BackboneConfig(**BACKBONE, stem="deep", preprocessing="torch", output_stride=32)
    backbone = _randomised(config)
    path = str(tmp_path_factory.mktemp("native") / "tiny.weights.h5")
    save_backbone(backbone, path)
    return config, backbone, path


def test_round_trip_at_every_output_stride(saved):
    """The file loads into OS32, OS16 and OS8 builds alike (the variables do not depend on the
    output stride), exactly; at OS32 the outputs equal the source's."""
    config, source, path = saved
    assert detect_format(path) == ("deeplab_family", path)
    for output_stride, grid in [(32, None), (16, (1, 2, 4)), (8, (1, 2, 4))]:
        target = build_backbone(config.replace(output_stride=output_stride, multi_grid=grid))
        report = import_weights(target, path)
        assert report.format == "deeplab_family" and not report.kept and not report.unused
        for a, b in zip(source.weights, target.weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=b.path)
    at32 = build_backbone(config)
    import_weights(at32, path)
    images = random_images(33, 33)
    np.testing.assert_array_equal(np.asarray(at32(images)["res5"]),
                                  np.asarray(source(images)["res5"]))


def test_epsilon_is_folded(saved):
    """A config with another BN epsilon gets variances shifted by the difference: the same
    function at inference."""
    config, source, path = saved
    target = build_backbone(config.replace(norm_epsilon=1e-3))
    import_weights(target, path)
    images = random_images(33, 33, seed=4)
    want, got = np.asarray(source(images)["res5"]), np.asarray(target(images)["res5"])
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    shifted = target.get_layer("stem_conv1").norm.moving_variance
    original = source.get_layer("stem_conv1").norm.moving_variance
    np.testing.assert_allclose(np.asarray(shifted), np.asarray(original) + 1e-5 - 1e-3,
                               rtol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(stem="standard"), r"model.backbone.stem: deep"),
        (dict(groups=2), r"model.backbone.groups: 1"),
        (dict(stage_depths=(1, 1, 2, 2)), r"model.backbone.stage_depths: \[1, 1, 2, 3\]"),
        (dict(preprocessing="caffe"), r"model.backbone.preprocessing: torch"),
        (dict(stride_in_1x1=False), r"model.backbone.stride_in_1x1: True"),
    ],
)
def test_a_contradicting_config_changes_nothing(saved, overrides, message):
    config, _, path = saved
    target = build_backbone(config.replace(**overrides))
    before = _weights(target)
    with pytest.raises(WeightsError, match=message):
        import_weights(target, path)
    for a, b in zip(before, target.weights):
        np.testing.assert_array_equal(a, np.asarray(b), err_msg=b.path)


def test_bad_files_are_named(saved, tmp_path):
    _, _, path = saved
    target = build_backbone(saved[0])
    data = open(path, "rb").read()
    truncated = tmp_path / "cut.weights.h5"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match="cut.weights.h5"):
        import_weights(target, str(truncated))
    pickled = tmp_path / "resnet50.pth"
    pickled.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(WeightsError, match=r"resnet50.pth is a pickled PyTorch file.*"
                                           r"safetensors.torch.*save_file"):
        import_weights(target, str(pickled))
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors does not exist"):
        import_weights(target, str(tmp_path / "nowhere.safetensors"))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(WeightsError, match=r"run is a training model dir.*"
                                           r"training.init_checkpoint"):
        import_weights(target, str(tmp_path / "run"))
    text = tmp_path / "weights.txt"
    text.write_text("hello")
    with pytest.raises(WeightsError, match="weights.txt: cannot tell its format"):
        import_weights(target, str(text))


def test_inspect_and_convert_commands(saved, tmp_path, capsys):
    """`inspect` prints the architecture and the model.backbone YAML; `convert` writes a file
    that loads like the source, and refuses a config that contradicts the file (exit 1)."""
    config, source, path = saved
    assert main(["inspect", path]) == 0
    out = capsys.readouterr().out
    assert "format: deeplab_family" in out
    assert "architecture: stage depths [1, 1, 2, 3], deep stem 8-8-16" in out
    assert "preprocessing: torch" in out and "stem: deep" in out
    info = inspect(path)
    assert info["backbone"]["stage_depths"] == [1, 1, 2, 3]

    experiment = tmp_path / "experiment.yaml"
    backbone = {**config.to_dict(), "output_stride": 16, "multi_grid": [1, 2, 4]}
    experiment.write_text(yaml.safe_dump({"model": {"name": "deeplabv3", "num_classes": 3,
                                                    "backbone": backbone}}))
    output = str(tmp_path / "converted.weights.h5")
    assert main(["convert", path, "--config", str(experiment), "--output", output]) == 0
    assert capsys.readouterr().out.strip() == output
    target = build_backbone(config)
    import_weights(target, output)
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=b.path)

    status = main(["convert", path, "--config", str(experiment), "--output",
                   str(tmp_path / "bad.weights.h5"), "--set", "model.backbone.stem=standard"])
    err = capsys.readouterr().err
    assert status == 1 and "error: " in err and "model.backbone.stem: deep" in err
    assert not os.path.exists(tmp_path / "bad.weights.h5")
    with pytest.raises(SystemExit):
        main(["convert", path, "--config", str(experiment), "--output", "x.h5"])


def test_module_runs_as_a_command(saved):
    _, _, path = saved
    result = subprocess.run(
        [sys.executable, "-m", "deeplab_family.weights", "inspect", path],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "model:\n  backbone:" in result.stdout


def test_a_full_size_backbone_does_not_start_from_random_weights_silently():
    from deeplab_family.config import load_config
    from deeplab_family.training.loop import _check_random_init

    path = os.path.join(ROOT, "train_configs", "pan_r101deep_os16_voc_trainaug.yaml")
    config = load_config(path, ["model.backbone_weights=null"])
    with pytest.raises(ValueError, match=r"neither model.backbone_weights nor "
                                         r"training.init_checkpoint.*model.random_init: true"):
        _check_random_init(config)
    _check_random_init(load_config(path, ["model.backbone_weights=null",
                                          "model.random_init=true"]))
    tiny = os.path.join(ROOT, "train_configs", "tiny_deeplabv3_os16_synthetic.yaml")
    _check_random_init(load_config(tiny, ["model.random_init=false"]))  # not full size


def test_detection_of_other_checkpoints_and_archives(saved, tmp_path):
    """A single-file TF1 checkpoint (slim's model zoo ships `resnet_v1_101.ckpt` without an
    index) is slim; one of our own training checkpoints, a `.keras` archive and a missing file
    under an explicit format are each told apart, with what to do instead."""
    import tensorflow as tf

    from tests.weights.test_slim import slim_arrays

    with tf.Graph().as_default():
        variables = {n: tf.compat.v1.Variable(v) for n, v in slim_arrays("standard").items()}
        saver = tf.compat.v1.train.Saver(variables,
                                         write_version=tf.compat.v1.train.SaverDef.V1)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            v1 = saver.save(session, str(tmp_path / "resnet_v1_50.ckpt"), write_meta_graph=False)
    assert not os.path.exists(v1 + ".index")
    assert detect_format(v1) == ("slim", v1)
    assert inspect(v1)["format"] == "slim"

    config, source, path = saved
    own = tf.train.Checkpoint(model=source).write(str(tmp_path / "run" / "ckpt-1"))
    target = build_backbone(config)
    with pytest.raises(WeightsError, match=r"without Model Garden ResNet blocks.*"
                                           r"training.init_checkpoint"):
        import_weights(target, own)
    archive = str(tmp_path / "backbone.keras")
    source.save(archive)
    with pytest.raises(WeightsError, match=r"backbone.keras is a .keras model archive"):
        import_weights(target, archive)
    plain = str(tmp_path / "plain.weights.h5")
    source.save_weights(plain)
    with pytest.raises(WeightsError, match=r"plain.weights.h5: the Keras weights of a "
                                           r"deeplab_family backbone, without its config"):
        import_weights(target, plain)
    with pytest.raises(FileNotFoundError, match=r"gone.safetensors does not exist"):
        import_weights(target, str(tmp_path / "gone.safetensors"), format="torch")
