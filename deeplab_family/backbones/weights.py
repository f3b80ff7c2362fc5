"""Import keras.applications ResNet50/101/152 (v1) weights into a `ResNetBackbone`.

Nothing here downloads anything: the source is a keras.applications model already in memory,
or a file given by path (the published "..._notop.h5", a Keras 2 weights file, or a Keras 3
".weights.h5"), loaded into a keras.applications model built with `weights=None`.

keras.applications' convs have biases and its BatchNormalization epsilon is 1.001e-5; ours have
no conv bias and epsilon `config.norm_epsilon`. Both are folded into the BN that follows each
conv, exactly for inference:

    BN_src(conv(x) + b) = gamma (conv(x) + b - mean) / sqrt(var + eps_src) + beta
                        = gamma (conv(x) - mean') / sqrt(var' + eps_dst) + beta,
    mean' = mean - b,  var' = var + eps_src - eps_dst,

so `moving_mean -= b` and `moving_variance += eps_src - eps_dst`, gamma and beta unchanged. If
that variance would be negative (only when `norm_epsilon` exceeds the source epsilon by more
than a channel's variance), the channel keeps variance 0 and its gamma is rescaled by
`sqrt(eps_dst / (var + eps_src))` instead, which is exact for inference too.

The import is independent of output stride, multi-grid and cascade: the variables are the same.
Cascaded blocks (block5..) have no ImageNet counterpart and keep their initialisation.
"""

import numpy as np

from deeplab_family.backbones.config import STANDARD_STAGE_DEPTHS

KERAS_APPLICATIONS_BN_EPSILON = 1.001e-5
_STAGES = {2: "res2", 3: "res3", 4: "res4", 5: "res5"}


def keras_applications_resnet(depth, weights_path=None):
    """keras.applications ResNet{depth} v1, `include_top=False`, dynamic input size.

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
    model = builders[depth](weights=None, include_top=False, input_shape=(None, None, 3))
    if weights_path is not None:
        model.load_weights(str(weights_path))
    return model


def _source_stage_depths(source):
    names = {layer.name for layer in source.layers}
    depths = []
    for stage in range(2, 6):
        n = 0
        while f"conv{stage}_block{n + 1}_1_conv" in names:
            n += 1
        depths.append(n)
    if "conv1_conv" not in names or 0 in depths:
        raise ValueError(
            f"Source model {source.name!r} is not a keras.applications ResNet v1: it lacks "
            "'conv1_conv' or 'conv{2..5}_block1_1_conv' layers."
        )
    return tuple(depths)


def _check_compatible(backbone, source_depths):
    config = backbone.backbone_config
    problems = []
    if tuple(config.stage_depths) != source_depths:
        problems.append(f"stage_depths: source {source_depths}, backbone {config.stage_depths}")
    if config.stem != "standard":
        problems.append(f"stem: source 'standard' (7x7), backbone {config.stem!r}")
    if config.stem_width != 64:
        problems.append(f"stem_width: source 64, backbone {config.stem_width}")
    if not config.stride_in_1x1:
        problems.append(
            "stride_in_1x1: the source strides its first 1x1 conv, the backbone its 3x3 "
            "(stride_in_1x1=False)"
        )
    if config.groups != 1:
        problems.append(f"groups: source 1, backbone {config.groups}")
    if config.se_ratio is not None:
        problems.append(f"se_ratio: the source has no SE, backbone se_ratio={config.se_ratio}")
    if tuple(config.stage_widths) != (64, 128, 256, 512):
        problems.append(f"stage_widths: source (64, 128, 256, 512), backbone {config.stage_widths}")
    if tuple(config.stage_channels) != (256, 512, 1024, 2048):
        problems.append(
            f"stage_channels: source (256, 512, 1024, 2048), backbone {config.stage_channels}"
        )
    if config.preprocessing != "caffe":
        problems.append(
            f"preprocessing: the source expects 'caffe' inputs, backbone {config.preprocessing!r}"
        )
    if problems:
        raise ValueError(
            "Cannot import keras.applications ResNet weights into this backbone: "
            + "; ".join(problems)
        )


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


def _fold(conv_src, bn_src, target):
    weights = conv_src.get_weights()
    kernel = np.asarray(weights[0], np.float64)
    bias = np.asarray(weights[1], np.float64) if conv_src.use_bias else None
    gamma, beta, mean, var = (np.asarray(w, np.float64) for w in bn_src.get_weights())
    eps_src, eps_dst = float(bn_src.epsilon), float(target.norm.epsilon)
    if bias is not None:
        mean = mean - bias
    var = var + eps_src - eps_dst
    negative = var < 0
    if np.any(negative):
        gamma = np.where(
            negative, gamma * np.sqrt(eps_dst / np.maximum(var + eps_dst, 1e-30)), gamma
        )
        var = np.where(negative, 0.0, var)
    if tuple(target.conv.kernel.shape) != kernel.shape:
        raise ValueError(
            f"Shape mismatch importing {conv_src.name!r} into {target.name!r}: source kernel "
            f"{kernel.shape}, backbone kernel {tuple(target.conv.kernel.shape)}"
        )
    target.conv.kernel.assign(kernel.astype("float32"))
    norm = target.norm
    for variable, value in zip(
        (norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance), (gamma, beta, mean, var)
    ):
        variable.assign(value.astype("float32"))


def import_keras_applications_weights(backbone, source):
    """Copies keras.applications ResNet v1 weights into `backbone`, folding conv biases into BN.

    Args:
        backbone: a `ResNetBackbone` with the standard stem, `stride_in_1x1=True`, groups 1,
            no SE, standard widths and "caffe" preprocessing; any output stride, multi-grid or
            cascade.
        source: a keras.applications ResNet50/101/152 model (include_top=False or True; the
            top is ignored), or a path to its weights (".h5" as published, or ".weights.h5"),
            in which case a `weights=None` model of the backbone's depth is built and loaded.

    Returns:
        A dict: "imported" (our layer names that received weights) and "kept" (our layers with
        weights that the source does not have, e.g. cascaded blocks).

    Raises:
        ValueError: the depths, stem, widths or stride placement do not match, naming each.
    """
    config = backbone.backbone_config
    if not hasattr(source, "layers"):
        depths = tuple(config.stage_depths)
        by_depths = {v: k for k, v in STANDARD_STAGE_DEPTHS.items()}
        if depths not in by_depths:
            raise ValueError(
                f"keras.applications has ResNets with stage_depths {sorted(by_depths)}; the "
                f"backbone has stage_depths={depths}, so no file can be imported into it."
            )
        source = keras_applications_resnet(by_depths[depths], weights_path=source)
    source_depths = _source_stage_depths(source)
    _check_compatible(backbone, source_depths)

    imported = []
    for src, dst in layer_mapping(source_depths):
        target = backbone.get_layer(dst)
        _fold(source.get_layer(f"{src}_conv"), source.get_layer(f"{src}_bn"), target)
        imported.append(dst)
    kept = [layer.name for layer in backbone.layers if layer.weights and layer.name not in imported]
    return {"imported": imported, "kept": kept}
