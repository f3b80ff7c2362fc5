"""TensorFlow Model Garden TF2 object checkpoints -> our backbones and DeepLabV3.

Every checkpoint is written here from Model Garden's own nets (official/vision, seeded, with
random BN statistics and biases), the way its trainers write them (`tf.train.Checkpoint(
backbone=...)` or `(model=...)`), and the imported net is compared with the one that wrote
it, on Model Garden's own input normalisation (`preprocess_ops.normalize_image`). Nothing is
downloaded. The full-size nets (ResNet-101 at OS16 and OS8, the DeepLabV3 R50 task
checkpoint) are `slow`; the layouts and the refusals use Model Garden ResNets at 1/16 width.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from deeplab_family.backbones import BackboneConfig, build_backbone
from deeplab_family.models import ModelConfig, build_model
from deeplab_family.weights import WeightsError, import_model_weights, import_weights, inspect
from deeplab_family.weights import read as read_weights
from deeplab_family.weights.model_garden import MODEL_GARDEN_BN_EPSILON, VALUE
from tests.models.test_deeplabv3 import _build_model_garden, _our_config
from tests.tiny import random_images

# Model Garden's ResNet at depth_multiplier 1/16: bottleneck widths 4..32, stage outputs 16..128,
# the 7x7 stem ("v0") 4 wide, the 3x3 stem ("v1") 2-2-4.
TINY = 0.0625
TINY_WIDTHS = dict(stage_widths=(4, 8, 16, 32), stage_channels=(16, 32, 64, 128))


def _input_spec():
    import tf_keras

    return tf_keras.layers.InputSpec(shape=[None, None, None, 3])


def _randomise(model, seed):
    """Random BN statistics and affine parameters and random biases (Model Garden initialises
    BN to the identity and biases to 0, which would not test their import)."""
    rng = np.random.default_rng(seed)
    for v in model.variables:
        name = v.name.split("/")[-1].split(":")[0]
        n = v.shape
        value = {
            "gamma": lambda: rng.uniform(0.5, 1.5, n),
            "beta": lambda: rng.normal(0.0, 0.2, n),
            "moving_mean": lambda: rng.normal(0.0, 0.2, n),
            "moving_variance": lambda: rng.uniform(0.5, 2.0, n),
            "bias": lambda: rng.normal(0.0, 0.2, n),
        }.get(name)
        if value is not None:
            v.assign(value().astype("float32"))
    return model


def _tiny_resnet(seed=0, **kwargs):
    """official/vision's (ImageNet) `ResNet`-50 at 1/16 width."""
    import tf_keras
    from official.vision.modeling.backbones import ResNet

    tf_keras.utils.set_random_seed(seed)
    kwargs = {"model_id": 50, "depth_multiplier": TINY, **kwargs}
    return _randomise(ResNet(input_specs=_input_spec(), **kwargs), seed)


def _tiny_segmentation_model(num_convs=0, seed=0, **decoder):
    """Model Garden's `SegmentationModel`: the tiny ResNet, its ASPP decoder (rates 6, 12, image
    pooling, 8 filters) on level 5, and its head (3 classes)."""
    import tf_keras
    from official.vision.modeling import segmentation_model
    from official.vision.modeling.decoders import aspp
    from official.vision.modeling.heads import segmentation_heads

    tf_keras.utils.set_random_seed(seed)
    backbone = _tiny_resnet(seed)
    model = segmentation_model.SegmentationModel(
        backbone=backbone,
        decoder=aspp.ASPP(level=5, dilation_rates=[6, 12], num_filters=8, **decoder),
        head=segmentation_heads.SegmentationHead(num_classes=3, level=5, num_convs=num_convs,
                                                 num_filters=8),
    )
    model(tf_keras.Input((None, None, 3)))
    return _randomise(model, seed)


def _tiny_config(**overrides):
    """Ours for `_tiny_resnet`: Model Garden's stride placement, epsilon and normalisation."""
    values = dict(depth=50, stem_width=4, stride_in_1x1=False, preprocessing="torch",
                  norm_epsilon=MODEL_GARDEN_BN_EPSILON, **TINY_WIDTHS)
    return BackboneConfig(**{**values, **overrides})


def _tiny_model_config(num_classes=3):
    return ModelConfig.from_dict({
        "name": "deeplabv3",
        "num_classes": num_classes,
        "backbone": {**dataclasses.asdict(_tiny_config()), "output_stride": 32},
        "head": {"aspp_filters": 8, "aspp_rates": [6, 12], "image_pooling": True,
                 "dropout": 0.0},
    })


def _normalised(images):
    """Model Garden's input pipeline: uint8 pixels through `preprocess_ops.normalize_image`
    (its segmentation and classification loaders), the tensor their nets are trained on."""
    from official.vision.ops import preprocess_ops

    return preprocess_ops.normalize_image(tf.constant(images.astype("uint8")))


def _pixels(h, w, seed=0):
    return np.round(random_images(h, w, seed=seed))  # integer pixels: uint8 on their side


def _write(tmp_path, name, **objects):
    return tf.train.Checkpoint(**objects).write(str(tmp_path / name))


def _write_values(out, values):
    """A checkpoint of {name: array}, its objects rebuilt as a `tf.Module` tree on the names'
    paths, so the names are exactly what `tf.train.Checkpoint` writes for them."""
    roots = {}
    for name, value in values.items():
        parts = name[: -len(VALUE)].split("/")
        if len(parts) == 1:
            roots[parts[0]] = tf.Variable(value)
            continue
        node = roots.setdefault(parts[0], tf.Module())
        for part in parts[1:-1]:
            if not hasattr(node, part):
                setattr(node, part, tf.Module())
            node = getattr(node, part)
        setattr(node, parts[-1], tf.Variable(value))
    return tf.train.Checkpoint(**roots).write(str(out))


def _rewrite(prefix, out, drop=(), add=None):
    """A copy of a checkpoint's model variables (not the optimizer's slots) with tensors
    dropped or added."""
    reader = tf.train.load_checkpoint(prefix)
    values = {
        n: reader.get_tensor(n)
        for n in reader.get_variable_to_shape_map()
        if n.endswith(VALUE) and ".OPTIMIZER_SLOT" not in n and n not in drop
    }
    return _write_values(out, {**values, **(add or {})})


def _snapshot(model):
    return [np.asarray(v).copy() for v in model.weights]


def _unchanged(model, before):
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, np.asarray(b), err_msg=b.path)


def _close(ours, theirs, what):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    scale = np.abs(theirs).max()
    diff = np.abs(ours - theirs).max()
    print(f"{what}: max|theirs| {scale:.4g}, max|diff| {diff:.3g}")
    assert scale > 1e-2 and diff <= 1e-4 * scale, (what, diff, scale)


# ---------------------------------------------------------------------------------------------
# Layouts: backbone-rooted, classification-rooted, stems v0 and v1, optimizer slots unused


@pytest.fixture(scope="module")
def tiny_v0(tmp_path_factory):
    """The tiny ResNet (stem v0) in a trainer-like checkpoint: `backbone/...`, an SGD
    optimizer with momentum slots, a step counter. The legacy optimizer writes its slots under
    each variable (`.../kernel/.OPTIMIZER_SLOT/optimizer/momentum`, as older Model Garden
    checkpoints have them); the new one keeps them under `optimizer/_variables/`."""
    import tf_keras

    theirs = _tiny_resnet(seed=1)
    optimizer = tf_keras.optimizers.legacy.SGD(0.1, momentum=0.9)
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in theirs.trainable_variables])
    prefix = _write(tmp_path_factory.mktemp("mg"), "ckpt-1", backbone=theirs,
                    optimizer=optimizer, global_step=tf.Variable(1, dtype=tf.int64))
    return theirs, prefix


def test_tiny_resnet_v0_every_level(tiny_v0):
    theirs, prefix = tiny_v0
    names = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    assert any(".OPTIMIZER_SLOT/" in n for n in names)
    ours = build_backbone(_tiny_config(output_stride=32))
    report = import_weights(ours, prefix)
    assert report.format == "model_garden" and report.kept == []
    assert len(report.imported) == 1 + 3 * 16 + 4
    # Only the optimizer, its slots and the step are left; every model variable went in.
    assert report.unused and all(
        n.startswith(("optimizer/", "global_step/")) or ".OPTIMIZER_SLOT/" in n
        for n in report.unused
    )
    images = _pixels(65, 65)
    want = theirs(_normalised(images), training=False)
    got = ours(images, training=False)
    for level in ("2", "3", "4", "5"):
        _close(got[f"res{level}"], want[level], f"tiny v0 res{level}")


def test_tiny_resnet_v1_classification_checkpoint(tmp_path):
    """An image classification task checkpoint: the backbone is `model/layer_with_weights-0`,
    the classifier `model/layer_with_weights-1`, unused; stem v1 at 1/16 width: 2-2-4."""
    from official.vision.modeling import classification_model

    backbone = _tiny_resnet(seed=2, stem_type="v1")
    model = classification_model.ClassificationModel(backbone, num_classes=7,
                                                     input_specs=_input_spec())
    prefix = _write(tmp_path, "cls", model=model)
    weights = read_weights(prefix)
    assert weights.architecture.stem == "deep" and weights.architecture.stem_width == 2
    assert weights.unused == [f"model/layer_with_weights-1/{v}{VALUE}" for v in ("bias", "kernel")]
    assert weights.head == {}
    assert any("'model/layer_with_weights-0/'" in note for note in weights.notes)
    ours = build_backbone(_tiny_config(stem="deep", stem_width=2, output_stride=32))
    import_weights(ours, prefix)
    images = _pixels(33, 33, seed=1)  # odd at every stride-2 layer: 33, 17, 9, 5, 3
    _close(ours(images, training=False)["res5"],
           backbone(_normalised(images), training=False)["5"], "tiny v1 res5")


# ---------------------------------------------------------------------------------------------
# Full size: DilatedResNet-101 at OS16 and OS8 from one checkpoint; the DeepLabV3 task


def _dilated_resnet(output_stride, seed=0):
    import tf_keras
    from official.vision.modeling.backbones import DilatedResNet

    tf_keras.utils.set_random_seed(seed)
    # Model Garden's DeepLabV3 backbone (semantic_segmentation.py seg_deeplabv3_pascal):
    # stem v1, multigrid (1, 2, 4), norm_epsilon 1e-3 (its default).
    return DilatedResNet(model_id=101, output_stride=output_stride, stem_type="v1",
                         multigrid=[1, 2, 4], input_specs=_input_spec())


@pytest.mark.slow
def test_dilated_resnet101_os16_and_os8(tmp_path):
    """65 px is odd at every stride-2 layer, where TF's "same" padding is then symmetric, as
    ours is at every size. Their last endpoint is res5 (DilatedResNet keys it by the last
    undilated level: "4" at OS16, "3" at OS8). OS16 imports into norm_epsilon 1e-3 (theirs),
    OS8 into our default 1e-5 (the variance takes the difference)."""
    theirs16 = _randomise(_dilated_resnet(16), seed=3)
    prefix = _write(tmp_path, "r101", backbone=theirs16)
    theirs8 = _dilated_resnet(8, seed=9)  # other initial values, replaced by the checkpoint
    tf.train.Checkpoint(backbone=theirs8).read(prefix).assert_existing_objects_matched()
    images = _pixels(65, 65, seed=4)
    normalised = _normalised(images)
    base = dict(depth=101, stem="deep", stride_in_1x1=False, preprocessing="torch",
                multi_grid=(1, 2, 4))
    for output_stride, theirs, epsilon in ((16, theirs16, 1e-3), (8, theirs8, 1e-5)):
        ours = build_backbone(BackboneConfig(**base, output_stride=output_stride,
                                             norm_epsilon=epsilon))
        report = import_weights(ours, prefix)
        assert report.kept == [] and report.unused == []
        want = theirs(normalised, training=False)
        got = ours(images, training=False)
        side = 65 // output_stride + 1
        assert tuple(got["res5"].shape) == (1, side, side, 2048)
        _close(got["res5"], want[max(want, key=int)], f"R101 OS{output_stride} res5")
        _close(got["res2"], want["2"], f"R101 OS{output_stride} res2")


@pytest.fixture(scope="module")
def deeplabv3_checkpoint(tmp_path_factory):
    """Model Garden's DeepLabV3 R50 (tests/models/test_deeplabv3.py's oracle: stem v1, OS16,
    multigrid (1, 2, 4), ASPP (6, 12, 18) + pooling, 21 classes) as its trainer writes it."""
    theirs = _randomise(_build_model_garden(50), seed=5)
    prefix = _write(tmp_path_factory.mktemp("mg"), "ckpt-100", model=theirs,
                    global_step=tf.Variable(100, dtype=tf.int64))
    return theirs, prefix


def _our_deeplabv3(num_classes=21):
    config = _our_config(50)
    return dataclasses.replace(
        config, num_classes=num_classes,
        backbone=config.backbone.replace(preprocessing="torch"),
    )


@pytest.mark.slow
def test_deeplabv3_task_checkpoint(deeplabv3_checkpoint):
    """The whole model: logits at 1/16 (before our upsampling) equal Model Garden's."""
    import keras

    theirs, prefix = deeplabv3_checkpoint
    ours = build_model(_our_deeplabv3())
    report = import_model_weights(ours, prefix)
    assert report.kept == []
    assert report.unused == [f"global_step{VALUE}"]
    assert {"aspp/conv1x1", "aspp/atrous_convs/2", "aspp/pool_conv", "aspp/project",
            "logits_conv"} <= set(report.imported)
    images = _pixels(129, 129, seed=6)
    want = theirs(_normalised(images), training=False)["logits"]
    pre_upsample = keras.Model(ours.input, ours.get_layer("logits_conv").output)
    got = pre_upsample(images, training=False)
    assert tuple(got.shape) == (1, 9, 9, 21)
    _close(got, want, "DeepLabV3 R50 logits")


@pytest.mark.slow
def test_inspect_deeplabv3_task_checkpoint(deeplabv3_checkpoint):
    _, prefix = deeplabv3_checkpoint
    info = inspect(prefix)
    assert info["format"] == "model_garden"
    assert info["backbone"] == {"depth": 50, "stem": "deep", "stem_width": 64,
                                "stride_in_1x1": False, "stride_unit": "first",
                                "preprocessing": "torch"}
    assert info["head"] == ["aspp/atrous_convs/0", "aspp/atrous_convs/1", "aspp/atrous_convs/2",
                            "aspp/conv1x1", "aspp/pool_conv", "aspp/project", "logits_conv"]
    assert any("ASPP with 3 atrous branches + image pooling, 21 classes" in n
               for n in info["notes"])
    assert info["unused"] == 1  # global_step


@pytest.mark.slow
def test_deeplabv3_into_other_num_classes(deeplabv3_checkpoint):
    _, prefix = deeplabv3_checkpoint
    ours = build_model(_our_deeplabv3(num_classes=19))
    before = _snapshot(ours)
    with pytest.raises(WeightsError, match=r"head/_classifier/kernel.* has shape \(1, 1, 256, "
                                           r"21\) where layer 'logits_conv' needs \(1, 1, 256, "
                                           r"19\)"):
        import_model_weights(ours, prefix)
    _unchanged(ours, before)


# ---------------------------------------------------------------------------------------------
# A whole Model Garden segmentation model at tiny size: the head, and what is refused


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    theirs = _tiny_segmentation_model(seed=4)
    prefix = _write(tmp_path_factory.mktemp("mg"), "task", model=theirs)
    return theirs, prefix


def test_tiny_task_checkpoint(tiny_task):
    """The head mapping at tiny size (level 5: ours at output stride 32), and the backbone of
    a task checkpoint alone, its head tensors unused."""
    import keras

    theirs, prefix = tiny_task
    ours = build_model(_tiny_model_config())
    report = import_model_weights(ours, prefix)
    assert report.kept == []
    images = _pixels(65, 65, seed=2)
    want = theirs(_normalised(images), training=False)["logits"]
    got = keras.Model(ours.input, ours.get_layer("logits_conv").output)(images, training=False)
    _close(got, want, "tiny DeepLabV3 logits")

    backbone = build_backbone(_tiny_config(output_stride=32))
    report = import_weights(backbone, prefix)
    assert f"model/head/_classifier/bias{VALUE}" in report.unused
    assert len(report.unused) == 2 + 5 * 5  # classifier; 4 ASPP branches + projection, conv+BN
    np.testing.assert_array_equal(
        np.asarray(backbone.get_layer("res5_unit3_conv2").conv.kernel),
        np.asarray(ours.get_layer("backbone").get_layer("res5_unit3_conv2").conv.kernel),
    )


def test_backbone_checkpoint_is_not_a_model(tiny_v0):
    _, prefix = tiny_v0
    ours = build_model(_tiny_model_config())
    before = _snapshot(ours)
    with pytest.raises(WeightsError, match=r"holds a backbone only, not a whole model: give it "
                                           r"as model.backbone_weights"):
        import_model_weights(ours, prefix)
    _unchanged(ours, before)


def test_tiny_task_into_other_num_classes(tiny_task):
    _, prefix = tiny_task
    ours = build_model(_tiny_model_config(num_classes=5))
    before = _snapshot(ours)
    with pytest.raises(WeightsError, match=r"where layer 'logits_conv' needs \(1, 1, 8, 5\)"):
        import_model_weights(ours, prefix)
    _unchanged(ours, before)


def test_tiny_task_into_a_model_without_image_pooling(tiny_task):
    _, prefix = tiny_task
    config = _tiny_model_config()
    config = dataclasses.replace(config, head={**config.head, "image_pooling": False})
    ours = build_model(config)
    before = _snapshot(ours)
    with pytest.raises(WeightsError, match=r"the model has no layer 'aspp/pool_conv'"):
        import_model_weights(ours, prefix)
    _unchanged(ours, before)


def test_training_init_checkpoint_tells_model_garden_from_ours(tiny_task, tiny_v0, tmp_path):
    """`training.init_checkpoint` routes Model Garden checkpoints (task or backbone) to the
    importer and leaves our own checkpoints to `tf.train.Checkpoint`."""
    from deeplab_family.weights.detect import is_model_garden

    assert is_model_garden(tiny_task[1]) and is_model_garden(tiny_v0[1])
    ours = build_model(_tiny_model_config())
    own = tf.train.Checkpoint(model=ours).write(str(tmp_path / "ours"))
    assert not is_model_garden(own)
    assert not is_model_garden(str(tmp_path / "nothing"))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: _tiny_segmentation_model(num_convs=1),
         r"model/head/_convs/0/.*num_convs > 0"),
        (lambda: _tiny_segmentation_model(use_depthwise_convolution=True),
         r"model/decoder/aspp/aspp_layers/1/layer_with_weights-0/depthwise_kernel.*depthwise"),
    ],
    ids=["head-convs", "depthwise-aspp"],
)
def test_refused_heads(tmp_path, build, message):
    prefix = _write(tmp_path, "task", model=build())
    with pytest.raises(WeightsError, match=message):
        read_weights(prefix)


def test_decoder_that_is_not_aspp(tiny_task, tmp_path):
    _, prefix = tiny_task
    fpn = f"model/decoder/_lateral_convs/0/kernel{VALUE}"
    out = _rewrite(prefix, tmp_path / "fpn", add={fpn: np.zeros((1, 1, 128, 8), "float32")})
    with pytest.raises(WeightsError, match=rf"{fpn} is not in an ASPP decoder"):
        read_weights(out)


# ---------------------------------------------------------------------------------------------
# Backbones that do not fit, or are not ours


def test_depth_mismatch(tiny_v0):
    _, prefix = tiny_v0
    ours = build_backbone(_tiny_config(depth=101))
    before = _snapshot(ours)
    with pytest.raises(WeightsError, match=r"model.backbone.depth: 50 \(the file has stage depths "
                                           r"\[3, 4, 6, 3\], the config \[3, 4, 23, 3\]\)"):
        import_weights(ours, prefix)
    _unchanged(ours, before)


def test_conventions_are_checked(tiny_v0):
    """Model Garden's stride on the 3x3 and its normalisation are part of the file's
    architecture; the epsilon is not (it is folded)."""
    _, prefix = tiny_v0
    with pytest.raises(WeightsError, match=r"stride_in_1x1: False .*preprocessing: torch"):
        import_weights(build_backbone(_tiny_config(stride_in_1x1=True, preprocessing="caffe")),
                       prefix)
    weights = read_weights(prefix)
    assert all(v.epsilon == 1e-3 for v in weights.layers.values())


def test_missing_tensor(tiny_v0, tmp_path):
    _, prefix = tiny_v0
    # Stem v0: layers 0 and 1; res2 blocks 2..4, res3 5..8, res4 from 9.
    gone = f"backbone/layer_with_weights-9/_norm2/moving_variance{VALUE}"
    out = _rewrite(prefix, tmp_path / "missing", drop={gone})
    # The copy is faithful: it imports like the original but for the dropped tensor.
    assert set(tf.train.load_checkpoint(str(out)).get_variable_to_shape_map()) >= {
        f"backbone/layer_with_weights-9/_norm2/gamma{VALUE}"}
    ours = build_backbone(_tiny_config(output_stride=32))
    before = _snapshot(ours)
    with pytest.raises(WeightsError, match=rf"tensor '{gone}' is missing \(res4_unit1 conv2\)"):
        import_weights(ours, out)
    _unchanged(ours, before)


def test_unknown_tensor_in_the_backbone(tiny_v0, tmp_path):
    _, prefix = tiny_v0
    extra = f"backbone/layer_with_weights-9/_extra/kernel{VALUE}"
    out = _rewrite(prefix, tmp_path / "extra", add={extra: np.zeros((1, 1, 4, 4), "float32")})
    with pytest.raises(WeightsError, match=rf"tensor '{extra}' \[1, 1, 4, 4\] has no layer here"):
        read_weights(out)


def test_repeated_last_stage(tiny_v0, tmp_path):
    """`last_stage_repeats=2` (DilatedResNet): a fifth group whose first block projects
    128 -> 128; our cascaded blocks have identity shortcuts."""
    _, prefix = tiny_v0
    reader = tf.train.load_checkpoint(prefix)
    last = "backbone/layer_with_weights-17/"  # stem v0: 2 layers, then 16 blocks: 2..17
    add = {
        n.replace(last, "backbone/layer_with_weights-18/"): reader.get_tensor(n)
        for n in reader.get_variable_to_shape_map()
        if n.startswith(last) and ".OPTIMIZER_SLOT" not in n
    }
    shortcut = f"backbone/layer_with_weights-18/_shortcut/kernel{VALUE}"
    add[shortcut] = np.zeros((1, 1, 128, 128), "float32")
    add.update({f"backbone/layer_with_weights-18/_norm0/{v}{VALUE}": np.ones(128, "float32")
                for v in ("gamma", "beta", "moving_mean", "moving_variance")})
    out = _rewrite(prefix, tmp_path / "repeats", add=add)
    with pytest.raises(WeightsError, match=rf"{shortcut} \[1, 1, 128, 128\] starts a fifth stage"):
        read_weights(out)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(se_ratio=0.25), r"_squeeze_excitation/.* squeeze-and-excitation"),
        (dict(resnetd_shortcut=True), r"layer_with_weights-2/_shortcut1/kernel.* ResNet-D"),
        (dict(replace_stem_max_pool=True),
         r"layer_with_weights-2/kernel.* replace_stem_max_pool"),
        (dict(model_id=18), r"'backbone/layer_with_weights-2/_conv3/kernel.*' is missing: .* "
                            r"basic two-conv residual block"),
    ],
    ids=["se", "resnet-d", "stem-conv-for-pool", "basic-blocks"],
)
def test_refused_backbones(tmp_path, kwargs, message):
    prefix = _write(tmp_path, "bb", backbone=_tiny_resnet(**kwargs))
    with pytest.raises(WeightsError, match=message):
        read_weights(prefix)


def test_not_a_model_garden_resnet(tmp_path):
    prefix = _write_values(tmp_path / "other",
                           {f"backbone/conv/kernel{VALUE}": np.zeros((3, 3, 3, 4), "float32")})
    with pytest.raises(WeightsError, match=r"a TF2 checkpoint without Model Garden ResNet "
                                           r"blocks"):
        read_weights(prefix)
    with pytest.raises(WeightsError, match=r"no Model Garden ResNet backbone"):
        read_weights(prefix, "model_garden")
    tf1 = tmp_path / "tf1"
    with tf.Graph().as_default():
        tf.compat.v1.Variable(np.zeros(3, "float32"), name="resnet_v1_50/conv1/weights")
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(tf1))
    with pytest.raises(WeightsError, match=r"name-based \(TF1\) checkpoint.*format='slim'"):
        read_weights(str(tf1), "model_garden")
