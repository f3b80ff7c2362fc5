"""keras.applications ResNet50/101/152 (v1) weights: the published `..._notop.h5`, a Keras 2
weights file, a Keras 3 `.weights.h5`, or such a model in memory.

The file is loaded into a keras.applications model built with `weights=None` (never
downloads). Its convs have biases and its BatchNormalization epsilon is 1.001e-5; both are
folded into our bias-free conv + BN (`source.folded`). It is Caffe's ResNet v1 layout: the
7x7 stem, the stride on the first 1x1 conv of a stage's first unit, "caffe" inputs (BGR minus
the ImageNet BGR mean, keras.applications.resnet.preprocess_input).
"""

import re

import numpy as np

from deeplab_family.backbones.config import STANDARD_STAGE_DEPTHS
from deeplab_family.weights.source import Architecture, ConvBN, SourceWeights, WeightsError

KERAS_APPLICATIONS_BN_EPSILON = 1.001e-5
_STAGES = {2: "res2", 3: "res3", 4: "res4", 5: "res5"}


def keras_applications_resnet(depth, weights_path=None, include_top=False):
    """keras.applications ResNet{depth} v1, dynamic input size (224 x 224 with the top).

    Built with `weights=None` (never downloads); `weights_path`, if given, is loaded into it.
    """
    import keras

    builders = {
        50: keras.applications.ResNet50,
        101: keras.applications.ResNet101,
        152: keras.applications.ResNet152,
    }
    if depth not in builders:
        raise ValueError(
            f"keras.applications has ResNet v1 depths {sorted(builders)}. Received: depth={depth}"
        )
    shape = (224, 224, 3) if include_top else (None, None, 3)
    model = builders[depth](weights=None, include_top=include_top, input_shape=shape)
    if weights_path is not None:
        model.load_weights(str(weights_path))
    return model


def _h5_names(path):
    """Every group and dataset path of an HDF5 file, read once."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            names = set()
            f.visit(names.add)
            return names
    except OSError as e:
        raise WeightsError(f"{path}: not a readable HDF5 file ({e})") from None


def _file_depth(path, names):
    """The ResNet depth of a keras.applications weights file, from its layer names."""
    units = {}
    for stage in range(2, 6):
        n = 0
        while any(f"conv{stage}_block{n + 1}_1_conv" in name for name in names):
            n += 1
        units[stage] = n
    depths = tuple(units[s] for s in range(2, 6))
    by_depths = {v: k for k, v in STANDARD_STAGE_DEPTHS.items()}
    if depths in by_depths:
        return by_depths[depths]
    if not any(depths):
        # Keras 3 `.weights.h5` files name layers by class ("layers/conv2d_12"), not as the
        # model does: count the convs (ResNet-50: 53, 101: 104, 152: 155).
        convs = sum(1 for n in names if re.fullmatch(r"layers/conv2d(_\d+)?", n))
        by_convs = {3 * sum(d) + 5: k for k, d in STANDARD_STAGE_DEPTHS.items()}
        if convs in by_convs:
            return by_convs[convs]
        if not convs:
            return None  # not recognisable: every depth is tried
    raise WeightsError(
        f"{path}: not a keras.applications ResNet v1 weights file (its stages have "
        f"{list(depths)} units; ResNet-50/101/152 have {sorted(by_depths.values())})"
    )


def _load_model(path):
    names = _h5_names(path)
    # A Keras `save_weights` file of one of our backbones (its `ConvNormAct` layers), written
    # without the config that `save_backbone` adds.
    if any(n.startswith("layers/conv_norm_act") for n in names):
        raise WeightsError(
            f"{path}: the Keras weights of a deeplab_family backbone, without its config: "
            "write it with deeplab_family.weights.save_backbone (or `python -m "
            "deeplab_family.weights convert`), or load it with backbone.load_weights"
        )
    depth = _file_depth(path, names)
    candidates = [depth] if depth else sorted(STANDARD_STAGE_DEPTHS)
    # A full (not `_notop`) file holds the ImageNet classifier: Keras 2 files name its group
    # "predictions", Keras 3 `.weights.h5` files "layers/dense".
    top = any(n.startswith(("predictions", "layers/dense")) for n in names)
    errors = []
    for candidate in candidates:
        try:
            return keras_applications_resnet(candidate, weights_path=path, include_top=top)
        except Exception as e:  # a file of another depth, or truncated
            errors.append(f"ResNet-{candidate}: {e}")
    raise WeightsError(f"{path}: cannot load it into a keras.applications ResNet: "
                       + "; ".join(errors))


def _source_stage_depths(source):
    names = {layer.name for layer in source.layers}
    depths = []
    for stage in range(2, 6):
        n = 0
        while f"conv{stage}_block{n + 1}_1_conv" in names:
            n += 1
        depths.append(n)
    if "conv1_conv" not in names or 0 in depths:
        raise WeightsError(
            f"Source model {source.name!r} is not a keras.applications ResNet v1: it lacks "
            "'conv1_conv' or 'conv{2..5}_block1_1_conv' layers."
        )
    return tuple(depths)


def layer_mapping(stage_depths):
    """(keras.applications prefix, our layer name) pairs, in order: conv + BN per pair."""
    pairs = [("conv1", "stem_conv1")]
    for stage, depth in zip(range(2, 6), stage_depths):
        for block in range(1, depth + 1):
            src = f"conv{stage}_block{block}"
            dst = f"{_STAGES[stage]}_unit{block}"
            if block == 1:
                pairs.append((f"{src}_0", f"{dst}_shortcut"))
            pairs += [(f"{src}_{k}", f"{dst}_conv{k}") for k in (1, 2, 3)]
    return pairs


def read(source):
    """A keras.applications ResNet (model or file path) as `SourceWeights`."""
    path = getattr(source, "name", None) if hasattr(source, "layers") else str(source)
    model = source if hasattr(source, "layers") else _load_model(source)
    depths = _source_stage_depths(model)
    layers = {}
    for src, dst in layer_mapping(depths):
        conv, bn = model.get_layer(f"{src}_conv"), model.get_layer(f"{src}_bn")
        kernel, bias = conv.get_weights()
        gamma, beta, mean, var = bn.get_weights()
        layers[dst] = ConvBN(
            kernel=np.asarray(kernel), bias=np.asarray(bias), gamma=np.asarray(gamma),
            beta=np.asarray(beta), mean=np.asarray(mean), variance=np.asarray(var),
            epsilon=float(bn.epsilon),
            tensors=(f"{src}_conv/kernel", f"{src}_conv/bias", f"{src}_bn/gamma",
                     f"{src}_bn/beta", f"{src}_bn/moving_mean", f"{src}_bn/moving_variance"),
        )
    count = sum(len(layer.weights) for layer in model.layers)
    widths = tuple(layers[f"{_STAGES[s]}_unit1_conv2"].kernel.shape[-1] for s in range(2, 6))
    channels = tuple(layers[f"{_STAGES[s]}_unit1_conv3"].kernel.shape[-1] for s in range(2, 6))
    architecture = Architecture(
        stage_depths=depths,
        stage_widths=widths,
        stage_channels=channels,
        stem="standard",
        stem_width=int(layers["stem_conv1"].kernel.shape[-1]),
        groups=1,
        stride_in_1x1=True,
        stride_unit="first",
        preprocessing=("caffe",),
    )
    return SourceWeights(
        format="keras_applications",
        path=path,
        architecture=architecture,
        layers=layers,
        tensor_count=count,
        unused=[],
        notes=["the ImageNet classifier (predictions, in a full file, not a _notop one) is "
               "unused"],
    )
