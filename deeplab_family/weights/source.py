"""What every weight importer shares: a file's tensors in our layer names, and applying them.

A format's reader (`keras_applications.py`, `model_garden.py`, `slim.py`, `torch.py`,
`native.py`) turns a file into `SourceWeights`: the `Architecture` the file implies, and one
`ConvBN` (conv kernel, optional bias, the BN after it) per layer of ours.
`backbone_assignments` then checks that architecture against the backbone's config, computes
every new value and checks its shape, and only then does `assign` write them: a file that
does not fit changes nothing.

Conv biases and BN epsilons are folded into our bias-free conv + BN, exactly for inference:

    BN_src(conv(x) + b) = gamma (conv(x) + b - mean) / sqrt(var + eps_src) + beta
                        = gamma (conv(x) - mean') / sqrt(var' + eps_dst) + beta,
    mean' = mean - b,  var' = var + eps_src - eps_dst,

so `moving_mean -= b` and `moving_variance += eps_src - eps_dst`, gamma and beta unchanged. If
that variance would be negative (only when `norm_epsilon` exceeds the source epsilon by more
than a channel's variance), the channel keeps variance 0 and its gamma is rescaled by
`sqrt(eps_dst / (var + eps_src))` instead, which is exact for inference too.

This module imports neither Keras nor TensorFlow.
"""

import dataclasses

import numpy as np

from deeplab_family.backbones.config import STANDARD_STAGE_DEPTHS

# The formats `import_weights` reads; "auto" detects one from the file (`detect.py`).
FORMATS = ("keras_applications", "model_garden", "slim", "torch", "deeplab_family")


class WeightsError(ValueError):
    """A weights file that cannot be read, or does not fit the model: the message names the
    file and the tensor or config key."""


@dataclasses.dataclass
class ConvBN:
    """One conv and the BN after it, in the source's numbers.

    `kernel` is (kh, kw, in / groups, out), Keras' layout (readers transpose theirs); `bias` is
    the conv bias or None; `tensors` the source names read, for the report.
    """

    kernel: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    epsilon: float
    bias: np.ndarray | None = None
    tensors: tuple = ()


@dataclasses.dataclass
class Dense:
    """A conv with a bias and no BN (e.g. a logits conv), kernel in Keras' layout."""

    kernel: np.ndarray
    bias: np.ndarray | None
    tensors: tuple = ()


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What a file says about the backbone, in `BackboneConfig`'s terms.

    `stride_in_1x1` is None when the file cannot tell (no weight depends on it) and the format
    has no convention; `preprocessing` lists the normalisations the weights accept, the
    source's own first.
    """

    stage_depths: tuple
    stage_widths: tuple
    stage_channels: tuple
    stem: str
    stem_width: int
    groups: int
    stride_in_1x1: bool | None
    stride_unit: str
    preprocessing: tuple
    se: bool = False

    @property
    def depth(self):
        by_depths = {v: k for k, v in STANDARD_STAGE_DEPTHS.items()}
        return by_depths.get(tuple(self.stage_depths))

    def backbone_fields(self):
        """The `model.backbone` keys that build a backbone this file loads into."""
        fields = {}
        if self.depth is not None:
            fields["depth"] = self.depth
        else:
            fields["stage_depths"] = list(self.stage_depths)
        fields["stem"] = self.stem
        fields["stem_width"] = self.stem_width
        if self.groups != 1:
            fields["groups"] = self.groups
        per_group = self.stage_widths[0] // self.groups
        if list(self.stage_widths) == [self.groups * per_group * 2**i for i in range(4)]:
            if per_group != 64:
                fields["width_per_group"] = per_group
        else:
            fields["stage_widths"] = list(self.stage_widths)
        if tuple(self.stage_channels) != (256, 512, 1024, 2048):
            fields["stage_channels"] = list(self.stage_channels)
        if self.stride_in_1x1 is not None:
            fields["stride_in_1x1"] = self.stride_in_1x1
        fields["stride_unit"] = self.stride_unit
        fields["preprocessing"] = self.preprocessing[0]
        return fields

    def describe(self):
        """One line: depth, stem, groups x width, stride placement, normalisation."""
        depth = f"ResNet-{self.depth}" if self.depth else f"stage depths {list(self.stage_depths)}"
        if self.groups > 1:
            depth = depth.replace("ResNet", "ResNeXt") + (
                f" {self.groups}x{self.stage_widths[0] // self.groups}d"
            )
        stem = (
            f"deep stem {self.stem_width}-{self.stem_width}-{2 * self.stem_width}"
            if self.stem == "deep"
            else f"7x7 stem {self.stem_width}"
        )
        where = {True: "1x1", False: "3x3", None: "1x1 or 3x3"}[self.stride_in_1x1]
        unit = "first unit of a stage" if self.stride_unit == "first" else "last unit before it"
        return (
            f"{depth}, {stem}, stride on the {where} of the {unit}"
            + (", SE" if self.se else "")
            + f", normalisation {' or '.join(map(repr, self.preprocessing))}"
        )


@dataclasses.dataclass
class SourceWeights:
    """A weights file read into our names.

    `layers`: our backbone layer name -> `ConvBN`. `head`: for whole-model sources, our model
    layer name -> `ConvBN` or `Dense`. `unused`: source tensors no layer of ours takes (an
    ImageNet classifier, optimizer slots, a step counter).
    """

    format: str
    path: str
    architecture: Architecture
    layers: dict
    tensor_count: int
    unused: list = dataclasses.field(default_factory=list)
    head: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ImportReport:
    """What `import_weights` did.

    Attributes:
        format: the format read ("torch", ...).
        path: the file.
        tensors_imported: how many source tensors went into the model.
        imported: our layers that received weights.
        kept: our layers with weights the file does not have (cascaded blocks, a new head),
            left at their initialisation.
        unused: source tensors left unused.
        normalisation: the input normalisation the weights expect (the backbone's).
        architecture: `Architecture.describe()` of the file.
    """

    format: str
    path: str
    tensors_imported: int
    imported: list
    kept: list
    unused: list
    normalisation: str
    architecture: str

    def summary(self):
        text = (
            f"imported {self.tensors_imported} tensors into {len(self.imported)} layers from "
            f"{self.path} ({self.format}: {self.architecture})"
        )
        if self.kept:
            text += f"; {len(self.kept)} layers kept their initialisation"
        if self.unused:
            text += f"; {len(self.unused)} tensors of the file unused"
        return text


def check_architecture(config, architecture, source):
    """Raises `WeightsError` listing every `model.backbone` key that contradicts the file.

    Args:
        config: the backbone's `BackboneConfig`.
        architecture: the file's `Architecture`.
        source: "<path> (<format>)", for the message.
    """
    wanted = architecture.backbone_fields()
    problems = []

    def differs(key, ours, theirs):
        if ours != theirs:
            problems.append(f"{key}: {wanted.get(key, theirs)} (the file has {theirs}, the "
                            f"config {ours})")

    if tuple(config.stage_depths) != tuple(architecture.stage_depths):
        key = "depth" if architecture.depth else "stage_depths"
        problems.append(
            f"{key}: {wanted[key]} (the file has stage depths {list(architecture.stage_depths)}, "
            f"the config {list(config.stage_depths)})"
        )
    differs("stem", config.stem, architecture.stem)
    differs("stem_width", config.stem_width, architecture.stem_width)
    differs("groups", config.groups, architecture.groups)
    if tuple(config.stage_widths) != tuple(architecture.stage_widths):
        key = "stage_widths" if "stage_widths" in wanted else "width_per_group"
        value = wanted.get(key, architecture.stage_widths[0] // architecture.groups)
        problems.append(
            f"{key}: {value} (the file has bottleneck widths {list(architecture.stage_widths)}, "
            f"the config {list(config.stage_widths)})"
        )
    if tuple(config.stage_channels) != tuple(architecture.stage_channels):
        problems.append(
            f"stage_channels: {list(architecture.stage_channels)} (the config has "
            f"{list(config.stage_channels)})"
        )
    if architecture.stride_in_1x1 is not None:
        differs("stride_in_1x1", config.stride_in_1x1, architecture.stride_in_1x1)
    differs("stride_unit", config.stride_unit, architecture.stride_unit)
    if (config.se_ratio is not None) != architecture.se:
        problems.append(
            "se_ratio: " + ("1/16 as the file's units have SE" if architecture.se
                            else "null (the file's units have no SE)")
        )
    if config.preprocessing not in architecture.preprocessing:
        problems.append(
            f"preprocessing: {architecture.preprocessing[0]} (the weights were trained on "
            f"{' or '.join(map(repr, architecture.preprocessing))} inputs, the config has "
            f"{config.preprocessing!r})"
        )
    if problems:
        raise WeightsError(
            f"{source} does not fit this backbone; set model.backbone."
            + "; model.backbone.".join(problems)
        )


def folded(values, epsilon):
    """(kernel, gamma, beta, moving mean, moving variance) for our bias-free conv + BN with
    `epsilon`, from a `ConvBN` (see the module docstring), in float64."""
    gamma, beta, mean, var = (
        np.asarray(v, np.float64) for v in (values.gamma, values.beta, values.mean,
                                            values.variance)
    )
    if values.bias is not None:
        mean = mean - np.asarray(values.bias, np.float64)
    var = var + float(values.epsilon) - float(epsilon)
    negative = var < 0
    if np.any(negative):
        gamma = np.where(
            negative, gamma * np.sqrt(epsilon / np.maximum(var + epsilon, 1e-30)), gamma
        )
        var = np.where(negative, 0.0, var)
    return np.asarray(values.kernel, np.float64), gamma, beta, mean, var


def conv_norm_assignments(layer, values, source, name):
    """[(variable, float32 value)] for a `ConvNormAct` `layer` from a `ConvBN`, shapes checked."""
    kernel, gamma, beta, mean, var = folded(values, layer.norm.epsilon)
    pairs = [
        (layer.conv.kernel, kernel),
        (layer.norm.gamma, gamma),
        (layer.norm.beta, beta),
        (layer.norm.moving_mean, mean),
        (layer.norm.moving_variance, var),
    ]
    return _checked(pairs, source, name, values.tensors)


def dense_assignments(layer, values, source, name):
    """[(variable, value)] for a conv with a bias (`layer.kernel`, `layer.bias`)."""
    pairs = [(layer.kernel, np.asarray(values.kernel))]
    if values.bias is not None:
        pairs.append((layer.bias, np.asarray(values.bias)))
    return _checked(pairs, source, name, values.tensors)


def _checked(pairs, source, name, tensors):
    out = []
    for variable, value in pairs:
        if tuple(variable.shape) != tuple(value.shape):
            raise WeightsError(
                f"{source}: {', '.join(tensors) or 'a tensor'} has shape {tuple(value.shape)} "
                f"where layer {name!r} needs {tuple(variable.shape)} ({variable.path})"
            )
        if not np.all(np.isfinite(value)):
            raise WeightsError(
                f"{source}: {', '.join(tensors)} holds NaN or infinite values (layer {name!r})"
            )
        out.append((variable, value.astype("float32")))
    return out


def backbone_assignments(backbone, weights):
    """Checks `weights` against `backbone` and returns ([(variable, value)], imported, kept).

    Every weighted layer of the backbone gets its values from the file except cascaded blocks
    (block5..block7: no ImageNet net has them), which keep their initialisation; a weighted
    layer the file lacks otherwise is an error, as is a file layer the backbone lacks.
    """
    source = f"{weights.path} ({weights.format})"
    check_architecture(backbone.backbone_config, weights.architecture, source)
    assignments, imported, kept = [], [], []
    weighted = [layer for layer in backbone.layers if layer.weights]
    names = {layer.name for layer in weighted}
    extra = sorted(set(weights.layers) - names)
    if extra:
        raise WeightsError(f"{source}: the backbone has no layer {extra[0]!r} for the file's "
                           f"{', '.join(weights.layers[extra[0]].tensors)}")
    for layer in weighted:
        values = weights.layers.get(layer.name)
        if values is None:
            if layer.name.startswith("block"):
                kept.append(layer.name)
                continue
            raise WeightsError(f"{source}: the file has no weights for layer {layer.name!r}")
        assignments += conv_norm_assignments(layer, values, source, layer.name)
        imported.append(layer.name)
    return assignments, imported, kept


def assign(assignments):
    """Assigns every (variable, value): called only once all of them were computed and checked."""
    for variable, value in assignments:
        variable.assign(value)


def report(weights, imported, kept, normalisation, with_head=True):
    """The `ImportReport` of an import of `weights`; `with_head=False`: its head tensors (a
    whole-model file into a backbone) count as unused."""
    head = [name for values in weights.head.values() for name in values.tensors]
    tensors = sum(len(v.tensors) for v in weights.layers.values())
    return ImportReport(
        format=weights.format,
        path=str(weights.path),
        tensors_imported=tensors + (len(head) if with_head else 0),
        imported=imported,
        kept=kept,
        unused=list(weights.unused) + ([] if with_head else head),
        normalisation=normalisation,
        architecture=weights.architecture.describe(),
    )


class Tensors:
    """A name -> array mapping read from a file, that remembers what was taken.

    `take(name)` raises a `WeightsError` naming the file and the missing tensor; `untaken()`
    lists what no layer used.
    """

    def __init__(self, path, arrays, getter=None):
        self.path = str(path)
        self._arrays = arrays  # name -> array, or name -> shape when `getter` reads lazily
        self._getter = getter
        self._taken = set()

    def __contains__(self, name):
        return name in self._arrays

    def __len__(self):
        return len(self._arrays)

    def names(self):
        return list(self._arrays)

    def shape(self, name):
        value = self._arrays[name]
        return tuple(value) if self._getter else tuple(np.shape(value))

    def take(self, name, what=""):
        if name not in self._arrays:
            raise WeightsError(
                f"{self.path}: tensor {name!r} is missing" + (f" ({what})" if what else "")
            )
        self._taken.add(name)
        if self._getter is not None:
            try:
                return np.asarray(self._getter(name))
            except Exception as e:  # a truncated data file fails here, on the first read
                raise WeightsError(f"{self.path}: cannot read tensor {name!r}: {e}") from None
        return np.asarray(self._arrays[name])

    def untaken(self):
        return sorted(n for n in self._arrays if n not in self._taken)
