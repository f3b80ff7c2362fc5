"""TensorFlow Model Garden (official/vision) TF2 object checkpoints: its ImageNet ResNet and
DilatedResNet backbones, and its whole DeepLabV3 task checkpoints.

A `tf.train.Checkpoint` names each variable by its path through the object graph, ending in
`/.ATTRIBUTES/VARIABLE_VALUE`. The backbone is a functional tf_keras model, so its layers are
numbered in graph order, counting only layers with weights (`layer_with_weights-K`):

- the stem: conv, BN, conv, BN, ... (`.../layer_with_weights-0/kernel`,
  `.../layer_with_weights-1/{gamma,beta,moving_mean,moving_variance}`); stem "v0" is one 7x7
  conv of 64, stem "v1" three 3x3 convs (DilatedResNet: 64-64-128, ResNet: 32-32-64), our
  "deep" stem of width 64 or 32;
- then one `BottleneckBlock` per unit, in order: `_conv1.._conv3`, `_norm1.._norm3`, and
  `_shortcut` + `_norm0` on the first block of every stage (Model Garden projects there always:
  `use_projection=True`), which is how the stages are found.

Where the backbone sits depends on who wrote the file: `backbone/...` (a backbone checkpoint,
what `init_checkpoint_modules: backbone` reads), `model/backbone/...` (a segmentation task) or
`model/layer_with_weights-0/...` (an image classification task, whose classifier is then
`model/layer_with_weights-1`, unused). The reader finds it as the one prefix that holds
`layer_with_weights-K/_conv1/kernel`.

A segmentation task checkpoint (`model/decoder/aspp/...`, `model/head/_classifier/...`) also
fills `SourceWeights.head`, in our DeepLabV3's layers: Model Garden's
`SpatialPyramidPooling.aspp_layers` are [1x1 branch, one 3x3 branch per rate, image pooling
(Sequential(GAP, Reshape, Sequential(conv, BN, act)))], then `projection`; its
`SegmentationHead._classifier` is the biased 1x1 logits conv.

Conventions the file does not store, taken from Model Garden's defaults (and noted in
`SourceWeights.notes`): BN epsilon 1e-3 (`NormActivation.norm_epsilon`), the stride on the 3x3
conv (`BottleneckBlock` strides `_conv2`), the first unit of a stage strided, and "torch"
inputs (`preprocess_ops.normalize_image`: RGB / 255 minus MEAN_NORM (0.485, 0.456, 0.406),
over STDDEV_NORM (0.229, 0.224, 0.225)). Neither are the output stride, multi-grid, atrous
rates or the activation: Model Garden's Pascal and Cityscapes DeepLabV3 experiments train with
swish, which ours does not have (a ReLU net loads such weights but computes something else).

Refused, naming the tensor: SE units (`_squeeze_excitation`), basic two-conv blocks
(ResNet-18/34, no `_conv3`), ResNet-D shortcuts (`resnetd_shortcut=True`: an average pool
before the projection, `_shortcut1`), a strided conv in place of the stem's max pool
(`replace_stem_max_pool`), repeated last stages (`last_stage_repeats > 1`: their repeats
project, our cascaded blocks do not), and for whole models a decoder that is not ASPP, a
depthwise ASPP, or a head with extra convs (`num_convs > 0`) or DeepLabV3+ fusion.
"""

import re

from deeplab_family.backbones.plan import STAGE_NAMES
from deeplab_family.weights.detect import open_checkpoint
from deeplab_family.weights.source import (
    Architecture,
    ConvBN,
    Dense,
    SourceWeights,
    Tensors,
    WeightsError,
)

# What `tf.train.Checkpoint` appends to a variable's object path.
VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"
# official/vision/configs/common.py `NormActivation.norm_epsilon` (and the `DilatedResNet`,
# `ResNet` and `SpatialPyramidPooling` defaults): checkpoints do not store it.
MODEL_GARDEN_BN_EPSILON = 1e-3
_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
_BN = ("gamma", "beta", "moving_mean", "moving_variance")
_BLOCK = re.compile(r"^(.*)layer_with_weights-(\d+)/_conv1/kernel" + re.escape(VALUE) + "$")


def _is_variable(name):
    """A model variable: not an optimizer slot, the step counter or the object graph."""
    return name.endswith(VALUE) and "/.OPTIMIZER_SLOT/" not in name


def _conv_bn(tensors, conv, norm, what):
    """`ConvBN` from `<conv>kernel` and the BN variables under `norm` (both object paths
    ending in "/")."""
    kernel = tensors.take(f"{conv}kernel{VALUE}", what)
    gamma, beta, mean, var = (tensors.take(f"{norm}{v}{VALUE}", what) for v in _BN)
    return ConvBN(
        kernel=kernel, gamma=gamma, beta=beta, mean=mean, variance=var,
        epsilon=MODEL_GARDEN_BN_EPSILON,
        tensors=(f"{conv}kernel{VALUE}",) + tuple(f"{norm}{v}{VALUE}" for v in _BN),
    )


def _backbone_prefix(tensors):
    prefixes = sorted({m.group(1) for m in map(_BLOCK.match, tensors.names()) if m})
    if not prefixes:
        raise WeightsError(
            f"{tensors.path}: no Model Garden ResNet backbone in this checkpoint (no tensor "
            f"'.../layer_with_weights-K/_conv1/kernel{VALUE}' of a BottleneckBlock)"
        )
    if len(prefixes) > 1:
        raise WeightsError(
            f"{tensors.path}: more than one ResNet in this checkpoint, under "
            f"{', '.join(map(repr, prefixes))}"
        )
    return prefixes[0]


def _stem(tensors, root):
    """The stem's `ConvBN`s (our "stem_conv1"..) and (stem, stem_width); and the index of the
    first block."""
    convs, k = [], 0
    while f"{root}layer_with_weights-{k}/kernel{VALUE}" in tensors:
        conv = f"{root}layer_with_weights-{k}/"  # its BN is layer_with_weights-<k + 1>
        shape = tensors.shape(f"{conv}kernel{VALUE}")
        if convs and len(convs) == (1 if convs[0][0] == 7 else 3):
            raise WeightsError(
                f"{tensors.path}: {conv}kernel{VALUE} {list(shape)} is a stem conv after the "
                "stem (Model Garden's replace_stem_max_pool=True: a strided conv in place of "
                "the max pool); our stems end in a 3x3/2 max pool"
            )
        convs.append(shape)
        k += 2
    if not convs:
        raise WeightsError(f"{tensors.path}: tensor '{root}layer_with_weights-0/kernel{VALUE}' "
                           "is missing (the stem conv)")
    shapes = [list(s) for s in convs]
    width = convs[0][-1]
    if len(convs) == 1 and convs[0][:3] == (7, 7, 3):
        stem = "standard"  # stem "v0": conv 7x7/2
    elif len(convs) == 3 and all(s[:2] == (3, 3) for s in convs) and convs[0][2] == 3 and [
        s[-1] for s in convs
    ] == [width, width, 2 * width]:
        stem = "deep"  # stem "v1": conv 3x3/2, 3x3, 3x3 (w, w, 2w)
    else:
        raise WeightsError(
            f"{tensors.path}: the stem convs under {root!r} have shapes {shapes}: neither Model "
            "Garden's stem v0 (one 7x7 conv) nor v1 (three 3x3 convs of w, w, 2w)"
        )
    layers = {
        f"stem_conv{i + 1}": _conv_bn(
            tensors, f"{root}layer_with_weights-{2 * i}/", f"{root}layer_with_weights-{2 * i + 1}/",
            f"stem conv {i + 1}",
        )
        for i in range(len(convs))
    }
    return layers, stem, int(width), k


def _blocks(tensors, root, first):
    """[(object path of a BottleneckBlock, projects)] from `layer_with_weights-<first>` on."""
    blocks, k = [], first
    while f"{root}layer_with_weights-{k}/_conv1/kernel{VALUE}" in tensors:
        block = f"{root}layer_with_weights-{k}/"
        inside = sorted(n for n in tensors.names() if n.startswith(block) and _is_variable(n))
        for name in inside:
            part = name[len(block):].split("/", 1)[0]
            if part == "_squeeze_excitation":
                raise WeightsError(
                    f"{tensors.path}: {name} is a squeeze-and-excitation layer (Model Garden's "
                    "se_ratio); Model Garden's SE is not imported, use a checkpoint without SE"
                )
            if part == "_shortcut1":
                raise WeightsError(
                    f"{tensors.path}: {name} is a ResNet-D shortcut (Model Garden's "
                    "resnetd_shortcut=True: a 2x2 average pool before the 1x1 projection); our "
                    "projections are strided 1x1 convs"
                )
        if f"{block}_conv3/kernel{VALUE}" not in tensors:
            raise WeightsError(
                f"{tensors.path}: tensor '{block}_conv3/kernel{VALUE}' is missing: "
                f"{block.rstrip('/')} is a basic two-conv residual block (Model Garden's "
                "ResNet-10/18/26/34); ours are bottlenecks"
            )
        blocks.append((block, f"{block}_shortcut/kernel{VALUE}" in tensors))
        k += 1
    return blocks


def _stages(tensors, blocks):
    """Blocks split into stages: Model Garden projects the shortcut of every stage's first block
    (`use_projection=True` in `_block_group`), and only there."""
    if not blocks[0][1]:
        raise WeightsError(f"{tensors.path}: tensor '{blocks[0][0]}_shortcut/kernel{VALUE}' is "
                           "missing (the first block of a stage projects its shortcut)")
    stages = []
    for block, projects in blocks:
        if projects:
            stages.append([])
        stages[-1].append(block)
    if len(stages) > 4:
        name = f"{stages[4][0]}_shortcut/kernel{VALUE}"
        raise WeightsError(
            f"{tensors.path}: {name} {list(tensors.shape(name))} starts a fifth stage (Model "
            "Garden's last_stage_repeats > 1, whose repeats project their shortcut); our "
            "cascaded blocks (cascade_blocks) have identity shortcuts and no weights to take it"
        )
    if len(stages) < 4:
        raise WeightsError(
            f"{tensors.path}: {len(stages)} stages of BottleneckBlocks (projecting shortcuts at "
            f"{', '.join(s[0] for s in stages)}); a ResNet has 4"
        )
    return stages


def _aspp(tensors, decoder):
    """Our ASPP's `ConvBN`s from Model Garden's `SpatialPyramidPooling` at `decoder`."""
    branches = sorted({
        int(m.group(1))
        for m in (re.match(re.escape(decoder) + r"aspp_layers/(\d+)/", n) for n in tensors.names())
        if m
    })
    if not branches:
        raise WeightsError(f"{tensors.path}: tensor "
                           f"'{decoder}aspp_layers/0/layer_with_weights-0/kernel{VALUE}' is "
                           "missing (the ASPP 1x1 branch)")
    for name in sorted(tensors.names()):
        if name.startswith(decoder) and "depthwise_kernel" in name:
            raise WeightsError(f"{tensors.path}: {name} is a depthwise ASPP conv (Model Garden's "
                               "use_depthwise_convolution=True); ours are full 3x3 convs")

    def branch(i):
        return f"{decoder}aspp_layers/{i}/"

    n = branches[-1] + 1
    pooled = f"{branch(n - 1)}layer_with_weights-0/layer_with_weights-0/kernel{VALUE}" in tensors
    head = {("aspp", "conv1x1"): _conv_bn(
        tensors, f"{branch(0)}layer_with_weights-0/", f"{branch(0)}layer_with_weights-1/",
        "the ASPP 1x1 branch")}
    for i in range(1, n - 1 if pooled else n):
        head[("aspp", "atrous_convs", i - 1)] = _conv_bn(
            tensors, f"{branch(i)}layer_with_weights-0/", f"{branch(i)}layer_with_weights-1/",
            f"ASPP atrous branch {i}")
    if pooled:
        inner = f"{branch(n - 1)}layer_with_weights-0/"
        head[("aspp", "pool_conv")] = _conv_bn(
            tensors, f"{inner}layer_with_weights-0/", f"{inner}layer_with_weights-1/",
            "the ASPP image pooling branch")
    head[("aspp", "project")] = _conv_bn(
        tensors, f"{decoder}projection/layer_with_weights-0/",
        f"{decoder}projection/layer_with_weights-1/", "the ASPP projection")
    return head, pooled


def _deeplabv3_head(tensors, model):
    """`SourceWeights.head` of a segmentation task checkpoint rooted at `model` ("model/"),
    and a note; ({}, None) when the file has no decoder or head."""
    decoder = [n for n in tensors.names() if n.startswith(f"{model}decoder/") and _is_variable(n)]
    heads = [n for n in tensors.names() if n.startswith(f"{model}head/") and _is_variable(n)]
    if not decoder and not heads:
        return {}, None
    other = sorted(n for n in decoder if not n.startswith(f"{model}decoder/aspp/"))
    if other or not decoder:
        raise WeightsError(
            f"{tensors.path}: "
            + (f"{other[0]} is not in an ASPP decoder" if other else "the head has no decoder")
            + " (Model Garden's decoder type must be 'aspp' for our deeplabv3)"
        )
    for name in sorted(heads):
        part = name[len(f"{model}head/"):].split("/", 1)[0]
        if part == "_convs":
            raise WeightsError(
                f"{tensors.path}: {name} is a conv of the segmentation head before its "
                "classifier (Model Garden's head.num_convs > 0); our deeplabv3 head has none"
            )
        if part != "_classifier":
            raise WeightsError(
                f"{tensors.path}: {name} is not in the head's classifier (Model Garden's "
                "DeepLabV3+ feature_fusion or another head); our deeplabv3 takes ASPP and "
                "a 1x1 classifier"
            )
    head, pooled = _aspp(tensors, f"{model}decoder/aspp/")
    classifier = f"{model}head/_classifier/"
    head[("logits_conv",)] = Dense(
        kernel=tensors.take(f"{classifier}kernel{VALUE}", "the logits conv"),
        bias=tensors.take(f"{classifier}bias{VALUE}", "the logits conv"),
        tensors=(f"{classifier}kernel{VALUE}", f"{classifier}bias{VALUE}"),
    )
    rates = sum(1 for key in head if key[:2] == ("aspp", "atrous_convs"))
    classes = int(head[("logits_conv",)].kernel.shape[-1])
    note = (
        f"DeepLabV3 task checkpoint: ASPP with {rates} atrous branches"
        + (" + image pooling" if pooled else "")
        + f", {classes} classes; the atrous rates and output stride are not stored (set "
        "model.head.aspp_rates and model.backbone.output_stride as it was trained); an ASPP "
        "trained with a fixed pool_kernel_size is imported into our global image pooling"
    )
    return head, note


def read(prefix):
    """A Model Garden TF2 object checkpoint as `SourceWeights`.

    Variables are read lazily (`tf.train.load_checkpoint(prefix).get_tensor`), only those
    that go into our layers. Optimizer slots and variables, the step and save counters and an
    ImageNet classifier are listed in `unused`.

    Args:
        prefix: the checkpoint prefix (".../ckpt-62400"; `weights.read` also takes its
            `.index` file or its directory).

    Returns:
        `SourceWeights` with the backbone in `layers` and, for a DeepLabV3 task checkpoint,
        the ASPP and logits conv in `head`.

    Raises:
        WeightsError: not a TF2 object checkpoint, or a layout this reader refuses (see the
            module docstring); the message names the tensor.
    """
    prefix = str(prefix)
    reader, shapes = open_checkpoint(prefix)
    if _OBJECT_GRAPH not in shapes:
        raise WeightsError(
            f"{prefix}: a name-based (TF1) checkpoint, not a TF2 object checkpoint: read it with "
            "format='slim'"
        )
    shapes = {name: shape for name, shape in shapes.items() if name != _OBJECT_GRAPH}
    tensors = Tensors(prefix, shapes, getter=reader.get_tensor)

    root = _backbone_prefix(tensors)
    layers, stem, stem_width, first = _stem(tensors, root)
    stages = _stages(tensors, _blocks(tensors, root, first))
    for stage, blocks in zip(STAGE_NAMES, stages):
        for j, block in enumerate(blocks):
            unit = f"{stage}_unit{j + 1}"
            if j == 0:
                layers[f"{unit}_shortcut"] = _conv_bn(
                    tensors, f"{block}_shortcut/", f"{block}_norm0/", f"{unit} shortcut")
            for k in (1, 2, 3):
                layers[f"{unit}_conv{k}"] = _conv_bn(
                    tensors, f"{block}_conv{k}/", f"{block}_norm{k}/", f"{unit} conv{k}")

    notes = [
        f"Model Garden object checkpoint, backbone under {root!r}",
        f"BN epsilon {MODEL_GARDEN_BN_EPSILON} assumed (Model Garden's default norm_epsilon; "
        "checkpoints do not store it), folded into the backbone's norm_epsilon",
        "the activation is not stored: ours is ReLU (Model Garden's default); its Pascal and "
        "Cityscapes DeepLabV3 experiments train with swish (norm_activation.activation), "
        "whose weights load but compute something else here",
    ]
    head = {}
    if root.endswith("backbone/"):
        head, note = _deeplabv3_head(tensors, root[: -len("backbone/")])
        if note:
            notes.append(note)

    # Every variable of the backbone (and of the decoder and head, for a whole model) went
    # somewhere: one left over is a layer ours does not have.
    owned = (root,) + ((root[: -len("backbone/")] + "decoder/",
                        root[: -len("backbone/")] + "head/") if head else ())
    left = [n for n in tensors.untaken() if _is_variable(n) and n.startswith(owned)]
    if left:
        raise WeightsError(
            f"{prefix}: tensor {left[0]!r} {list(tensors.shape(left[0]))} has no layer here "
            f"(and {len(left) - 1} more): not a Model Garden ResNet"
            + (" DeepLabV3" if head else "") + " laid out as this reader knows"
        )

    widths = tuple(int(layers[f"{s}_unit1_conv2"].kernel.shape[-1]) for s in STAGE_NAMES)
    channels = tuple(int(layers[f"{s}_unit1_conv3"].kernel.shape[-1]) for s in STAGE_NAMES)
    conv2 = layers["res2_unit1_conv2"].kernel.shape
    architecture = Architecture(
        stage_depths=tuple(len(blocks) for blocks in stages),
        stage_widths=widths,
        stage_channels=channels,
        stem=stem,
        stem_width=stem_width,
        groups=max(1, int(layers["res2_unit1_conv1"].kernel.shape[-1]) // int(conv2[2])),
        stride_in_1x1=False,  # BottleneckBlock strides _conv2, the 3x3
        stride_unit="first",  # _block_group strides the first block of a stage
        preprocessing=("torch",),
    )
    return SourceWeights(
        format="model_garden",
        path=prefix,
        architecture=architecture,
        layers=layers,
        tensor_count=len(tensors),
        unused=tensors.untaken(),
        head=head,
        notes=notes,
    )
