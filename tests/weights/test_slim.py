"""slim / research/deeplab TF1 name-based checkpoints -> our backbone (`weights/slim.py`).

There is no slim oracle here: tf-slim does not import with the pinned tf_keras (`No module
named 'tf_keras.legacy_tf_layers'`). So the checkpoints are written in this file from seeded
NumPy arrays by `tf.compat.v1.train.Saver` over variables named exactly as slim's
`resnet_v1` and research/deeplab's `resnet_v1_beta` name theirs, which is their real format
(name-based, no object graph), and the reference is `slim_reference`: a plain `tf.nn` forward,
kept apart from our Keras layers, in slim's conventions (NHWC; `conv2d_same`: stride 1 "SAME",
stride > 1 an explicit symmetric pad of k_eff - 1 then "VALID"; BN with epsilon 1e-5; the max
pool 3x3/2 "SAME"; `bottleneck` with a subsample shortcut where the depth does not change; the
stride on the last unit of block1..3; `stack_blocks_dense`'s output stride logic).

Inputs are 65 x 65, an odd size: at even sizes slim's "SAME" max pool pads 0 before and 1
after, while ours pads 1 on each side (as torch's MaxPool2d(3, 2, 1)), which shifts the map by
a pixel; at odd sizes both pad 1 and 1 (and every later map stays odd: 33, 17, 9, 5, 3).
"""

import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_family.backbones import BackboneConfig, build_backbone
from deeplab_family.backbones.config import DEEPLAB_MEAN_RGB, SLIM_MEAN_RGB
from deeplab_family.weights import WeightsError, detect_format, import_weights, inspect
from tests.tiny import random_images

SCOPE = "resnet_v1_50"  # research/deeplab's beta nets keep slim's scope names
EPSILON = 1e-5  # slim resnet_arg_scope's batch_norm_epsilon
SIZE = 65
TINY = dict(
    stage_depths=(2, 2, 2, 2),
    stage_widths=(4, 8, 8, 16),
    stage_channels=(16, 32, 48, 64),
)
STEM_WIDTH = {"standard": 8, "deep": 4}  # deep: 4-4-8, so block1's unit_1 still projects
# Tensors a real slim checkpoint has besides the backbone: the classifier, the step counter,
# an optimizer slot and a moving-average shadow.
EXTRAS = (
    f"{SCOPE}/logits/weights",
    f"{SCOPE}/logits/biases",
    "global_step",
    f"{SCOPE}/conv1/weights/Momentum",
    f"{SCOPE}/block1/unit_1/bottleneck_v1/conv1/weights/ExponentialMovingAverage",
)


# --------------------------------------------------------------------------------------------
# Writing slim checkpoints


def _conv_bn_arrays(rng, scope, k, cin, cout, scale=1.0, gamma=True):
    arrays = {
        f"{scope}/weights": (
            rng.normal(0.0, scale * np.sqrt(2.0 / (k * k * cin)), (k, k, cin, cout))
        ),
        f"{scope}/BatchNorm/beta": rng.normal(0.0, 0.2, cout),
        f"{scope}/BatchNorm/moving_mean": rng.normal(0.0, 0.3, cout),
        f"{scope}/BatchNorm/moving_variance": rng.uniform(0.5, 2.0, cout),
    }
    if gamma:
        arrays[f"{scope}/BatchNorm/gamma"] = rng.uniform(0.5, 1.5, cout)
    return arrays


def slim_arrays(stem, stem_width=8, stage_depths=TINY["stage_depths"], widths=TINY["stage_widths"],
                channels=TINY["stage_channels"], scope=SCOPE, seed=0, gamma=True, extras=True):
    """{slim name: float32 array} of a resnet_v1 (stem "standard") or resnet_v1_beta (stem
    "deep") with random weights and BN statistics, named as slim names them."""
    rng = np.random.default_rng(seed)
    arrays = {}
    # The stem sees raw pixels minus a mean (about +-128): scaled down to keep O(1) features.
    if stem == "standard":
        arrays.update(_conv_bn_arrays(rng, f"{scope}/conv1", 7, 3, stem_width, 1 / 64, gamma))
        depth_in = stem_width
    else:
        w = stem_width
        for k, (cin, cout) in enumerate([(3, w), (w, w), (w, 2 * w)], 1):
            arrays.update(_conv_bn_arrays(rng, f"{scope}/conv1_{k}", 3, cin, cout,
                                          1 / 64 if k == 1 else 1.0, gamma))
        depth_in = 2 * w
    for block, (n, width, depth) in enumerate(zip(stage_depths, widths, channels), 1):
        for u in range(1, n + 1):
            unit = f"{scope}/block{block}/unit_{u}/bottleneck_v1"
            if depth != depth_in:  # slim's bottleneck: a shortcut conv only then
                arrays.update(_conv_bn_arrays(rng, f"{unit}/shortcut", 1, depth_in, depth,
                                              gamma=gamma))
            arrays.update(_conv_bn_arrays(rng, f"{unit}/conv1", 1, depth_in, width, gamma=gamma))
            arrays.update(_conv_bn_arrays(rng, f"{unit}/conv2", 3, width, width, gamma=gamma))
            arrays.update(_conv_bn_arrays(rng, f"{unit}/conv3", 1, width, depth, 0.5, gamma))
            depth_in = depth
    if extras:
        first = f"{scope}/conv1/weights" if stem == "standard" else f"{scope}/conv1_1/weights"
        arrays[f"{scope}/logits/weights"] = rng.normal(0, 0.1, (1, 1, depth_in, 10))
        arrays[f"{scope}/logits/biases"] = np.zeros(10)
        arrays[f"{scope}/conv1/weights/Momentum"] = np.zeros_like(arrays[first])
        slot = f"{scope}/block1/unit_1/bottleneck_v1/conv1/weights"
        arrays[f"{slot}/ExponentialMovingAverage"] = arrays[slot].copy()
    out = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
    if extras:
        out["global_step"] = np.int64(1000)
    return out


def write_checkpoint(directory, arrays):
    """A TF1 `Saver` checkpoint of `arrays` under their names; returns its prefix."""
    os.makedirs(directory, exist_ok=True)
    with tf.Graph().as_default():
        variables = {name: tf.compat.v1.Variable(value) for name, value in arrays.items()}
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, os.path.join(directory, "model.ckpt"),
                              write_meta_graph=False)


# --------------------------------------------------------------------------------------------
# The reference: slim's forward in plain tf.nn, independent of our layers


def slim_reference(arrays, images, mean_rgb, output_stride=None, multi_grid=None, scope=SCOPE):
    """slim's resnet_v1 / research/deeplab's resnet_v1_beta at inference, from slim names.

    Returns {end point: array}: "block{b}/unit_{u}/bottleneck_v1" for every unit.
    """

    def bn(x, name, relu=True):
        gamma = arrays.get(f"{name}/BatchNorm/gamma", 1.0)  # batch_norm(scale=False): 1
        y = (x - arrays[f"{name}/BatchNorm/moving_mean"]) / np.sqrt(
            arrays[f"{name}/BatchNorm/moving_variance"] + EPSILON
        ) * gamma + arrays[f"{name}/BatchNorm/beta"]
        return tf.nn.relu(y) if relu else y

    def conv2d_same(x, name, stride=1, rate=1, relu=True):
        kernel = arrays[f"{name}/weights"]
        if stride == 1:
            y = tf.nn.convolution(x, kernel, padding="SAME", dilations=rate)
        else:
            total = kernel.shape[0] + (kernel.shape[0] - 1) * (rate - 1) - 1
            begin = total // 2
            x = tf.pad(x, [[0, 0], [begin, total - begin], [begin, total - begin], [0, 0]])
            y = tf.nn.convolution(x, kernel, strides=stride, padding="VALID", dilations=rate)
        return bn(y, name, relu)

    def conv2d(x, name, stride=1, relu=True):  # slim.conv2d: "SAME"
        y = tf.nn.convolution(x, arrays[f"{name}/weights"], strides=stride, padding="SAME")
        return bn(y, name, relu)

    def bottleneck(x, name, stride, rate):
        depth = arrays[f"{name}/conv3/weights"].shape[-1]
        if depth == x.shape[-1]:
            shortcut = x[:, ::stride, ::stride, :]  # resnet_utils.subsample
        else:
            shortcut = conv2d(x, f"{name}/shortcut", stride, relu=False)
        y = conv2d(x, f"{name}/conv1")
        y = conv2d_same(y, f"{name}/conv2", stride, rate)
        y = conv2d(y, f"{name}/conv3", relu=False)
        return tf.nn.relu(shortcut + y)

    x = tf.constant(images - np.asarray(mean_rgb, np.float32))
    if f"{scope}/conv1_1/weights" in arrays:
        x = conv2d_same(x, f"{scope}/conv1_1", stride=2)
        x = conv2d_same(x, f"{scope}/conv1_2")
        x = conv2d_same(x, f"{scope}/conv1_3")
    else:
        x = conv2d_same(x, f"{scope}/conv1", stride=2)
    x = tf.nn.max_pool2d(x, 3, 2, "SAME")

    counts = []
    for b in range(1, 5):
        n = 0
        while f"{scope}/block{b}/unit_{n + 1}/bottleneck_v1/conv1/weights" in arrays:
            n += 1
        counts.append(n)
    grid = multi_grid or (1,) * counts[3]
    # resnet_v1_block / resnet_v1_beta_block: (stride, unit_rate) per unit.
    blocks = [[(1, 1)] * (n - 1) + [(2, 1)] for n in counts[:3]]
    blocks.append([(1, r) for r in grid])
    # stack_blocks_dense, after resnet_v1 divided output_stride by the stem's 4.
    target = None if output_stride is None else output_stride // 4
    current, rate, ends = 1, 1, {}
    for b, units in enumerate(blocks, 1):
        for u, (stride, unit_rate) in enumerate(units, 1):
            name = f"block{b}/unit_{u}/bottleneck_v1"
            if target is not None and current == target:
                x = bottleneck(x, f"{scope}/{name}", 1, rate * unit_rate)
                rate *= stride
            else:
                x = bottleneck(x, f"{scope}/{name}", stride, unit_rate)
                current *= stride
            ends[name] = np.asarray(x)
    return ends


# --------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{stem: (prefix, arrays)} for a tiny resnet_v1 ("standard") and resnet_v1_beta ("deep")."""
    root = tmp_path_factory.mktemp("slim")
    out = {}
    for seed, stem in enumerate(("standard", "deep")):
        arrays = slim_arrays(stem, STEM_WIDTH[stem], seed=seed)
        out[stem] = (write_checkpoint(str(root / stem), arrays), arrays)
    return out


def _backbone(prefix, **overrides):
    """Our backbone built with the config `inspect` reports for `prefix`, plus `overrides`."""
    return build_backbone(BackboneConfig(**{**inspect(prefix)["backbone"], **overrides}))


def _values(backbone):
    return [np.array(v) for v in backbone.weights]


def _unchanged(backbone, before):
    return all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, backbone.weights))


# --------------------------------------------------------------------------------------------
# Detection and inspection


def test_detect_and_inspect(checkpoints):
    beta, _ = checkpoints["deep"]
    directory = os.path.dirname(beta)
    assert detect_format(directory) == ("slim", beta)  # a directory: its latest checkpoint
    assert detect_format(beta + ".index") == ("slim", beta)

    info = inspect(beta)
    assert info["format"] == "slim"
    fields = info["backbone"]
    assert fields["stem"] == "deep" and fields["stem_width"] == STEM_WIDTH["deep"]
    assert fields["stride_unit"] == "last" and fields["stride_in_1x1"] is False
    assert fields["preprocessing"] == "deeplab"
    assert fields["stage_depths"] == list(TINY["stage_depths"])
    assert fields["stage_widths"] == list(TINY["stage_widths"])
    assert fields["stage_channels"] == list(TINY["stage_channels"])
    assert "groups" not in fields
    assert info["unused"] == len(EXTRAS)
    assert any("epsilon 1e-05" in n for n in info["notes"]), info["notes"]

    standard = inspect(checkpoints["standard"][0])["backbone"]
    assert standard["stem"] == "standard" and standard["stem_width"] == STEM_WIDTH["standard"]
    assert standard["preprocessing"] == "slim"


# --------------------------------------------------------------------------------------------
# Equivalence with slim's forward


def _compare(prefix, arrays, stem, output_stride, multi_grid=None, preprocessing=None):
    overrides = {"output_stride": output_stride, "multi_grid": multi_grid}
    if preprocessing:
        overrides["preprocessing"] = preprocessing
    backbone = _backbone(prefix, **overrides)
    report = import_weights(backbone, prefix)
    assert report.format == "slim" and report.kept == []
    assert sorted(report.unused) == sorted(EXTRAS)

    images = random_images(SIZE, SIZE, batch=2)
    mean = {"slim": SLIM_MEAN_RGB, "deeplab": DEEPLAB_MEAN_RGB}[
        backbone.backbone_config.preprocessing
    ]
    want = slim_reference(arrays, images, mean, output_stride, multi_grid)
    got = {k: np.asarray(v) for k, v in backbone(images, training=False).items()}
    # res2..res4: the outputs of the unit before the strided one (the unit research/deeplab's
    # decoder reads, block1/unit_2 of ResNet-50, there at its conv3); res5: the last unit.
    n = TINY["stage_depths"]
    taps = {f"res{b + 1}": f"block{b}/unit_{n[b - 1] - 1}/bottleneck_v1" for b in (1, 2, 3)}
    taps["res5"] = f"block4/unit_{n[3]}/bottleneck_v1"
    for key, end in taps.items():
        assert got[key].shape == want[end].shape, (key, got[key].shape, want[end].shape)
        assert np.mean(want[end] > 0) > 0.05, f"{end}: degenerate reference activations"
        diff = float(np.abs(got[key] - want[end]).max() / np.abs(want[end]).max())
        print(f"{stem} OS{output_stride} {key} vs {end}: max rel diff {diff:.1e}")
        assert diff <= 1e-4, (key, end, diff)


@pytest.mark.parametrize(
    "stem, output_stride, multi_grid",
    [
        ("standard", 32, None),
        ("deep", 32, None),
        ("standard", 16, (1, 2)),
        ("deep", 16, None),
        ("deep", 8, None),
    ],
)
def test_matches_slim_forward(checkpoints, stem, output_stride, multi_grid):
    prefix, arrays = checkpoints[stem]
    _compare(prefix, arrays, stem, output_stride, multi_grid)


def test_both_means_accepted(checkpoints):
    """research/deeplab feeds its own mean to slim's resnet_v1 nets too: the standard-stem file
    also loads with "deeplab" normalisation, and still matches slim's forward on that mean."""
    prefix, arrays = checkpoints["standard"]
    _compare(prefix, arrays, "standard", 32, preprocessing="deeplab")


def test_batch_norm_without_scale(tmp_path):
    """slim `batch_norm(scale=False)` stores no gamma: the import uses 1, and says so."""
    arrays = slim_arrays("standard", STEM_WIDTH["standard"], seed=5, gamma=False)
    prefix = write_checkpoint(str(tmp_path), arrays)
    assert any("no gamma" in n for n in inspect(prefix)["notes"])
    _compare(prefix, arrays, "standard", 32)


# --------------------------------------------------------------------------------------------
# keras.applications' ResNet50, renamed to slim names: every tensor in its layer


def _keras_to_slim(name):
    """keras.applications' `conv{s}_block{j}_{k}` -> slim's scope for the same conv."""
    if name == "conv1":
        return f"{SCOPE}/conv1"
    stage, block, k = name[4], name.split("_")[1][5:], name.split("_")[2]
    conv = "shortcut" if k == "0" else f"conv{k}"
    return f"{SCOPE}/block{int(stage) - 1}/unit_{block}/bottleneck_v1/{conv}"


def test_keras_applications_resnet50_renamed(tmp_path):
    """A full-size ResNet-50 with seeded random weights, renamed conv by conv into slim's names
    (its conv biases folded into moving_mean here, as slim's convs have none): each tensor
    lands in the layer of ours that keras.applications' own importer maps that conv to.

    Not a feature test: keras.applications strides the first unit's 1x1, slim the last unit's
    3x3, so the two nets compute different functions from the same tensors.
    """
    from deeplab_family.weights.keras_applications import keras_applications_resnet, layer_mapping

    start = time.perf_counter()
    keras.utils.set_random_seed(3)
    source = keras_applications_resnet(50)
    rng = np.random.default_rng(3)
    arrays, expected = {}, {}
    for src, ours in layer_mapping((3, 4, 6, 3)):
        conv, norm = source.get_layer(f"{src}_conv"), source.get_layer(f"{src}_bn")
        kernel = np.asarray(conv.kernel)
        bias = rng.normal(0.0, 0.2, kernel.shape[-1]).astype("float32")
        stats = {
            "gamma": rng.uniform(0.5, 1.5, kernel.shape[-1]),
            "beta": rng.normal(0.0, 0.2, kernel.shape[-1]),
            "moving_mean": rng.normal(0.0, 0.3, kernel.shape[-1]) - bias,
            "moving_variance": rng.uniform(0.5, 2.0, kernel.shape[-1]),
        }
        slim = _keras_to_slim(src)
        arrays[f"{slim}/weights"] = kernel
        for key, value in stats.items():
            arrays[f"{slim}/BatchNorm/{key}"] = np.asarray(value, np.float32)
        expected[ours] = (kernel, {k: arrays[f"{slim}/BatchNorm/{k}"] for k in stats})
        assert norm.epsilon == pytest.approx(1.001e-5)
    prefix = write_checkpoint(str(tmp_path), arrays)
    del source

    info = inspect(prefix)
    assert info["backbone"]["depth"] == 50 and info["backbone"]["stem"] == "standard"
    assert "stage_widths" not in info["backbone"] and "stage_channels" not in info["backbone"]
    backbone = _backbone(prefix)
    report = import_weights(backbone, prefix)
    assert len(report.imported) == len(expected) == 53 and report.unused == []
    for ours, (kernel, stats) in expected.items():
        layer = backbone.get_layer(ours)
        np.testing.assert_array_equal(np.asarray(layer.conv.kernel), kernel, err_msg=ours)
        for key in ("gamma", "beta", "moving_mean"):
            np.testing.assert_array_equal(
                np.asarray(getattr(layer.norm, key)), stats[key], err_msg=f"{ours} {key}"
            )
        # Our epsilon is slim's (1e-5): the variance is unchanged up to float32 rounding.
        np.testing.assert_allclose(
            np.asarray(layer.norm.moving_variance), stats["moving_variance"], rtol=1e-6
        )
    print(f"keras.applications ResNet50 renamed: {time.perf_counter() - start:.1f} s")


# --------------------------------------------------------------------------------------------
# Files that do not fit: a message naming the tensor or the key, and nothing assigned


def _rejects(backbone, prefix, *patterns):
    before = _values(backbone)
    with pytest.raises(WeightsError) as error:
        import_weights(backbone, prefix)
    message = str(error.value)
    for pattern in patterns:
        assert pattern in message, (pattern, message)
    assert _unchanged(backbone, before), "a rejected file changed the backbone"
    return message


def test_missing_tensor(checkpoints, tmp_path):
    prefix, arrays = checkpoints["standard"]
    backbone = _backbone(prefix)
    for missing in (
        f"{SCOPE}/block3/unit_2/bottleneck_v1/conv2/BatchNorm/moving_variance",
        f"{SCOPE}/block2/unit_1/bottleneck_v1/shortcut/BatchNorm/beta",
        f"{SCOPE}/conv1/weights",
    ):
        partial = {k: v for k, v in arrays.items() if k != missing}
        cut = write_checkpoint(str(tmp_path / missing.replace("/", "_")), partial)
        _rejects(backbone, cut, repr(missing), "missing")


def test_missing_block(checkpoints, tmp_path):
    prefix, arrays = checkpoints["standard"]
    partial = {k: v for k, v in arrays.items() if "/block4/" not in k}
    cut = write_checkpoint(str(tmp_path), partial)
    _rejects(_backbone(prefix), cut, f"{SCOPE}/block4/unit_1/bottleneck_v1/conv1/weights")


def test_resnet50_file_into_other_depths(checkpoints, tmp_path):
    """A file with ResNet-50's 3-4-6-3 units (tiny widths) into the tiny 2-2-2-2 config."""
    arrays = slim_arrays("standard", STEM_WIDTH["standard"], stage_depths=(3, 4, 6, 3))
    prefix = write_checkpoint(str(tmp_path), arrays)
    assert inspect(prefix)["backbone"]["depth"] == 50
    tiny = checkpoints["standard"][0]
    _rejects(_backbone(tiny), prefix, "model.backbone.depth: 50")


def test_beta_file_into_standard_stem(checkpoints):
    beta, _ = checkpoints["deep"]
    standard = _backbone(beta, stem="standard", stem_width=8, preprocessing="slim")
    _rejects(standard, beta, "model.backbone.stem: deep", "model.backbone.stem_width: 4")


def test_stride_unit_first(checkpoints):
    prefix, _ = checkpoints["standard"]
    _rejects(_backbone(prefix, stride_unit="first"), prefix, "model.backbone.stride_unit: last")


def test_wrong_normalisation(checkpoints):
    prefix, _ = checkpoints["deep"]
    _rejects(_backbone(prefix, preprocessing="torch"), prefix,
             "model.backbone.preprocessing: deeplab")


def test_truncated_data_file(checkpoints, tmp_path):
    _, arrays = checkpoints["standard"]
    prefix = write_checkpoint(str(tmp_path), arrays)
    data = prefix + ".data-00000-of-00001"
    with open(data, "rb") as f:
        content = f.read()
    with open(data, "wb") as f:
        f.write(content[: len(content) // 2])
    # The config from the intact copy: `inspect` of the cut one reads every tensor, and fails.
    _rejects(_backbone(checkpoints["standard"][0]), prefix, data, "truncated")


def test_not_a_resnet_checkpoint(tmp_path):
    prefix = write_checkpoint(str(tmp_path), {"vgg_16/conv1/conv1_1/weights": np.zeros(3)})
    with pytest.raises(WeightsError, match="no variables under a resnet_v1_50"):
        inspect(prefix)
