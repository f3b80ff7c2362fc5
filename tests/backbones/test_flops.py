"""The MAC counter against hand formulas, keras.applications ResNet-50, and the analytic plan;
and ExFuse's Layer Rearrangement (Sec 3.1) FLOP budget."""

import keras
import pytest

from deeplab_family.backbones import (
    BackboneConfig,
    backbone_preset,
    build_backbone,
    layer_rearranged_widths,
    plan_macs,
)
from deeplab_family.flops import count_flops, count_macs
from deeplab_family.layers import AtrousConv2D
from deeplab_family.weights.keras_applications import keras_applications_resnet
from tests.tiny import tiny_config


def test_hand_computed_small_net():
    """conv 3x3/2, dilated conv, grouped conv, depthwise, transposed conv, dense on 4D, einsum
    dense, at 17 x 19: the expected MACs are out_elements x reduction, written out by hand."""
    x = inputs = keras.Input((17, 19, 5))
    x = AtrousConv2D(8, 3, strides=2, padding="same", use_bias=False)(x)  # -> 9 x 10 x 8
    x = AtrousConv2D(12, 3, dilation_rate=2, padding="same")(x)  # -> 9 x 10 x 12
    x = AtrousConv2D(12, 3, groups=4, padding="same")(x)  # 3 input channels per group
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x)  # -> 24
    x = keras.layers.Conv2DTranspose(6, 3, strides=2, padding="same")(x)  # -> 18 x 20 x 6
    x = keras.layers.BatchNormalization()(x)  # not counted
    x = keras.layers.Dense(4)(x)  # on a 4D tensor: 18 x 20 x 4 outputs, 6 each
    x = keras.layers.GlobalAveragePooling2D()(x)  # not counted
    x = keras.layers.Dense(7)(x)
    x = keras.layers.EinsumDense("ab,bc->ac", output_shape=3)(x)
    model = keras.Model(inputs, x)

    expected = (
        9 * 10 * 8 * (3 * 3 * 5)
        + 9 * 10 * 12 * (3 * 3 * 8)
        + 9 * 10 * 12 * (3 * 3 * 12 // 4)
        + 9 * 10 * 24 * (3 * 3)
        + 9 * 10 * 24 * (3 * 3 * 6)  # each input pixel scatters a 3x3x6 kernel
        + 18 * 20 * 4 * 6
        + 4 * 7
        + 7 * 3
    )
    assert count_macs(model, (17, 19, 5)) == expected
    assert count_flops(model, (17, 19, 5)) == 2 * expected
    assert count_macs(model, (17, 19, 5), batch_size=3) == 3 * expected


def test_needs_static_shapes():
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="count_macs needs static shapes"):
        count_macs(model, (None, 8, 3))


def _keras_conv_formula(model):
    """Sum over Conv2D layers of H_out * W_out * C_out * k_h * k_w * C_in / groups."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in_per_group, _ = layer.kernel.shape
            total += h * w * c_out * kh * kw * c_in_per_group
    return total


def test_resnet50_at_224_matches_keras_applications_and_formula():
    """ResNet-50 v1 (stride on the 1x1 conv) at 224: 3.856 GMACs, the Caffe/MSRA figure
    ("3.8 x 10^9 FLOPs" in He et al. Table 1, counting multiply-adds). torchvision's 4.1 G
    is v1.5 (stride on the 3x3, which then runs at the input resolution of the unit)."""
    ka = keras_applications_resnet(50)
    ka_224 = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(224, 224, 3))
    ours = build_backbone(BackboneConfig(depth=50))
    formula = _keras_conv_formula(ka_224)
    assert count_macs(ka, (224, 224, 3)) == formula
    assert count_macs(ours, (224, 224, 3)) == formula == plan_macs(ours.backbone_config, (224, 224))
    assert formula == 3_855_925_248
    assert 3.8e9 < formula < 4.2e9
    # v1.5 costs more: the strided 3x3 convs see 4x the pixels in their 1x1 reduction.
    # torchvision's resnet50 is 4,089,184,256 MACs with its fc (2048 x 1000).
    v15 = BackboneConfig(depth=50, stride_in_1x1=False)
    assert plan_macs(v15, (224, 224)) == 4_089_184_256 - 2048 * 1000


@pytest.mark.parametrize(
    "overrides, size",
    [
        (dict(), (65, 65)),
        (dict(stem="deep", stride_in_1x1=False, output_stride=8, multi_grid=(1, 2, 4)), (65, 47)),
        (dict(groups=2, se_ratio=0.25, output_stride=16, cascade_blocks=2), (64, 64)),
        (dict(cascade_blocks=3, output_stride=256, stride_in_1x1=False), (97, 97)),
        (dict(stage_depths=(2, 2, 2, 3), stride_unit="last", stride_in_1x1=False,
              output_stride=16, stem="deep"), (65, 65)),
    ],
)
def test_plan_macs_equals_graph_count(overrides, size):
    config = tiny_config(**overrides)
    model = build_backbone(config)
    assert count_macs(model, (*size, 3)) == plan_macs(config, size)


# ResNeXt-101 32x4d (Xie et al. Table 1): C=32 groups of d=4 in res2, doubling per stage; the
# unit outputs 256..2048.
RESNEXT101_WIDTHS = (128, 256, 512, 1024)
RESNEXT101_CHANNELS = (256, 512, 1024, 2048)


@pytest.mark.slow
def test_layer_rearrangement_flops():
    """ExFuse Sec 3.1: ResNeXt-101 32x4d {3, 4, 23, 3} -> {8, 8, 9, 8} "to ensure the same
    overall computational complexity" (512 x 512, OS32, no head), measured on the built
    models' graphs.

    A bottleneck unit costs the same MACs in every stage when the map halves and the widths
    double (and each layout has one strided, projecting unit per stage), so 33 units cost the
    same however they are spread: the widths stay ResNeXt-101's and the MACs are equal, not
    merely close."""
    widths, ratio = layer_rearranged_widths()
    print(f"LR widths {widths}, MACs ratio vs ResNeXt-101 32x4d at 512: {ratio:.4f}")
    assert widths == RESNEXT101_WIDTHS
    assert ratio == 1.0

    reference = build_backbone(backbone_preset("resnext101_32x4d"))
    lr = build_backbone(backbone_preset("resnext101_32x4d_lr"))
    assert reference.backbone_config.stage_depths == (3, 4, 23, 3)
    assert reference.backbone_config.stage_widths == RESNEXT101_WIDTHS
    assert lr.backbone_config.stage_depths == (8, 8, 9, 8)
    assert lr.backbone_config.stage_widths == RESNEXT101_WIDTHS
    assert lr.backbone_config.stage_channels == RESNEXT101_CHANNELS
    assert lr.backbone_config.groups == reference.backbone_config.groups == 32
    assert lr.feature_channels == reference.feature_channels  # decoders unchanged
    ref_macs = count_macs(reference, (512, 512, 3))
    lr_macs = count_macs(lr, (512, 512, 3))
    assert ref_macs == plan_macs(reference.backbone_config, (512, 512))
    assert lr_macs == plan_macs(lr.backbone_config, (512, 512))
    print(f"ResNeXt-101 32x4d {ref_macs / 1e9:.3f} GMACs, LR {lr_macs / 1e9:.3f} GMACs")
    assert lr_macs == ref_macs
    # At 513 (DeepLab's crop) the ceil() sizes of the strided maps differ from stage to stage,
    # so moving units between stages changes the count a little (0.1%).
    ratio_513 = plan_macs(lr.backbone_config, (513, 513)) / plan_macs(
        reference.backbone_config, (513, 513)
    )
    assert ratio_513 != 1.0 and abs(ratio_513 - 1) < 0.005, ratio_513


def test_layer_rearrangement_search_is_a_search():
    """The search does move the widths when the unit count changes: ResNeXt 131's {8, 8, 19,
    8} has 45 units instead of 33, so it must narrow to fit ResNeXt-101's budget."""
    widths, ratio = layer_rearranged_widths(stage_depths=(8, 8, 19, 8))
    print(f"{{8, 8, 19, 8}} at ResNeXt-101 FLOPs: widths {widths}, ratio {ratio:.4f}")
    assert all(w < w0 for w, w0 in zip(widths[1:], (256, 512, 1024)))
    assert all(w % 32 == 0 for w in widths)
    assert abs(ratio - 1) < 0.05
    params_widths, params_ratio = layer_rearranged_widths(criterion="params")
    assert abs(params_ratio - 1) < 0.01 and params_widths != widths
    with pytest.raises(ValueError, match="criterion must be 'macs' or 'params'"):
        layer_rearranged_widths(criterion="latency")
