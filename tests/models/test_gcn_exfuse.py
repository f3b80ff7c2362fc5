"""`gcn` and `exfuse` (ExFuse Sec 3, Fig 2): paper geometry at 512 x 512, every row of
Tables 1, 3, 4 and 5 as a config, dynamic sizes, gradients, `.keras` round trip, the Semantic
Supervision pre-training classifier."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_family.backbones import BackboneConfig, backbone_preset
from deeplab_family.backbones.presets import LR_STAGE_DEPTHS
from deeplab_family.layers import (
    CropLike,
    DenselyAdjacentPrediction,
    SemanticEmbeddingBranch,
    SemanticSupervision,
    SubPixelUpsample,
)
from deeplab_family.models import ModelConfig, build_model
from deeplab_family.models.exfuse import (
    ExFuseHead,
    build_ss_pretraining_classifier,
    exfuse_backbone_config,
    transfer_ss_pretraining_weights,
)
from tests.harness import check_gradients, check_keras_round_trip, check_layer, random_image
from tests.models._checks import (
    assert_forward,
    assert_mixed_precision,
    layer_names,
    layers_of_type,
    static_shapes,
)
from tests.tiny import BACKBONE, EXFUSE_HEAD, EXFUSE_LR_DEPTHS, GCN_HEAD, random_images

RESNEXT101 = {"depth": 101, "groups": 32, "width_per_group": 4}
NUM_CLASSES = 3
TINY_BACKBONES = {"ResNet50": BACKBONE, "ResNeXt101": {**BACKBONE, "groups": 4}}
KEYS = {1: "res2", 2: "res3", 3: "res4", 4: "res5"}

OFF = {"ss": False, "lr": False, "seb": False, "ecre": "off", "dap": False}
T3_3 = {**OFF, "ss": True, "lr": True}  # Table 4's baseline
T3_5 = {**T3_3, "seb": True}  # Table 5's baseline
ROWS = {
    # Table 1: GCN with feature level subsets, on ResNet-50 and ResNeXt-101.
    **{
        f"table1/{bb}/{levels}": ("gcn", {"feature_levels": list(levels)}, bb)
        for bb in TINY_BACKBONES
        for levels in ((4,), (3, 4), (2, 3, 4), (1, 2, 3, 4))
    },
    # Table 3: Baseline, SS, LR, ECRE, SEB, DAP.
    "table3/1": ("exfuse", OFF, "ResNeXt101"),
    "table3/2": ("exfuse", {**OFF, "ss": True}, "ResNeXt101"),
    "table3/3": ("exfuse", T3_3, "ResNeXt101"),
    "table3/4": ("exfuse", {**T3_3, "ecre": "ecre"}, "ResNeXt101"),
    "table3/5": ("exfuse", T3_5, "ResNeXt101"),
    "table3/6": ("exfuse", {**T3_5, "dap": True}, "ResNeXt101"),
    "table3/7": ("exfuse", {**T3_5, "dap": True, "ecre": True}, "ResNeXt101"),
    # Table 4: the ECRE designs, on Table 3 #3.
    "table4/1": ("exfuse", {**T3_3, "ecre": "off"}, "ResNeXt101"),
    "table4/2": ("exfuse", {**T3_3, "ecre": "deconv_supervised"}, "ResNeXt101"),
    "table4/3": ("exfuse", {**T3_3, "ecre": "subpixel"}, "ResNeXt101"),
    "table4/4": ("exfuse", {**T3_3, "ecre": "ecre"}, "ResNeXt101"),
    # Table 5: DAP against the same channels without DAP, on Table 3 #5.
    "table5/1": ("exfuse", T3_5, "ResNeXt101"),
    "table5/2": ("exfuse", {**T3_5, "wide_decoder": True}, "ResNeXt101"),
    "table5/3": ("exfuse", {**T3_5, "dap": True}, "ResNeXt101"),
    # Table 6: ExFuse (all five) with feature level subsets.
    "table6/4": ("exfuse", {"feature_levels": [4]}, "ResNeXt101"),
    "table6/3,4": ("exfuse", {"feature_levels": [3, 4]}, "ResNeXt101"),
}


def tiny_model(name, head=None, backbone="ResNeXt101", dtype=None, **overrides):
    base = GCN_HEAD if name == "gcn" else EXFUSE_HEAD
    config = ModelConfig(
        name=name,
        num_classes=NUM_CLASSES,
        backbone={**TINY_BACKBONES[backbone], **overrides},
        head={**base, **(head or {})},
    )
    return build_model(config, dtype=dtype)


def _deconvs(model):
    return layers_of_type(model, keras.layers.Conv2DTranspose)


@pytest.mark.parametrize("row", sorted(ROWS))
def test_table_row_builds_and_runs(row):
    name, head_dict, bb = ROWS[row]
    model = tiny_model(name, head_dict, bb)
    assert_forward(model, [(65, 65)], batch=1, num_classes=NUM_CLASSES)

    head = ExFuseHead(**{**EXFUSE_HEAD, **head_dict}) if name == "exfuse" else None
    names = layer_names(model)
    levels = head_dict.get("feature_levels", [1, 2, 3, 4])
    for level, key in KEYS.items():
        assert (f"gcn_{key}" in names) == (level in levels), (row, key)
    backbone = model.get_layer("backbone").backbone_config
    assert backbone.groups == TINY_BACKBONES[bb].get("groups", 1)
    if name == "gcn":
        assert list(model.output) == ["logits"]
        assert all(d.filters == NUM_CLASSES for d in _deconvs(model))
        assert not layers_of_type(model, SemanticSupervision)
        return

    wide = head.dap or head.wide_decoder
    channels = NUM_CLASSES * (9 if wide else 1)
    # SS: one block per used stage, feeding the decoder.
    ss = layers_of_type(model, SemanticSupervision)
    assert bool(ss) == head.ss
    assert all(s.num_classes is None for s in ss)
    # LR: the backbone's stage depths.
    want_depths = EXFUSE_LR_DEPTHS if head.lr else BACKBONE["stage_depths"]
    assert backbone.stage_depths == tuple(want_depths)
    # SEB on the selected levels among 1-3, each fed by every higher level.
    sebs = {s.name: s for s in layers_of_type(model, SemanticEmbeddingBranch)}
    want_seb = {f"seb_{KEYS[level]}" for level in levels if level < 4} if head.seb else set()
    assert set(sebs) == want_seb
    for seb_name, seb in sebs.items():
        level = {v: k for k, v in KEYS.items()}[seb_name[4:]]
        assert len(seb.convs) == 4 - level
    # ECRE: sub-pixel first step and the auxiliary output.
    subpixel = head.ecre in ("subpixel", "ecre")
    assert bool(layers_of_type(model, SubPixelUpsample)) == subpixel
    assert ("aux_ecre" in model.output) == head.supervised_ecre
    assert sorted(model.output) == sorted(["logits"] + (["aux_ecre"] * head.supervised_ecre))
    top = f"gcn_{KEYS[max(levels)]}"
    assert model.get_layer(top).filters == channels * (4 if subpixel else 1)
    # DAP / wide decoder: 9x channels in every deconvolution and GCN below the top.
    assert all(d.filters == channels for d in _deconvs(model))
    for level in levels:
        if level != max(levels):
            assert model.get_layer(f"gcn_{KEYS[level]}").filters == channels
    assert ("head_dap" in names) == head.dap
    assert ("head_classifier" in names) == head.wide_decoder
    assert len(layers_of_type(model, DenselyAdjacentPrediction)) == head.dap * (
        1 + head.supervised_ecre
    )


def test_gcn_paper_geometry_at_512():
    """ExFuse Fig 2 / Sec 3: res-2..res-5 at 128, 64, 32, 16 (x 256..2048) for a 512 input;
    every GCN gives 21 channels; the decoder climbs x2 per step to 512."""
    model = build_model(ModelConfig(name="gcn", num_classes=21, backbone=RESNEXT101))
    assert model.get_layer("backbone").backbone_config.groups == 32
    gcns = [f"gcn_{k}" for k in KEYS.values()]
    assert static_shapes(model, gcns, inputs=True) == {
        "gcn_res2": (1, 128, 128, 256),
        "gcn_res3": (1, 64, 64, 512),
        "gcn_res4": (1, 32, 32, 1024),
        "gcn_res5": (1, 16, 16, 2048),
    }
    shapes = static_shapes(
        model, gcns + ["br_fuse_res4", "br_fuse_res3", "br_fuse_res2", "br_half", "logits"]
    )
    assert shapes == {
        "gcn_res2": (1, 128, 128, 21),
        "gcn_res3": (1, 64, 64, 21),
        "gcn_res4": (1, 32, 32, 21),
        "gcn_res5": (1, 16, 16, 21),
        "br_fuse_res4": (1, 32, 32, 21),
        "br_fuse_res3": (1, 64, 64, 21),
        "br_fuse_res2": (1, 128, 128, 21),
        "br_half": (1, 256, 256, 21),
        "logits": (1, 512, 512, 21),
    }


def test_exfuse_paper_geometry_at_512():
    """The fully-equipped ExFuse: LR backbone, SS features (256), 189 = 21 x 9 decoder
    channels for DAP; the top GCN has 4 x 189 for ECRE's sub-pixel step; 21 scores out."""
    model = build_model(ModelConfig(name="exfuse", num_classes=21, backbone=RESNEXT101))
    assert (
        model.get_layer("backbone").backbone_config.stage_depths == LR_STAGE_DEPTHS == (8, 8, 9, 8)
    )
    ss = [f"ss_{k}" for k in KEYS.values()]
    assert static_shapes(model, ss, inputs=True) == {
        "ss_res2": (1, 128, 128, 256),
        "ss_res3": (1, 64, 64, 512),
        "ss_res4": (1, 32, 32, 1024),
        "ss_res5": (1, 16, 16, 2048),
    }
    names = [f"gcn_{k}" for k in KEYS.values()] + [
        "up_res4", "br_fuse_res4", "br_fuse_res3", "br_fuse_res2", "up_half", "br_full",
        "logits", "aux_ecre",
    ]  # fmt: skip
    assert static_shapes(model, names) == {
        "gcn_res2": (1, 128, 128, 189),
        "gcn_res3": (1, 64, 64, 189),
        "gcn_res4": (1, 32, 32, 189),
        "gcn_res5": (1, 16, 16, 756),
        "up_res4": (1, 32, 32, 189),  # sub-pixel x2: 756 -> 189
        "br_fuse_res4": (1, 32, 32, 189),
        "br_fuse_res3": (1, 64, 64, 189),
        "br_fuse_res2": (1, 128, 128, 189),
        "up_half": (1, 256, 256, 189),
        "br_full": (1, 512, 512, 189),
        "logits": (1, 512, 512, 21),
        "aux_ecre": (1, 512, 512, 21),
    }
    assert all(d.filters == 189 for d in _deconvs(model))


def test_lr_on_resnext101_is_the_lr_preset():
    head = ExFuseHead(lr=True)
    got = exfuse_backbone_config(BackboneConfig(**RESNEXT101, output_stride=16), head)
    want = backbone_preset("resnext101_32x4d_lr")
    for field in ("stage_depths", "stage_widths", "stage_channels", "groups", "stem"):
        assert getattr(got, field) == getattr(want, field), field
    assert got.output_stride == 16  # every other field is kept
    assert exfuse_backbone_config(BackboneConfig(depth=50), ExFuseHead(lr=False)).depth == 50


def test_full_exfuse_dynamic_sizes_gradients_and_round_trip():
    model = tiny_model("exfuse")  # all five switches, the defaults
    assert sorted(model.output) == ["aux_ecre", "logits"]
    assert_forward(model, [(65, 65), (63, 71)], batch=2, num_classes=NUM_CLASSES)
    check_gradients(model, random_images(65, 65, batch=2))
    check_keras_round_trip(model, random_images(63, 71, batch=2, seed=3))


@pytest.mark.parametrize("name", ["gcn", "exfuse"])
def test_mixed_precision(name):
    model = tiny_model(name, dtype="mixed_bfloat16")
    outputs = ("logits", "aux_ecre") if name == "exfuse" else ("logits",)
    assert_mixed_precision(model, random_images(33, 33, batch=2), outputs)


@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilated_backbone_same_weights(output_stride):
    """At a finer output stride the x2 steps between same-stride levels resize back instead
    of cropping; the weights are those of the stride-32 build."""
    base = tiny_model("exfuse", {"lr": False})
    dilated = tiny_model("exfuse", {"lr": False}, output_stride=output_stride)
    assert [w.path for w in dilated.weights] == [w.path for w in base.weights]
    dilated.set_weights(base.get_weights())
    assert_forward(dilated, [(63, 71)], batch=2, num_classes=NUM_CLASSES)


def test_ss_pretraining_classifier_trains_every_weight():
    bb = BackboneConfig(**BACKBONE)
    classifier = build_ss_pretraining_classifier(bb, num_classes=10, ss_filters=8)
    assert sorted(classifier.output) == ["aux_res2", "aux_res3", "aux_res4", "aux_res5", "logits"]
    assert classifier.loss_weights_dict == {
        "logits": 1.0, "aux_res2": 0.3, "aux_res3": 0.3, "aux_res4": 0.3, "aux_res5": 0.3,
    }  # fmt: skip
    images = random_images(33, 33, batch=2)
    labels = np.array([1, 7])
    optimizer = keras.optimizers.SGD(0.01)
    with tf.GradientTape() as tape:
        outputs = classifier(images, training=True)
        loss = classifier.weighted_loss(labels, outputs)
    for name, logits in outputs.items():
        assert tuple(logits.shape) == (2, 10) and logits.dtype == tf.float32, name
    ce = {
        k: float(tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, v, True)))
        for k, v in outputs.items()
    }
    want = ce["logits"] + 0.3 * sum(v for k, v in ce.items() if k != "logits")
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    grads = tape.gradient(loss, classifier.trainable_weights)
    for v, g in zip(classifier.trainable_weights, grads):
        assert g is not None and np.any(np.asarray(g) != 0), v.path
    optimizer.apply_gradients(zip(grads, classifier.trainable_weights))
    loaded = check_keras_round_trip(classifier, images)
    assert loaded.aux_weights == classifier.aux_weights

    # Custom weights per stage, and the weights carry over to the segmentation model.
    weighted = build_ss_pretraining_classifier(bb, num_classes=10, aux_weights=[0, 1, 1, 2])
    assert weighted.aux_weights == (0.0, 1.0, 1.0, 2.0)
    segmenter = tiny_model("exfuse", {"lr": False, "ss_filters": 8}, backbone="ResNet50")
    transfer_ss_pretraining_weights(classifier, segmenter)
    for a, b in zip(
        classifier.get_layer("backbone").weights, segmenter.get_layer("backbone").weights
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    src, dst = classifier.get_layer("ss_res3"), segmenter.get_layer("ss_res3")
    np.testing.assert_array_equal(src.conv2.get_weights()[0], dst.conv2.get_weights()[0])
    with pytest.raises(ValueError, match="backbone does not match"):
        transfer_ss_pretraining_weights(classifier, tiny_model("exfuse", {"ss_filters": 8}))


def test_crop_like_layer():
    check_layer(
        CropLike,
        {},
        lambda h, w: [
            random_image(2 * math.ceil(h / 2), 2 * math.ceil(w / 2), 5),
            random_image(h, w, 3, seed=1),
        ],
        sizes=((33, 33), (64, 71)),
        expected_shape=lambda h, w: (1, h, w, 5),
        expected_weights=(0, 0),  # a slice: no variables
    )
    x = np.arange(36, dtype="float32").reshape(1, 6, 6, 1)
    out = CropLike()([x, np.zeros((1, 5, 4, 1), "float32")])
    np.testing.assert_array_equal(np.asarray(out), x[:, :5, :4])


@pytest.mark.parametrize(
    "head, match",
    [
        ({"ecre": "sub-pixel"}, "ecre must be one of"),
        ({"dap": True, "wide_decoder": True}, "wide_decoder"),
        ({"feature_levels": [0, 4]}, "feature_levels"),
        ({"feature_levels": []}, "feature_levels"),
        ({"lr_stage_depths": [8, 8, 9]}, "lr_stage_depths"),
        ({"kernel_size": 14}, "kernel_size must be odd"),
        ({"seb_levels": [1]}, "seb_levels"),
    ],
)
def test_bad_head_options_name_themselves(head, match):
    with pytest.raises(ValueError, match=match):
        tiny_model("exfuse", head)


def test_lr_with_multi_grid_of_the_old_depth_is_explained():
    with pytest.raises(ValueError, match="lr=True rearranges"):
        tiny_model("exfuse", {"lr": True}, multi_grid=(1, 2, 4))
