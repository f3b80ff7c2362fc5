"""DeepLabv3 (Chen et al. 2017): the Model Garden oracle, paper geometry, every row of Tables
1, 2, 3 and 5 as a config, dilation rates of the built layers, and head options."""

import dataclasses
import math

import keras
import numpy as np
import pytest

from deeplab_family.backbones import BackboneConfig, stage_plan
from deeplab_family.models import ModelConfig, build_model
from deeplab_family.models.deeplabv3 import DeepLabV3Head
from deeplab_family.models.registry import head_config
from tests.tiny import SHALLOW_BACKBONE, random_images

# ---------------------------------------------------------------------------------------------
# Oracle: TensorFlow Model Garden's DeepLabV3 with the same weights gives the same logits.


def _model_garden_config(model_id):
    """official/vision's DeepLabV3: dilated ResNet, stem v1, ReLU, OS16, MG (1, 2, 4), ASPP
    (6, 12, 18) with image pooling, 21 classes, no extra head convs.

    Starts from Model Garden's own experiment `seg_deeplabv3_pascal` and sets what differs from
    the issue's spec there: it uses ResNet-101, swish activations, synchronised BN and ASPP rates
    (12, 24, 36) at output stride 16 (its comment says (6, 12, 18) is the OS16 setting).
    """
    from official.core import exp_factory
    from official.vision.configs import semantic_segmentation  # noqa: F401  (registers it)

    model = exp_factory.get_exp_config("seg_deeplabv3_pascal").task.model
    model.num_classes = 21
    resnet = model.backbone.dilated_resnet
    resnet.model_id = model_id
    resnet.output_stride = 16
    resnet.multigrid = [1, 2, 4]
    resnet.stem_type = "v1"
    model.decoder.aspp.level = 4
    model.decoder.aspp.dilation_rates = [6, 12, 18]
    model.decoder.aspp.pool_kernel_size = None  # global pooling: the image-level features
    model.decoder.aspp.dropout_rate = 0.0
    model.head.level = 4
    model.head.num_convs = 0
    model.norm_activation.activation = "relu"
    model.norm_activation.use_sync_bn = False
    model.norm_activation.norm_momentum = 0.9997
    model.norm_activation.norm_epsilon = 1e-3
    return model


def _build_model_garden(model_id):
    import tf_keras
    from official.vision.modeling import factory

    tf_keras.utils.set_random_seed(0)
    theirs = factory.build_segmentation_model(
        tf_keras.layers.InputSpec(shape=[None, None, None, 3]), _model_garden_config(model_id)
    )
    theirs(tf_keras.Input((None, None, 3)))  # builds the variables (symbolic call, no data)
    return theirs


def _our_config(depth):
    """Ours with Model Garden's options. Model Garden strides the 3x3 conv (stride_in_1x1=False),
    uses BN epsilon 1e-3 (ours defaults to keras.applications' 1e-5) and the deep stem ("v1")."""
    return ModelConfig.from_dict(
        {
            "name": "deeplabv3",
            "num_classes": 21,
            "backbone": {
                "depth": depth,
                "output_stride": 16,
                "multi_grid": [1, 2, 4],
                "stem": "deep",
                "stride_in_1x1": False,
                "norm_momentum": 0.9997,
                "norm_epsilon": 1e-3,
            },
            "head": {"image_pooling": True, "aspp_filters": 256, "dropout": 0.0},
        }
    )


def model_garden_pairs(theirs, ours, config):
    """The weight mapping: [((their Conv2D, their BatchNormalization), our ConvNormAct)], plus
    the logits conv last as ((their classifier, None), our "logits_conv").

    Their layers are taken by structure (order in the graph, `BottleneckBlock` attributes,
    ASPP branch order), not by their auto-generated names; ours by their stable names.
    """
    import tf_keras
    from official.vision.modeling.layers import nn_blocks

    backbone = theirs.backbone
    stem_convs = [l for l in backbone.layers if isinstance(l, tf_keras.layers.Conv2D)]
    stem_norms = [l for l in backbone.layers if isinstance(l, tf_keras.layers.BatchNormalization)]
    blocks = [l for l in backbone.layers if isinstance(l, nn_blocks.BottleneckBlock)]
    ours_backbone = ours.get_layer("backbone")
    pairs = [
        ((conv, norm), ours_backbone.get_layer(f"stem_conv{i + 1}"))
        for i, (conv, norm) in enumerate(zip(stem_convs, stem_norms))
    ]
    units = [unit for stage in stage_plan(config.backbone) for unit in stage.units]
    assert len(units) == len(blocks), (len(units), len(blocks))
    for unit, block in zip(units, blocks):
        assert block._use_projection == unit.project, unit.name
        if unit.project:
            pairs.append(
                ((block._shortcut, block._norm0), ours_backbone.get_layer(f"{unit.name}_shortcut"))
            )
        for k in (1, 2, 3):
            pairs.append(
                (
                    (getattr(block, f"_conv{k}"), getattr(block, f"_norm{k}")),
                    ours_backbone.get_layer(f"{unit.name}_conv{k}"),
                )
            )

    def conv_norm(sequential):
        conv, norm = sequential.layers[:2]
        return conv, norm

    spp, aspp = theirs.decoder.aspp, ours.get_layer("aspp")
    # Their branches: [1x1, one per rate..., pooling]; pooling is Sequential(GAP, Reshape,
    # Sequential(conv, BN, act)). Ours: conv1x1, atrous_convs, pool_conv; then the projection.
    pairs.append((conv_norm(spp.aspp_layers[0]), aspp.conv1x1))
    assert len(spp.aspp_layers[1:-1]) == len(aspp.atrous_convs)
    for sequential, conv in zip(spp.aspp_layers[1:-1], aspp.atrous_convs):
        pairs.append((conv_norm(sequential), conv))
    pairs.append((conv_norm(spp.aspp_layers[-1].layers[-1]), aspp.pool_conv))
    pairs.append((conv_norm(spp.projection), aspp.project))
    pairs.append(((theirs.head._classifier, None), ours.get_layer("logits_conv")))
    return pairs


def randomise_bn(pairs, seed=1):
    """Model Garden's init leaves BN at identity (mean 0, variance 1, gamma 1, beta 0), which
    would not test BN at all; give every BN random statistics and affine parameters."""
    rng = np.random.default_rng(seed)
    for (_, norm), _ in pairs:
        if norm is None:
            continue
        n = norm.gamma.shape[0]
        norm.set_weights(
            [
                rng.uniform(0.5, 1.5, n),  # gamma
                rng.normal(0.0, 0.2, n),  # beta
                rng.normal(0.0, 0.2, n),  # moving mean
                rng.uniform(0.5, 2.0, n),  # moving variance
            ]
        )


def transfer_weights(pairs, theirs, ours):
    """Copies every weight of Model Garden's DeepLabV3 into ours; asserts none is left over."""
    done_theirs, done_ours = set(), set()
    for (conv, norm), target in pairs:
        if norm is None:  # the logits conv: kernel and bias
            target.set_weights(conv.get_weights())
            their_vars, our_vars = conv.weights, target.weights
        else:
            # Both: kernel (kh, kw, in, out); BN gamma, beta, moving mean, moving variance.
            assert conv.kernel.shape == target.conv.kernel.shape, target.name
            target.conv.kernel.assign(conv.kernel.numpy())
            target.norm.set_weights(norm.get_weights())
            their_vars, our_vars = conv.weights + norm.weights, target.weights
        done_theirs.update(id(v) for v in their_vars)
        done_ours.update(id(v) for v in our_vars)
    assert sorted(v.name for v in theirs.weights if id(v) not in done_theirs) == []
    assert sorted(v.path for v in ours.weights if id(v) not in done_ours) == []


@pytest.mark.slow
def test_model_garden_oracle_resnet50():
    """Issue item 1: same weights, same 1/16-resolution logits as Model Garden's DeepLabV3.

    129 is odd on purpose: at every stride-2 layer (3x3 conv, 3x3 max pool) TF's "same"
    padding is then symmetric, which is what ours does at every size (see `fixed_padding`), so
    the two nets compute the same function. Their model takes normalised images (Model Garden
    normalises in the input pipeline); it gets exactly the tensor our "preprocess" layer
    computes.
    """
    import official.vision  # noqa: F401  (pinned in requirements.lock: missing fails, never skips)
    config = _our_config(50)
    theirs = _build_model_garden(50)
    ours = build_model(config)
    pairs = model_garden_pairs(theirs, ours, config)
    randomise_bn(pairs)
    transfer_weights(pairs, theirs, ours)

    images = random_images(129, 129, seed=3)
    normalised = ours.get_layer("backbone").get_layer("preprocess")(images)
    their_logits = theirs(normalised, training=False)["logits"].numpy()
    pre_upsample = keras.Model(ours.input, ours.get_layer("logits_conv").output)
    our_logits = np.asarray(pre_upsample(images, training=False))

    assert their_logits.shape == our_logits.shape == (1, 9, 9, 21)  # ceil(129 / 16) = 9
    scale = np.abs(their_logits).max()
    diff = np.abs(their_logits - our_logits).max()
    print(f"Model Garden oracle: max|logit| {scale:.4g}, max|diff| {diff:.3g}, "
          f"relative {diff / scale:.3g}")
    assert scale > 1e-2
    assert diff <= 1e-4 * scale

    # And the full model upsamples those logits to the input size.
    full = ours(images, training=False)["logits"]
    assert tuple(full.shape) == (1, 129, 129, 21)


@pytest.mark.slow
def test_param_count_equals_model_garden_resnet101():
    """Full-size ResNet-101 DeepLabV3: same parameter count as Model Garden's (built, not run).

    Ours counts what theirs counts: kernels, the logits bias, and BN's 4 vectors per channel
    (gamma, beta and the moving mean and variance)."""
    import official.vision  # noqa: F401  (pinned in requirements.lock: missing fails, never skips)
    theirs = _build_model_garden(101)
    ours = build_model(_our_config(101))
    print(f"DeepLabV3-R101 params: ours {ours.count_params():,}, "
          f"Model Garden {theirs.count_params():,}")
    assert ours.count_params() == theirs.count_params()
    assert len(ours.weights) == len(theirs.weights)


# ---------------------------------------------------------------------------------------------
# Paper geometry


def test_aspp_is_33x33_for_513_at_os16():
    """Sec 3.3 / 4.1: crop 513 at output stride 16 gives a 33x33 ASPP map; logits at 513."""
    config = ModelConfig.from_dict(
        {"name": "deeplabv3", "num_classes": 21,
         "backbone": {"depth": 101, "output_stride": 16, "multi_grid": [1, 2, 4]}}
    )
    model = build_model(config)
    images = keras.Input(batch_shape=(1, 513, 513, 3))
    sub = keras.Model(
        model.input,
        {
            "aspp": model.get_layer("aspp").output,
            "logits_conv": model.get_layer("logits_conv").output,
            "logits": model.output["logits"],
        },
    )
    shapes = {k: tuple(v.shape) for k, v in sub(images).items()}
    assert shapes == {
        "aspp": (1, 33, 33, 256),
        "logits_conv": (1, 33, 33, 21),
        "logits": (1, 513, 513, 21),
    }
    aspp = model.get_layer("aspp")
    assert aspp.rates == (6, 12, 18) and aspp.image_pooling
    assert [c.dilation_rate for c in aspp.atrous_convs] == [(6, 6), (12, 12), (18, 18)]


# ---------------------------------------------------------------------------------------------
# Every row of Tables 1, 2, 3 and 5 is a config.

MULTI_GRIDS = [(1, 1, 1), (1, 2, 1), (1, 2, 3), (1, 2, 4), (2, 2, 2)]


def _cascade(depth, cascade_blocks, output_stride=16, multi_grid=(1, 1, 1)):
    return {
        "name": "deeplabv3_cascade",
        "num_classes": 21,
        "backbone": {
            "depth": depth,
            "output_stride": output_stride,
            "multi_grid": list(multi_grid),
            "cascade_blocks": cascade_blocks,
        },
    }


def _aspp(multi_grid, rates_24=False, image_pooling=False):
    return {
        "name": "deeplabv3",
        "num_classes": 21,
        "backbone": {"depth": 101, "output_stride": 16, "multi_grid": list(multi_grid)},
        "head": {"fourth_rate": rates_24, "image_pooling": image_pooling},
    }


# (row id, config dict, paper mIOU): the value is only documentation.
TABLE_ROWS = (
    # Table 1: ResNet-50, block7, output_stride 8..256.
    [(f"t1-os{os_}", _cascade(50, 3, os_), miou)
     for os_, miou in zip((8, 16, 32, 64, 128, 256),
                          (75.18, 73.88, 70.06, 59.99, 42.34, 20.29))]
    # Table 2: ResNet-50 / -101, block4..block7, OS16.
    + [(f"t2-r{depth}-block{4 + n}", _cascade(depth, n), miou)
       for depth, mious in ((50, (64.81, 72.14, 74.29, 73.88)),
                            (101, (68.39, 73.21, 75.34, 75.76)))
       for n, miou in enumerate(mious)]
    # Table 3: ResNet-101, multi-grid x block4..block7, OS16. (The (1, 1, 1) row is Table 2's
    # ResNet-101 row; it is listed again, as in the paper.)
    + [(f"t3-mg{''.join(map(str, mg))}-block{4 + n}", _cascade(101, n, multi_grid=mg), miou)
       for mg, mious in zip(MULTI_GRIDS, ((68.39, 73.21, 75.34, 75.76),
                                          (70.23, 75.67, 76.09, 76.66),
                                          (73.14, 75.78, 75.96, 76.11),
                                          (73.45, 75.74, 75.85, 76.02),
                                          (71.45, 74.30, 74.70, 74.62)))
       for n, miou in enumerate(mious)]
    # Table 5: ResNet-101 OS16 block4 + ASPP: multi-grid x ASPP rates x image pooling.
    + [
        ("t5-mg111-aspp", _aspp((1, 1, 1)), 75.36),
        ("t5-mg121-aspp", _aspp((1, 2, 1)), 75.93),
        ("t5-mg124-aspp", _aspp((1, 2, 4)), 76.58),
        ("t5-mg124-aspp24", _aspp((1, 2, 4), rates_24=True), 76.46),
        ("t5-mg124-aspp-ip", _aspp((1, 2, 4), image_pooling=True), 77.21),
    ]
)


def _tiny(config):
    """The table row at tiny widths (tests/tiny.py's SHALLOW_BACKBONE, 8 ASPP filters)."""
    head = dict(config.head)
    if config.name == "deeplabv3":
        head["aspp_filters"] = 8
    return dataclasses.replace(
        config, backbone=config.backbone.replace(**SHALLOW_BACKBONE), head=head
    )


def _expected_unit_rates(output_stride, cascade_blocks, multi_grid):
    """Sec 3.2 / Fig. 3: the stride walk 4, 8, 16, 32, 64.. stops at output_stride; from there
    every block doubles the rate, and block4.. multiply it by the multi-grid unit rates."""
    rates, stride, rate = {}, 4, 1
    names = ["res2", "res3", "res4", "res5"] + [f"block{5 + i}" for i in range(cascade_blocks)]
    for i, name in enumerate(names):
        if i > 0:
            if stride * 2 > output_stride:
                rate *= 2
            else:
                stride *= 2
        rates[name] = tuple(rate * m for m in multi_grid) if i >= 3 else (rate,)
    return rates


@pytest.mark.parametrize("row, values, miou", TABLE_ROWS, ids=[r[0] for r in TABLE_ROWS])
def test_table_row_builds_and_runs(row, values, miou):
    config = ModelConfig.from_dict(values)
    backbone = config.backbone
    # The full-size config is the paper's net: depth and the rates of every block (the plan is
    # the one the model is built from).
    assert backbone.stage_depths == {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[backbone.depth]
    want = _expected_unit_rates(
        backbone.output_stride, backbone.cascade_blocks, backbone.resolved_multi_grid
    )
    plan = {s.name: s.unit_rates for s in stage_plan(backbone)}
    for name, rates in want.items():
        full = rates if len(rates) == len(plan[name]) else rates * len(plan[name])
        assert plan[name] == full, (name, plan[name], full)
    if config.name == "deeplabv3":
        rates = head_config(config).rates_for(backbone.output_stride)
        assert rates == ((6, 12, 18, 24) if values["head"]["fourth_rate"] else (6, 12, 18))

    # A forward pass at tiny widths.
    tiny = _tiny(config)
    model = build_model(tiny)
    logits = model(random_images(65, 65), training=False)["logits"]
    assert tuple(logits.shape) == (1, 65, 65, 21)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.all(np.isfinite(np.asarray(logits)))
    side = math.ceil(65 / backbone.output_stride)
    assert model.get_layer("logits_conv").output.shape[1] is None  # dynamic H/W
    pre = keras.Model(model.input, model.get_layer("logits_conv").output)
    assert tuple(pre(random_images(65, 65)).shape) == (1, side, side, 21)
    if config.name == "deeplabv3":
        aspp = model.get_layer("aspp")
        assert aspp.image_pooling == values["head"]["image_pooling"]
        assert len(aspp.atrous_convs) == (4 if values["head"]["fourth_rate"] else 3)
    else:
        names = {layer.name for layer in model.layers}
        assert "aspp" not in names


def _conv2_rates(model, block, units=3):
    backbone = model.get_layer("backbone")
    return tuple(backbone.get_layer(f"{block}_unit{j + 1}_conv2").dilation_rate[0]
                 for j in range(units))


def test_built_rates_table3_mg121_block7_os16():
    """Table 3's best row: block4 at 2 x (1, 2, 1), block5 4 x, block6 8 x, block7 16 x."""
    config = _tiny(ModelConfig.from_dict(_cascade(101, 3, multi_grid=(1, 2, 1))))
    model = build_model(config)
    assert _conv2_rates(model, "res5") == (2, 4, 2)
    assert _conv2_rates(model, "block5") == (4, 8, 4)
    assert _conv2_rates(model, "block6") == (8, 16, 8)
    assert _conv2_rates(model, "block7") == (16, 32, 16)
    assert _conv2_rates(model, "res4", 1) == (1,)
    # The logits come from block7's output.
    conv = model.get_layer("logits_conv")
    assert conv.input.shape[-1] == SHALLOW_BACKBONE["stage_channels"][-1]
    backbone = model.get_layer("backbone")
    assert backbone.output["res5"] is backbone.get_layer("block7_unit3_out").output


def test_built_rates_table1_block7():
    """Table 1: OS8 dilates from res4 (rate 2) on; OS256 has no atrous conv; OS64 starts at
    block6."""
    rates = {}
    for os_ in (8, 64, 256):
        model = build_model(_tiny(ModelConfig.from_dict(_cascade(50, 3, os_))))
        rates[os_] = {b: _conv2_rates(model, b) for b in ("res5", "block5", "block6", "block7")}
        rates[os_]["res4"] = _conv2_rates(model, "res4", 1)
    assert rates[8] == {"res4": (2,), "res5": (4,) * 3, "block5": (8,) * 3,
                        "block6": (16,) * 3, "block7": (32,) * 3}
    assert rates[64] == {"res4": (1,), "res5": (1,) * 3, "block5": (1,) * 3,
                         "block6": (2,) * 3, "block7": (4,) * 3}
    assert all(r == (1,) * len(r) for r in rates[256].values())


def test_built_rates_table5_aspp_and_os8():
    """Table 5's best row at OS16: res5 at 2 x (1, 2, 4), ASPP (6, 12, 18) + pooling; the same
    config at OS8 (the paper's evaluation) doubles both (Sec 3.3)."""
    config = _tiny(ModelConfig.from_dict(_aspp((1, 2, 4), image_pooling=True)))
    model = build_model(config)
    assert _conv2_rates(model, "res5") == (2, 4, 8)
    aspp = model.get_layer("aspp")
    assert [c.dilation_rate[0] for c in aspp.atrous_convs] == [6, 12, 18]
    model8 = build_model(config.with_output_stride(8))
    assert _conv2_rates(model8, "res5") == (4, 8, 16)
    assert _conv2_rates(model8, "res4", 1) == (2,)
    assert [c.dilation_rate[0] for c in model8.get_layer("aspp").atrous_convs] == [12, 24, 36]
    # Explicit rates stay as given at any output stride.
    fixed = dataclasses.replace(config, head={**config.head, "aspp_rates": [6, 12, 18]})
    fixed8 = build_model(fixed.with_output_stride(8))
    assert [c.dilation_rate[0] for c in fixed8.get_layer("aspp").atrous_convs] == [6, 12, 18]


def test_built_rates_and_geometry_at_os4():
    """Appendix C evaluates Cityscapes (Table 13) at output stride 4. The OS16 config built at
    4: res3, res4, res5 dilated 2, 4, 8 (x (1, 2, 4) on res5), ASPP rates doubled again from
    OS8's (12, 24, 36) to (24, 48, 72), logits at ceil(H / 4); the same variables as at OS16."""
    config = _tiny(ModelConfig.from_dict(_aspp((1, 2, 4), image_pooling=True)))
    model4 = build_model(config.with_output_stride(4))
    assert _conv2_rates(model4, "res3", 1) == (2,)
    assert _conv2_rates(model4, "res4", 1) == (4,)
    assert _conv2_rates(model4, "res5") == (8, 16, 32)
    assert [c.dilation_rate[0] for c in model4.get_layer("aspp").atrous_convs] == [24, 48, 72]
    pre = keras.Model(model4.input, model4.get_layer("logits_conv").output)
    assert tuple(pre(random_images(65, 47)).shape) == (1, 17, 12, 21)
    logits = model4(random_images(65, 47), training=False)["logits"]
    assert tuple(logits.shape) == (1, 65, 47, 21)
    assert np.all(np.isfinite(np.asarray(logits)))
    model16 = build_model(config)
    assert [(v.path, tuple(v.shape)) for v in model4.weights] == [
        (v.path, tuple(v.shape)) for v in model16.weights
    ]


@pytest.mark.slow
def test_block7_model_param_count():
    """Table 3's best model (ResNet-101, block7, OS16, 21 classes), counted by hand.

    block5..block7 copy block4 (res5): 3 units each, 2048 -> 512 -> 512 -> 2048 at stride 1,
    so each unit's shortcut is the identity (no weights). Every conv is bias-free + BN (4
    vectors per channel); the logits conv has a bias."""
    resnet101 = 42_605_504  # tests/backbones/test_resnet.py EXPECTED_PARAMS, = its hand formula
    unit = 2048 * 512 + 9 * 512 * 512 + 512 * 2048 + 4 * (512 + 512 + 2048)  # 4,468,736
    logits = 2048 * 21 + 21
    want = resnet101 + 3 * 3 * unit + logits
    assert want == 82_867_157
    model = build_model(ModelConfig.from_dict(_cascade(101, 3, multi_grid=(1, 2, 1))))
    print(f"DeepLabv3 block7 (R101, OS16, 21 classes): {model.count_params():,} params")
    assert model.count_params() == want
    # A 2048 -> 2048 projection on each block's first unit would add 3 x (2048^2 + 4 x 2048).
    assert 3 * (2048 * 2048 + 4 * 2048) == 12_607_488


# ---------------------------------------------------------------------------------------------
# Head options


def test_head_defaults_and_rates():
    head = DeepLabV3Head()
    assert (head.image_pooling, head.aspp_filters, head.dropout, head.fourth_rate) == (
        True, 256, 0.0, False)
    assert head.rates_for(16) == (6, 12, 18)
    assert head.rates_for(8) == (12, 24, 36)
    assert head.rates_for(4) == (24, 48, 72)  # the rate scales as 1 / output_stride
    assert DeepLabV3Head(fourth_rate=True).rates_for(8) == (12, 24, 36, 48)
    assert DeepLabV3Head(aspp_rates=[3, 6]).rates_for(8) == (3, 6)


def test_head_dropout_and_filters_reach_the_layer():
    config = _tiny(ModelConfig.from_dict(_aspp((1, 2, 4), image_pooling=True)))
    config = dataclasses.replace(config, head={**config.head, "dropout": 0.1, "aspp_filters": 12})
    aspp = build_model(config).get_layer("aspp")
    assert (aspp.dropout, aspp.filters) == (0.1, 12)
    assert aspp.norm_epsilon == config.backbone.norm_epsilon
    assert aspp.norm_momentum == config.backbone.norm_momentum


@pytest.mark.parametrize(
    "head, message",
    [
        (dict(aspp_rates=[6, 0]), r"aspp_rates must be None or a sequence of ints >= 1"),
        (dict(aspp_rates=[6, 12], fourth_rate=True), r"fourth_rate=True only applies"),
        (dict(aspp_filters=0), r"aspp_filters must be an int >= 1. Received: aspp_filters=0"),
        (dict(dropout=1.0), r"dropout must be a float in \[0, 1\). Received: dropout=1.0"),
        (dict(image_pooling="yes"), r"image_pooling must be a bool"),
        (dict(rates=[6]), r"unknown key\(s\) \['rates'\] in model.head \(deeplabv3\)"),
    ],
)
def test_head_bad_arguments(head, message):
    config = ModelConfig(name="deeplabv3", num_classes=21, head=head)
    with pytest.raises(ValueError, match=message):
        build_model(config)


def test_aspp_rates_need_a_standard_output_stride():
    config = ModelConfig(
        name="deeplabv3",
        backbone=BackboneConfig(**SHALLOW_BACKBONE, output_stride=64, cascade_blocks=1),
    )
    with pytest.raises(ValueError, match=r"output_stride must be one of \[4, 8, 16, 32\]"):
        build_model(config)
