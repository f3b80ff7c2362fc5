"""Where a strided unit strides (ResNeXt: its grouped 3x3), the shortcut of a unit that keeps its
depth (DeepLabv3's cascaded blocks: identity, subsampled when strided), and output stride 4
(DeepLabv3 Appendix C)."""

import glob
import math
import os
import re
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_family.backbones import (
    BackboneConfig,
    backbone_preset,
    build_backbone,
    plan_params,
    stage_plan,
)
from deeplab_family.backbones.subsample import Subsample
from deeplab_family.config import load_config
from deeplab_family.models.exfuse import exfuse_backbone_config
from deeplab_family.models.registry import head_config
from tests.tiny import random_images, tiny_config

CONFIG_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "train_configs"
)
RESNEXT_CONFIGS = sorted(
    glob.glob(os.path.join(CONFIG_DIR, "gcn_*.yaml"))
    + glob.glob(os.path.join(CONFIG_DIR, "exfuse_*.yaml"))
)


def _layer_or_none(model, name):
    return model.get_layer(name) if name in {layer.name for layer in model.layers} else None


# ---------------------------------------------------------------------------------------------
# Stride placement: ResNeXt strides the grouped 3x3 (Xie et al. 2017; torchvision, timm)


def test_stride_placement_follows_the_variant():
    assert BackboneConfig().stride_in_1x1 is True  # keras.applications ResNet v1
    resnext = BackboneConfig(depth=101, groups=32, width_per_group=4)
    assert resnext.stride_in_1x1 is False
    assert resnext.to_dict()["stride_in_1x1"] is False  # the resolved value is in the config
    assert BackboneConfig.from_dict(resnext.to_dict()) == resnext
    for name in ("resnext101_32x4d", "resnext101_32x4d_lr", "resnext131_se"):
        assert backbone_preset(name).stride_in_1x1 is False, name
    for name in ("resnet50", "resnet101", "resnet152", "resnet101_deep"):
        assert backbone_preset(name).stride_in_1x1 is True, name
    # An explicit value wins and survives `replace`; an automatic one follows `groups`.
    assert BackboneConfig(groups=32, width_per_group=4, stride_in_1x1=True).stride_in_1x1
    assert BackboneConfig(groups=2, stride_in_1x1=True).replace(groups=4).stride_in_1x1
    assert not BackboneConfig(stride_in_1x1=False).replace(depth=101).stride_in_1x1
    assert not BackboneConfig().replace(groups=2).stride_in_1x1
    assert BackboneConfig(groups=2).replace(groups=1).stride_in_1x1


def test_grouped_build_strides_the_3x3_and_keeps_the_weights():
    grouped = build_backbone(tiny_config(groups=2))
    caffe = build_backbone(tiny_config(groups=2, stride_in_1x1=True))
    for stage in ("res3", "res4", "res5"):
        assert grouped.get_layer(f"{stage}_unit1_conv1").conv.strides == (1, 1), stage
        assert grouped.get_layer(f"{stage}_unit1_conv2").conv.strides == (2, 2), stage
        assert caffe.get_layer(f"{stage}_unit1_conv1").conv.strides == (2, 2), stage
        assert caffe.get_layer(f"{stage}_unit1_conv2").conv.strides == (1, 1), stage
    # Only the stride moves: the same variables, the same output sizes.
    assert [(v.path, tuple(v.shape)) for v in grouped.weights] == [
        (v.path, tuple(v.shape)) for v in caffe.weights
    ]
    assert grouped.count_params() == caffe.count_params() == plan_params(grouped.backbone_config)
    x = random_images(65, 47)
    a, b = grouped(x, training=False), caffe(x, training=False)
    assert {k: tuple(v.shape) for k, v in a.items()} == {k: tuple(v.shape) for k, v in b.items()}


@pytest.mark.parametrize("path", RESNEXT_CONFIGS, ids=os.path.basename)
def test_resnext_configs_say_where_they_stride(path):
    with open(path) as f:
        text = f.read()
    assert "# Stride placement: stride_in_1x1: false" in text.split("\n\n")[0]  # the header
    assert re.search(r"\bstride_in_1x1: false\b", text.split("\nmodel:")[1])  # an explicit key
    config = load_config(path)
    backbone = config.model.backbone
    assert backbone.groups == 32 and backbone.stride_in_1x1 is False
    if config.model.name == "exfuse":  # with Layer Rearrangement: {8, 8, 9, 8}
        backbone = exfuse_backbone_config(backbone, head_config(config.model))
        assert backbone.stride_in_1x1 is False
    # The plan holds at the config's output stride and the dilated ones: no unit puts a stride
    # and an atrous rate on the same 3x3 conv.
    for output_stride in (backbone.output_stride, 16, 8, 4):
        stage_plan(backbone.replace(output_stride=output_stride))


# ---------------------------------------------------------------------------------------------
# Shortcuts: a projection only where the depth changes (research/deeplab's slim `bottleneck`)


def test_cascaded_blocks_have_identity_shortcuts_in_the_plan():
    config = BackboneConfig(depth=101, output_stride=16, multi_grid=(1, 2, 1), cascade_blocks=3)
    kinds = {u.name: u.shortcut for s in stage_plan(config) for u in s.units}
    for stage in ("res2", "res3", "res4", "res5"):  # 64->256, 256->512, 512->1024, 1024->2048
        assert kinds[f"{stage}_unit1"] == "projection", stage
    assert [k for k, v in kinds.items() if v == "projection"] == [
        "res2_unit1", "res3_unit1", "res4_unit1", "res5_unit1"]
    for block in ("block5", "block6", "block7"):  # 2048 -> 2048 at stride 1
        assert [kinds[f"{block}_unit{j}"] for j in (1, 2, 3)] == ["identity"] * 3, block
    # Undilated (OS256) every block is strided: its first unit subsamples.
    kinds = {u.name: u.shortcut for s in stage_plan(config.replace(output_stride=256))
             for u in s.units}
    for block in ("block5", "block6", "block7"):
        assert [kinds[f"{block}_unit{j}"] for j in (1, 2, 3)] == [
            "subsample", "identity", "identity"], block


@pytest.mark.parametrize("output_stride, kind", [(16, "identity"), (64, "subsample")])
def test_cascaded_block_shortcut_computes_identity_or_subsample(output_stride, kind):
    """With the residual branch zeroed (conv3's BN gamma = beta = 0), a unit outputs
    relu(shortcut(x)) = shortcut(x) (x is a ReLU output): x itself, or x[::2, ::2]."""
    model = build_backbone(tiny_config(output_stride=output_stride, cascade_blocks=1))
    shortcut = model.get_layer("block5_unit1_shortcut")
    assert isinstance(shortcut, Subsample) and not shortcut.weights
    assert shortcut.strides == (2 if kind == "subsample" else 1)
    assert _layer_or_none(model, "block5_unit2_shortcut") is None
    norm = model.get_layer("block5_unit1_conv3").norm
    norm.gamma.assign(np.zeros(norm.gamma.shape, "float32"))
    norm.beta.assign(np.zeros(norm.beta.shape, "float32"))
    probe = keras.Model(
        model.input,
        [model.get_layer("res5_unit3_out").output, model.get_layer("block5_unit1_out").output],
    )
    x, y = (np.asarray(t) for t in probe(random_images(65, 65), training=False))
    step = 2 if kind == "subsample" else 1
    assert np.abs(x).max() > 0
    np.testing.assert_array_equal(y, x[:, ::step, ::step])


def test_layers_and_checkpoints_do_not_depend_on_the_output_stride():
    """A unit that keeps its depth is strided at one output stride and not at another (here
    res3 16 -> 16, and block5): its `Subsample` is there at both, so the layer list, and the
    object graph a checkpoint numbers, are the same; OS16 weights restore at OS64 and OS4."""
    narrow = dict(stage_channels=(16, 16, 32, 32), stem_width=8, cascade_blocks=1)
    models = {os_: build_backbone(tiny_config(output_stride=os_, **narrow)) for os_ in (4, 16, 64)}
    names = [layer.name for layer in models[16].layers]
    assert "res3_unit1_shortcut" in names and "block5_unit1_shortcut" in names
    assert [layer.name for layer in models[4].layers] == names
    assert [layer.name for layer in models[64].layers] == names
    assert models[4].get_layer("res3_unit1_shortcut").strides == 1
    assert models[16].get_layer("res3_unit1_shortcut").strides == 2
    rng = np.random.default_rng(0)
    for v in models[16].weights:
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    with tempfile.TemporaryDirectory() as tmp:
        path = tf.train.Checkpoint(model=models[16]).write(os.path.join(tmp, "ckpt"))
        for os_ in (4, 64):
            tf.train.Checkpoint(model=models[os_]).read(path).assert_consumed()
            for a, b in zip(models[16].weights, models[os_].weights):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_slim_layout_strides_the_last_unit_and_taps_the_unit_before():
    """`stride_unit="last"` (slim's resnet_v1, research/deeplab's resnet_v1_beta): the last
    unit of res2..res4 carries the next stage's stride, with a `Subsample` shortcut at every
    output stride; res2..res4 are the outputs of the unit before it, at 4, 8, 16."""
    config = tiny_config(stage_depths=(2, 2, 2, 3), stride_unit="last", stride_in_1x1=False,
                         multi_grid=(1, 2, 4))
    plan = {s.name: s for s in stage_plan(config)}
    strides = {u.name: u.stride for s in plan.values() for u in s.units}
    assert [strides[f"res{k}_unit{j}"] for k in (2, 3, 4, 5) for j in (1, 2)] == [
        1, 2, 1, 2, 1, 2, 1, 1]
    assert [plan[f"res{k}"].output_unit for k in (2, 3, 4, 5)] == [
        "res2_unit1", "res3_unit1", "res4_unit1", "res5_unit3"]
    at16 = {u.name: (u.stride, u.dilation_rate) for s in stage_plan(config.replace(
        output_stride=16)) for u in s.units}
    # res4's last unit would pass the output stride: stride 1 at res4's rate; res5 at rate 2.
    assert at16["res4_unit2"] == (1, 1)
    assert [at16[f"res5_unit{j}"] for j in (1, 2, 3)] == [(1, 2), (1, 4), (1, 8)]

    models = {os_: build_backbone(config.replace(output_stride=os_)) for os_ in (8, 16, 32)}
    names = [layer.name for layer in models[32].layers]
    for os_ in (8, 16):
        assert [layer.name for layer in models[os_].layers] == names
    for k in (2, 3, 4):
        shortcut = models[32].get_layer(f"res{k}_unit2_shortcut")
        assert isinstance(shortcut, Subsample) and shortcut.strides == 2
    assert models[8].get_layer("res2_unit2_shortcut").strides == 2
    assert models[8].get_layer("res3_unit2_shortcut").strides == 1
    model = models[32]
    assert model.feature_strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    shapes = {k: tuple(v.shape[1:3]) for k, v in model(random_images(65, 65)).items()}
    assert shapes == {"res2": (17, 17), "res3": (9, 9), "res4": (5, 5), "res5": (3, 3)}
    probe = keras.Model(model.input, model.get_layer("res2_unit1_out").output)
    np.testing.assert_array_equal(np.asarray(probe(random_images(65, 65))),
                                  np.asarray(model(random_images(65, 65))["res2"]))


# ---------------------------------------------------------------------------------------------
# Output stride 4 (DeepLabv3 Appendix C: Cityscapes test set evaluated at output stride 4)


def _rates(model, stage, units):
    return tuple(
        model.get_layer(f"{stage}_unit{j}_conv2").conv.dilation_rate[0] for j in range(1, units + 1)
    )


@pytest.mark.parametrize("size", [(65, 65), (64, 47)])
def test_output_stride_4_geometry_and_rates(size):
    """res2 keeps the stem's stride 4, res3..res5 are dilated 2, 4, 8 (x multi-grid on res5),
    nothing strides after the stem, and every feature is ceil(H / 4) x ceil(W / 4)."""
    model = build_backbone(tiny_config(output_stride=4, multi_grid=(1, 2, 4)))
    keys = ("res2", "res3", "res4", "res5")
    assert model.feature_strides == {k: 4 for k in keys}
    out = model(random_images(*size), training=False)
    h, w = size
    for key in keys:
        assert tuple(out[key].shape[1:3]) == (math.ceil(h / 4), math.ceil(w / 4)), key
        assert np.all(np.isfinite(np.asarray(out[key])))
    assert _rates(model, "res2", 1) == (1,)
    assert _rates(model, "res3", 1) == (2,)
    assert _rates(model, "res4", 2) == (4, 4)
    assert _rates(model, "res5", 3) == (8, 16, 32)
    for stage in keys:
        for suffix in ("conv1", "conv2", "conv3", "shortcut"):
            layer = _layer_or_none(model, f"{stage}_unit1_{suffix}")
            if isinstance(layer, Subsample):  # the tiny res2 keeps the stem's 8 channels
                assert layer.strides == 1, stage
            elif layer is not None:
                assert layer.conv.strides == (1, 1), (stage, suffix)


def test_output_stride_4_full_size_513_and_stride_on_the_3x3():
    """ResNet-101 and ResNeXt-101 (stride in the 3x3) at OS4: 129 x 129 at every level for a
    513 input; the same variables as at OS16."""
    for config in (
        BackboneConfig(depth=101, output_stride=4, multi_grid=(1, 2, 4)),
        backbone_preset("resnext101_32x4d", output_stride=4, multi_grid=(1, 2, 4)),
    ):
        plan = stage_plan(config)
        assert [s.feature_stride for s in plan] == [4, 4, 4, 4]
        assert [s.dilation_rate for s in plan] == [1, 2, 4, 8]
        assert plan[3].unit_rates == (8, 16, 32)
        assert all(u.stride == 1 for s in plan for u in s.units)
        assert plan_params(config) == plan_params(config.replace(output_stride=16))
    model = build_backbone(BackboneConfig(stage_depths=(1, 1, 1, 1), output_stride=4))
    shapes = model.compute_output_shape((1, 513, 513, 3))
    assert {k: tuple(v) for k, v in shapes.items()} == {
        "res2": (1, 129, 129, 256),
        "res3": (1, 129, 129, 512),
        "res4": (1, 129, 129, 1024),
        "res5": (1, 129, 129, 2048),
    }
