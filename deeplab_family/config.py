"""The experiment config: YAML -> typed dataclasses, `--set section.key=value` overrides.

One YAML file per experiment (see `train_configs/`), loaded with `yaml.safe_load` (plus floats
written as `1e-5`, see `YamlLoader`):

```yaml
model:        {name: deeplabv3, num_classes: 21, backbone: {...}, head: {...}}
train_data:   {file_pattern: ..., crop_size: 513, batch_size: 16, ...}   # data.InputConfig
eval_data:    {file_pattern: ..., batch_size: 1}                         # data.InputConfig
training:     {steps: 30000, learning_rate: 0.007, ...}                  # TrainingConfig
runtime:      {strategy: mirrored, ...}                                  # RuntimeConfig
evaluation:   {output_stride: 8, scales: [1.0], flip: false, ...}        # EvaluationConfig
inference:    {window: {size: [1024, 1024], stride: [683, 683]}}         # InferenceConfig
export:       {output_stride: 8, tflite_size: [513, 513], ...}           # ExportConfig
```

An unknown key anywhere is an error that names it. The resolved config is written next to the
checkpoints (`<model_dir>/config.yaml`) by `save_config`, and `evaluate` / `export` read it
back from there.

Example:

>>> from deeplab_family.config import load_config
>>> config = load_config("train_configs/tiny_deeplabv3_os16_synthetic.yaml",
...                      overrides=["training.steps=100", "runtime.cpu_replicas=2"])
>>> config.training.steps
100
"""

import dataclasses
import os
import re
from typing import Dict, Optional, Tuple

import yaml

from deeplab_family import _files, _validation, defaults
from deeplab_family._validation import require
from deeplab_family.backbones.config import zero_pixel
from deeplab_family.data.config import InputConfig
from deeplab_family.models.config import ModelConfig
from deeplab_family.models.registry import dataclass_from_dict

STRATEGIES = ("mirrored", "multi_worker", "tpu", "one_device")
PRECISIONS = (None, "float32", "mixed_bfloat16", "mixed_float16")
INT8_IO = (None, "uint8", "int8")
INFERENCE_PRECISIONS = ("float32", "bfloat16")
TFLITE_OUTPUTS = ("classes", "logits", "probabilities")
CONFIG_FILENAME = "config.yaml"


def _strides(strides):
    """`8, 16 or 32`."""
    return ", ".join(map(str, strides[:-1])) + f" or {strides[-1]}"


def _scales(name, values):
    scales = tuple(float(s) for s in values)
    require(scales and all(s > 0 for s in scales),
            f"{name} must be positive numbers. Received: {name}={values!r}")
    return scales


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """The optimisation protocol (DeepLabv3 Sec 4.1; PAN Sec 4; ExFuse Sec 3).

    Args:
        steps: total training steps (30K for DeepLabv3 on train_aug).
        learning_rate: base learning rate of the poly schedule (0.007 for DeepLabv3 stage 1).
        poly_power: `lr * (1 - step / steps) ** power` (0.9).
        end_learning_rate: floor of the poly schedule.
        warmup_steps: linear warm-up from 0 to `learning_rate` (0 = none).
        momentum: SGD momentum (0.9).
        weight_decay: `wd * 1/2 * ||w||^2` on conv kernels only, research/deeplab's definition
            (1e-4 for ResNet in DeepLab and PAN).
        aux_loss_weights: weight of each `aux_*` output's loss, e.g. {aux_ecre: 1.0}; an aux
            output without a weight is an error at training time.
        freeze_bn: keep BN statistics and affine parameters fixed (DeepLabv3 stage 2 at OS8).
        sync_bn: synchronise BN across replicas; None = on whenever there is more than one.
        mixed_precision: None/"float32", "mixed_bfloat16" or "mixed_float16" (loss scaled).
        jit_compile: XLA-compile each replica's step (one device, or GPUs/TPUs; not several
            logical CPUs).
        checkpoint_every: steps between checkpoints (one is always written at the end).
        keep_checkpoints: checkpoints kept.
        log_every: steps between scalar summaries / progress updates.
        image_summary_every: steps between TensorBoard image summaries (0 = never).
        seed: global seed.
        deterministic: op determinism (slower).
        label_downsampling: DeepLabv3 Table 8's row without "UL": the loss at the stride of
            the logits before their final resize, against the labels downsampled to it
            (nearest), instead of the upsampled logits against the full labels (the default,
            Sec 4.1). See `training/losses.py`.
        init_checkpoint: optional checkpoint (or model dir) whose model weights initialise
            training, e.g. stage 2 from stage 1.
    """

    steps: int = 30000
    learning_rate: float = 0.007
    poly_power: float = 0.9
    end_learning_rate: float = 0.0
    warmup_steps: int = 0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    aux_loss_weights: Dict[str, float] = dataclasses.field(default_factory=dict)
    freeze_bn: bool = False
    sync_bn: Optional[bool] = None
    mixed_precision: Optional[str] = None
    jit_compile: bool = False
    checkpoint_every: int = 1000
    keep_checkpoints: int = 5
    log_every: int = 10
    image_summary_every: int = 500
    seed: int = 0
    deterministic: bool = False
    label_downsampling: bool = False
    init_checkpoint: Optional[str] = None

    def __post_init__(self):
        for name in ("steps", "checkpoint_every", "keep_checkpoints", "log_every"):
            _validation.positive_int(name, getattr(self, name))
        require(self.learning_rate > 0,
                f"learning_rate must be > 0. Received: learning_rate={self.learning_rate!r}")
        require(0 <= self.warmup_steps < self.steps,
                f"warmup_steps must be in [0, steps). Received: warmup_steps={self.warmup_steps!r}")
        require(self.weight_decay >= 0,
                f"weight_decay must be >= 0. Received: weight_decay={self.weight_decay!r}")
        _validation.one_of("mixed_precision", self.mixed_precision, PRECISIONS)
        require(isinstance(self.label_downsampling, bool),
                f"label_downsampling must be true or false. "
                f"Received: label_downsampling={self.label_downsampling!r}")
        object.__setattr__(self, "aux_loss_weights", dict(self.aux_loss_weights or {}))


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where training runs.

    Args:
        strategy: "mirrored" (all local GPUs; on a CPU-only machine `cpu_replicas` logical
            CPUs), "multi_worker" (MultiWorkerMirroredStrategy from TF_CONFIG), "tpu" or
            "one_device".
        cpu_replicas: with "mirrored" and no GPU, split the CPU into this many logical
            devices, one replica each (0 = do not split).
        tpu: TPU name or address for the "tpu" strategy ("" = local).
    """

    strategy: str = "mirrored"
    cpu_replicas: int = 0
    tpu: str = ""

    def __post_init__(self):
        _validation.one_of("strategy", self.strategy, STRATEGIES)
        _validation.positive_int("cpu_replicas", self.cpu_replicas, minimum=0)


@dataclasses.dataclass(frozen=True)
class WindowConfig:
    """Sliding-window inference: the network sees `size` crops taken every `stride` pixels.

    Args:
        size: (height, width) of a window. An image no larger than it is one window.
        stride: (height, width) between window origins, at most `size` (overlap = size -
            stride); None: two thirds of `size`, rounded up (mmseg's Cityscapes setting,
            769 / 513).
    """

    size: Tuple[int, int] = (513, 513)
    stride: Optional[Tuple[int, int]] = None

    def __post_init__(self):
        size = _validation.int_pair("size", self.size)
        object.__setattr__(self, "size", size)
        stride = self.stride
        if stride is None:
            stride = tuple(-(-2 * s // 3) for s in size)
        stride = _validation.int_pair("stride", stride)
        require(all(t <= s for t, s in zip(stride, size)),
                f"stride must not exceed size (windows would leave gaps). "
                f"Received: size={list(size)}, stride={list(stride)}")
        object.__setattr__(self, "stride", stride)


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """How the network is run on an image, wherever it is run (`evaluate`, `export`).

    Args:
        window: None (the whole image at once) or a `WindowConfig` mapping (`{size: [H, W],
            stride: [H, W]}`): sliding-window inference, memory bounded by the window.
    """

    window: Optional[WindowConfig] = None

    def __post_init__(self):
        if self.window is not None:
            object.__setattr__(
                self, "window", dataclass_from_dict(WindowConfig, self.window, "inference.window")
            )


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """How mIoU is measured (DeepLabv3 Sec 4.3: output stride 8, multi-scale, flip).

    Args:
        output_stride: output stride of the evaluated model (weights are shared across
            strides: train at 16, evaluate at 8).
        scales: input scales whose softmax probabilities are averaged (1.0 alone = single
            scale; the paper uses 0.5..1.75).
        flip: also average the left-right flipped input of every scale.
        dataset: None, a built-in dataset spec name (`voc`, `cityscapes`, `ade20k`,
            `coco_voc`) or the path of a spec YAML: the dataset for shards whose manifests
            carry no spec (shards of other tools). The shards' own spec, when they have one,
            is used instead (`data.spec.experiment_spec`).
        precision: "float32" or "bfloat16" (weights cast once, BN folded, float32 logits).
    """

    output_stride: int = 8
    scales: Tuple[float, ...] = (1.0,)
    flip: bool = False
    dataset: Optional[str] = None
    precision: str = "float32"

    def __post_init__(self):
        require(self.output_stride in defaults.OUTPUT_STRIDES,
                f"output_stride must be {_strides(defaults.OUTPUT_STRIDES)}. "
                f"Received: output_stride={self.output_stride!r}")
        object.__setattr__(self, "scales", _scales("scales", self.scales))
        if self.dataset is not None:
            from deeplab_family.data.spec import load_spec

            load_spec(self.dataset)  # a name or file that does not load is an error now
        _validation.one_of("precision", self.precision, INFERENCE_PRECISIONS)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """What `export` writes.

    Args:
        output_stride: output stride baked into the SavedModel (8, as the papers evaluate).
        scales, flip: multi-scale + flip inference baked into the SavedModel.
        tflite_size: fixed (height, width) input of the TFLite models.
        probabilities: also return softmax probabilities from the SavedModel signatures.
        tflite_int8_io: input type of the int8 TFLite model: None keeps a float32 input
            (quantized inside the model), "uint8" or "int8" take quantized pixels (read the
            scale and zero point from the input details; calibration on real images gives
            uint8 scale ~1, zero point 0, i.e. raw pixels).
        representative_samples: images drawn for the int8 calibration (TFLite's guide: about
            100 to 500).
        representative_pattern: TFRecord glob of the calibration images; None = the
            `train_data.file_pattern` of the experiment (then `eval_data`'s).
        window: bake the experiment's `inference.window` (sliding windows) into the
            SavedModel.
        precision: "float32" or "bfloat16": the SavedModel's network in bfloat16 (weights
            cast once, BN folded), float32 scores out.
        tflite_output: where the TFLite graph ends: "classes" (uint8 argmax inside),
            "logits" or "probabilities" (float32 `[1, H, W, C]`, no ARG_MAX, for the GPU and
            NNAPI delegates; `predict` takes the argmax on the host).
    """

    output_stride: int = 8
    scales: Tuple[float, ...] = (1.0,)
    flip: bool = False
    tflite_size: Tuple[int, int] = (513, 513)
    probabilities: bool = False
    tflite_int8_io: str | None = None
    representative_samples: int = 100
    representative_pattern: str | None = None
    window: bool = False
    precision: str = "float32"
    tflite_output: str = "classes"

    def __post_init__(self):
        require(self.output_stride in defaults.EXPORT_OUTPUT_STRIDES,
                f"output_stride must be {_strides(defaults.EXPORT_OUTPUT_STRIDES)}. "
                f"Received: output_stride={self.output_stride!r}")
        object.__setattr__(self, "scales", _scales("scales", self.scales))
        size = _validation.int_tuple("tflite_size", self.tflite_size, length=2, minimum=1)
        object.__setattr__(self, "tflite_size", size)
        _validation.one_of("tflite_int8_io", self.tflite_int8_io, INT8_IO)
        _validation.positive_int("representative_samples", self.representative_samples)
        _validation.boolean("window", self.window)
        _validation.one_of("precision", self.precision, INFERENCE_PRECISIONS)
        _validation.one_of("tflite_output", self.tflite_output, TFLITE_OUTPUTS)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment: model, data, training, runtime, evaluation, export and inference."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train_data: Optional[InputConfig] = None
    eval_data: Optional[InputConfig] = None
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)

    @classmethod
    def from_dict(cls, values):
        values = dict(values or {})
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - allowed)
        require(not unknown, f"unknown section(s) {unknown} in the config. "
                             f"Allowed sections: {sorted(allowed)}")
        model = ModelConfig.from_dict(values.get("model", {}))
        # Images are padded with the pixel that the backbone's normalisation maps to zero,
        # unless a section says otherwise (`mean_pixel`).
        pad = list(zero_pixel(model.backbone.preprocessing))
        data = {}
        for section in ("train_data", "eval_data"):
            section_values = values.get(section, {})
            if isinstance(section_values, dict) and "mean_pixel" not in section_values:
                section_values = {**section_values, "mean_pixel": pad}
            data[section] = dataclass_from_dict(InputConfig, section_values, section)
        return cls(
            model=model,
            train_data=data["train_data"],
            eval_data=data["eval_data"],
            training=dataclass_from_dict(TrainingConfig, values.get("training", {}), "training"),
            runtime=dataclass_from_dict(RuntimeConfig, values.get("runtime", {}), "runtime"),
            evaluation=dataclass_from_dict(
                EvaluationConfig, values.get("evaluation", {}), "evaluation"),
            export=dataclass_from_dict(ExportConfig, values.get("export", {}), "export"),
            inference=dataclass_from_dict(
                InferenceConfig, values.get("inference", {}), "inference"),
        )

    def to_dict(self):
        return _plain(dataclasses.asdict(self))


def _plain(value):
    """Tuples -> lists, recursively, so the YAML dump is plain and safe_load-able."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class YamlLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that also reads `1e-5` and `3e4` as floats.

    YAML 1.1, which PyYAML implements, wants a dot in the mantissa (`1.0e-5`) and reads `1e-5`
    as a string, which a learning rate or an epsilon would then be.

    >>> yaml.load("[1e-5, 2.5E3, 1e5x, 1.0e-3]", Loader=YamlLoader)
    [1e-05, 2500.0, '1e5x', 0.001]
    """


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _load_yaml(text_or_stream):
    return yaml.load(text_or_stream, Loader=YamlLoader)


def apply_overrides(values, overrides):
    """Applies `section.key=value` strings (values parsed as YAML) to a nested dict in place."""
    for item in overrides or ():
        key, sep, raw = item.partition("=")
        require(sep and key.strip(),
                f"--set expects section.key=value. Received: {item!r}")
        path = key.strip().split(".")
        node = values
        for part in path[:-1]:
            node = node.setdefault(part, {})
            require(isinstance(node, dict),
                    f"--set {key}: {part!r} is not a section. Received: {item!r}")
        node[path[-1]] = _load_yaml(raw)
    return values


def load_config(path, overrides=None):
    """Reads a YAML experiment config, applies `--set` overrides and validates everything."""
    try:
        with open(path) as f:
            values = _load_yaml(f) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from None
    require(isinstance(values, dict), f"{path} must hold a mapping of sections")
    try:
        return ExperimentConfig.from_dict(apply_overrides(values, overrides))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def save_config(config, model_dir):
    """Writes the resolved config to `<model_dir>/config.yaml` (atomically) and returns the path."""
    return _files.write_yaml(os.path.join(model_dir, CONFIG_FILENAME), config.to_dict())
