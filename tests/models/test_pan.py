"""`pan` (PAN Sec 3.3, Fig 2): paper geometry at 512 x 512, every row of Tables 1 and 3 as a
config, dynamic sizes, gradients, `.keras` round trip."""

import keras
import pytest

from deeplab_family.layers import FeaturePyramidAttention, GlobalAttentionUpsample
from deeplab_family.models import ModelConfig, build_model
from tests.harness import check_gradients, check_keras_round_trip
from tests.models._checks import (
    assert_forward,
    assert_mixed_precision,
    layer_names,
    layers_of_type,
    static_shapes,
)
from tests.tiny import BACKBONE, PAN_HEAD, random_images

# The paper's backbone (Sec 3.3): ResNet-101, deep stem, dilated res5 (output stride 16).
PAPER_BACKBONE = {"depth": 101, "stem": "deep", "output_stride": 16}
TINY_BACKBONE = {**BACKBONE, "stem": "deep", "output_stride": 16}
NUM_CLASSES = 3

# Table 1: FPA settings on ResNet-101 with the naive decoder (direct upsampling, Sec 4.1.1).
NAIVE = {"gau": False}
TABLE1 = {
    "ResNet101": {"fpa": False, **NAIVE},
    "ResNet101+SE": {"fpa_attention": "se", "fpa_global_pooling": False, **NAIVE},
}
for _c, _kernels in (("C333", [3, 3, 3]), ("C357", [7, 5, 3])):
    for _p, _tag in (("max", "MAX"), ("avg", "AVE")):
        for _gp in (False, True):
            TABLE1[f"ResNet101+{_c}+{_tag}{'+GP' if _gp else ''}"] = {
                "fpa_kernel_sizes": _kernels,
                "fpa_pooling": _p,
                "fpa_global_pooling": _gp,
                **NAIVE,
            }
# Table 3: GAU settings on the ResNet-101 baseline, without FPA (Sec 4.1.2).
TABLE3 = {
    "ResNet101": {"fpa": False, "gau": False},
    "ResNet101+GAU(3x3)": {"fpa": False, "gau_global_pooling": False},
    "ResNet101+GAU(GP,1x1)": {"fpa": False, "gau_low_kernel_size": 1},
    "ResNet101+GAU(GP,3x3)": {"fpa": False},
}
ROWS = {
    **{f"table1/{k}": v for k, v in TABLE1.items()},
    **{f"table3/{k}": v for k, v in TABLE3.items()},
    "table5/PAN": {},  # FPA (C357, AVE, GP) + GAU (GP, 3x3): the defaults
}


def tiny_pan(head=None, dtype=None, **backbone):
    config = ModelConfig(
        name="pan",
        num_classes=NUM_CLASSES,
        backbone={**TINY_BACKBONE, **backbone},
        head={**PAN_HEAD, **(head or {})},
    )
    return build_model(config, dtype=dtype)


def test_rows_cover_the_tables():
    assert len(TABLE1) == 10 and len(TABLE3) == 4


@pytest.mark.parametrize("row", sorted(ROWS))
def test_table_row_builds_and_runs(row):
    head = ROWS[row]
    model = tiny_pan(head)
    assert_forward(model, [(65, 65)], batch=1, num_classes=NUM_CLASSES)

    fpas = layers_of_type(model, FeaturePyramidAttention)
    gaus = layers_of_type(model, GlobalAttentionUpsample)
    if head.get("fpa", True):
        (fpa,) = fpas
        assert fpa.attention == head.get("fpa_attention", "pyramid")
        assert fpa.global_pooling == head.get("fpa_global_pooling", True)
        if fpa.attention == "pyramid":
            assert fpa.kernel_sizes == tuple(head.get("fpa_kernel_sizes", (7, 5, 3)))
            assert fpa.pooling == head.get("fpa_pooling", "avg")
    else:
        assert not fpas
    if head.get("gau", True):
        assert [g.name for g in gaus] == ["gau_res4", "gau_res3", "gau_res2"]
        for g in gaus:
            assert g.global_pooling == head.get("gau_global_pooling", True)
            assert g.low_kernel_size == head.get("gau_low_kernel_size", 3)
    else:
        assert not gaus


def test_paper_geometry_at_512():
    """ResNet-101 deep stem at OS16: res5 is 32x32, FPA's pyramid is 16/8/4 (Sec 4.1.1), the
    GAUs bring it back to 1/4, and the logits are at the input size."""
    model = build_model(ModelConfig(name="pan", num_classes=21, backbone=PAPER_BACKBONE))
    backbone = model.get_layer("backbone")
    assert backbone.backbone_config.stage_depths == (3, 4, 23, 3)
    assert "stem_conv3" in layer_names(backbone)  # three 3x3 convs (Sec 3.3)
    assert backbone.feature_strides["res5"] == 16

    assert static_shapes(model, ["fpa"], inputs=True)["fpa"] == (1, 32, 32, 2048)
    shapes = static_shapes(model, ["fpa", "gau_res4", "gau_res3", "gau_res2", "logits"])
    assert shapes == {
        "fpa": (1, 32, 32, 256),
        "gau_res4": (1, 32, 32, 256),
        "gau_res3": (1, 64, 64, 256),
        "gau_res2": (1, 128, 128, 256),
        "logits": (1, 512, 512, 21),
    }
    levels = model.get_layer("fpa").pyramid_features(keras.KerasTensor((1, 32, 32, 2048)))
    assert [tuple(t.shape[1:3]) for t in levels] == [(16, 16), (8, 8), (4, 4)]
    # Sec 3.1: the global pooling branch is "concatenated"; the GAUs step 16 -> 16 -> 8 -> 4.
    assert model.get_layer("fpa").global_pooling_merge == "concat"
    ratios = [model.get_layer(f"gau_{k}").upsample_ratio for k in ("res4", "res3", "res2")]
    assert ratios == [1, 2, 2]


def test_widths_are_config_keys():
    """`filters` is the common width; `fpa_filters`, `fpa_pyramid_filters` and `gau_filters`
    (res4, res3, res2) override it, and a GAU whose high input is wider projects it."""
    common = tiny_pan()
    assert [common.get_layer(f"gau_{k}").filters for k in ("res4", "res3", "res2")] == [16] * 3
    assert common.get_layer("fpa").filters == 16
    model = tiny_pan({"fpa_filters": 32, "fpa_pyramid_filters": 8, "gau_filters": [24, 16, 8]})
    assert_forward(model, [(65, 65)], batch=1, num_classes=NUM_CLASSES)
    c5 = TINY_BACKBONE["stage_channels"][3]
    fpa = model.get_layer("fpa")
    assert tuple(fpa.master.conv.kernel.shape) == (1, 1, c5, 32)
    assert tuple(fpa.down_convs[0].conv.kernel.shape) == (7, 7, c5, 8)
    high = 32
    for key, width, low in zip(("res4", "res3", "res2"), (24, 16, 8), (2, 1, 0)):
        gau = model.get_layer(f"gau_{key}")
        low_c = TINY_BACKBONE["stage_channels"][low]
        assert tuple(gau.low_conv.conv.kernel.shape) == (3, 3, low_c, width)
        assert tuple(gau.high_proj.conv.kernel.shape) == (1, 1, high, width)
        high = width
    assert tuple(model.get_layer("logits_conv").kernel.shape) == (1, 1, 8, NUM_CLASSES)


def test_port_widths_preset():
    """train_configs/ holds the public ports' widths as a preset of the paper's config."""
    import os

    from deeplab_family.config import load_config
    from deeplab_family.models.registry import head_config

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    base = load_config(os.path.join(root, "train_configs", "pan_r101deep_os16_voc_trainaug.yaml"))
    ports = load_config(
        os.path.join(root, "train_configs", "pan_r101deep_os16_voc_trainaug_portwidths.yaml")
    )
    head = head_config(ports.model)
    assert (head.fpa_filters, head.fpa_pyramid_filters, head.gau_filters) == (
        2048, 512, (1024, 512, 256)
    )
    assert head.fpa_global_pooling_merge == head_config(base.model).fpa_global_pooling_merge
    assert head_config(base.model).fpa_global_pooling_merge == "concat"
    assert ports.model.backbone == base.model.backbone
    assert ports.training == base.training and ports.train_data == base.train_data


def test_dynamic_sizes_gradients_and_round_trip():
    model = tiny_pan()
    assert model.input.shape == (None, None, None, 3)
    assert list(model.output) == ["logits"]
    assert_forward(model, [(65, 65), (63, 71)], batch=2, num_classes=NUM_CLASSES)
    # Batch 2: the GAP -> BN branches of FPA and GAU are constant for a single image.
    check_gradients(model, random_images(65, 65, batch=2))
    check_keras_round_trip(model, random_images(63, 71, batch=2, seed=3))


def test_mixed_precision():
    assert_mixed_precision(tiny_pan(dtype="mixed_bfloat16"), random_images(33, 33, batch=2))


def test_bad_head_options_name_themselves():
    with pytest.raises(ValueError, match="fpa_pooling"):
        tiny_pan({"fpa_pooling": "median"})
    with pytest.raises(ValueError, match="fpa_kernels"):
        tiny_pan({"fpa_kernels": [3, 3, 3]})
    with pytest.raises(ValueError, match="gau_low_kernel_size"):
        tiny_pan({"gau_low_kernel_size": 2})
    with pytest.raises(ValueError, match=r"gau_filters must be .*Received: gau_filters=\(8, 8\)"):
        tiny_pan({"gau_filters": [8, 8]})
    with pytest.raises(ValueError, match="fpa_filters must be None or an int >= 1"):
        tiny_pan({"fpa_filters": 0})
