"""TF1 slim name-based checkpoints: slim's resnet_v1_50/101/152 and research/deeplab's
resnet_v1_50_beta / resnet_v1_101_beta.

A TF1 `tf.train.Saver` checkpoint stores its variables by graph name, with no object graph;
the names are slim's variable scopes (slim `nets/resnet_v1.py`, research/deeplab
`core/resnet_v1_beta.py`):

- the net's scope `resnet_v1_{50,101,152}` (research/deeplab's beta nets keep the scopes
  `resnet_v1_50` and `resnet_v1_101`): found from the names, not assumed;
- the stem: `{scope}/conv1` (7x7/2, slim) or `{scope}/conv1_1`, `conv1_2`, `conv1_3`
  (3x3 convs 64-64-128, the first strided: research/deeplab's
  `root_block_fn_for_beta_variant`);
- the units: `{scope}/block{1..4}/unit_{1..n}/bottleneck_v1/{shortcut,conv1,conv2,conv3}`,
  each conv a `weights` tensor, already HWIO (Keras' layout), and a `BatchNorm` scope with
  `gamma` (absent when the net was built with `batch_norm_scale=False`), `beta`,
  `moving_mean` and `moving_variance`. slim's `bottleneck` has a `shortcut` conv only where
  the unit changes depth; otherwise it keeps the identity (subsampled when strided).

Not read: `{scope}/logits/*` (the ImageNet classifier), `global_step`, optimizer slots
(`.../Momentum`) and `ExponentialMovingAverage` shadows.

Architecture, from slim's code, since the checkpoint stores none of it: the stride of block1..3
sits on the block's LAST unit (slim's `resnet_v1_block`, research/deeplab's
`resnet_v1_beta_block`; block4 has stride 1) and, within a unit, on its 3x3 conv (`conv2`,
through `resnet_utils.conv2d_same`); no groups; the BN epsilon is slim's `resnet_arg_scope`
default, 1e-5. Inputs are RGB minus a mean, unscaled: slim's `vgg_preprocessing` means
(123.68, 116.78, 103.94) for slim's nets, research/deeplab's `_MEAN_RGB` (123.15, 115.90,
103.06) for its beta nets (`feature_extractor.py`); research/deeplab feeds its own mean to the
slim nets too, so both modes are accepted, the file's own first.
"""

import glob
import re

import numpy as np

from deeplab_family.weights.detect import open_checkpoint
from deeplab_family.weights.source import (
    Architecture,
    ConvBN,
    SourceWeights,
    Tensors,
    WeightsError,
)

# slim `resnet_utils.resnet_arg_scope(batch_norm_epsilon=1e-5)`, which research/deeplab's
# resnet_v1_beta extractors use too; a checkpoint does not store it.
SLIM_BN_EPSILON = 1e-5
_SCOPE = re.compile(r"^(resnet_v1_(?:50|101|152))/")
_UNIT = re.compile(r"^block(\d+)/unit_(\d+)/bottleneck_v1/")
_BLOCKS = (1, 2, 3, 4)  # res2..res5; research/deeplab's nets have no more


def _scope(names, prefix):
    scopes = sorted({m.group(1) for n in names for m in [_SCOPE.match(n)] if m})
    if len(scopes) == 1:
        return scopes[0]
    if not scopes:
        sample = ", ".join(sorted(names)[:3]) or "none"
        raise WeightsError(
            f"{prefix} (slim): no variables under a resnet_v1_50, resnet_v1_101 or "
            f"resnet_v1_152 scope (names such as {sample}); this reader takes slim's "
            "resnet_v1 and research/deeplab's resnet_v1_*_beta checkpoints"
        )
    raise WeightsError(
        f"{prefix} (slim): variables under several net scopes {scopes}; give a checkpoint of "
        "one backbone"
    )


def _data_files(prefix):
    return ", ".join(sorted(glob.glob(glob.escape(prefix) + ".data-*"))) or f"{prefix}.data-*"


def _conv_bn(tensors, scope, no_gamma):
    """The `ConvBN` of slim's `conv2d(..., normalizer_fn=batch_norm)` under `scope`; a BN
    scope without gamma is appended to `no_gamma`."""
    what = f"the conv of {scope}"
    kernel = tensors.take(f"{scope}/weights", what)
    if kernel.ndim != 4:
        raise WeightsError(
            f"{tensors.path}: tensor {scope + '/weights'!r} has shape {kernel.shape}; a conv "
            "kernel is (kh, kw, in, out)"
        )
    bn = f"{scope}/BatchNorm"
    names = [f"{scope}/weights"]
    if f"{bn}/gamma" in tensors:
        gamma = tensors.take(f"{bn}/gamma", what)
        names.append(f"{bn}/gamma")
    else:
        # slim `batch_norm(scale=False)` creates no gamma: the scale is 1.
        gamma = np.ones(kernel.shape[-1], np.float32)
        no_gamma.append(bn)
    beta, mean, variance = (
        tensors.take(f"{bn}/{k}", f"the BN of {scope}")
        for k in ("beta", "moving_mean", "moving_variance")
    )
    names += [f"{bn}/beta", f"{bn}/moving_mean", f"{bn}/moving_variance"]
    bias = None
    if f"{scope}/biases" in tensors:  # not in slim's resnets (BN replaces the bias); folded
        bias = tensors.take(f"{scope}/biases", what)
        names.append(f"{scope}/biases")
    return ConvBN(
        kernel=kernel, gamma=gamma, beta=beta, mean=mean, variance=variance,
        epsilon=SLIM_BN_EPSILON, bias=bias, tensors=tuple(names),
    )


def _unit_counts(names, scope, prefix):
    counts = {b: 0 for b in _BLOCKS}
    for name in names:
        m = _UNIT.match(name[len(scope) + 1:]) if name.startswith(scope + "/") else None
        if m and int(m.group(1)) in counts:
            counts[int(m.group(1))] = max(counts[int(m.group(1))], int(m.group(2)))
    for block, n in counts.items():
        if n == 0:
            raise WeightsError(
                f"{prefix}: tensor '{scope}/block{block}/unit_1/bottleneck_v1/conv1/weights' is "
                f"missing (no unit of block{block}: not a resnet_v1 checkpoint, or a partial one)"
            )
    return tuple(counts[b] for b in _BLOCKS)


def read(prefix):
    """A slim / research/deeplab resnet_v1 checkpoint as `SourceWeights`.

    Args:
        prefix: the checkpoint prefix (`model.ckpt`, without `.index`); `detect.checkpoint_prefix`
            resolves a directory or an `.index` file to it.

    Tensors are read lazily, one at a time, from the data file; a truncated data file raises
    `WeightsError` naming it before anything is assigned.

    Example (research/deeplab's ImageNet `resnet_v1_101_beta` checkpoint, downloaded once by
    the user; tests/weights/test_slim.py runs the same on files it writes):

        from deeplab_family.weights import inspect
        inspect("resnet_v1_101_beta/model.ckpt")["backbone"]
        # {'depth': 101, 'stem': 'deep', 'stem_width': 64, 'stride_in_1x1': False,
        #  'stride_unit': 'last', 'preprocessing': 'deeplab'}
    """
    prefix = str(prefix)
    reader, shapes = open_checkpoint(prefix)

    def get_tensor(name):
        try:
            return reader.get_tensor(name)
        except Exception as e:  # the index lists it but the data file ends before it
            raise WeightsError(
                f"data file {_data_files(prefix)} is unreadable or truncated ({e}); download "
                "it again"
            ) from None

    scope = _scope(shapes, prefix)
    tensors = Tensors(prefix, shapes, getter=get_tensor)
    notes = [
        f"BN epsilon {SLIM_BN_EPSILON} assumed (slim resnet_arg_scope's default; TF1 "
        "checkpoints do not store it)"
    ]
    layers, no_gamma = {}, []
    if f"{scope}/conv1_1/weights" in tensors:
        stem = "deep"  # research/deeplab resnet_v1_*_beta: conv1_1 (3x3/2), conv1_2, conv1_3
        for k in (1, 2, 3):
            layers[f"stem_conv{k}"] = _conv_bn(tensors, f"{scope}/conv1_{k}", no_gamma)
        width = int(layers["stem_conv1"].kernel.shape[-1])
        got = [int(layers[f"stem_conv{k}"].kernel.shape[-1]) for k in (1, 2, 3)]
        if got != [width, width, 2 * width]:
            raise WeightsError(
                f"{prefix}: the beta stem {scope}/conv1_1..conv1_3 has widths {got}; the deep "
                f"stem here is w, w, 2w ({[width, width, 2 * width]})"
            )
    else:
        stem = "standard"  # slim resnet_v1: one 7x7/2 conv1
        layers["stem_conv1"] = _conv_bn(tensors, f"{scope}/conv1", no_gamma)
        width = int(layers["stem_conv1"].kernel.shape[-1])

    depths = _unit_counts(shapes, scope, prefix)
    for block, n in zip(_BLOCKS, depths):
        for u in range(1, n + 1):
            src = f"{scope}/block{block}/unit_{u}/bottleneck_v1"
            dst = f"res{block + 1}_unit{u}"
            # slim's bottleneck: a shortcut conv only where depth != depth_in.
            if f"{src}/shortcut/weights" in tensors:
                layers[f"{dst}_shortcut"] = _conv_bn(tensors, f"{src}/shortcut", no_gamma)
            for k in (1, 2, 3):
                layers[f"{dst}_conv{k}"] = _conv_bn(tensors, f"{src}/conv{k}", no_gamma)

    widths = tuple(int(layers[f"res{b + 1}_unit1_conv2"].kernel.shape[-1]) for b in _BLOCKS)
    channels = tuple(int(layers[f"res{b + 1}_unit1_conv3"].kernel.shape[-1]) for b in _BLOCKS)
    architecture = Architecture(
        stage_depths=depths,
        stage_widths=widths,
        stage_channels=channels,
        stem=stem,
        stem_width=width,
        groups=1,  # slim's resnet_v1 has no grouped convs
        stride_in_1x1=False,  # bottleneck: conv2 (3x3, conv2d_same) carries the stride
        stride_unit="last",  # resnet_v1_block / resnet_v1_beta_block: stride on the last unit
        preprocessing=("deeplab", "slim") if stem == "deep" else ("slim", "deeplab"),
    )
    if no_gamma:
        notes.append(
            f"{len(no_gamma)} BatchNorm scopes have no gamma (slim batch_norm scale=False), "
            f"e.g. {no_gamma[0]}: gamma = 1"
        )
    named = scope.rsplit("_", 1)[-1]
    if architecture.depth is not None and str(architecture.depth) != named:
        notes.append(
            f"scope {scope} but stage depths {list(depths)} (ResNet-{architecture.depth})"
        )
    elif architecture.depth is None:
        notes.append(f"scope {scope} with non-standard stage depths {list(depths)}")
    unused = tensors.untaken()
    if unused:
        notes.append(
            f"{len(unused)} tensors unused (the classifier {scope}/logits, global_step, "
            "optimizer slots, moving-average shadows)"
        )
    return SourceWeights(
        format="slim",
        path=prefix,
        architecture=architecture,
        layers=layers,
        tensor_count=len(tensors),
        unused=unused,
        notes=notes,
    )
