"""The backbone's plan: stages, strides, atrous rates and channels, and its analytic cost.

Pure Python (no Keras, no TensorFlow): `stage_plan` turns a `BackboneConfig` into the units that
`resnet.build_backbone` builds, and `plan_macs` / `plan_params` count their cost from the same
plan, fast enough for the Layer Rearrangement search (`presets.layer_rearranged_widths`).
"""

import dataclasses
import math

from deeplab_family.backbones.config import BackboneConfig

STAGE_NAMES = ("res2", "res3", "res4", "res5")
FEATURE_KEYS = STAGE_NAMES  # the contract: every backbone returns at least these, in this order
STEM_STRIDE = 4  # stride-2 conv + stride-2 max pool, whatever the stem


@dataclasses.dataclass(frozen=True)
class UnitSpec:
    """One bottleneck unit: 1x1 -> 3x3 (grouped, atrous) -> 1x1 (+ SE) + shortcut."""

    name: str  # e.g. "res3_unit1"; its layers are "<name>_conv1" ... "<name>_shortcut"
    in_channels: int
    width: int  # channels of the 1x1 reduction and the 3x3 conv
    out_channels: int
    stride: int  # 1 or 2, on the first unit of a stage only
    dilation_rate: int  # atrous rate of the 3x3 conv (stage rate x multi-grid unit rate)
    # Shortcut (research/deeplab's slim `bottleneck`): a strided 1x1 projection conv when the
    # depth changes; otherwise the identity, subsampled when the unit is strided (`Subsample`).
    project: bool  # in_channels != out_channels: the first unit of res2..res5 in standard nets
    # The unit that carries its stage's stride when there is one (see `stage_plan`); where it
    # keeps its depth the backbone gives it a `Subsample` shortcut at every stride (the
    # identity at stride 1), so that its layers do not depend on the output stride.
    stride_position: bool = False

    @property
    def shortcut(self):
        """"projection", "subsample" or "identity"."""
        if self.project:
            return "projection"
        return "subsample" if self.stride > 1 else "identity"


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """A stage (res2..res5) or a cascaded block (block5..block7) of DeepLabv3 Fig. 3."""

    name: str
    stride: int  # applied by the first unit
    dilation_rate: int  # stage rate, before multi-grid
    feature_stride: int  # input size / output size of this stage
    units: tuple[UnitSpec, ...]
    output_unit: str = ""  # the unit whose output is the stage's feature (see `stage_plan`)

    @property
    def unit_rates(self):
        return tuple(u.dilation_rate for u in self.units)


def stage_plan(config):
    """Turns a `BackboneConfig` into strides and atrous rates, stage by stage.

    The stages after res2 (res3, res4, res5, then the cascaded block5..block7) each have a
    nominal stride of 2. Walking them in order, as timm and research/deeplab do: if applying the
    stride would take the net past `output_stride`, the stage keeps stride 1 and its atrous rate
    doubles instead (DeepLabv3 Sec 3.1: "the stride of last pooling or convolutional layer that
    decreases resolution is set to 1 ... all subsequent convolutional layers are replaced with
    atrous convolutional layers having rate r = 2"). The whole stage runs at that rate,
    including its first unit, as in Model Garden's DilatedResNet (timm instead keeps the
    previous rate on a dilated stage's first unit; the difference is one conv per stage).

    Multi-grid (DeepLabv3 Sec 3.2.1) multiplies the unit rates of the last stage and of every
    cascaded block: OS16 with (1, 2, 4) gives res5 rates (2, 4, 8); OS8 gives res4 rate 2 and
    res5 (4, 8, 16); cascaded blocks at OS16 run at 2, 4, 8, 16 x multi-grid (Fig. 3b). At
    OS32 the last stage is strided, its rate is 1 and multi-grid gives (1, 2, 4): the paper's
    rule. Model Garden's DilatedResNet ignores multigrid at OS32 (it only applies it to dilated
    stages); we do not.

    At output stride 4 (DeepLabv3 Appendix C evaluates Cityscapes there) res2 keeps the stem's
    stride 4 and every later stage is dilated: res3 rate 2, res4 rate 4, res5 rate 8 (x
    multi-grid: 8, 16, 32 with (1, 2, 4)).

    Cascaded blocks replicate the last stage ("duplicate several copies of the last ResNet
    block", Sec 3.2: same units and widths). A unit projects its shortcut only when its depth
    changes, as research/deeplab's slim `bottleneck` does: block5..block7 take block4's 2048
    channels in and give 2048 out, so their shortcuts are identities, subsampled when the block
    is strided (slim's `subsample`, a 1x1 max pool; here `Subsample`). Model Garden's
    `last_stage_repeats` instead projects the first unit of every repeat (12.6M more weights
    for block7 with ResNet-101). Without dilation each block is strided, so the undilated stride is
    32 * 2**cascade_blocks (256 for block7, Sec 3.2). By default we stride the first unit of
    each block, like every other stage here; the paper strides the last conv of a block
    (slim's layout, `stride_unit="last"` below). Strides and rates per stage are the same.

    With `stride_unit="last"` (slim's resnet_v1, research/deeplab's resnet_v1_beta) the stride
    of each stage moves onto the last unit of the stage before it, with a `Subsample`
    shortcut, as slim's `resnet_v1_block` lays it out: stage strides, rates and feature strides
    stay as above, and each stage's feature is taken before its strided last unit
    (`StageSpec.output_unit`).

    Returns:
        A tuple of `StageSpec`, res2..res5 then block5.. in order.
    """
    config = BackboneConfig.from_dict(config)
    depths, widths, channels = config.stage_depths, config.stage_widths, config.stage_channels
    n_cascade = config.cascade_blocks
    stage_args = [(STAGE_NAMES[i], depths[i], widths[i], channels[i]) for i in range(4)]
    stage_args += [(f"block{5 + i}", depths[3], widths[3], channels[3]) for i in range(n_cascade)]
    multi_grid = config.resolved_multi_grid

    # Stage strides and rates first: the same for both stride placements.
    current_stride, rate = STEM_STRIDE, 1
    geometry = []  # (stride, rate, feature stride) per stage
    for index in range(len(stage_args)):
        if index == 0:
            stride = 1  # res2 follows the stem's max pool
        elif current_stride * 2 > config.output_stride:
            stride, rate = 1, rate * 2
        else:
            stride, current_stride = 2, current_stride * 2
        geometry.append((stride, rate, current_stride))

    last = config.stride_unit == "last"
    in_channels = 2 * config.stem_width if config.stem == "deep" else config.stem_width
    stages = []
    for index, ((name, depth, width, out_channels), (stride, rate, feature_stride)) in enumerate(
        zip(stage_args, geometry)
    ):
        grid = multi_grid if index >= 3 else (1,) * depth
        # "last": this stage's last unit carries the next stage's stride (slim's layout, where a
        # unit that would pass the output stride runs at this stage's rate; the next stage then
        # runs at the doubled one, as here).
        handed = geometry[index + 1][0] if index + 1 < len(geometry) else 1
        units = []
        for j in range(depth):
            if last:
                unit_stride = handed if j == depth - 1 else 1
            else:
                unit_stride = stride if j == 0 else 1
            unit_rate = rate * grid[j]
            if unit_stride > 1 and unit_rate > 1 and not config.stride_in_1x1:
                raise ValueError(
                    f"{name}_unit{j + 1} would put stride {unit_stride} and atrous rate "
                    f"{unit_rate} on the same 3x3 conv (multi_grid={config.multi_grid} at "
                    f"output_stride={config.output_stride}, stride_in_1x1=False, the default "
                    f"for groups > 1). Use multi_grid[{j}] = 1 for this unit, a smaller "
                    f"output_stride, or stride_in_1x1=True."
                )
            # The unit that may stride: the first of a stage ("first") or the last of every
            # stage but the final one ("last"). Where it keeps its depth its shortcut is a
            # `Subsample` at every stride, so the layers do not depend on the output stride.
            if last:
                stride_position = j == depth - 1 and index + 1 < len(geometry)
            else:
                stride_position = j == 0
            units.append(
                UnitSpec(
                    name=f"{name}_unit{j + 1}",
                    in_channels=in_channels,
                    width=width,
                    out_channels=out_channels,
                    stride=unit_stride,
                    dilation_rate=unit_rate,
                    project=in_channels != out_channels,
                    stride_position=stride_position,
                )
            )
            in_channels = out_channels
        # The stage's feature: its last unit's output, or with "last" (and a next stage) the
        # output of the unit before the strided one, at this stage's own stride.
        tap = units[-2].name if last and index + 1 < len(geometry) else units[-1].name
        stages.append(StageSpec(name, stride, rate, feature_stride, tuple(units), tap))
    return tuple(stages)


def feature_layout(config):
    """(key, stage name) pairs of the backbone outputs, in output order.

    The contract keys res2..res5 come first; "res5" is the last stage's output, i.e. the last
    cascaded block's when `cascade_blocks > 0`. Then, with cascade, the outputs of the blocks
    before the last one, named as in DeepLabv3 Fig. 3: "block4" (= the res5 stage), "block5"..
    """
    config = BackboneConfig.from_dict(config)
    last = "res5" if config.cascade_blocks == 0 else f"block{4 + config.cascade_blocks}"
    layout = [("res2", "res2"), ("res3", "res3"), ("res4", "res4"), ("res5", last)]
    if config.cascade_blocks:
        layout.append(("block4", "res5"))
        layout += [(f"block{5 + i}", f"block{5 + i}") for i in range(config.cascade_blocks - 1)]
    return layout


def feature_strides(config):
    strides = {s.name: s.feature_stride for s in stage_plan(config)}
    return {key: strides[stage] for key, stage in feature_layout(config)}


def feature_channels(config):
    channels = {s.name: s.units[-1].out_channels for s in stage_plan(config)}  # taps keep depth
    return {key: channels[stage] for key, stage in feature_layout(config)}


def stem_specs(config):
    """(name, filters, kernel, stride) of the stem convs."""
    w = config.stem_width
    if config.stem == "standard":
        return [("stem_conv1", w, 7, 2)]
    # PAN Sec 3.3 / research/deeplab resnet_v1_beta / Model Garden "v1": 64-64-128.
    return [("stem_conv1", w, 3, 2), ("stem_conv2", w, 3, 1), ("stem_conv3", 2 * w, 3, 1)]


def se_reduced_filters(channels, se_ratio):
    """Channels of a Squeeze-and-Excitation bottleneck: `max(1, int(channels * se_ratio))`."""
    return max(1, int(channels * se_ratio))


# --------------------------------------------------------------------------------------------
# Analytic cost from the plan


def _conv_macs(h, w, cin, cout, k, groups=1):
    return h * w * cout * k * k * (cin // groups)


def plan_macs(config, image_size=(512, 512)):
    """Multiply-accumulates of the backbone at one image size, from `stage_plan` alone.

    Counts exactly what `deeplab_family.flops.count_macs` counts on the built model (convs of
    the stem and units, SE projections); not BN, ReLU, adds, pooling or the normalisation.
    Fast enough to search over configs (Layer Rearrangement), and tested equal to the graph
    count of the built model.
    """
    config = BackboneConfig.from_dict(config)
    h, w = image_size
    macs, cin = 0, 3
    for _, filters, kernel, stride in stem_specs(config):
        h, w = math.ceil(h / stride), math.ceil(w / stride)
        macs += _conv_macs(h, w, cin, filters, kernel)
        cin = filters
    h, w = math.ceil(h / 2), math.ceil(w / 2)  # max pool
    for stage in stage_plan(config):
        for u in stage.units:
            ho, wo = math.ceil(h / u.stride), math.ceil(w / u.stride)
            h1, w1 = (ho, wo) if config.stride_in_1x1 else (h, w)
            macs += _conv_macs(h1, w1, u.in_channels, u.width, 1)
            macs += _conv_macs(ho, wo, u.width, u.width, 3, config.groups)
            macs += _conv_macs(ho, wo, u.width, u.out_channels, 1)
            if u.project:
                macs += _conv_macs(ho, wo, u.in_channels, u.out_channels, 1)
            if config.se_ratio is not None:
                r = se_reduced_filters(u.out_channels, config.se_ratio)
                macs += 2 * u.out_channels * r
            h, w = ho, wo
    return macs


def plan_params(config):
    """Number of weights of the built backbone (`model.count_params()`), from the plan alone.

    Every conv is bias-free and followed by BN, whose 4 per-channel vectors (gamma, beta,
    moving mean and variance) all count, as in Keras' `count_params`; SE projections have
    biases.
    """
    config = BackboneConfig.from_dict(config)

    def conv(cin, cout, k, groups=1):
        return k * k * (cin // groups) * cout + 4 * cout

    total, cin = 0, 3
    for _, filters, kernel, _ in stem_specs(config):
        total += conv(cin, filters, kernel)
        cin = filters
    for stage in stage_plan(config):
        for u in stage.units:
            total += conv(u.in_channels, u.width, 1) + conv(u.width, u.width, 3, config.groups)
            total += conv(u.width, u.out_channels, 1)
            if u.project:
                total += conv(u.in_channels, u.out_channels, 1)
            if config.se_ratio is not None:
                r = se_reduced_filters(u.out_channels, config.se_ratio)
                total += 2 * u.out_channels * r + r + u.out_channels
    return total
