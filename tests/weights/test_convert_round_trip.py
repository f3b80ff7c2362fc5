"""Every format: `inspect` gives a `model.backbone` section that loads the file, the import ->
`convert` -> reload path gives identical weights and outputs, and the converted file loads at
output strides 32, 16 and 8 alike."""

import numpy as np
import pytest

from deeplab_family.backbones import BackboneConfig, build_backbone
from deeplab_family.weights import convert, import_weights, inspect
from tests.tiny import random_images


def _torch_file(tmp_path):
    from tests.weights.test_torch import resnet_state_dict, save

    path = str(tmp_path / "timm_deep.safetensors")
    save(resnet_state_dict("timm_deep", groups=2, stem_width=4), path)
    return path


def _slim_file(tmp_path):
    from tests.weights.test_slim import slim_arrays, write_checkpoint

    return write_checkpoint(str(tmp_path / "slim"), slim_arrays("beta"))


def _model_garden_file(tmp_path):
    import tensorflow as tf

    from tests.weights.test_model_garden import _tiny_resnet

    return tf.train.Checkpoint(backbone=_tiny_resnet(seed=3)).write(str(tmp_path / "mg" / "ckpt"))


def _keras_applications_file(tmp_path):
    import keras

    from deeplab_family.weights.keras_applications import keras_applications_resnet
    from tests.weights.test_keras_applications import _randomise

    keras.utils.set_random_seed(5)
    path = str(tmp_path / "resnet50_notop.weights.h5")
    _randomise(keras_applications_resnet(50), seed=5).save_weights(path)
    return path


FILES = {
    "torch": (_torch_file, "deep stem 4-4-8"),
    "slim": (_slim_file, "deep stem 8-8-16, stride on the 3x3 of the last unit before it"),
    "model_garden": (_model_garden_file, "7x7 stem"),
    "keras_applications": (_keras_applications_file, "ResNet-50, 7x7 stem 64"),
}


@pytest.mark.parametrize("fmt", sorted(FILES))
def test_inspect_convert_reload(fmt, tmp_path):
    write, architecture = FILES[fmt]
    path = write(tmp_path)
    info = inspect(path)
    assert info["format"] == fmt and architecture in info["architecture"], info["architecture"]
    config = BackboneConfig(**info["backbone"])  # the printed section builds a fitting backbone
    direct = build_backbone(config)
    import_weights(direct, path)

    converted = str(tmp_path / "converted.weights.h5")
    report = convert(path, config, converted)
    assert report.format == fmt and inspect(converted)["backbone"] == info["backbone"]
    images = random_images(33, 33, seed=1)
    want = {k: np.asarray(v) for k, v in direct(images, training=False).items()}
    for output_stride, grid in [(32, None), (16, (1, 2)), (8, (1, 2))]:
        if grid is not None and len(grid) != config.stage_depths[-1]:
            grid = None
        target = build_backbone(config.replace(output_stride=output_stride, multi_grid=grid))
        assert import_weights(target, converted).format == "deeplab_family"
        for a, b in zip(direct.weights, target.weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=b.path)
        if output_stride == 32:
            got = target(images, training=False)
            for key in want:
                np.testing.assert_array_equal(np.asarray(got[key]), want[key], err_msg=key)
