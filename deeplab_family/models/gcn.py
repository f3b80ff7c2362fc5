"""`gcn`: the Global Convolutional Network decoder ("Large Kernel Matters", Peng et al. 2017,
Fig 2), the baseline that ExFuse builds on (ExFuse Sec 3, Fig 2, Table 1).

On each selected level l (level l = res(l+1): 1 = res2 ... 4 = res5):
GlobalConvolution (k=15) to the score channels -> BoundaryRefinement. Then top-down: the top
level is upsampled x2 by a deconvolution, added to the next level's scores, and refined by BR;
down to res2 (1/4); then deconv x2 + BR (1/2) and deconv x2 + BR (1/1), as GCN's Fig 2 draws.

The paper's setting, as YAML (ExFuse's baseline, Table 3 #1):

```yaml
model:
  name: gcn
  num_classes: 21
  backbone: {depth: 101, groups: 32, width_per_group: 4}   # ResNeXt-101 32x4d, stride 32
  head: {feature_levels: [1, 2, 3, 4]}                      # Table 1: [4], [3, 4], [2, 3, 4]
```

ResNet-50/101 are `backbone: {depth: 50}` / `{depth: 101}`. ExFuse's Fig 2 sizes (res-2 128 ...
res-5 16 for a 512 input) are those of an undilated backbone, `output_stride: 32`; at 16 or 8
the decoder still works (see `gcn_decoder`), so the same weights evaluate at a finer stride.
"""

import dataclasses

import keras

from deeplab_family import _validation
from deeplab_family.backbones import build_backbone
from deeplab_family.layers import (
    BoundaryRefinement,
    CropLike,
    GlobalConvolution,
    SubPixelUpsample,
)
from deeplab_family.models.common import full_resolution, image_input
from deeplab_family.models.registry import register_model

LEVEL_KEYS = {1: "res2", 2: "res3", 3: "res4", 4: "res5"}  # ExFuse's level l = res-(l+1)


def decoder_options(feature_levels, kernel_size, deconv_kernel_size):
    """Checks the decoder options that `GCNHead` and `ExFuseHead` share; returns the feature
    levels as a sorted tuple."""
    rule = (
        "feature_levels must be a non-empty set of distinct levels from 1 (res2) to 4 (res5), "
        "e.g. [3, 4]."
    )
    levels = _validation.explained(
        _validation.int_tuple, "feature_levels", feature_levels, rule, allow_empty=False
    )
    _validation.require(
        set(levels) <= set(LEVEL_KEYS) and len(set(levels)) == len(levels),
        f"{rule} Received: feature_levels={feature_levels!r}",
    )
    _validation.explained(
        _validation.odd_int, "kernel_size", kernel_size,
        "kernel_size must be odd and >= 1 (an even \"same\" kernel is off-centre by half a "
        "pixel; GCN's best k is 15).",
    )
    _validation.positive_int("deconv_kernel_size", deconv_kernel_size, minimum=2)
    return tuple(sorted(levels))


@dataclasses.dataclass(frozen=True)
class GCNHead:
    """Head options of `gcn`.

    Args:
        feature_levels: the levels whose features feed the decoder (ExFuse Table 1): 1 = res2,
            2 = res3, 3 = res4, 4 = res5. The highest one starts the top-down path. A level
            left out loses its GCN + BR skip branch only: the top-down path keeps every x2
            deconv + BR step down to 1/4 and then to 1/1, so `[4]` is res5 -> GCN -> BR ->
            (deconv + BR) x 5, the same decoder depth as the full model.
        kernel_size: k of the global convolutions (15, GCN's best setting).
        deconv_kernel_size: kernel of the stride-2 deconvolutions. 4 = 2 x stride, the FCN
            choice, so that every output pixel gets two taps per axis (a bilinear upsample is
            one such kernel); GCN does not give it.

    Reference:
        Peng et al., "Large Kernel Matters -- Improve Semantic Segmentation by Global
        Convolutional Network", CVPR 2017; Zhang et al., "ExFuse", ECCV 2018, Table 1.
    """

    feature_levels: tuple[int, ...] = (1, 2, 3, 4)
    kernel_size: int = 15
    deconv_kernel_size: int = 4

    def __post_init__(self):
        levels = decoder_options(self.feature_levels, self.kernel_size, self.deconv_kernel_size)
        object.__setattr__(self, "feature_levels", levels)


def gcn_decoder(
    images,
    features,
    feature_strides,
    level_inputs,
    channels,
    kernel_size=15,
    deconv_kernel_size=4,
    first_upsample="deconv",
    dtype=None,
):
    """The GCN top-down decoder (GCN Fig 2), shared by `gcn` and `exfuse`.

    Layer names: "gcn_<res>" and "br_<res>" on each selected level; "up_<res>" (the x2 step
    into that level's resolution; a Conv2DTranspose, or the SubPixelUpsample of ECRE for the
    first step), "align_<res>", "fuse_<res>" (the sum) and "br_fuse_<res>"; then "up_half",
    "br_half", "up_full", "crop_full", "br_full".

    Alignment after each x2 step, read from the backbone's static strides. A stride-2 "same"
    `Conv2DTranspose` with kernel k sends input pixel i to output pixels 2i - (k - 2) // 2 ...
    2i + k - 1 - (k - 2) // 2 (for k = 4: 2i - 1 ... 2i + 2, a window centred on 2i + 1/2).
    Which of them the map "sits on" is decided by the learnt kernel (ECRE's depth-to-space puts
    sub-pixel (0, 0) of input pixel i on 2i); the decoder fixes it at 2i, the same in every
    case: when the next level has half the stride, the x2 map is cropped to that level's
    run-time size (`CropLike`: pixel 2i stays on the level's pixel 2i); when it has the same
    stride (a dilated backbone, e.g. res4 and res5 at output stride 16), every second pixel is
    taken (`CropLike(step=2)`: pixel 2i lands on the level's pixel i). Both are exact for the
    kernels that put i on 2i, e.g. the corner-aligned bilinear x2 kernel (1/2, 1, 1/2 on
    2i - 1, 2i, 2i + 1), which k = 4 holds; and since the deconvolutions are the same in both
    cases, a model trained at one output stride loads at another with the same weights.

    Args:
        images: the model input (the final crop's reference size).
        features: the backbone's {"res2".."res5"} (reference sizes of every level).
        feature_strides: the backbone's {"res2": 4, ...}.
        level_inputs: {level: tensor} for the selected levels, the GCN blocks' inputs.
        channels: score channels of the decoder (num_classes, or num_classes * 9 with DAP).
        kernel_size: the GCN blocks' k.
        deconv_kernel_size: kernel of the Conv2DTranspose layers.
        first_upsample: "deconv", or "subpixel" for ExFuse's ECRE: the top level's GCN gives
            `4 * channels` and its x2 step is a parameter-free depth-to-space.
        dtype: dtype policy of every layer.

    Returns:
        (decoded, first_up): the decoder's output at the input size with `channels` channels,
        and the map right after the top level's first x2 step (aligned), for ECRE's auxiliary
        supervision.
    """
    levels = sorted(level_inputs, reverse=True)
    top = levels[0]

    def score(level, filters):
        key = LEVEL_KEYS[level]
        s = GlobalConvolution(filters, kernel_size, dtype=dtype, name=f"gcn_{key}")(
            level_inputs[level]
        )
        return BoundaryRefinement(dtype=dtype, name=f"br_{key}")(s)

    def upsample(x, name, first):
        if first and first_upsample == "subpixel":
            return SubPixelUpsample(2, dtype=dtype, name=name)(x)
        return keras.layers.Conv2DTranspose(
            channels, deconv_kernel_size, strides=2, padding="same", dtype=dtype, name=name
        )(x)

    top_channels = channels * 4 if first_upsample == "subpixel" else channels
    y = score(top, top_channels)
    first_up = None
    for level in range(top - 1, 0, -1):
        key, upper = LEVEL_KEYS[level], LEVEL_KEYS[level + 1]
        up = upsample(y, f"up_{key}", first_up is None)
        ratio = feature_strides[upper] // feature_strides[key]
        if ratio not in (1, 2):
            raise ValueError(
                "gcn_decoder needs each level at the stride of the level above or at half of "
                f"it. Received: feature_strides={feature_strides!r}"
            )
        # Half the stride: crop (pixel 2i stays on 2i). Same stride (dilated): every second
        # pixel (2i lands on i).
        up = CropLike(step=3 - ratio, dtype=dtype, name=f"align_{key}")([up, features[key]])
        if first_up is None:
            first_up = up
        if level in level_inputs:
            up = keras.layers.Add(dtype=dtype, name=f"fuse_{key}")([up, score(level, channels)])
        y = BoundaryRefinement(dtype=dtype, name=f"br_fuse_{key}")(up)

    # res2 (1/4) -> 1/2 -> 1/1. The 1/2 map is left uncropped (at most one extra row and
    # column) and the full-resolution one is cropped to the image.
    up = upsample(y, "up_half", first_up is None)
    if first_up is None:
        first_up = up
    y = BoundaryRefinement(dtype=dtype, name="br_half")(up)
    up = upsample(y, "up_full", False)
    up = CropLike(dtype=dtype, name="crop_full")([up, images])
    return BoundaryRefinement(dtype=dtype, name="br_full")(up), first_up


@register_model("gcn", GCNHead)
def build_gcn(config, head, dtype=None):
    """Builds the GCN baseline (ExFuse Fig 2 without the dashed components)."""
    images = image_input()
    backbone = build_backbone(config.backbone, dtype=dtype, name="backbone")
    features = backbone(images)
    decoded, _ = gcn_decoder(
        images,
        features,
        backbone.feature_strides,
        {level: features[LEVEL_KEYS[level]] for level in head.feature_levels},
        config.num_classes,
        kernel_size=head.kernel_size,
        deconv_kernel_size=head.deconv_kernel_size,
        dtype=dtype,
    )
    # The scores are already at the input size (crop_full); this casts them to float32 and
    # resizes only if the input were smaller than 4 x res2 (it never is with this backbone).
    logits = full_resolution(decoded, images, name="logits", dtype=dtype, stride=1)
    return keras.Model(images, {"logits": logits}, name="gcn")
