"""PyTorch state dicts (`.safetensors`) -> our backbone: the torchvision, timm and mmseg layouts.

Two oracles, neither of them our code: keras-hub's timm converter on a full-size ResNet-50, and
a NumPy forward pass written here in PyTorch's conventions (NCHW, OIHW kernels, `padding=k//2`,
`MaxPool2d(3, 2, padding=1)`) that reads the state dict directly, on tiny nets with each stem,
grouped 3x3s, projection and identity units and strides. Then the files this reader must refuse
(each leaving the backbone as it was) and what `inspect` prints. No torch: the state dicts are
seeded NumPy arrays written with `safetensors.numpy.save_file`.
"""

import json
import struct

import numpy as np
import pytest
import safetensors.numpy

from deeplab_family.backbones import build_backbone, import_weights
from deeplab_family.weights import WeightsError, inspect, read
from tests.tiny import random_images

# torchvision's `Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])` on [0, 1]
# pixels, here on [0, 255]: written out, not taken from our config module.
TORCHVISION_MEAN = np.array([0.485, 0.456, 0.406]) * 255.0
TORCHVISION_STD = np.array([0.229, 0.224, 0.225]) * 255.0
TORCH_EPS = 1e-5  # torch.nn.BatchNorm2d's default
FEATURES = ("res2", "res3", "res4", "res5")

# --------------------------------------------------------------------------------------------
# State dicts as torch stores them


def _conv(sd, name, out, cin, k, rng, groups=1, gain=1.0):
    """A torch conv kernel (out, in / groups, kh, kw), He-normal so activations stay O(1)."""
    fan_in = cin // groups * k * k
    sd[f"{name}.weight"] = (rng.standard_normal((out, cin // groups, k, k))
                            * gain * np.sqrt(2.0 / fan_in)).astype("float32")


def _bn(sd, name, n, rng):
    """A BatchNorm2d with random statistics (the init's identity would hide mistakes)."""
    sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, n).astype("float32")
    sd[f"{name}.bias"] = rng.normal(0.0, 0.2, n).astype("float32")
    sd[f"{name}.running_mean"] = rng.normal(0.0, 0.2, n).astype("float32")
    sd[f"{name}.running_var"] = rng.uniform(0.5, 2.0, n).astype("float32")
    sd[f"{name}.num_batches_tracked"] = np.array(1000, np.int64)


def resnet_state_dict(family="torchvision", depths=(1, 2, 1, 2), widths=(4, 8, 8, 16),
                      channels=(16, 24, 32, 48), stem_width=8, groups=1, seed=0, prefix="",
                      classes=10, avg_down=False, se=False, basic=False):
    """A bottleneck ResNet state dict with the names of `family`:

    - "torchvision" (also timm's `resnet50`): `conv1` 7x7 + `bn1`;
    - "timm_deep": timm's deep stem `conv1.0, conv1.1, conv1.3, conv1.4, conv1.6` + `bn1`;
    - "mmseg_v1c": `stem.0, stem.1, stem.3, stem.4, stem.6, stem.7`, plus a decode head
      outside `prefix` as in an mmseg segmentor checkpoint.

    `avg_down`, `se` and `basic` make the variants the reader refuses (ResNet-D's AvgPool
    shortcut, timm's SE units, resnet18-like units without conv3).
    """
    rng = np.random.default_rng(seed)
    sd = {}
    if family == "torchvision":
        _conv(sd, "conv1", stem_width, 3, 7, rng)
        _bn(sd, "bn1", stem_width, rng)
        cin = stem_width
    else:
        w = stem_width
        names = {"timm_deep": ("conv1.0", "conv1.1", "conv1.3", "conv1.4", "conv1.6", "bn1"),
                 "mmseg_v1c": ("stem.0", "stem.1", "stem.3", "stem.4", "stem.6", "stem.7")}
        c1, b1, c2, b2, c3, b3 = names[family]
        _conv(sd, c1, w, 3, 3, rng)
        _bn(sd, b1, w, rng)
        _conv(sd, c2, w, w, 3, rng)
        _bn(sd, b2, w, rng)
        _conv(sd, c3, 2 * w, w, 3, rng)
        _bn(sd, b3, 2 * w, rng)
        cin = 2 * w
    for k, (depth, width, cout) in enumerate(zip(depths, widths, channels), start=1):
        for j in range(depth):
            p = f"layer{k}.{j}"
            _conv(sd, f"{p}.conv1", width, cin, 1, rng)
            _bn(sd, f"{p}.bn1", width, rng)
            _conv(sd, f"{p}.conv2", width, width, 3, rng, groups=groups)
            _bn(sd, f"{p}.bn2", width, rng)
            if not basic:
                # A residual branch that does not swamp the shortcut: gain 0.5.
                _conv(sd, f"{p}.conv3", cout, width, 1, rng, gain=0.5)
                _bn(sd, f"{p}.bn3", cout, rng)
            if se:
                _conv(sd, f"{p}.se.fc1", cout // 4, cout, 1, rng)
                _conv(sd, f"{p}.se.fc2", cout, cout // 4, 1, rng)
            if j == 0:
                if avg_down:  # timm / mmseg V1d: Sequential(AvgPool2d, conv, bn)
                    _conv(sd, f"{p}.downsample.1", cout, cin, 1, rng, gain=0.5)
                    _bn(sd, f"{p}.downsample.2", cout, rng)
                else:
                    _conv(sd, f"{p}.downsample.0", cout, cin, 1, rng, gain=0.5)
                    _bn(sd, f"{p}.downsample.1", cout, rng)
            cin = cout
    if family == "mmseg_v1c":
        extra = {"decode_head.conv_seg.weight": rng.normal(0, 0.1, (classes, 8, 1, 1)),
                 "decode_head.conv_seg.bias": np.zeros(classes)}
    else:
        extra = {"fc.weight": rng.normal(0, 0.1, (classes, cin)), "fc.bias": np.zeros(classes)}
    sd = {prefix + k: v for k, v in sd.items()}
    sd.update({k: v.astype("float32") for k, v in extra.items()})
    return sd


def save(sd, path):
    safetensors.numpy.save_file(sd, str(path), metadata={"format": "pt"})
    return str(path)


def config_for(family="torchvision", depths=(1, 2, 1, 2), widths=(4, 8, 8, 16),
               channels=(16, 24, 32, 48), stem_width=8, groups=1, **overrides):
    """Our backbone config that such a state dict loads into, written out (not from `inspect`)."""
    return {
        "stage_depths": list(depths), "stage_widths": list(widths),
        "stage_channels": list(channels), "stem_width": stem_width, "groups": groups,
        "stem": "standard" if family == "torchvision" else "deep",
        "stride_in_1x1": False, "preprocessing": "torch", "norm_epsilon": TORCH_EPS,
        **overrides,
    }


# --------------------------------------------------------------------------------------------
# The NumPy reference, in PyTorch's conventions


def t_conv(x, w, stride=1, padding=0, dilation=1, groups=1):
    """`torch.nn.functional.conv2d` on NCHW `x`, OIHW `w`, in float64."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_c, per_group, kh, kw = w.shape
    span_h, span_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (span_h, span_w), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride, ::dilation, ::dilation]
    step = out_c // groups
    return np.concatenate(
        [np.einsum("nchwij,ocij->nohw", windows[:, g * per_group:(g + 1) * per_group],
                   w[g * step:(g + 1) * step])
         for g in range(groups)],
        axis=1,
    )


def t_bn(x, sd, name):
    """`BatchNorm2d` in eval mode, eps 1e-5."""
    shape = (1, -1, 1, 1)
    g, b, m, v = (np.asarray(sd[f"{name}.{k}"], np.float64).reshape(shape)
                  for k in ("weight", "bias", "running_mean", "running_var"))
    return (x - m) / np.sqrt(v + TORCH_EPS) * g + b


def t_maxpool(x):
    """`MaxPool2d(3, stride=2, padding=1)`: implicit -inf padding."""
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))
    return windows[:, :, ::2, ::2].max(axis=(-2, -1))


def relu(x):
    return np.maximum(x, 0.0)


def torch_forward(sd, images, family, depths, output_stride=32, prefix=""):
    """res2..res5 (NHWC) of the state dict's ResNet on raw RGB `images` (NHWC, 0..255).

    The stride sits on conv2 (torchvision / timm Bottleneck, mmseg style="pytorch"). Past
    `output_stride` a stage keeps stride 1 and every 3x3 conv of it runs at the doubled rate
    with `padding=dilation`, as our backbone's plan does (Model Garden's DilatedResNet;
    torchvision's `replace_stride_with_dilation` keeps the previous rate on a stage's first
    unit, which this reference does not follow).
    """
    sd = {k[len(prefix):]: np.asarray(v, np.float64) for k, v in sd.items()
          if k.startswith(prefix)}
    x = ((images - TORCHVISION_MEAN) / TORCHVISION_STD).transpose(0, 3, 1, 2).astype(np.float64)
    if family == "torchvision":
        x = relu(t_bn(t_conv(x, sd["conv1.weight"], 2, 3), sd, "bn1"))
    else:
        names = {"timm_deep": ("conv1.0", "conv1.1", "conv1.3", "conv1.4", "conv1.6", "bn1"),
                 "mmseg_v1c": ("stem.0", "stem.1", "stem.3", "stem.4", "stem.6", "stem.7")}
        c1, b1, c2, b2, c3, b3 = names[family]
        x = relu(t_bn(t_conv(x, sd[f"{c1}.weight"], 2, 1), sd, b1))
        x = relu(t_bn(t_conv(x, sd[f"{c2}.weight"], 1, 1), sd, b2))
        x = relu(t_bn(t_conv(x, sd[f"{c3}.weight"], 1, 1), sd, b3))
    x = t_maxpool(x)
    features, current, rate = [], 4, 1
    for k, depth in enumerate(depths, start=1):
        stride = 1 if k == 1 else 2
        if stride == 2 and current * 2 > output_stride:
            stride, rate = 1, rate * 2
        elif stride == 2:
            current *= 2
        for j in range(depth):
            p = f"layer{k}.{j}"
            s = stride if j == 0 else 1
            conv2 = sd[f"{p}.conv2.weight"]
            groups = sd[f"{p}.conv1.weight"].shape[0] // conv2.shape[1]
            y = relu(t_bn(t_conv(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
            y = relu(t_bn(t_conv(y, conv2, s, rate, rate, groups), sd, f"{p}.bn2"))
            y = t_bn(t_conv(y, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
            shortcut = x
            if f"{p}.downsample.0.weight" in sd:
                shortcut = t_bn(t_conv(x, sd[f"{p}.downsample.0.weight"], s), sd,
                                f"{p}.downsample.1")
            x = relu(y + shortcut)
        features.append(x.transpose(0, 2, 3, 1))
    return dict(zip(FEATURES, features))


def max_rel_diff(got, want):
    return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


def weights_of(model):
    return [np.asarray(v).copy() for v in model.weights]


# --------------------------------------------------------------------------------------------
# Oracle 1: keras-hub's timm converter, full-size ResNet-50


def test_resnet50_matches_keras_hub_timm_converter(tmp_path):
    """A timm `resnet50` state dict, loaded by keras-hub 0.29.1 (pinned in requirements.lock,
    as our lock resolves it) through its timm converter (`utils/timm/convert_resnet.py`,
    chosen by `preset_utils.get_preset_loader` from `"architecture"` in `config.json`; the
    weights are `model.safetensors` beside it), and by our import: res2..res5 agree with
    keras-hub's P2..P5 at an odd size. keras-hub's backbone has no input normalisation, so it
    gets the torchvision-normalised image that our "preprocess" layer computes inside."""
    import keras
    import keras_hub

    preset = tmp_path / "timm_resnet50"
    preset.mkdir()
    path = save(resnet_state_dict("torchvision", depths=(3, 4, 6, 3), widths=(64, 128, 256, 512),
                                  channels=(256, 512, 1024, 2048), stem_width=64, seed=5,
                                  classes=1000),
                preset / "model.safetensors")
    (preset / "config.json").write_text(json.dumps(
        {"architecture": "resnet50", "num_classes": 1000, "num_features": 2048}))
    reference = keras_hub.models.ResNetBackbone.from_preset(str(preset))
    pyramid = keras.Model(reference.inputs, reference.pyramid_outputs)

    ours = build_backbone({"depth": 50, "stride_in_1x1": False, "preprocessing": "torch",
                           "norm_epsilon": TORCH_EPS})
    report = import_weights(ours, path)
    assert report.format == "torch" and len(report.imported) == 53 and report.kept == []
    # 53 convs + 53 BNs x 4; unused: 53 counters and fc.weight, fc.bias.
    assert report.tensors_imported == 53 * 5 and len(report.unused) == 55

    images = random_images(65, 65, seed=3)
    normalised = ((images - TORCHVISION_MEAN) / TORCHVISION_STD).astype("float32")
    want = pyramid([normalised], training=False)
    got = ours(images, training=False)
    for level, key in zip(("P2", "P3", "P4", "P5"), FEATURES):
        a, b = np.asarray(got[key]), np.asarray(want[level])
        assert a.shape == b.shape, key
        assert np.mean(b > 0) > 0.2, f"{key}: degenerate reference activations"
        assert max_rel_diff(a, b) <= 1e-4, (key, max_rel_diff(a, b))


# --------------------------------------------------------------------------------------------
# Oracle 2: the NumPy forward in torch's conventions, tiny nets

CASES = {
    # 7x7 stem, no prefix, groups 1: res2 unit1's projection at stride 1, identity units in
    # res3 and res5, strided projections in res3..res5.
    "torchvision": dict(family="torchvision", size=65),
    # timm deep stem 4-4-8 under DataParallel's "module.", ResNeXt groups 4.
    "timm_deep": dict(family="timm_deep", stem_width=4, groups=4, widths=(8, 8, 16, 16),
                      prefix="module.", size=57),
    # mmseg V1c stem 4-4-8 in a segmentor checkpoint ("backbone." + a decode head), groups 2.
    "mmseg_v1c": dict(family="mmseg_v1c", stem_width=4, groups=2, prefix="backbone.", size=45),
}


def _case(name):
    case = dict(CASES[name])
    size, prefix = case.pop("size"), case.pop("prefix", "")
    return case, size, prefix


@pytest.mark.parametrize("name", sorted(CASES))
def test_tiny_nets_match_torch_reference_at_os32(tmp_path, name):
    case, size, prefix = _case(name)
    sd = resnet_state_dict(**case, prefix=prefix, seed=11)
    path = save(sd, tmp_path / f"{name}.safetensors")
    backbone = build_backbone(config_for(**case))
    report = import_weights(backbone, path)  # format "auto": detected from .safetensors
    assert report.format == "torch" and report.kept == []

    images = random_images(size, size, batch=2, seed=1)
    want = torch_forward(sd, images, case["family"], (1, 2, 1, 2), prefix=prefix)
    got = backbone(images, training=False)
    for key in FEATURES:
        assert got[key].shape == want[key].shape, key
        assert np.mean(want[key] > 0) > 0.2, f"{key}: degenerate reference activations"
        diff = max_rel_diff(got[key], want[key])
        print(f"{name} {key}: max |ours - torch reference| / max |reference| = {diff:.1e}")
        assert diff <= 1e-4, (name, key, diff)


@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilated_builds_match_dilated_torch_reference(tmp_path, output_stride):
    """The same file into OS16 and OS8 builds: res5 (and res4 at OS8) unstrided, their 3x3
    convs at rate 2 (4), `padding=dilation` in torch."""
    case, _, _ = _case("torchvision")
    sd = resnet_state_dict(**case, seed=12)
    path = save(sd, tmp_path / "r.safetensors")
    backbone = build_backbone(config_for(**case, output_stride=output_stride))
    import_weights(backbone, path)
    images = random_images(41, 41, seed=2)
    want = torch_forward(sd, images, "torchvision", (1, 2, 1, 2), output_stride=output_stride)
    got = backbone(images, training=False)
    assert got["res5"].shape[1] == {16: 3, 8: 6}[output_stride]
    for key in FEATURES:
        assert max_rel_diff(got[key], want[key]) <= 1e-4, key


def test_bfloat16_file_reads_as_its_float32_values(tmp_path):
    """safetensors' NumPy API has no bfloat16: the reader decodes BF16 tensors itself."""
    sd = resnet_state_dict(seed=3)
    rounded = {k: ((v.view(np.uint32) >> 16) << 16).view(np.float32) if v.dtype == np.float32
               else v for k, v in sd.items()}
    header, blobs, offset = {}, [], 0
    for k, v in rounded.items():
        if v.dtype == np.float32:
            raw, dtype = (v.view(np.uint32) >> 16).astype("<u2").tobytes(), "BF16"
        else:
            raw, dtype = v.astype("<i8").tobytes(), "I64"
        header[k] = {"dtype": dtype, "shape": list(v.shape),
                     "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    bf16 = tmp_path / "bf16.safetensors"
    bf16.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    got = read(str(bf16))
    want = read(save(rounded, tmp_path / "f32.safetensors"))
    assert got.layers.keys() == want.layers.keys()
    for name, layer in want.layers.items():
        np.testing.assert_array_equal(got.layers[name].kernel, layer.kernel, err_msg=name)
        np.testing.assert_array_equal(got.layers[name].variance, layer.variance, err_msg=name)


# --------------------------------------------------------------------------------------------
# Refusals: each names what to fix, and leaves the backbone unchanged


def _truncated(tmp_path):
    path = save(resnet_state_dict(), tmp_path / "cut.safetensors")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:-100])
    return path


def _without(name):
    def make(tmp_path):
        sd = resnet_state_dict()
        del sd[name]
        return save(sd, tmp_path / "missing.safetensors")
    return make


def _changed(name, change, seed):
    """A file that reads and fits the config, but whose tensor `name`, in the last unit, is
    wrong: the import fails only after every earlier layer was computed, so an import that
    assigned layer by layer would have changed them. A seed of its own, so that such an import
    would not write the values an earlier case left in the shared backbone."""
    def make(tmp_path):
        sd = resnet_state_dict(seed=seed)
        sd[name] = change(sd[name])
        return save(sd, tmp_path / "late.safetensors")
    return make


def _tiered_stem(tmp_path):
    """timm's "deep_tiered" stem (resnet*t): widths 3 * (w // 4), w, 2w, not ours w, w, 2w."""
    sd = resnet_state_dict("timm_deep", stem_width=8)
    rng = np.random.default_rng(0)
    _conv(sd, "conv1.0", 6, 3, 3, rng)
    _bn(sd, "conv1.1", 6, rng)
    _conv(sd, "conv1.3", 8, 6, 3, rng)
    return save(sd, tmp_path / "tiered.safetensors")


def _with_extra(name, shape):
    def make(tmp_path):
        sd = resnet_state_dict()
        sd[name] = np.zeros(shape, np.float32)
        return save(sd, tmp_path / "extra.safetensors")
    return make


def _file(**kwargs):
    def make(tmp_path):
        return save(resnet_state_dict(**kwargs), tmp_path / "variant.safetensors")
    return make


BAD = {
    "truncated": (_truncated, r"cut\.safetensors: not a readable safetensors file .*truncated"),
    "missing_tensor": (_without("layer1.0.bn1.running_var"),
                       r"missing\.safetensors: tensor 'layer1\.0\.bn1\.running_var' is "
                       r"missing \(the BN of our res2_unit1_conv1\)"),
    "resnext_into_resnet": (_file(groups=2),
                            r"set model\.backbone\.groups: 2 \(the file has 2, the config 1\)"),
    "r50_depths_into_other_depths": (
        _file(depths=(3, 4, 6, 3)),
        r"model\.backbone\.depth: 50 \(the file has stage depths \[3, 4, 6, 3\], the config "
        r"\[1, 2, 1, 2\]\)"),
    "deep_stem_into_standard": (_file(family="timm_deep", stem_width=4),
                                r"model\.backbone\.stem: deep"),
    "avg_down": (_file(avg_down=True),
                 r"tensor 'layer1\.0\.downsample\.1\.weight' is a conv .*\"avg_down\" shortcut "
                 r"of ResNet-D .* is not supported"),
    "basic_block": (_file(basic=True),
                    r"unit 'layer1\.0' has conv1 and conv2 but no 'layer1\.0\.conv3\.weight': a "
                    r"basic-block ResNet \(resnet18/34\)"),
    "se_units": (_file(se=True),
                 r"tensor 'layer1\.0\.se\.fc1\.weight': SE / attention units .* not supported"),
    "late_shape_mismatch": (
        _changed("layer4.1.conv2.weight", lambda w: np.zeros((16, 16, 5, 5), np.float32),
                 seed=21),
        r"late\.safetensors \(torch\): layer4\.1\.conv2\.weight, .* has shape \(5, 5, 16, 16\) "
        r"where layer 'res5_unit2_conv2' needs \(3, 3, 16, 16\)"),
    "late_nan": (_changed("layer4.1.bn3.running_var", lambda v: np.full_like(v, np.nan),
                          seed=22),
                 r"layer4\.1\.bn3\.running_var holds NaN or infinite values \(layer "
                 r"'res5_unit2_conv3'\)"),
    "tiered_stem": (_tiered_stem, r"the deep stem conv1\.0\.\. has widths \[6, 8, 16\]; ours "
                                  r"is w, w, 2w \(\[6, 6, 12\]\); a tiered stem"),
    # mmcv's deformable conv2 (DCN) adds an offset conv inside the unit.
    "unknown_unit_tensor": (_with_extra("layer2.0.conv2.conv_offset.weight", (18, 8, 3, 3)),
                            r"tensor 'layer2\.0\.conv2\.conv_offset\.weight' is not part of a "
                            r"bottleneck unit"),
    "unknown_prefix": (_file(prefix="teacher."),
                       r"under the prefix 'teacher\.', which is not a run of"),
}


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """The tiny torchvision-layout backbone every refusal is tried on, with imported weights
    (so that "unchanged" is not "still at the initialisation")."""
    backbone = build_backbone(config_for())
    path = tmp_path_factory.mktemp("torch_target") / "ok.safetensors"
    import_weights(backbone, save(resnet_state_dict(seed=7), path))
    return backbone


@pytest.mark.parametrize("name", sorted(BAD))
def test_refusals_name_the_fix_and_change_nothing(tmp_path, target, name):
    make, message = BAD[name]
    before = weights_of(target)
    with pytest.raises(WeightsError, match=message):
        import_weights(target, make(tmp_path))
    for old, new, v in zip(before, weights_of(target), target.weights):
        np.testing.assert_array_equal(new, old, err_msg=v.path)


def test_wrong_normalisation_is_refused_and_changes_nothing(tmp_path):
    backbone = build_backbone(config_for(preprocessing="caffe"))
    before = weights_of(backbone)
    with pytest.raises(WeightsError, match=r"model\.backbone\.preprocessing: torch \(the weights "
                                           r"were trained on 'torch' inputs, the config has "
                                           r"'caffe'\)"):
        import_weights(backbone, save(resnet_state_dict(), tmp_path / "r.safetensors"))
    for old, new, v in zip(before, weights_of(backbone), backbone.weights):
        np.testing.assert_array_equal(new, old, err_msg=v.path)


# --------------------------------------------------------------------------------------------
# What `inspect` says


def test_inspect_timm_deep_stem_and_mmseg(tmp_path):
    timm = save(resnet_state_dict("timm_deep", stem_width=32, groups=4, widths=(8, 16, 32, 64),
                                  channels=(16, 32, 64, 128), depths=(3, 4, 6, 3)),
                tmp_path / "timm.safetensors")
    info = inspect(timm)
    assert info["format"] == "torch"
    assert info["backbone"] == {
        "depth": 50, "stem": "deep", "stem_width": 32, "groups": 4, "width_per_group": 2,
        "stage_channels": [16, 32, 64, 128], "stride_in_1x1": False, "stride_unit": "first",
        "preprocessing": "torch",
    }
    assert info["architecture"].startswith("ResNeXt-50 4x2d, deep stem 32-32-64")
    assert any("timm deep stem" in note for note in info["notes"])
    # 16 units x 3 conv+BN, 4 projections, 3 stem convs: 5 tensors each + a counter per BN.
    layers = 16 * 3 + 4 + 3
    assert info["tensors"] == layers * 6 + 2 and info["unused"] == layers + 2

    mmseg = save(resnet_state_dict("mmseg_v1c", stem_width=4, prefix="backbone."),
                 tmp_path / "mmseg.safetensors")
    info = inspect(mmseg)
    assert info["backbone"] == {
        "stage_depths": [1, 2, 1, 2], "stem": "deep", "stem_width": 4,
        "stage_widths": [4, 8, 8, 16], "stage_channels": [16, 24, 32, 48],
        "stride_in_1x1": False, "stride_unit": "first", "preprocessing": "torch",
    }
    notes = " ".join(info["notes"])
    assert "mmseg/mmcv ResNetV1c" in notes and "prefix 'backbone.' stripped" in notes
    assert "style='caffe'" in notes
    weights = read(mmseg)
    assert "decode_head.conv_seg.weight" in weights.unused
    assert "backbone.layer1.0.bn1.num_batches_tracked" in weights.unused
    assert "backbone.stem.6.weight" in weights.layers["stem_conv3"].tensors
