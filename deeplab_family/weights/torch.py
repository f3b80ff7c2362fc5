"""PyTorch ResNet / ResNeXt state dicts saved as `.safetensors`: torchvision, timm, mmseg/mmcv.

Read with the safetensors package's NumPy API (`safe_open(path, framework="np")`), lazily:
only the tensors a layer of ours takes are read, never torch. A pickled `.pth` is refused by
`detect.py` with the one-line conversion to run where torch is installed.

Names, per source (a state dict stores no architecture; it follows from the names and shapes):

- the units, alike in all three: `layer{1..4}.{j}.conv{1,2,3}.weight` (torch's OIHW), each
  followed by `bn{1,2,3}.{weight,bias,running_mean,running_var,num_batches_tracked}`, and on a
  stage's first unit `downsample.0.weight` (a 1x1 conv, strided with the unit) +
  `downsample.1.*` (its BN): torchvision/timm `Bottleneck`, mmseg/mmcv `Bottleneck` (whose
  norm layers are named `bn1..bn3` as well);
- the stem, which tells the family apart:
  - torchvision / timm `resnet*`, `resnext*` (and mmseg's plain `ResNet`): `conv1.weight` (7x7/2)
    and `bn1.*`;
  - timm's deep stem (`gluon_resnet*_v1s`, `*_v1c`, `resnet*c`; timm resnet.py builds `conv1` as
    `Sequential(conv, bn, relu, conv, bn, relu, conv)` and keeps `bn1` for the last conv):
    `conv1.0.weight`, `conv1.1.*`, `conv1.3.weight`, `conv1.4.*`, `conv1.6.weight`, `bn1.*`;
    widths w, w, 2w (64-64-128 for gluon's v1s, 32-32-64 for v1c);
  - mmseg/mmcv `ResNetV1c` (`deep_stem=True`: `stem = Sequential(conv, bn, relu) x 3`):
    `stem.0.weight`, `stem.1.*`, `stem.3.weight`, `stem.4.*`, `stem.6.weight`, `stem.7.*`, widths
    32-32-64 by default (`stem_channels=64`).

One prefix common to the backbone's names is stripped: any run of "module." (DataParallel),
"model.", "backbone." (mmseg segmentor checkpoints, whose `decode_head.*` and
`auxiliary_head.*` are then unused) and "encoder." (see `state_dict_prefix`).

Not read, listed as unused: the classifier `fc.*`, every `num_batches_tracked` counter, and
whatever is outside the prefix. Refused with a `WeightsError` naming the tensor, as our
backbone would compute a different function: ResNet-D's "avg_down" shortcut (timm `*d`,
mmseg `ResNetV1d`: `downsample.0` is an AvgPool, so `downsample.1.weight` is the conv),
basic-block nets (resnet18/34: no `conv3`), SE units (timm `se.fc1`, `se_module.*`) and any
other tensor inside a unit (attention, deformable convs).

Architecture: stage depths from the unit counts, widths from the `conv2` out channels,
channels from `conv3`, groups = width / `conv2.weight.shape[1]`, the stem from its tensors.
The stride sits on the 3x3 conv of a stage's first unit: torchvision's and timm's "v1.5"
`Bottleneck` and mmseg's default `style="pytorch"` (every mmseg segmentation config). mmseg's
`style="caffe"` puts it on the first 1x1 and leaves every weight the same shape, so such a
file cannot be told apart: it is read as `stride_in_1x1=False` like the others, and a note
says so. The BN epsilon is PyTorch's
`BatchNorm2d` default 1e-5, which a state dict does not store. Inputs: "torch" (RGB
mean/std), the normalisation of all three libraries' ImageNet training.
"""

import re
import struct

import numpy as np

from deeplab_family.weights.detect import safetensors_header
from deeplab_family.weights.source import (
    Architecture,
    ConvBN,
    SourceWeights,
    Tensors,
    WeightsError,
)

# torch.nn.BatchNorm2d(eps=1e-5) by default (timm, torchvision, mmcv's BN / SyncBN alike).
TORCH_BN_EPSILON = 1e-5
# The wrappers whose names prefix a backbone's: DataParallel ("module."), a training module's
# attribute ("model."), mmseg's EncoderDecoder ("backbone."), encoder-decoder repos ("encoder.").
PREFIX_PARTS = ("module.", "model.", "backbone.", "encoder.")
_ANCHOR = "layer1.0.conv1.weight"  # every bottleneck ResNet of the three has it
_BN = ("weight", "bias", "running_mean", "running_var")
_UNIT = re.compile(r"^layer(\d+)\.(\d+)\.(.+)$")
# Inside a unit: conv{1,2,3} (with an optional bias, folded) + bn{1,2,3}, downsample.0/1.
_UNIT_TENSOR = re.compile(
    r"^(conv[123]\.(weight|bias)|bn[123]\.(weight|bias|running_mean|running_var|"
    r"num_batches_tracked)|downsample\.0\.(weight|bias)|downsample\.1\.(weight|bias|"
    r"running_mean|running_var|num_batches_tracked))$"
)
# The stems: family -> its (conv, bn) pairs, in order: our stem_conv1, stem_conv2, ...
_STEMS = {
    "standard": [("conv1", "bn1")],
    "timm_deep": [("conv1.0", "conv1.1"), ("conv1.3", "conv1.4"), ("conv1.6", "bn1")],
    "mmseg_v1c": [("stem.0", "stem.1"), ("stem.3", "stem.4"), ("stem.6", "stem.7")],
}
_FAMILIES = {
    "standard": "torchvision/timm ResNet (7x7 stem conv1/bn1; also mmseg's plain ResNet)",
    "timm_deep": "timm deep stem (conv1.0/conv1.3/conv1.6 + bn1: gluon v1s/v1c, resnet*c)",
    "mmseg_v1c": "mmseg/mmcv ResNetV1c (deep stem stem.0..stem.7)",
}


def state_dict_prefix(names):
    """The prefix to strip from a state dict's names: the one before `layer1.0.conv1.weight`.

    It must be empty or a run of `PREFIX_PARTS`; raises `ValueError` when no name ends in
    `layer1.0.conv1.weight` under such a prefix, or when several prefixes do.

    >>> state_dict_prefix(["module.backbone.conv1.weight", "module.backbone.layer1.0.conv1.weight",
    ...                    "module.decode_head.conv_seg.weight"])
    'module.backbone.'
    >>> state_dict_prefix(["conv1.weight", "layer1.0.conv1.weight", "fc.weight"])
    ''
    """
    found = sorted({n[: -len(_ANCHOR)] for n in names if n.endswith(_ANCHOR)})
    allowed = re.compile("^(" + "|".join(re.escape(p) for p in PREFIX_PARTS) + ")*$")
    usable = [p for p in found if allowed.match(p)]
    if len(usable) == 1:
        return usable[0]
    if len(usable) > 1:
        raise ValueError(
            f"several ResNets in one file, under the prefixes {usable}: give a state dict of "
            "one backbone"
        )
    if found:
        raise ValueError(
            f"the ResNet's tensors are under the prefix {found[0]!r}, which is not a run of "
            f"{list(PREFIX_PARTS)}: rename them (e.g. strip it) when converting the file"
        )
    raise ValueError(
        f"no tensor {_ANCHOR!r} (with or without a prefix such as 'backbone.' or 'module.'): "
        "not a torchvision, timm or mmseg bottleneck ResNet state dict"
    )


def _open(path):
    """(safe_open handle, header without "__metadata__"); `WeightsError` for a bad file."""
    from safetensors import safe_open

    try:
        handle = safe_open(path, framework="np")
        header = safetensors_header(path)
    except Exception as e:  # a truncated or corrupt header, or data not covering the tensors
        raise WeightsError(
            f"{path}: not a readable safetensors file ({e}); it is truncated or corrupt: "
            "download or convert it again"
        ) from None
    header.pop("__metadata__", None)
    return handle, header


def _bfloat16(path, header, name):
    """A BF16 tensor as float32, from its bytes (NumPy has no bfloat16; safetensors' NumPy API
    refuses it): bfloat16 is the top half of a float32."""
    entry = header[name]
    begin, end = entry["data_offsets"]
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + size + begin)
        raw = f.read(end - begin)
    if len(raw) != end - begin:
        raise ValueError(f"{end - begin} bytes expected, {len(raw)} read")
    bits = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
    return bits.view(np.float32).reshape(entry["shape"])


class _Prefixed:
    """`Tensors` seen through a prefix: `take("layer1.0.conv1.weight")` reads
    "<prefix>layer1.0.conv1.weight", and errors name the file's own tensor."""

    def __init__(self, tensors, prefix):
        self.tensors, self.prefix = tensors, prefix
        self.path = tensors.path

    def __contains__(self, name):
        return self.prefix + name in self.tensors

    def full(self, name):
        return self.prefix + name

    def shape(self, name):
        return self.tensors.shape(self.prefix + name)

    def take(self, name, what=""):
        return self.tensors.take(self.prefix + name, what)

    def local_names(self):
        n = len(self.prefix)
        return [name[n:] for name in self.tensors.names() if name.startswith(self.prefix)]


def _conv_bn(t, conv, bn, ours):
    """The `ConvBN` of torch's `conv` (OIHW, optional bias) followed by BatchNorm2d `bn`."""
    what = f"the conv of our {ours}"
    kernel = t.take(f"{conv}.weight", what)
    if kernel.ndim != 4:
        raise WeightsError(
            f"{t.path}: tensor {t.full(conv + '.weight')!r} has shape {kernel.shape}; a conv "
            "kernel is (out, in / groups, kh, kw)"
        )
    names = [t.full(f"{conv}.weight")]
    bias = None
    if f"{conv}.bias" in t:  # none of the three libraries' ResNets has one; folded if there
        bias = t.take(f"{conv}.bias", what)
        names.append(t.full(f"{conv}.bias"))
    gamma, beta, mean, variance = (t.take(f"{bn}.{k}", f"the BN of our {ours}") for k in _BN)
    names += [t.full(f"{bn}.{k}") for k in _BN]
    return ConvBN(
        # torch (out, in / groups, kh, kw) -> Keras (kh, kw, in / groups, out), grouped or not.
        kernel=np.transpose(kernel, (2, 3, 1, 0)),
        gamma=gamma, beta=beta, mean=mean, variance=variance,
        epsilon=TORCH_BN_EPSILON, bias=bias, tensors=tuple(names),
    )


def _family(t):
    if "stem.0.weight" in t:
        return "mmseg_v1c"
    if "conv1.0.weight" in t:
        return "timm_deep"
    if "conv1.weight" in t:
        return "standard"
    raise WeightsError(
        f"{t.path}: tensor {t.full('conv1.weight')!r} is missing (and no deep stem "
        f"{t.full('conv1.0.weight')!r} or {t.full('stem.0.weight')!r}): no ResNet stem"
    )


def _units(t):
    """{stage 1..4: number of units}, after refusing units this backbone cannot compute."""
    units, seen = {}, {}
    for name in t.local_names():
        m = _UNIT.match(name)
        if m:
            stage, unit, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            seen.setdefault((stage, unit), []).append(rest)
    for (stage, unit), rests in sorted(seen.items()):
        where = f"layer{stage}.{unit}"
        if stage not in (1, 2, 3, 4):
            raise WeightsError(
                f"{t.path}: tensor {t.full(where + '.' + rests[0])!r}: a ResNet has layer1.."
                "layer4 only"
            )
        if "conv2.weight" in rests and "conv3.weight" not in rests:
            raise WeightsError(
                f"{t.path}: unit {t.full(where)!r} has conv1 and conv2 but no "
                f"{t.full(where + '.conv3.weight')!r}: a basic-block ResNet (resnet18/34), "
                "which is not supported; this backbone is built of bottleneck units "
                "(ResNet-50 and deeper)"
            )
        if "downsample.1.weight" in rests and len(t.shape(f"{where}.downsample.1.weight")) == 4:
            raise WeightsError(
                f"{t.path}: tensor {t.full(where + '.downsample.1.weight')!r} is a conv "
                f"{t.shape(where + '.downsample.1.weight')}, so downsample.0 is an AvgPool: the "
                "\"avg_down\" shortcut of ResNet-D (timm resnet*d, mmseg ResNetV1d) is not "
                "supported (our projection shortcut is a strided 1x1 conv); use a V1c/v1s or "
                "standard file"
            )
        se = [r for r in rests if r.startswith(("se.", "se_module.", "attn."))]
        if se:
            raise WeightsError(
                f"{t.path}: tensor {t.full(where + '.' + se[0])!r}: SE / attention units "
                "(timm seresnet*, seresnext*, legacy senet) are not supported by this reader"
            )
        other = [r for r in rests if not _UNIT_TENSOR.match(r)]
        if other:
            raise WeightsError(
                f"{t.path}: tensor {t.full(where + '.' + other[0])!r} is not part of a "
                "bottleneck unit (conv1..3, bn1..3, downsample.0/1): a ResNet variant this "
                "reader does not support (deformable convs, attention, ...)"
            )
        units[stage] = max(units.get(stage, 0), unit + 1)
    for stage in (1, 2, 3, 4):
        if stage not in units:
            raise WeightsError(
                f"{t.path}: tensor {t.full(f'layer{stage}.0.conv1.weight')!r} is missing (no "
                f"unit of layer{stage}: not a 4-stage ResNet, or a partial state dict)"
            )
    return units


def _stem_names_known(t, family):
    """Refuses an unexpected tensor in the stem (e.g. a tiered or 4-conv stem)."""
    convs = _STEMS[family]
    known = {f"{c}.{k}" for c, _ in convs for k in ("weight", "bias")}
    known |= {f"{b}.{k}" for _, b in convs for k in _BN + ("num_batches_tracked",)}
    scopes = ("stem.",) if family == "mmseg_v1c" else ("conv1.", "bn1.")
    for name in t.local_names():
        if name.startswith(scopes) and name not in known:
            raise WeightsError(
                f"{t.path}: tensor {t.full(name)!r} is not part of the "
                f"{_FAMILIES[family]} stem this reader knows ({', '.join(c for c, _ in convs)})"
            )


def read(path):
    """A torchvision / timm / mmseg ResNet or ResNeXt `.safetensors` state dict as
    `SourceWeights` (format "torch").

    Args:
        path: the `.safetensors` file (a whole mmseg segmentor checkpoint is fine: its
            `backbone.` tensors are read, the heads' left unused).

    Raises:
        WeightsError: the file is truncated or corrupt, lacks a tensor, or holds a ResNet
            variant our backbone does not compute (avg_down shortcut, basic blocks, SE);
            the message names the file and the tensor.

    Example:

    >>> from deeplab_family.weights import inspect
    >>> inspect("gluon_resnet101_v1s.safetensors")["backbone"]  # doctest: +SKIP
    {'depth': 101, 'stem': 'deep', 'stem_width': 64, 'stride_in_1x1': False,
     'stride_unit': 'first', 'preprocessing': 'torch'}
    """
    path = str(path)
    handle, header = _open(path)
    with handle:

        def get(name):
            if header[name].get("dtype") == "BF16":
                return _bfloat16(path, header, name)
            return handle.get_tensor(name)

        tensors = Tensors(path, {n: tuple(e["shape"]) for n, e in header.items()}, getter=get)
        try:
            prefix = state_dict_prefix(tensors.names())
        except ValueError as e:
            raise WeightsError(f"{path}: {e}") from None
        t = _Prefixed(tensors, prefix)
        family = _family(t)
        _stem_names_known(t, family)
        units = _units(t)

        layers = {}
        for k, (conv, bn) in enumerate(_STEMS[family], start=1):
            layers[f"stem_conv{k}"] = _conv_bn(t, conv, bn, f"stem_conv{k}")
        stem_widths = [int(layers[f"stem_conv{k}"].kernel.shape[-1])
                       for k in range(1, len(_STEMS[family]) + 1)]
        stem_width = stem_widths[0]
        if family != "standard" and stem_widths != [stem_width, stem_width, 2 * stem_width]:
            first, _ = _STEMS[family][0]
            raise WeightsError(
                f"{path}: the deep stem {t.full(first)}.. has widths {stem_widths}; ours is "
                f"w, w, 2w ({[stem_width, stem_width, 2 * stem_width]}); a tiered stem "
                "(timm resnet*t) is not supported"
            )

        groups = None
        for stage in (1, 2, 3, 4):
            for j in range(units[stage]):
                src, ours = f"layer{stage}.{j}", f"res{stage + 1}_unit{j + 1}"
                # torch projects where the unit strides or changes depth, as our backbone
                # does on a standard net (a file that differs fails in `backbone_assignments`).
                if f"{src}.downsample.0.weight" in t:
                    layers[f"{ours}_shortcut"] = _conv_bn(
                        t, f"{src}.downsample.0", f"{src}.downsample.1", f"{ours}_shortcut"
                    )
                for i in (1, 2, 3):
                    layers[f"{ours}_conv{i}"] = _conv_bn(
                        t, f"{src}.conv{i}", f"{src}.bn{i}", f"{ours}_conv{i}"
                    )
                # conv2 (out, width / groups, 3, 3); the width is conv1's out channels.
                kernel = layers[f"{ours}_conv2"].kernel
                width, per_group = int(kernel.shape[-1]), int(kernel.shape[2])
                unit_groups = width // per_group if width % per_group == 0 else None
                if unit_groups is None or (groups is not None and unit_groups != groups):
                    raise WeightsError(
                        f"{path}: tensor {t.full(src + '.conv2.weight')!r} has shape "
                        f"{t.shape(src + '.conv2.weight')}: {width} channels in groups of "
                        f"{per_group}, where the units before have {groups} groups"
                    )
                groups = unit_groups

    depths = tuple(units[s] for s in (1, 2, 3, 4))
    widths = tuple(int(layers[f"res{s + 1}_unit1_conv2"].kernel.shape[-1]) for s in (1, 2, 3, 4))
    channels = tuple(int(layers[f"res{s + 1}_unit1_conv3"].kernel.shape[-1])
                     for s in (1, 2, 3, 4))
    architecture = Architecture(
        stage_depths=depths,
        stage_widths=widths,
        stage_channels=channels,
        stem="standard" if family == "standard" else "deep",
        stem_width=stem_width,
        groups=groups,
        # torchvision / timm Bottleneck and mmseg style="pytorch" stride the 3x3 (see above).
        stride_in_1x1=False,
        stride_unit="first",
        preprocessing=("torch",),
    )
    unused = tensors.untaken()
    notes = [
        f"family: {_FAMILIES[family]}",
        f"BN epsilon {TORCH_BN_EPSILON} assumed (torch BatchNorm2d's default; state dicts do "
        "not store it)",
        "stride on the 3x3 conv assumed (torchvision/timm v1.5, mmseg style='pytorch'); an "
        "mmseg style='caffe' file has the same tensors but strides the first 1x1, which "
        "nothing in it tells: it would load and compute a different function",
    ]
    if prefix:
        notes.append(f"prefix {prefix!r} stripped from the backbone's tensor names")
    if unused:
        notes.append(
            f"{len(unused)} tensors unused (the classifier fc, num_batches_tracked counters, "
            "tensors outside the backbone such as decode heads)"
        )
    return SourceWeights(
        format="torch",
        path=path,
        architecture=architecture,
        layers=layers,
        tensor_count=len(tensors),
        unused=unused,
        notes=notes,
    )
