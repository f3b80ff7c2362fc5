"""Inference precision: `for_inference(model, precision)`, a bfloat16 twin of a float32 model.

The twin has the same architecture and call contract as `model` (float32 RGB pixels in, a dict
with float32 `"logits"` at the input size out) and is built from `model.get_config()` with
every layer on a pure `"bfloat16"` dtype policy, so:

- the weights are cast to bfloat16 once, when the twin is made. The `mixed_bfloat16` policy
  keeps float32 variables and casts every kernel on every call instead (a Cast per kernel per
  call in the graph, and float32 weights read from memory);
- every BatchNormalization of a `ConvNormAct` is folded into its convolution (`fold_batch_norms`):
  at inference BN is the affine map `y = (x - mean) * gamma / sqrt(var + eps) + beta`, so the
  kernel is scaled by `gamma / sqrt(var + eps)` per output channel and the rest becomes the
  conv's bias. The fold is computed in float64 from the float32 variables and only then cast,
  so bfloat16 never sees a tiny variance or a large `1 / sqrt(var + eps)` on its own, and the
  conv + bias + ReLU runs as one oneDNN kernel (Keras' BN under a bfloat16 policy computes in
  float32 instead: a cast in and out and two passes over every conv output);
- activations are bfloat16 from the first conv to the classifier. Three kinds of layer stay
  float32: `ImageNormalization` (the mean subtraction would round pixels in bfloat16), the
  model's float32 output casts, and the resizes that feed them (the upsample of the logits to
  the input size: a float32 resize of bfloat16 logits costs little and adds no second rounding),
  so softmax and argmax see float32 scores.

Where the time goes (`ONEDNN_VERBOSE=1`, DeepLabV3-R101 OS16 at 513x513 on a CPU with
AVX512-BF16): every conv and the ASPP's tap matmuls run as oneDNN bfloat16 kernels
(`brg_conv_fwd:avx512_core_bf16`, `brgconv_1x1`, `brg_matmul`), each with its bias, ReLU and
the residual addition fused in; what is left in float32 is the normalisation, the mean of
the image pooling (Keras averages half-precision tensors in float32) and the logits' upsample.
About 15% of the bfloat16 time is oneDNN reordering the weights into its blocked bfloat16
layout on every call (variables are not constants to it). Median bfloat16 / float32 latency,
over several runs on a shared 2-core AMD EPYC: 0.40 to 0.51 at OS16 and 0.39 at OS8
(`benchmarks/models.py`), against 0.64 for the `mixed_bfloat16` policy in the same run;
argmax agreement 99.9% and the same mIoU within 0.1 point on the demo model
(`benchmarks/bf16_accuracy.py`).

The twin is for inference (evaluate, predict, export): BN is gone, so it cannot be trained or
fine-tuned, and its backbone does not round-trip through a `.keras` file (the backbone rebuilds
itself from its `BackboneConfig`, with BN). The input model is not changed.

Example:

>>> from deeplab_family.models import ModelConfig, build_model
>>> config = ModelConfig.from_dict({
...     "name": "deeplabv3", "num_classes": 3, "head": {"aspp_filters": 8},
...     "backbone": {"stage_depths": [1, 1, 1, 1], "stage_widths": [4, 4, 4, 4],
...                  "stage_channels": [8, 8, 8, 8], "stem_width": 4}})
>>> model = build_model(config)
>>> fast = for_inference(model, "bfloat16")
>>> out = fast(keras.ops.zeros((1, 33, 33, 3)))["logits"]
>>> tuple(out.shape), keras.backend.standardize_dtype(out.dtype)
((1, 33, 33, 3), 'float32')
>>> sorted({v.dtype for v in fast.weights})
['bfloat16']
"""

import copy

import keras
import numpy as np

from deeplab_family import _validation
from deeplab_family.config import INFERENCE_PRECISIONS as PRECISIONS
from deeplab_family.layers.conv import ConvNormAct

# Layers kept in float32 whatever the twin's precision (see the module docstring).
_FLOAT32_CLASSES = ("ImageNormalization",)


def for_inference(model, precision="float32"):
    """`model` to run at `precision`: itself for "float32", its bfloat16 twin for "bfloat16".

    Args:
        model: a float32 (or `mixed_*`) `keras.Model` of the registry, as `build_model` or
            `inference.load_inference_model` returns it, with its weights.
        precision: "float32" or "bfloat16".

    Returns:
        A `keras.Model` with `model`'s call contract. For "bfloat16": a new model, BN folded
        into the convs and every weight in bfloat16 (see the module docstring); `model` is
        not changed.
    """
    _validation.one_of("precision", precision, PRECISIONS)
    if precision == "float32":
        return model
    return fold_batch_norms(model, dtype="bfloat16")


def fold_batch_norms(model, dtype="float32"):
    """A twin of `model` on the `dtype` policy with every `ConvNormAct`'s BN folded into its conv.

    With `dtype="float32"` the twin computes the same function as `model` in float32 (up to
    rounding: the fold reorders a multiply), which is how the fold is tested; `for_inference`
    uses `dtype="bfloat16"`.

    Args:
        model: a functional `keras.Model` whose layers serialise (every model of the registry).
        dtype: "float32" or "bfloat16": the policy of the twin's layers (see the module
            docstring for the layers that stay float32).

    Returns:
        The twin, a new `keras.Model`.
    """
    _validation.one_of("dtype", dtype, PRECISIONS)
    config = model.get_config() if isinstance(model, keras.Model) else None
    if not isinstance(config, dict) or "layers" not in config:
        raise TypeError(
            "fold_batch_norms needs a functional keras.Model whose config lists its layers, "
            f"as build_model returns. Received: {type(model).__name__} {model.name!r}"
        )
    twin = _rebuild(model, config, dtype)
    twin.set_weights(model.get_weights())
    source, target = _paired_layers(model, twin)
    for src, dst in zip(source, target):
        # A flag that `inference.use_dense_atrous_convs` sets at run time, not in the config.
        if hasattr(src, "skip_padded_taps"):
            dst.skip_padded_taps = src.skip_padded_taps
    for src, dst in zip(source, target):
        if isinstance(src, ConvNormAct) and src.norm is not None:
            kernel, bias = folded_kernel_and_bias(src)
            _drop_norm(dst, kernel, bias)
    return twin


def folded_kernel_and_bias(unit):
    """The kernel and bias of `unit` (a `ConvNormAct` with BN) with its inference BN folded in.

    BN on the moving statistics is `y = x * s + (beta - mean * s)` with
    `s = gamma / sqrt(moving_variance + epsilon)` per output channel; the conv's output
    channels are the kernel's last axis (also for grouped convs), so the kernel is scaled along
    it. Computed in float64.

    Returns:
        `(kernel, bias)`, float64 NumPy arrays of the conv kernel's shape and `(filters,)`.
    """
    norm, conv = unit.norm, unit.conv
    if norm.axis not in (-1, len(conv.kernel.shape) - 1):
        raise ValueError(
            f"{unit.name}: only a BN over the channel axis folds into the conv. "
            f"Received: axis={norm.axis}"
        )
    mean = np.asarray(norm.moving_mean.numpy(), np.float64)
    variance = np.asarray(norm.moving_variance.numpy(), np.float64)
    gamma = np.ones_like(mean) if norm.gamma is None else np.float64(norm.gamma.numpy())
    beta = np.zeros_like(mean) if norm.beta is None else np.float64(norm.beta.numpy())
    scale = gamma / np.sqrt(variance + norm.epsilon)
    kernel = np.asarray(conv.kernel.numpy(), np.float64) * scale
    bias = beta - mean * scale
    if conv.use_bias:
        bias = bias + np.asarray(conv.bias.numpy(), np.float64) * scale
    return kernel, bias


def _rebuild(model, config, dtype):
    """A new model from functional `model`'s `config` (freshly initialised weights), its layers
    on the `dtype` policy but for the float32 ones of the module docstring."""
    config = copy.deepcopy(config)
    _set_policies(config, dtype)
    return model.__class__.from_config(config)


def _set_policies(config, dtype):
    """Puts the layers of a functional model's `config` on `dtype`, in place (see `_rebuild`).

    The float32 layers are set to "float32" explicitly, so that a model built under a
    `mixed_*` policy gets a float32 upsample of its logits as well."""
    layers = config["layers"]
    outputs = {entry[0] for entry in _output_names(config)}
    by_name = {layer["config"]["name"]: layer for layer in layers}
    keep = set()
    for name in outputs:
        keep.add(name)
        # The resizes that feed a float32 output (the logits' upsample to the input size).
        for inbound in _inbound_names(by_name[name]):
            if by_name[inbound]["class_name"] == "ResizeLike":
                keep.add(inbound)
    for layer in layers:
        inner = layer["config"]
        if layer["class_name"] == "InputLayer":
            continue
        if "layers" in inner:  # a nested functional model
            _set_policies(inner, dtype)
        if "dtype" in inner:
            float32 = inner["name"] in keep or layer["class_name"] in _FLOAT32_CLASSES
            inner["dtype"] = "float32" if float32 else dtype


def _output_names(config):
    """`[[name, node, tensor], ...]` of `config["output_layers"]` (a list, dict or one entry)."""
    outputs = config["output_layers"]
    if isinstance(outputs, dict):
        return list(outputs.values())
    if outputs and isinstance(outputs[0], str):
        return [outputs]
    return outputs


def _inbound_names(layer):
    """Names of the layers feeding `layer` (one serialised layer of a functional config)."""
    names = []

    def visit(value):
        if isinstance(value, dict):
            if value.get("class_name") == "__keras_tensor__":
                names.append(value["config"]["keras_history"][0])
                return
            for v in value.values():
                visit(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)

    visit(layer.get("inbound_nodes", []))
    return names


def _paired_layers(model, twin):
    source = list(model._flatten_layers(include_self=False, recursive=True))
    target = list(twin._flatten_layers(include_self=False, recursive=True))
    pairs_ok = len(source) == len(target) and all(
        type(a) is type(b) and a.name == b.name for a, b in zip(source, target)
    )
    if not pairs_ok:
        raise ValueError(
            f"the rebuilt {model.name!r} does not have the layers of the original: a layer "
            "that builds sublayers outside its config?"
        )
    return source, target


def _drop_norm(unit, kernel, bias):
    """Turns built `ConvNormAct` `unit` into conv-with-bias + activation with `kernel, bias`.

    Keras locks a built layer's state; like Keras' own `Layer.quantize`, this unlocks it, swaps
    the state and locks it again. `use_norm` is set to False, so the unit's config says what it
    computes now.
    """
    conv, norm = unit.conv, unit.norm
    unit._tracker.unlock()
    try:
        unit._tracker.untrack(norm)
        unit.norm = None
        unit.use_norm = False
    finally:
        unit._tracker.lock()
    conv._tracker.unlock()
    try:
        conv.use_bias = True
        conv.bias = conv.add_weight(
            name="bias", shape=(conv.filters,), initializer="zeros", trainable=conv.trainable
        )
    finally:
        conv._tracker.lock()
    conv.kernel.assign(kernel.astype(np.float32))
    conv.bias.assign(bias.astype(np.float32))
