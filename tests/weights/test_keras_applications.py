"""keras.applications ResNet v1 -> our backbone: exact inference equivalence, conv-bias folding,
file import (.h5 as published, .weights.h5), any output stride, mismatch errors, and the exact
parameter-count difference. Nothing is downloaded: every source is built with weights=None."""

import os
import tempfile

import keras
import numpy as np
import pytest

from deeplab_family.backbones import BackboneConfig, build_backbone, import_weights
from deeplab_family.weights import WeightsError
from deeplab_family.weights.keras_applications import (
    KERAS_APPLICATIONS_BN_EPSILON,
    keras_applications_resnet,
    layer_mapping,
)
from tests.tiny import random_images, tiny_config

KA_ENDPOINTS = {"res2": "conv2_block3_out", "res3": "conv3_block4_out"}


def _randomise(model, seed=0):
    """Seeded non-trivial weights: conv biases, BN gamma/beta and moving statistics, so that the
    bias fold and the epsilon change are exercised (weights=None leaves biases 0, mean 0 and
    variance 1)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer.bias.assign(rng.normal(0.0, 0.2, layer.bias.shape).astype("float32"))
        elif isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape
            layer.gamma.assign(rng.uniform(0.5, 1.2, n).astype("float32"))
            layer.beta.assign(rng.normal(0.0, 0.2, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0.0, 0.3, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
    return model


@pytest.fixture(scope="module")
def resnet50_source():
    keras.utils.set_random_seed(1)
    return _randomise(keras_applications_resnet(50))


def _reference(source, images):
    """keras.applications on preprocess_input(images), with res2..res5 endpoints."""
    outputs = {
        "res2": source.get_layer("conv2_block3_out").output,
        "res3": source.get_layer("conv3_block4_out").output,
        "res4": source.get_layer("conv4_block6_out").output,
        "res5": source.output,
    }
    probe = keras.Model(source.input, outputs)
    out = probe(keras.applications.resnet.preprocess_input(images.copy()), training=False)
    return {k: np.asarray(v) for k, v in out.items()}


def _max_rel_diff(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("size", [(97, 97), (64, 80)])
def test_resnet50_equivalence_os32(resnet50_source, size):
    backbone = build_backbone(BackboneConfig(depth=50, output_stride=32))
    report = import_weights(backbone, resnet50_source)
    assert report.kept == []
    assert len(report.imported) == 1 + 16 * 3 + 4  # stem + 3 convs per unit + projections

    images = random_images(*size, batch=2)
    want = _reference(resnet50_source, images)
    got = backbone(images, training=False)  # raw pixels: normalisation is inside the model
    for key in want:
        assert got[key].shape == want[key].shape, key
        assert np.mean(want[key] > 0) > 0.05, f"{key}: degenerate reference activations"
        diff = _max_rel_diff(np.asarray(got[key]), want[key])
        print(f"{size} {key}: max |ours - keras.applications| / max |out| = {diff:.2e}")
        assert diff <= 1e-4, (key, diff)


def test_bias_fold_and_epsilon(resnet50_source):
    backbone = build_backbone(BackboneConfig(depth=50))
    import_weights(backbone, resnet50_source)
    conv = resnet50_source.get_layer("conv3_block2_2_conv")
    bn = resnet50_source.get_layer("conv3_block2_2_bn")
    ours = backbone.get_layer("res3_unit2_conv2")
    assert not ours.conv.use_bias
    assert bn.epsilon == KERAS_APPLICATIONS_BN_EPSILON and ours.norm.epsilon == 1e-5
    np.testing.assert_array_equal(np.asarray(ours.conv.kernel), np.asarray(conv.kernel))
    np.testing.assert_allclose(
        np.asarray(ours.norm.moving_mean),
        np.asarray(bn.moving_mean) - np.asarray(conv.bias),
        rtol=1e-6,
        atol=1e-7,
    )
    np.testing.assert_allclose(
        np.asarray(ours.norm.moving_variance),
        np.asarray(bn.moving_variance) + (KERAS_APPLICATIONS_BN_EPSILON - 1e-5),
        rtol=1e-6,
    )
    np.testing.assert_array_equal(np.asarray(ours.norm.gamma), np.asarray(bn.gamma))


@pytest.mark.parametrize("output_stride, multi_grid", [(16, (1, 2, 4)), (8, None)])
def test_import_at_os16_and_os8(resnet50_source, output_stride, multi_grid):
    config = BackboneConfig(depth=50, output_stride=output_stride, multi_grid=multi_grid)
    backbone = build_backbone(config)
    import_weights(backbone, resnet50_source)
    out = backbone(random_images(65, 65), training=False)
    sides = {"res2": 17, "res3": 9, "res4": 5 if output_stride == 16 else 9}
    sides["res5"] = 5 if output_stride == 16 else 9
    for key, side in sides.items():
        assert tuple(out[key].shape) == (
            1,
            side,
            side,
            {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}[key],
        )
        assert np.all(np.isfinite(np.asarray(out[key])))
    # res2 and res3 are undilated at OS16, so they equal keras.applications there.
    if output_stride == 16:
        want = _reference(resnet50_source, random_images(65, 65))
        for key in ("res2", "res3"):
            assert _max_rel_diff(np.asarray(out[key]), want[key]) <= 1e-4


def test_import_from_published_h5_and_weights_h5(resnet50_source):
    """The published notop file is a Keras 2 weights .h5; write one with tf_keras (the Keras 2
    writer) from the same weights, and a Keras 3 .weights.h5; both import like the model."""
    import tf_keras

    reference = build_backbone(BackboneConfig(depth=50))
    import_weights(reference, resnet50_source)
    images = random_images(49, 49)
    want = reference(images, training=False)["res5"]

    k2 = tf_keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    k2.set_weights(resnet50_source.get_weights())
    with tempfile.TemporaryDirectory() as tmp:
        for path, save in [
            (
                os.path.join(tmp, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
                k2.save_weights,
            ),
            (os.path.join(tmp, "resnet50_notop.weights.h5"), resnet50_source.save_weights),
        ]:
            save(path)
            backbone = build_backbone(BackboneConfig(depth=50, output_stride=16))
            import_weights(backbone, path)
            for a, b in zip(backbone.weights, reference.weights):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    atOS32 = build_backbone(BackboneConfig(depth=50))
    atOS32.set_weights(backbone.get_weights())  # weights from the OS16 build, unchanged
    np.testing.assert_allclose(
        np.asarray(atOS32(images, training=False)["res5"]), np.asarray(want), atol=1e-5
    )


def test_import_from_a_full_file_with_the_classifier(resnet50_source, tmp_path):
    """A full (include_top) file, Keras 2 or Keras 3: the classifier is unused, the rest
    imports as from the notop model."""
    import tf_keras

    reference = build_backbone(BackboneConfig(depth=50))
    import_weights(reference, resnet50_source)
    full = keras_applications_resnet(50, include_top=True)
    for layer in resnet50_source.layers:
        if layer.weights:
            full.get_layer(layer.name).set_weights(layer.get_weights())
    k2 = tf_keras.applications.ResNet50(weights=None, include_top=True)
    k2.set_weights(full.get_weights())
    for path, save in [(tmp_path / "resnet50_full.weights.h5", full.save_weights),
                       (tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
                        k2.save_weights)]:
        save(str(path))
        backbone = build_backbone(BackboneConfig(depth=50))
        assert len(import_weights(backbone, str(path)).imported) == 53
        for a, b in zip(backbone.weights, reference.weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


@pytest.mark.slow
def test_resnet101_equivalence():
    keras.utils.set_random_seed(2)
    source = _randomise(keras_applications_resnet(101), seed=2)
    backbone = build_backbone("resnet101")
    import_weights(backbone, source)
    images = random_images(65, 65)
    want = source(keras.applications.resnet.preprocess_input(images.copy()), training=False)
    got = backbone(images, training=False)["res5"]
    diff = _max_rel_diff(np.asarray(got), np.asarray(want))
    print(f"ResNet-101 at 65x65: relative max diff {diff:.2e}")
    assert diff <= 1e-4


def test_cascade_blocks_keep_their_init(resnet50_source):
    backbone = build_backbone(BackboneConfig(depth=50, output_stride=16, cascade_blocks=1))
    report = import_weights(backbone, resnet50_source)
    want = {f"block5_unit{j}_conv{k}" for j in (1, 2, 3) for k in (1, 2, 3)}
    # block5 copies res5 (2048 -> 2048): an identity shortcut, no projection weights to keep.
    assert set(report.kept) == want
    assert len(report.imported) == 53


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(stem="deep"), r"set model.backbone.stem: standard \(the file has standard, the "
                            r"config deep\)"),
        (dict(stride_in_1x1=False), r"stride_in_1x1: True \(the file has True, the config "
                                    r"False\)"),
        (dict(preprocessing="tf"), r"preprocessing: caffe \(the weights were trained on "
                                   r"'caffe' inputs, the config has 'tf'\)"),
        (dict(se_ratio=0.0625), r"se_ratio: null \(the file's units have no SE\)"),
        (dict(stride_unit="last"), r"stride_unit: first"),
    ],
)
def test_mismatch_errors(resnet50_source, overrides, message):
    """Each contradiction names the key and the value to set; nothing is assigned."""
    backbone = build_backbone(BackboneConfig(depth=50, stage_depths=(3, 4, 6, 3), **overrides))
    before = [np.asarray(v).copy() for v in backbone.weights]
    with pytest.raises(WeightsError, match=message):
        import_weights(backbone, resnet50_source)
    for a, b in zip(before, backbone.weights):
        np.testing.assert_array_equal(a, np.asarray(b), err_msg=b.path)


def test_depth_mismatch_errors(resnet50_source, tmp_path):
    backbone = build_backbone(tiny_config())
    with pytest.raises(
        WeightsError, match=r"model.backbone.depth: 50 \(the file has stage depths "
                            r"\[3, 4, 6, 3\], the config \[1, 1, 2, 3\]\)"
    ):
        import_weights(backbone, resnet50_source)
    with pytest.raises(FileNotFoundError, match=r"/nonexistent/resnet.h5 does not exist"):
        import_weights(backbone, "/nonexistent/resnet.h5")
    with pytest.raises(ValueError, match=r"not a keras.applications ResNet v1"):
        import_weights(
            backbone, keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        )
    # A truncated published file: the error names it, and the backbone keeps its weights.
    path = tmp_path / "resnet50_notop.weights.h5"
    resnet50_source.save_weights(str(path))
    data = path.read_bytes()
    truncated = tmp_path / "truncated_notop.weights.h5"
    truncated.write_bytes(data[: len(data) // 2])
    target = build_backbone(BackboneConfig(depth=50))
    before = [np.asarray(v).copy() for v in target.weights]
    with pytest.raises(WeightsError, match="truncated_notop.weights.h5"):
        import_weights(target, str(truncated))
    for a, b in zip(before, target.weights):
        np.testing.assert_array_equal(a, np.asarray(b), err_msg=b.path)


# ---------------------------------------------------------------------------------------------
# Parameter counts: keras.applications vs ours, explained exactly


def _conv_bias_count(model):
    return sum(
        int(layer.bias.shape[0])
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D) and layer.use_bias
    )


@pytest.mark.parametrize(
    "depth, keras_params, conv_biases",
    [(50, 23_587_712, 26_560), pytest.param(101, 42_658_176, 52_672, marks=pytest.mark.slow)],
)
def test_param_count_difference_is_the_conv_biases(
    depth, keras_params, conv_biases, resnet50_source
):
    """keras.applications ResNet notop = ours + one bias per conv output channel.

    Every conv is followed by a BN, so those biases are redundant (folded into the BN mean on
    import), and the BN parameters (4 per channel: gamma, beta, moving mean and variance) are
    the same on both sides. Our trainable count (23,508,032 for ResNet-50) is torchvision's
    resnet50 without its fc layer (25,557,032 - 2048 * 1000 - 1000).
    """
    source = resnet50_source if depth == 50 else keras_applications_resnet(depth)
    ours = build_backbone(BackboneConfig(depth=depth))
    assert source.count_params() == keras_params
    assert _conv_bias_count(source) == conv_biases
    # Each conv has one BN with as many channels as the conv has biases.
    bn_channels = sum(
        int(layer.gamma.shape[0])
        for layer in source.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert bn_channels == conv_biases
    assert ours.count_params() == keras_params - conv_biases
    ka_trainable = sum(int(np.prod(v.shape)) for v in source.trainable_weights)
    our_trainable = sum(int(np.prod(v.shape)) for v in ours.trainable_weights)
    assert our_trainable == ka_trainable - conv_biases
    assert sum(int(np.prod(v.shape)) for v in ours.non_trainable_weights) == 2 * bn_channels
    if depth == 50:
        assert our_trainable == 25_557_032 - 2048 * 1000 - 1000
    print(
        f"ResNet-{depth}: keras.applications {keras_params:,} = "
        f"ours {ours.count_params():,} + {conv_biases:,} conv biases"
    )


def test_mapping_covers_every_weighted_layer(resnet50_source):
    pairs = layer_mapping((3, 4, 6, 3))
    weighted = {layer.name for layer in resnet50_source.layers if layer.weights}
    mapped = {f"{s}_conv" for s, _ in pairs} | {f"{s}_bn" for s, _ in pairs}
    assert mapped == weighted
