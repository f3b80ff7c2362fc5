"""The experiment config: YAML round trip, --set overrides, unknown keys named."""

import pytest
import yaml

from deeplab_family.config import ExperimentConfig, apply_overrides, load_config, save_config


def _write(tmp_path, values):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_load_override_save_round_trip(tmp_path):
    path = _write(tmp_path, {
        "model": {"name": "deeplabv3", "backbone": {"depth": 101, "output_stride": 16,
                                                     "multi_grid": [1, 2, 4]}},
        "train_data": {"file_pattern": "shards/train_aug-*.tfrecord", "crop_size": 513},
    })
    config = load_config(path, ["training.steps=100", "evaluation.scales=[0.5, 1.0]",
                                "model.head.image_pooling=false"])
    assert config.training.steps == 100
    assert config.evaluation.scales == (0.5, 1.0)
    assert config.model.backbone.multi_grid == (1, 2, 4)
    assert config.model.head == {"image_pooling": False}
    assert config.train_data.crop_size == (513, 513)
    saved = save_config(config, str(tmp_path / "model_dir"))
    assert load_config(saved) == config


@pytest.mark.parametrize(
    "values, overrides, message",
    [
        ({"trainig": {}}, [], r"unknown section\(s\) \['trainig'\]"),
        ({}, ["training.stepz=3"], r"unknown key\(s\) \['stepz'\] in training"),
        ({"model": {"backbone": {"dept": 50}}}, [], r"\['dept'\] in model.backbone"),
        ({}, ["runtime.strategy=horovod"], "runtime.strategy must be one of"),
        ({}, ["training.steps=0"], "training.steps must be an int >= 1"),
        ({}, ["evaluation.output_stride=12"], "evaluation.output_stride must be 4, 8, 16 or 32"),
        ({}, ["training"], "--set expects section.key=value"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path, values, overrides, message):
    path = _write(tmp_path, values)
    with pytest.raises(ValueError, match=message):
        load_config(path, overrides)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))


def test_overrides_parse_yaml_values():
    values = apply_overrides({}, ["a.b=3", "a.c=[1, 2]", "d=on", "e.f=hello"])
    assert values == {"a": {"b": 3, "c": [1, 2]}, "d": True, "e": {"f": "hello"}}


def test_defaults_build():
    config = ExperimentConfig.from_dict({})
    assert config.runtime.strategy == "mirrored"
    assert config.evaluation.output_stride == 8


@pytest.mark.parametrize("mode", ["caffe", "tf"])
def test_images_are_padded_with_the_pixel_the_backbone_maps_to_zero(mode):
    import numpy as np

    from deeplab_family.backbones.image_normalization import ImageNormalization

    config = ExperimentConfig.from_dict({"model": {"backbone": {"preprocessing": mode}}})
    for section in (config.train_data, config.eval_data):
        pad = np.full((1, 1, 1, 3), section.mean_pixel, np.float32)
        np.testing.assert_allclose(np.asarray(ImageNormalization(mode)(pad)), 0.0, atol=1e-4)
    # A section that names its padding keeps it.
    config = ExperimentConfig.from_dict({
        "model": {"backbone": {"preprocessing": mode}},
        "train_data": {"mean_pixel": [1, 2, 3]},
    })
    assert config.train_data.mean_pixel == (1.0, 2.0, 3.0)
    assert config.eval_data.mean_pixel != (1.0, 2.0, 3.0)


def test_floats_without_a_dot_are_floats(tmp_path):
    """PyYAML reads `1e-5` as a string (YAML 1.1 wants `1.0e-5`); configs and `--set` read it
    as the float every ML config means."""
    path = tmp_path / "experiment.yaml"
    path.write_text("model: {backbone: {norm_epsilon: 1e-3}}\ntraining: {learning_rate: 7e-3}\n")
    config = load_config(str(path), ["training.weight_decay=1E-4"])
    assert config.model.backbone.norm_epsilon == 1e-3
    assert config.training.learning_rate == 7e-3 and config.training.weight_decay == 1e-4
