"""ResNet backbones: geometry (DeepLabv3 Sec 3.1), rates (Sec 3.2, Fig. 3b), serialisation,
gradients, mixed precision, parameter counts, and argument checks."""

import math
import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_family.backbones import (
    BackboneConfig,
    ImageNormalization,
    backbone_preset,
    build_backbone,
    plan_params,
    stage_plan,
)
from deeplab_family.backbones.config import PREPROCESSING, zero_pixel
from tests.harness import check_gradients, check_keras_round_trip
from tests.tiny import random_images, tiny_config

CHANNELS = {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}


def _expected_strides(output_stride):
    """Nominal strides 4, 8, 16, 32, capped by the output stride (res4 is at 8 when OS = 8)."""
    return {"res2": 4, "res3": 8, "res4": min(16, output_stride), "res5": output_stride}


# ---------------------------------------------------------------------------------------------
# Geometry


@pytest.mark.parametrize("stem", ["standard", "deep"])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_geometry_513_and_odd_forward(stem, output_stride):
    """res2..res5 are ceil(513 / stride) with 256..2048 channels (full channels, one unit per
    stage); then one real forward at 65 x 65."""
    config = BackboneConfig(stage_depths=(1, 1, 1, 1), stem=stem, output_stride=output_stride)
    model = build_backbone(config)
    strides = _expected_strides(output_stride)
    assert model.feature_strides == strides
    assert model.feature_channels == CHANNELS
    assert list(model.output.keys()) == ["res2", "res3", "res4", "res5"]

    shapes = model.compute_output_shape((1, 513, 513, 3))
    for key, stride in strides.items():
        side = math.ceil(513 / stride)
        assert tuple(shapes[key]) == (1, side, side, CHANNELS[key]), (key, shapes[key])
    if output_stride == 32:
        assert [shapes[k][1] for k in CHANNELS] == [129, 65, 33, 17]

    out = model(random_images(65, 65), training=False)
    assert list(out.keys()) == ["res2", "res3", "res4", "res5"]
    for key, stride in strides.items():
        side = math.ceil(65 / stride)
        assert tuple(out[key].shape) == (1, side, side, CHANNELS[key])
        assert np.all(np.isfinite(np.asarray(out[key])))


def test_resnet50_symbolic_513_os16():
    model = build_backbone(BackboneConfig(depth=50, output_stride=16, multi_grid=(1, 2, 4)))
    shapes = model.compute_output_shape((2, 513, 513, 3))
    assert {k: tuple(v) for k, v in shapes.items()} == {
        "res2": (2, 129, 129, 256),
        "res3": (2, 65, 65, 512),
        "res4": (2, 33, 33, 1024),
        "res5": (2, 33, 33, 2048),
    }


def test_even_and_non_square_sizes():
    model = build_backbone(tiny_config(output_stride=8))
    out = model(random_images(64, 47), training=False)
    assert tuple(out["res5"].shape[1:3]) == (8, 6)
    assert tuple(out["res2"].shape[1:3]) == (16, 12)


# ---------------------------------------------------------------------------------------------
# Strides and atrous rates, read from the built layers


def _rates(model, stage, units):
    return tuple(
        model.get_layer(f"{stage}_unit{j}_conv2").conv.dilation_rate[0] for j in range(1, units + 1)
    )


def _shortcut_layer(model, unit):
    names = {layer.name for layer in model.layers}
    return model.get_layer(f"{unit}_shortcut") if f"{unit}_shortcut" in names else None


def _stage_stride(model, stage):
    unit = model.get_layer(f"{stage}_unit1_conv1").conv.strides[0]
    unit *= model.get_layer(f"{stage}_unit1_conv2").conv.strides[0]
    shortcut = _shortcut_layer(model, f"{stage}_unit1")
    if shortcut is None:  # identity: only on a unit that keeps size and depth
        assert unit == 1, stage
    elif hasattr(shortcut, "conv"):  # a projection conv
        assert shortcut.conv.strides[0] == unit, stage
    else:  # a `Subsample` (a unit that keeps its depth)
        assert shortcut.strides == unit, stage
    return unit


@pytest.mark.parametrize(
    "output_stride, multi_grid, want_res4, want_res5, want_strides",
    [
        # DeepLabv3 Sec 3.2.1: OS16, Multi_Grid (1, 2, 4) -> block4 rates 2 * (1, 2, 4).
        (16, (1, 2, 4), 1, (2, 4, 8), (2, 2, 1)),
        # Sec 4.1: OS8 -> block3 rate 2, block4 rate 4 (x multi-grid).
        (8, (1, 2, 4), 2, (4, 8, 16), (2, 1, 1)),
        # OS32: nothing dilated; multi-grid still applies, rate 1 x (1, 2, 4) (paper's rule).
        (32, (1, 2, 4), 1, (1, 2, 4), (2, 2, 2)),
        (16, None, 1, (2, 2, 2), (2, 2, 1)),
        (8, (1, 2, 1), 2, (4, 8, 4), (2, 1, 1)),
    ],
)
def test_multi_grid_rates(output_stride, multi_grid, want_res4, want_res5, want_strides):
    model = build_backbone(tiny_config(output_stride=output_stride, multi_grid=multi_grid))
    assert _rates(model, "res2", 1) == (1,)
    assert _rates(model, "res3", 1) == (1,)
    assert _rates(model, "res4", 2) == (want_res4,) * 2
    assert _rates(model, "res5", 3) == want_res5
    assert tuple(_stage_stride(model, s) for s in ("res3", "res4", "res5")) == want_strides
    assert _stage_stride(model, "res2") == 1
    # Only the first unit of a stage strides.
    assert model.get_layer("res3_unit1_conv1").conv.strides == (2, 2)
    assert model.get_layer("res4_unit2_conv1").conv.strides == (1, 1)
    out = model(random_images(33, 33), training=False)
    assert out["res5"].shape[1] == math.ceil(33 / output_stride)


@pytest.mark.parametrize(
    "multi_grid",
    [(1, 1, 1), (1, 2, 1), (1, 2, 3), (2, 2, 2)],  # DeepLabv3 Table 3 rows
)
def test_cascade_rates_fig3b(multi_grid):
    """block7 at OS16 (Fig. 3b): block4 = res5 at 2 x MG, block5 4 x, block6 8 x, block7 16 x."""
    model = build_backbone(tiny_config(output_stride=16, cascade_blocks=3, multi_grid=multi_grid))
    for stage, rate in [("res5", 2), ("block5", 4), ("block6", 8), ("block7", 16)]:
        assert _rates(model, stage, 3) == tuple(rate * r for r in multi_grid), stage
        assert _stage_stride(model, stage) == 1
    assert list(model.output.keys()) == [
        "res2",
        "res3",
        "res4",
        "res5",
        "block4",
        "block5",
        "block6",
    ]
    assert model.feature_strides == {
        "res2": 4,
        "res3": 8,
        "res4": 16,
        "res5": 16,
        "block4": 16,
        "block5": 16,
        "block6": 16,
    }
    # "res5" is the last cascaded block.
    assert model.output["res5"]._keras_history.operation.name == "block7_unit3_out"


@pytest.mark.parametrize("output_stride", [8, 16, 32, 64, 128, 256])
def test_cascade_output_strides_table1(output_stride):
    """ResNet-50 block7 at every output stride of DeepLabv3 Table 1 (tiny widths)."""
    config = tiny_config(stage_depths=(3, 4, 6, 3), cascade_blocks=3, output_stride=output_stride)
    plan = stage_plan(config)
    strides = [s.feature_stride for s in plan]
    want = [min(4 * 2**i, output_stride) for i in range(7)]
    assert strides == want
    rates = [s.dilation_rate for s in plan]
    assert rates == [max(1, 4 * 2**i // output_stride) for i in range(7)]
    if output_stride in (16, 256):  # one dilated and one undilated forward pass
        model = build_backbone(config)
        out = model(random_images(257, 257), training=False)
        assert out["res5"].shape[1] == math.ceil(257 / output_stride)


def test_stride_on_3x3_when_not_in_1x1():
    model = build_backbone(tiny_config(stride_in_1x1=False, output_stride=16))
    assert model.get_layer("res3_unit1_conv1").conv.strides == (1, 1)
    assert model.get_layer("res3_unit1_conv2").conv.strides == (2, 2)
    assert model.get_layer("res3_unit1_shortcut").conv.strides == (2, 2)
    out = model(random_images(65, 65), training=False)
    assert out["res5"].shape[1] == 5


def test_layer_names_are_stable():
    model = build_backbone(tiny_config(stem="deep", se_ratio=0.25))
    names = [layer.name for layer in model.layers]
    assert names[:3] == ["images", "preprocess", "stem_conv1"]
    for name in [
        "stem_conv2",
        "stem_conv3",
        "stem_pool",
        "res3_unit1_shortcut",
        "res3_unit1_conv1",
        "res4_unit2_conv2",
        "res5_unit3_conv3",
        "res5_unit3_se",
        "res5_unit3_add",
        "res5_unit3_out",
    ]:
        assert name in names
    assert [
        layer.name for layer in build_backbone(tiny_config(stem="deep", se_ratio=0.25)).layers
    ] == names


# ---------------------------------------------------------------------------------------------
# Weights do not depend on the output stride


def _variable_signature(model):
    return [(v.path, tuple(v.shape), v.dtype) for v in model.weights]


def test_same_variables_at_every_output_stride():
    models = {
        os_: build_backbone(tiny_config(output_stride=os_, multi_grid=(1, 2, 4)))
        for os_ in (8, 16, 32)
    }
    sig = _variable_signature(models[16])
    assert _variable_signature(models[8]) == sig
    assert _variable_signature(models[32]) == sig
    assert _variable_signature(build_backbone(tiny_config(stride_in_1x1=False))) == sig

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "os16.weights.h5")
        models[16].save_weights(path)
        models[8].load_weights(path)
    for a, b in zip(models[16].weights, models[8].weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    out = models[8](random_images(33, 33), training=False)
    assert out["res5"].shape[1] == 5


# ---------------------------------------------------------------------------------------------
# Serialisation, gradients, mixed precision


def test_keras_round_trip_safe_mode():
    config = tiny_config(
        stem="deep",
        groups=2,
        se_ratio=0.25,
        output_stride=16,
        multi_grid=(1, 2, 4),
        cascade_blocks=1,
        preprocessing="tf",
    )
    model = build_backbone(config, name="tiny_backbone")
    rebuilt = type(model).from_config(model.get_config())
    assert rebuilt.get_config() == model.get_config()
    # Model Garden's DilatedResNet.get_config drops `multigrid`; ours keeps every field.
    assert rebuilt.backbone_config == config
    assert _rates(rebuilt, "res5", 3) == (2, 4, 8)

    # Non-trivial BN statistics, so that the comparison covers them.
    rng = np.random.default_rng(0)
    for v in model.non_trainable_weights:
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    loaded = check_keras_round_trip(model, random_images(37, 41), atol=1e-6, rtol=1e-7)
    assert loaded.name == "tiny_backbone"
    assert loaded.backbone_config == config
    assert loaded.feature_strides == model.feature_strides
    assert loaded.feature_channels == model.feature_channels


def test_every_weight_gets_a_gradient_and_no_nan():
    model = build_backbone(
        tiny_config(groups=2, se_ratio=0.25, stem="deep", output_stride=8, multi_grid=(1, 2, 4))
    )
    x = random_images(33, 33, batch=2)
    assert model.trainable_weights
    check_gradients(model, x)
    for o in model(x, training=False).values():
        assert np.all(np.isfinite(np.asarray(o)))


def test_mixed_bfloat16_without_global_policy():
    before = keras.config.dtype_policy().name
    model = build_backbone(tiny_config(se_ratio=0.25, groups=2), dtype="mixed_bfloat16")
    assert keras.config.dtype_policy().name == before
    out = model(random_images(33, 33), training=False)
    for key, o in out.items():
        assert keras.backend.standardize_dtype(o.dtype) == "bfloat16", key
        assert np.all(np.isfinite(np.asarray(tf.cast(o, "float32"))))
    for v in model.weights:
        assert keras.backend.standardize_dtype(v.dtype) == "float32", v.path
    assert model.get_layer("preprocess").compute_dtype == "float32"
    assert model.get_config()["dtype"] == "mixed_bfloat16"
    # The same variables as a float32 build, so float32 checkpoints load.
    assert [v.path for v in model.weights] == [
        v.path for v in build_backbone(tiny_config(se_ratio=0.25, groups=2)).weights
    ]


# ---------------------------------------------------------------------------------------------
# Normalisation layer


def test_image_normalization_modes():
    x = random_images(5, 7)
    caffe = ImageNormalization("caffe")(x)
    want = keras.applications.resnet.preprocess_input(x.copy())
    np.testing.assert_allclose(np.asarray(caffe), want, atol=1e-4)
    tf_mode = ImageNormalization("tf")(x)
    np.testing.assert_allclose(np.asarray(tf_mode), x / 127.5 - 1.0, atol=1e-6)
    # torchvision's Normalize on [0, 1] pixels (its documented constants), on x / 255.
    torch_mode = ImageNormalization("torch")(x)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(np.asarray(torch_mode), (x / 255.0 - mean) / std, atol=1e-5)
    # slim's vgg_preprocessing and research/deeplab's feature_extractor subtract an RGB mean.
    slim = ImageNormalization("slim")(x)
    np.testing.assert_allclose(np.asarray(slim), x - np.array([123.68, 116.78, 103.94]),
                               atol=1e-4)
    deeplab = ImageNormalization("deeplab")(x)
    np.testing.assert_allclose(np.asarray(deeplab), x - np.array([123.15, 115.90, 103.06]),
                               atol=1e-4)
    # Every mode maps its zero pixel (the padding colour) to zero.
    for mode in PREPROCESSING:
        zero = ImageNormalization(mode)(np.full((1, 1, 1, 3), zero_pixel(mode), "float32"))
        np.testing.assert_allclose(np.asarray(zero), 0.0, atol=1e-4, err_msg=mode)
    layer = ImageNormalization("torch")
    assert ImageNormalization.from_config(layer.get_config()).get_config() == layer.get_config()
    with pytest.raises(
        ValueError,
        match=r"mode must be one of \['caffe', 'tf', 'torch', 'slim', 'deeplab'\]. "
        r"Received: mode='bgr'",
    ):
        ImageNormalization("bgr")


# ---------------------------------------------------------------------------------------------
# Parameter counts of the full-size nets (built, never run)

# count_params() of our builds: every conv bias-free + BN (gamma, beta, moving mean, variance).
# See tests/weights/test_keras_applications.py for the exact relation to keras.applications' counts.
EXPECTED_PARAMS = {
    "resnet50": 23_561_152,
    "resnet101": 42_605_504,
    "resnet152": 58_295_232,
    "resnext101_32x4d": 42_266_560,
    "resnext101_32x4d_lr": 50_467_264,
}


def _formula_params(config):
    """By hand: per unit w*cin + 9*w*w/g + cout*w (+ cin*cout projection) + 4 per BN channel."""
    total = 7 * 7 * 3 * 64 + 4 * 64
    cin = 64
    for depth, w, cout in zip(config.stage_depths, config.stage_widths, config.stage_channels):
        for j in range(depth):
            total += cin * w + 9 * w * w // config.groups + w * cout + 4 * (2 * w + cout)
            if j == 0:
                total += cin * cout + 4 * cout
            cin = cout
    return total


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_param_counts(name):
    config = backbone_preset(name)
    model = build_backbone(config)
    count = model.count_params()
    print(f"{name}: {count:,} params ({len(model.trainable_weights)} trainable tensors)")
    assert count == EXPECTED_PARAMS[name] == _formula_params(config) == plan_params(config)
    # The same at every output stride: weights never depend on it.
    assert plan_params(config.replace(output_stride=8)) == count


def test_plan_params_matches_built_with_se_deep_stem_and_cascade():
    config = tiny_config(stem="deep", se_ratio=0.25, groups=2, cascade_blocks=2, output_stride=16)
    assert build_backbone(config).count_params() == plan_params(config)


# ---------------------------------------------------------------------------------------------
# Config and arguments


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(output_stride=12),
            r"output_stride must be one of \[4, 8, 16, 32\] with cascade_blocks=0. "
            r"Received: output_stride=12",
        ),
        (dict(output_stride=64), r"output_stride must be one of \[4, 8, 16, 32\]"),
        (
            dict(output_stride=512, cascade_blocks=3),
            r"\[4, 8, 16, 32, 64, 128, 256\] with cascade_blocks=3. Received: output_stride=512",
        ),
        (dict(output_stride=2), r"Received: output_stride=2"),
        (
            dict(multi_grid=(1, -2, 4)),
            r"multi_grid rates must be ints >= 1. Received: multi_grid=\(1, -2, 4\)",
        ),
        (
            dict(multi_grid=(1, 2)),
            r"one rate per unit of the last stage .*: 3 rates. "
            r"Received: multi_grid=\(1, 2\) \(2 rates\)",
        ),
        (
            dict(groups=32, width_per_group=4, stage_widths=(64, 100, 256, 512)),
            r"groups must divide every stage width. Received: groups=32, "
            r"stage_widths=\(64, 100, 256, 512\) \(not divisible: \[100\]\)",
        ),
        (
            dict(stem="resnet_d"),
            r"stem must be one of \['standard', 'deep'\]. Received: stem='resnet_d'",
        ),
        (dict(depth=34), r"depth must be one of \[50, 101, 152\] .*Received: depth=34"),
        (
            dict(stage_depths=(3, 4, 6)),
            r"stage_depths must be 4 ints >= 1 \(res2..res5\). Received: stage_depths=\(3, 4, 6\)",
        ),
        (
            dict(cascade_blocks=4),
            r"cascade_blocks must be an int in 0..3 \(block5..block7\). Received: cascade_blocks=4",
        ),
        (dict(se_ratio=16), r"se_ratio must be None or a float in \(0, 1\]"),
        (
            dict(preprocessing="rgb"),
            r"preprocessing must be one of \['caffe', 'tf', 'torch', 'slim', 'deeplab'\]. "
            r"Received: preprocessing='rgb'",
        ),
        (dict(stride_unit="middle"), r"stride_unit must be one of \['first', 'last'\]"),
        (
            dict(stage_depths=(1, 2, 2, 2), stride_unit="last"),
            r"res2..res4 \(and res5 with cascade_blocks\) need 2 units or more",
        ),
        (dict(norm_momentum=1.0), r"norm_momentum must be in \[0, 1\)"),
        (dict(stride_in_1x1="yes"), r"stride_in_1x1 must be a bool"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BackboneConfig(**kwargs)


def test_stride_and_rate_on_one_conv_is_rejected():
    config = BackboneConfig(output_stride=32, multi_grid=(2, 2, 2), stride_in_1x1=False)
    with pytest.raises(
        ValueError, match=r"res5_unit1 would put stride 2 and atrous rate 2 on the same 3x3 conv"
    ):
        stage_plan(config)
    # With the stride on the 1x1 conv the two do not collide.
    assert stage_plan(config.replace(stride_in_1x1=True))[3].unit_rates == (2, 2, 2)


def test_from_dict_and_unknown_keys():
    config = BackboneConfig(depth=101, output_stride=16, multi_grid=(1, 2, 4), se_ratio=0.0625)
    as_dict = config.to_dict()
    assert as_dict["multi_grid"] == [1, 2, 4]  # YAML/JSON friendly
    assert BackboneConfig.from_dict(as_dict) == config
    with pytest.raises(
        ValueError,
        match=r"Unknown backbone config key\(s\) \['multigrid', 'outputstride'\]. "
        r"Allowed keys: \['depth'",
    ):
        BackboneConfig.from_dict({"depth": 50, "multigrid": [1, 2, 4], "outputstride": 16})
    with pytest.raises(ValueError, match=r"Unknown backbone preset 'resnet18'. Allowed: \["):
        backbone_preset("resnet18")


def test_presets_and_build_from_name():
    assert backbone_preset("resnext101_32x4d").stage_widths == (128, 256, 512, 1024)
    assert backbone_preset("resnext101_32x4d").stage_channels == (256, 512, 1024, 2048)
    assert backbone_preset("resnet101_deep").stem == "deep"
    x131 = backbone_preset("resnext131_se", output_stride=16, multi_grid=(1,) * 8)
    assert x131.stage_depths == (8, 8, 19, 8) and x131.se_ratio == 1 / 16
    assert x131.multi_grid == (1,) * 8
    model = build_backbone({**tiny_config().to_dict(), "output_stride": 16})
    assert model.feature_strides["res5"] == 16


def test_norm_settings_reach_every_bn():
    model = build_backbone(tiny_config(synchronized_bn=True, norm_momentum=0.99, norm_epsilon=1e-3))
    norms = [layer.norm for layer in model.layers if hasattr(layer, "norm")]
    # stem + 3 per unit + 3 projections: the tiny res2 takes the stem's 8 channels and gives 8,
    # so its first unit has an identity shortcut.
    assert len(norms) == 1 + 7 * 3 + 3
    for norm in norms:
        assert norm.synchronized and norm.momentum == 0.99 and norm.epsilon == 1e-3


def test_depth_and_stage_depths_and_replace():
    assert BackboneConfig().stage_depths == (3, 4, 6, 3) and BackboneConfig().depth == 50
    assert BackboneConfig(stage_depths=(3, 4, 23, 3)).depth == 101
    assert BackboneConfig(stage_depths=(8, 8, 9, 8)).depth is None
    with pytest.raises(ValueError, match=r"depth and stage_depths disagree: depth=101 has"):
        BackboneConfig(depth=101, stage_depths=(8, 8, 9, 8))
    # Derived fields are derived again; the changed field wins.
    r101 = BackboneConfig(depth=50).replace(depth=101)
    assert r101.stage_depths == (3, 4, 23, 3)
    assert BackboneConfig(depth=101).replace(stage_depths=(1, 1, 1, 1)).depth is None
    x = BackboneConfig(depth=101, groups=32, width_per_group=4)
    assert x.replace(width_per_group=8).stage_widths == (256, 512, 1024, 2048)
    lr = backbone_preset("resnext101_32x4d_lr")
    assert lr.replace(output_stride=16).stage_widths == lr.stage_widths
    assert BackboneConfig.from_dict(lr.to_dict()) == lr
