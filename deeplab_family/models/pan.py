"""`pan`: Pyramid Attention Network (Li et al., BMVC 2018, Sec 3.3, Fig 2).

backbone -> FPA on res5 -> GAU with res4 -> GAU with res3 -> GAU with res2 -> 1x1 logits conv
(at 1/4 of the input) -> bilinear upsample to the input size.

The paper's network, as YAML:

```yaml
model:
  name: pan
  num_classes: 21
  backbone: {depth: 101, stem: deep, output_stride: 16}   # PAN 3.3: dilated R101, 3x3 stem
  head: {}                                                 # FPA C357 + AVE + GP, GAU 3x3 + GP
```

The backbone is whatever `config.backbone` says; the block above is the paper's. Every row of
Table 1 (FPA settings, with the naive decoder) and Table 3 (GAU settings, without FPA) is a head
dict (tests/models/test_pan.py lists them):

- Table 1 (decoder: plain upsample, `gau: false`): "ResNet101" = `fpa: false`; "+SE" =
  `fpa_attention: se, fpa_global_pooling: false`; "+C333/C357 +MAX/AVE (+GP)" =
  `fpa_kernel_sizes: [3, 3, 3] | [7, 5, 3]`, `fpa_pooling: max | avg`,
  `fpa_global_pooling: false | true`.
- Table 3 (`fpa: false`): "ResNet101" = `gau: false`; GAU without GP =
  `gau_global_pooling: false`; GP + 1x1 = `gau_low_kernel_size: 1`; GP + 3x3 = the defaults.
"""

import dataclasses

import keras

from deeplab_family import _validation
from deeplab_family.backbones import build_backbone
from deeplab_family.layers import FeaturePyramidAttention, GlobalAttentionUpsample
from deeplab_family.layers.pan import FPA_ATTENTIONS, FPA_GLOBAL_POOLING_MERGES, FPA_POOLINGS
from deeplab_family.models.common import full_resolution, image_input
from deeplab_family.models.registry import register_model


@dataclasses.dataclass(frozen=True)
class PANHead:
    """Head options of `pan`. The defaults are the paper's final model (Sec 4.2, Table 5).

    Args:
        fpa: bool. Feature Pyramid Attention on res5. False is Table 1's "ResNet101" row
            (and Table 3's GAU-only rows): res5 goes straight to the decoder.
        fpa_attention: "pyramid" (FPA) or "se" (Table 1 "ResNet101+SE": channel attention
            instead of the pyramid).
        fpa_kernel_sizes: the pyramid's kernels, finest level first: (7, 5, 3) is "C357",
            (3, 3, 3) is "C333".
        fpa_pooling: "avg" ("AVE", the paper's choice) or "max" ("MAX").
        fpa_global_pooling: the global pooling branch ("GP").
        fpa_global_pooling_merge: "concat" (Sec 3.1: "concatenated", the default) or "add"
            (the public ports); see `FeaturePyramidAttention`.
        fpa_filters: channels of the FPA output; None = `filters`.
        fpa_pyramid_filters: channels inside the pyramid; None = `fpa_filters // 4`, the ratio
            of the public ports (see `FeaturePyramidAttention`).
        gau: bool. Global Attention Upsample with res4, res3 and res2. False is the naive
            decoder of Table 1 (logits at res5's stride, bilinearly upsampled).
        gau_global_pooling: the GAU's global-context gate ("GP" of Table 3; False is its first
            GAU row).
        gau_low_kernel_size: 3 (paper) or 1 (Table 3's "1x1 Conv" row): the low-level
            reduction conv.
        gau_filters: output channels of the GAUs on res4, res3 and res2, in that order; None =
            `filters` for each. A GAU whose high-level input is wider projects it (1x1 conv +
            BN).
        filters: the common width: of the FPA output and of every GAU output, unless
            `fpa_filters` / `gau_filters` say otherwise.

    Each GAU upsamples stride-exactly by the ratio of the backbone's `feature_strides` (2, or 1
    between res5 and res4 of a dilated backbone); see `GlobalAttentionUpsample`.

    PAN does not give channel counts. `filters=256` for FPA and all three GAUs, because:
    (1) Sec 3.2 calls GAU's 3x3 conv a channel *reduction* of the backbone features and GAU "a
    slight and effective decoder" that avoids "too much computation burden"; 256 is the decoder
    width of DeepLabv3's ASPP and of FPN, and res2 already has 256 channels. (2) With one width
    throughout, each GAU's high-level input already has `filters` channels and is added as is,
    with no projection (the shortcut of Fig 4); only res5 without FPA (Table 3) is projected.
    (3) The public ports keep the backbone widths (FPA at 2048 with a 512-wide pyramid, GAUs
    at 1024/512/256): their FPA's first 7x7 conv alone (2048 -> 512) has 51M weights. Here the
    head has 12.4M (ResNet-101: 42.7M), 8.1M of it in FPA (6.4M in its 7x7 conv,
    2048 -> 64), and the res2 GAU, the costliest in MACs, is the ports' own (256 -> 256). The
    ports' widths are `fpa_filters: 2048, fpa_pyramid_filters: 512, gau_filters: [1024, 512,
    256]` (train_configs/pan_r101deep_os16_voc_trainaug_portwidths.yaml).

    Example (Table 2's "C333" + "MAX" head on a small deep-stem ResNet, so that it runs in a
    second; the paper's backbone is `{"depth": 101, "stem": "deep", "output_stride": 16}`):

    >>> from deeplab_family.models import ModelConfig, build_model
    >>> config = ModelConfig.from_dict({
    ...     "name": "pan", "num_classes": 21,
    ...     "backbone": {"stage_depths": [1, 1, 1, 1], "stage_widths": [8, 8, 16, 16],
    ...                  "stage_channels": [16, 32, 32, 64], "stem": "deep", "stem_width": 8,
    ...                  "output_stride": 16},
    ...     "head": {"fpa_kernel_sizes": [3, 3, 3], "fpa_pooling": "max"}})
    >>> model = build_model(config)
    >>> tuple(model(keras.ops.zeros((1, 65, 65, 3)))["logits"].shape)
    (1, 65, 65, 21)

    Reference:
        Li et al., "Pyramid Attention Network for Semantic Segmentation", BMVC 2018.
    """

    fpa: bool = True
    fpa_attention: str = "pyramid"
    fpa_kernel_sizes: tuple[int, ...] = (7, 5, 3)
    fpa_pooling: str = "avg"
    fpa_global_pooling: bool = True
    fpa_global_pooling_merge: str = "concat"
    fpa_filters: int | None = None
    fpa_pyramid_filters: int | None = None
    gau: bool = True
    gau_global_pooling: bool = True
    gau_low_kernel_size: int = 3
    gau_filters: tuple[int, int, int] | None = None
    filters: int = 256

    def __post_init__(self):
        for name in ("fpa", "fpa_global_pooling", "gau", "gau_global_pooling"):
            _validation.boolean(name, getattr(self, name))
        _validation.one_of("fpa_attention", self.fpa_attention, FPA_ATTENTIONS)
        _validation.one_of("fpa_pooling", self.fpa_pooling, FPA_POOLINGS)
        _validation.one_of(
            "fpa_global_pooling_merge", self.fpa_global_pooling_merge, FPA_GLOBAL_POOLING_MERGES
        )
        kernels = _validation.explained(
            _validation.odd_ints, "fpa_kernel_sizes", self.fpa_kernel_sizes,
            "fpa_kernel_sizes must be odd ints, finest pyramid level first, e.g. [7, 5, 3] "
            "(C357).",
        )
        object.__setattr__(self, "fpa_kernel_sizes", kernels)
        _validation.explained(
            _validation.odd_int, "gau_low_kernel_size", self.gau_low_kernel_size,
            "gau_low_kernel_size must be an odd int (3 or 1 in Table 3).",
        )
        _validation.positive_int("filters", self.filters)
        for name in ("fpa_filters", "fpa_pyramid_filters"):
            _validation.optional_positive_int(name, getattr(self, name))
        widths = _validation.explained(
            _validation.int_tuple, "gau_filters", self.gau_filters,
            "gau_filters must be None or three ints >= 1 (res4, res3, res2), e.g. "
            "[1024, 512, 256].",
            length=3, minimum=1, allow_none=True,
        )
        object.__setattr__(self, "gau_filters", widths)


@register_model("pan", PANHead)
def build_pan(config, head, dtype=None):
    """Builds PAN (Sec 3.3, Fig 2) from a `ModelConfig` and its validated `PANHead`."""
    bb = config.backbone
    unit = {
        "synchronized": bb.synchronized_bn,
        "norm_momentum": bb.norm_momentum,
        "norm_epsilon": bb.norm_epsilon,
        "dtype": dtype,
    }
    images = image_input()
    backbone = build_backbone(bb, dtype=dtype, name="backbone")
    features = backbone(images)

    x = features["res5"]
    if head.fpa:
        x = FeaturePyramidAttention(
            head.fpa_filters or head.filters,
            pyramid_filters=head.fpa_pyramid_filters,
            kernel_sizes=head.fpa_kernel_sizes,
            pooling=head.fpa_pooling,
            global_pooling=head.fpa_global_pooling,
            global_pooling_merge=head.fpa_global_pooling_merge,
            attention=head.fpa_attention,
            name="fpa",
            **unit,
        )(x)
    if head.gau:
        # Fig 2: each GAU takes the next lower stage as its low-level input and the previous
        # output as its high-level input, "upsampled gradually" to res2 (1/4), each step
        # stride-exact by the ratio of the two strides.
        strides = backbone.feature_strides
        widths = head.gau_filters or (head.filters,) * 3
        high_key = "res5"
        for key, width in zip(("res4", "res3", "res2"), widths):
            x = GlobalAttentionUpsample(
                width,
                low_kernel_size=head.gau_low_kernel_size,
                global_pooling=head.gau_global_pooling,
                upsample_ratio=strides[high_key] // strides[key],
                name=f"gau_{key}",
                **unit,
            )([features[key], x])
            high_key = key
    # The paper does not place the classifier. We put the 1x1 logits conv after the last GAU
    # (at 1/4 of the input, or at the backbone's output stride with the naive decoder) and
    # upsample the logits, as DeepLabv3 does: the scores are smooth at that scale, and
    # upsampling num_classes channels instead of 256 is ~12x cheaper at full resolution.
    x = keras.layers.Conv2D(config.num_classes, 1, dtype=dtype, name="logits_conv")(x)
    stride = backbone.feature_strides["res2" if head.gau else "res5"]
    logits = full_resolution(x, images, name="logits", dtype=dtype, stride=stride)
    return keras.Model(images, {"logits": logits}, name="pan")
