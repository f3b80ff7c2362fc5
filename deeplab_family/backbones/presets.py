"""Named backbone configs, and ExFuse's Layer Rearrangement (Sec 3.1) solved from FLOPs."""

import functools

from deeplab_family import _validation
from deeplab_family.backbones.config import BackboneConfig
from deeplab_family.backbones.plan import plan_macs, plan_params

LR_STAGE_DEPTHS = (8, 8, 9, 8)  # ExFuse Sec 3.1
RESNEXT131_STAGE_DEPTHS = (8, 8, 19, 8)  # ExFuse Sec 4
LR_FLOPS_SIZE = (512, 512)  # ExFuse's crop size (Sec 3, "given the 512 x 512 input")


def _resnext101():
    return BackboneConfig(depth=101, groups=32, width_per_group=4)


@functools.cache
def layer_rearranged_widths(
    stage_depths=LR_STAGE_DEPTHS,
    image_size=LR_FLOPS_SIZE,
    multipliers=tuple(m / 1000 for m in range(500, 1501)),
    criterion="macs",
):
    """Bottleneck widths that give a rearranged ResNeXt-101 32x4d the original's FLOPs.

    ExFuse Sec 3.1 moves ResNeXt-101's {3, 4, 23, 3} units to {8, 8, 9, 8} "and adjust[s] the
    number of channels to ensure the same overall computational complexity", without saying
    how. Method, computed, not guessed:

    1. Reference cost: MACs of ResNeXt-101 32x4d (no head, output stride 32) at 512 x 512, from
       `plan_macs` (tested equal to the graph count of the built model, `flops.count_macs`).
    2. One width multiplier m scales all four bottleneck widths (128, 256, 512, 1024); each is
       rounded to a multiple of the cardinality (32) so the group width stays an integer. The
       unit output channels stay 256..2048, so every decoder is unchanged, and so does the
       cardinality.
    3. m is searched on a grid (0.500..1.500, step 0.001); the rounded widths whose MACs are
       closest to the reference win (ties go to the m closest to 1).

    Why the answer is (close to) the original widths: a bottleneck unit's MACs do not depend on
    its stage. From one stage to the next the map has 4x fewer pixels and both the widths and
    the output channels double, so 1x1 costs (C_out x width) and grouped 3x3 costs
    (9 x width^2 / groups) are 4x larger per pixel. With 33 units in both layouts, only the
    first (strided, projecting) unit of each stage differs, and each layout has exactly one per
    stage. At 512 x 512 (all sizes divisible by 32) the MACs are therefore identical for any
    redistribution of the 33 units, and the search returns m = 1: the original widths, ratio
    exactly 1.0. What the rearrangement does change is the parameter count, which grows
    (42.3M -> 50.5M) because res5 units, the heaviest, go from 3 to 8; `criterion="params"`
    shows what matching that instead would take.

    Args:
        stage_depths: the rearranged stage depths.
        image_size: (H, W) at which FLOPs are matched.
        multipliers: candidate width multipliers.
        criterion: "macs" (the default, ExFuse's "computational complexity") or "params", to
            match the parameter count instead (for comparison: it needs much wider early
            stages).

    Returns:
        (stage_widths, macs_ratio): a tuple of 4 ints and the MACs ratio to the reference.
    """
    _validation.require(
        criterion in ("macs", "params"),
        f"criterion must be 'macs' or 'params'. Received: criterion={criterion!r}",
    )
    cost = plan_params if criterion == "params" else lambda c: plan_macs(c, image_size)
    reference = _resnext101()
    ref_macs = cost(reference)
    groups = reference.groups
    best = None
    seen = {}
    for m in multipliers:
        widths = tuple(max(groups, round(m * w / groups) * groups) for w in reference.stage_widths)
        if widths not in seen:
            config = reference.replace(stage_depths=tuple(stage_depths), stage_widths=widths)
            seen[widths] = cost(config) / ref_macs
        ratio = seen[widths]
        key = (abs(ratio - 1.0), abs(m - 1.0))
        if best is None or key < best[0]:
            best = (key, widths, ratio)
    return best[1], best[2]


def _lr_config():
    widths, _ = layer_rearranged_widths()
    return BackboneConfig(depth=None, stage_depths=LR_STAGE_DEPTHS, stage_widths=widths, groups=32)


def _resnext131_config():
    # ExFuse Sec 4: {8, 8, 19, 8} "follows the idea of Sec 3.1", with SE modules. The widths
    # are not given; we keep the Layer Rearrangement widths, and SE's reduction of 1/16 (Hu et
    # al.). This net is deeper, hence costlier, than ResNeXt-101; ExFuse says so ("deeper").
    widths, _ = layer_rearranged_widths()
    return BackboneConfig(
        depth=None,
        stage_depths=RESNEXT131_STAGE_DEPTHS,
        stage_widths=widths,
        groups=32,
        se_ratio=1 / 16,
    )


PRESETS = {
    "resnet50": lambda: BackboneConfig(depth=50),
    "resnet101": lambda: BackboneConfig(depth=101),
    "resnet152": lambda: BackboneConfig(depth=152),
    # PAN Sec 3.3: ResNet-101 with the 7x7 stem replaced by three 3x3 convs.
    "resnet101_deep": lambda: BackboneConfig(depth=101, stem="deep"),
    "resnext101_32x4d": _resnext101,
    "resnext101_32x4d_lr": _lr_config,
    "resnext131_se": _resnext131_config,
}


def backbone_preset(name, **overrides):
    """The `BackboneConfig` of a named preset, with some fields overridden.

    Example:

    >>> backbone_preset("resnet101", output_stride=16, multi_grid=(1, 2, 4)).stage_depths
    (3, 4, 23, 3)
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown backbone preset {name!r}. Allowed: {sorted(PRESETS)}")
    config = PRESETS[name]()
    return config.replace(**overrides) if overrides else config
