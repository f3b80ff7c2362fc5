"""A fresh run starts from pretrained weights: a torch-format file of the tiny backbone, written
here in torchvision's names and layout, converted once with `python -m deeplab_family.weights
convert`, then given as `model.backbone_weights`."""

import io

import numpy as np
import pytest
from safetensors.numpy import save_file

from deeplab_family.backbones import build_backbone
from deeplab_family.training import loop
from deeplab_family.weights.cli import main as weights_main
from tests.training.helpers import TINY_CONFIG, tiny_config

STAGES = ("res2", "res3", "res4", "res5")


def torchvision_state_dict(backbone, seed=0):
    """Seeded random weights for `backbone`'s architecture, named and laid out as torchvision's
    ResNet `state_dict()` (OIHW kernels, `bn.weight/bias/running_mean/running_var`,
    `downsample.0/1`), and the same values in our layer names for comparison."""
    rng = np.random.default_rng(seed)
    state, ours = {}, {}

    def conv_bn(our_name, conv, bn):
        layer = backbone.get_layer(our_name)
        kh, kw, cin, cout = layer.conv.kernel.shape
        kernel = rng.normal(0, (2.0 / (kh * kw * cin)) ** 0.5, (kh, kw, cin, cout))
        state[f"{conv}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), "float32")
        stats = [rng.uniform(0.5, 1.5, cout), rng.normal(0, 0.2, cout),
                 rng.normal(0, 0.2, cout), rng.uniform(0.5, 2.0, cout)]
        for key, value in zip(("weight", "bias", "running_mean", "running_var"), stats):
            state[f"{bn}.{key}"] = value.astype("float32")
        state[f"{bn}.num_batches_tracked"] = np.array(100, "int64")
        ours[our_name] = kernel.astype("float32")

    conv_bn("stem_conv1", "conv1", "bn1")
    for k, stage in enumerate(STAGES, start=1):
        j = 0
        while f"{stage}_unit{j + 1}_conv1" in [layer.name for layer in backbone.layers]:
            prefix = f"layer{k}.{j}"
            for c in (1, 2, 3):
                conv_bn(f"{stage}_unit{j + 1}_conv{c}", f"{prefix}.conv{c}", f"{prefix}.bn{c}")
            if j == 0 and hasattr(backbone.get_layer(f"{stage}_unit1_shortcut"), "conv"):
                conv_bn(f"{stage}_unit1_shortcut", f"{prefix}.downsample.0",
                        f"{prefix}.downsample.1")
            j += 1
    state["fc.weight"] = rng.normal(0, 0.01, (10, 32)).astype("float32")
    state["fc.bias"] = np.zeros(10, "float32")
    return state, ours


@pytest.mark.slow
def test_a_fresh_run_starts_from_a_converted_torch_file(shards, model_dir, tmp_path):
    torch_config = ["model.backbone.preprocessing=torch", "model.backbone.stride_in_1x1=false"]
    config = tiny_config(shards, *torch_config)
    backbone = build_backbone(config.model.backbone)
    state, want = torchvision_state_dict(backbone)
    source = str(tmp_path / "tiny_resnet.safetensors")
    save_file(state, source)

    converted = str(tmp_path / "tiny_resnet.weights.h5")
    overrides = [arg for o in (*config_overrides(shards), *torch_config) for arg in ("--set", o)]
    assert weights_main(["convert", source, "--config", TINY_CONFIG, "--output", converted,
                         *overrides]) == 0

    # lr 1e-12: the kernels after one step are the ones the run started from.
    run = tiny_config(shards, *torch_config, f"model.backbone_weights={converted}",
                      "model.random_init=false", "training.steps=1",
                      "training.learning_rate=1e-12", "training.weight_decay=0.0")
    out = io.StringIO()
    loop.train(run, model_dir, stream=out)
    assert "initialised the backbone: imported" in out.getvalue(), out.getvalue()
    assert "(deeplab_family:" in out.getvalue()
    from deeplab_family.models import build_model
    from deeplab_family.training import checkpoints

    model = build_model(run.model)
    checkpoints.restore_model(model, model_dir)
    trained = model.get_layer("backbone")
    for name, kernel in want.items():
        np.testing.assert_allclose(np.asarray(trained.get_layer(name).conv.kernel), kernel,
                                   rtol=1e-6, atol=1e-7, err_msg=name)


def config_overrides(shards):
    from tests.training.helpers import TEST_OVERRIDES, data_overrides

    return [*TEST_OVERRIDES, *data_overrides(shards)]


def test_init_checkpoint_takes_a_model_garden_task_checkpoint(shards, model_dir, tmp_path):
    """`training.init_checkpoint` given a Model Garden DeepLabV3 task checkpoint imports the
    whole model (backbone, ASPP, classifier) into a fresh run."""
    import dataclasses

    import tensorflow as tf

    from deeplab_family.progress import ProgressBar
    from tests.weights.test_model_garden import _tiny_model_config, _tiny_segmentation_model

    theirs = _tiny_segmentation_model(seed=4)
    prefix = tf.train.Checkpoint(model=theirs).write(str(tmp_path / "mg" / "ckpt"))
    config = tiny_config(shards)
    config = dataclasses.replace(
        config, model=_tiny_model_config(),  # 3 classes, as their tiny model
        training=dataclasses.replace(config.training, init_checkpoint=prefix),
    )
    trainer = loop.Trainer(config, tf.distribute.OneDeviceStrategy("/cpu:0"))
    out = io.StringIO()
    assert loop._restore(trainer, model_dir, ProgressBar(1, stream=out)) == 0
    assert "initialised the model: imported" in out.getvalue()
    assert "(model_garden:" in out.getvalue()
    kernel = trainer.model.get_layer("logits_conv").kernel
    np.testing.assert_array_equal(np.asarray(kernel),
                                  theirs.head._classifier.kernel.numpy())
