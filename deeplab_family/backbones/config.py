"""`BackboneConfig`: the typed description of a ResNet / ResNeXt / SE-ResNeXt backbone."""

import dataclasses

from deeplab_family import _validation, defaults

# He et al. 2016, Table 1: bottleneck units per stage (res2..res5).
STANDARD_STAGE_DEPTHS = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
# Out channels of res2..res5 for every standard net: ResNet (4 x 64..512) and ResNeXt (He et al.,
# Xie et al. 2017 Table 1) alike. Decoders rely on them.
STANDARD_STAGE_CHANNELS = (256, 512, 1024, 2048)
STEMS = ("standard", "deep")
# Where a stage's stride sits: on its first unit (He et al.; keras.applications, torchvision,
# timm, mmseg, Model Garden) or on the last unit of the stage before it (slim's resnet_v1 and
# research/deeplab's resnet_v1_beta, DeepLabv3 Sec 3.2: "the last convolution contains stride 2").
STRIDE_UNITS = ("first", "last")
# Input normalisations the backbone's `ImageNormalization` applies (see image_normalization.py),
# each the one its weights were trained with:
# - "caffe": RGB -> BGR minus the BGR mean (keras.applications ResNet, MSRA's Caffe models);
# - "tf": x / 127.5 - 1 (keras.applications' "tf" mode; Inception-style nets);
# - "torch": (x - mean) / std in RGB with ImageNet's statistics (torchvision, timm, mmseg and
#   TensorFlow Model Garden);
# - "slim": RGB minus slim's ImageNet mean, no scaling (slim's resnet_v1_50/101/152);
# - "deeplab": RGB minus research/deeplab's mean, no scaling (its resnet_v1_*_beta).
PREPROCESSING = ("caffe", "tf", "torch", "slim", "deeplab")
# ImageNet channel means in BGR order, as keras.applications.imagenet_utils ("caffe" mode).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# torchvision's `transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])`
# on [0, 1] pixels, here on [0, 255]; the same numbers as mmseg's `img_norm_cfg` and Model
# Garden's `preprocess_ops.MEAN_RGB` / `STDDEV_RGB` (0.485 * 255, ...).
TORCH_MEAN_RGB = (123.675, 116.28, 103.53)
TORCH_STD_RGB = (58.395, 57.12, 57.375)
# slim's `vgg_preprocessing` (_R_MEAN, _G_MEAN, _B_MEAN), which its resnet_v1 nets trained with.
SLIM_MEAN_RGB = (123.68, 116.78, 103.94)
# research/deeplab's `core/feature_extractor.py` `_MEAN_RGB`, subtracted for its resnet_v1
# variants (`_preprocess_subtract_imagenet_mean`).
DEEPLAB_MEAN_RGB = (123.15, 115.90, 103.06)
MAX_CASCADE_BLOCKS = 3  # DeepLabv3 Sec 3.2 goes up to block7 = block4 + 3 replicas.
_DERIVABLE = ("stage_depths", "stage_widths", "stage_channels", "stride_in_1x1")


def zero_pixel(mode):
    """The RGB pixel (0..255) that normalisation `mode` maps to zero: the value to pad images
    with.

    Padding with it makes a padded border look like "no signal" to the first conv, whatever the
    weights' normalisation: the mean the mode subtracts, in RGB order, or mid-grey for "tf".

    >>> zero_pixel("caffe"), zero_pixel("tf"), zero_pixel("torch")
    ((123.68, 116.779, 103.939), (127.5, 127.5, 127.5), (123.675, 116.28, 103.53))
    """
    _validation.one_of("mode", mode, PREPROCESSING)
    return {
        "caffe": tuple(reversed(CAFFE_BGR_MEAN)),
        "tf": (127.5, 127.5, 127.5),
        "torch": TORCH_MEAN_RGB,
        "slim": SLIM_MEAN_RGB,
        "deeplab": DEEPLAB_MEAN_RGB,
    }[mode]


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """A ResNet-family backbone: ResNet v1, ResNeXt, SE, deep stem, dilation and cascade.

    Every field has a default; the defaults build the keras.applications-compatible ResNet-50.
    The config is validated on construction: a bad value raises `ValueError` naming the field,
    what was received and what is allowed.

    Args:
        depth: 50, 101 or 152: the standard stage depths 3-4-6-3, 3-4-23-3, 3-8-36-3. None
            means 50 unless `stage_depths` is given; after construction it names the standard
            net that `stage_depths` is, or None for non-standard depths.
        stage_depths: 4 ints, units per stage res2..res5 (Layer Rearrangement, tiny test
            nets). If `depth` is given too, the two must agree.
        stage_widths: 4 ints, the bottleneck (3x3 conv) widths. Default
            `groups * width_per_group * 2**i`: 64..512 for ResNet, 128..1024 for ResNeXt 32x4d.
        stage_channels: 4 ints, the unit output channels. Default 256, 512, 1024, 2048 for every
            net, ResNet and ResNeXt alike (Xie et al. 2017, Table 1).
        stem: "standard" (7x7/2 conv + 3x3/2 max pool) or "deep" (three 3x3 convs, widths
            `stem_width, stem_width, 2 * stem_width`, then the max pool: PAN Sec 3.3,
            research/deeplab "resnet_v1_beta", Model Garden stem "v1").
        stem_width: channels of the stem (64).
        groups: cardinality of the 3x3 convs (ResNeXt); must divide every stage width.
        width_per_group: channels per group of the res2 3x3 conv (64 for ResNet, 4 for 32x4d).
        se_ratio: None, or the Squeeze-and-Excitation reduction (1/16 in Hu et al.) applied to
            the output of every unit (ExFuse Sec 4).
        output_stride: input size / res5 size. Powers of two from 4 to `32 * 2**cascade_blocks`.
            At 4 (DeepLabv3 Appendix C evaluates Cityscapes at 4) res2 keeps the stem's stride
            and res3, res4, res5 run at rates 2, 4, 8 (x multi-grid for res5).
        multi_grid: unit rates of the last stage and of every cascaded block (DeepLabv3 Sec
            3.2.1); one positive int per unit of the last stage. None = all ones.
        cascade_blocks: 0..3 replicas of the last stage appended as block5..block7 (DeepLabv3
            Sec 3.2, Fig. 3).
        stride_unit: which unit of a stage carries the stride. "first" (default): the first
            unit of the strided stage, as He et al., keras.applications, torchvision, timm,
            mmseg and Model Garden. "last": the last unit of the stage before it (its shortcut
            a `Subsample`), as slim's resnet_v1 and research/deeplab's resnet_v1_beta, whose
            checkpoints compute a different function otherwise; DeepLabv3 Sec 3.2 describes
            this layout. With "last" the features res2, res3, res4 are the outputs of the
            unit before that strided one, at the stage's own stride (research/deeplab's
            decoder reads that unit too, "block1/unit_2", at its conv3 before the residual
            add), so those stages need 2 units or more.
        stride_in_1x1: where a strided unit puts its stride. True: on its first 1x1 conv, as
            Caffe / MSRA ResNet v1 and keras.applications do (a different placement would
            still load their weights but compute a different function: the importers refuse
            it). False: on the 3x3 conv ("v1.5": torchvision, timm, mmseg, Model Garden;
            slim and research/deeplab, with `stride_unit="last"`), as ResNeXt does (Xie et al. 2017,
            and every public ResNeXt checkpoint: torchvision, timm). None (default): follows
            the variant, resolved on construction: False for grouped nets (`groups > 1`,
            ResNeXt), True otherwise. Builds matching Model Garden's DilatedResNet set it to
            False.
        norm_momentum: BN moving-average momentum (DeepLabv3 Sec 4.1: decay 0.9997).
        norm_epsilon: BN epsilon.
        synchronized_bn: synchronise BN statistics across replicas.
        preprocessing: the input normalisation of the weights, one of `PREPROCESSING`:
            "caffe" (RGB->BGR, minus the ImageNet BGR mean: keras.applications ResNet), "tf"
            (x / 127.5 - 1), "torch" (RGB mean/std: torchvision, timm, mmseg, Model Garden),
            "slim" or "deeplab" (RGB mean subtraction of slim and research/deeplab). The
            weight importers (`deeplab_family.weights`) refuse a mode that contradicts the file.

    Example:

    >>> BackboneConfig(depth=101, output_stride=16, multi_grid=(1, 2, 4)).stage_depths
    (3, 4, 23, 3)
    >>> BackboneConfig().stride_in_1x1, BackboneConfig(groups=32, width_per_group=4).stride_in_1x1
    (True, False)
    """

    depth: int | None = None
    stage_depths: tuple[int, ...] | None = None
    stage_widths: tuple[int, ...] | None = None
    stage_channels: tuple[int, ...] | None = None
    stem: str = "standard"
    stem_width: int = 64
    groups: int = 1
    width_per_group: int = 64
    se_ratio: float | None = None
    output_stride: int = 32
    multi_grid: tuple[int, ...] | None = None
    cascade_blocks: int = 0
    stride_in_1x1: bool | None = None
    stride_unit: str = "first"
    norm_momentum: float = defaults.BN_MOMENTUM
    norm_epsilon: float = defaults.BN_EPSILON
    synchronized_bn: bool = False
    preprocessing: str = "caffe"

    def __post_init__(self):
        def set_(name, value):  # the dataclass is frozen; normalise fields once, here
            object.__setattr__(self, name, value)

        positive = _validation.positive_int

        def four_positive(name, value):
            if value is None:
                return None
            return _validation.explained(
                _validation.int_tuple, name, value, f"{name} must be 4 ints >= 1 (res2..res5).",
                length=4, minimum=1,
            )

        # Fields left to None are derived here; `replace` derives them again.
        object.__setattr__(
            self,
            "_derived",
            frozenset(n for n in _DERIVABLE if getattr(self, n) is None),
        )
        stage_depths = four_positive("stage_depths", self.stage_depths)
        depth = self.depth
        if depth is not None and depth not in STANDARD_STAGE_DEPTHS:
            raise ValueError(
                f"depth must be one of {sorted(STANDARD_STAGE_DEPTHS)} (or None with "
                f"stage_depths). Received: depth={depth!r}"
            )
        if stage_depths is None:
            stage_depths = STANDARD_STAGE_DEPTHS[depth or 50]
        elif depth is not None and STANDARD_STAGE_DEPTHS[depth] != stage_depths:
            raise ValueError(
                f"depth and stage_depths disagree: depth={depth} has stage depths "
                f"{STANDARD_STAGE_DEPTHS[depth]}. Received: stage_depths={stage_depths}. "
                f"Give one of them, or depth=None."
            )
        by_depths = {v: k for k, v in STANDARD_STAGE_DEPTHS.items()}
        set_("stage_depths", stage_depths)
        set_("depth", by_depths.get(stage_depths))

        positive("groups", self.groups)
        positive("width_per_group", self.width_per_group)
        positive("stem_width", self.stem_width)
        widths = four_positive("stage_widths", self.stage_widths)
        if widths is None:
            widths = tuple(self.groups * self.width_per_group * 2**i for i in range(4))
        bad = [w for w in widths if w % self.groups]
        if bad:
            raise ValueError(
                f"groups must divide every stage width. Received: groups={self.groups}, "
                f"stage_widths={widths} (not divisible: {bad})"
            )
        set_("stage_widths", widths)
        channels = four_positive("stage_channels", self.stage_channels)
        set_("stage_channels", channels if channels is not None else STANDARD_STAGE_CHANNELS)

        _validation.one_of("stem", self.stem, STEMS)
        _validation.one_of("stride_unit", self.stride_unit, STRIDE_UNITS)
        if self.stride_unit == "last":
            # Every stage that hands a stride to the next one taps its feature one unit early.
            handing = stage_depths[:3] + ((stage_depths[3],) if self.cascade_blocks else ())
            if min(handing) < 2:
                raise ValueError(
                    "stride_unit='last' puts the next stage's stride on a stage's last unit and "
                    "takes the stage's feature from the unit before it, so res2..res4 (and res5 "
                    "with cascade_blocks) need 2 units or more. Received: "
                    f"stage_depths={stage_depths}, cascade_blocks={self.cascade_blocks}"
                )
        _validation.one_of("preprocessing", self.preprocessing, PREPROCESSING)
        if self.se_ratio is not None and (
            isinstance(self.se_ratio, bool)
            or not isinstance(self.se_ratio, (int, float))
            or not 0 < self.se_ratio <= 1
        ):
            raise ValueError(
                f"se_ratio must be None or a float in (0, 1], e.g. 1/16. "
                f"Received: se_ratio={self.se_ratio!r}"
            )

        if (
            isinstance(self.cascade_blocks, bool)
            or not isinstance(self.cascade_blocks, int)
            or not 0 <= self.cascade_blocks <= MAX_CASCADE_BLOCKS
        ):
            raise ValueError(
                f"cascade_blocks must be an int in 0..{MAX_CASCADE_BLOCKS} (block5..block7). "
                f"Received: cascade_blocks={self.cascade_blocks!r}"
            )
        allowed = self.allowed_output_strides(self.cascade_blocks)
        if (
            not isinstance(self.output_stride, int)
            or isinstance(self.output_stride, bool)
            or self.output_stride not in allowed
        ):
            raise ValueError(
                f"output_stride must be one of {list(allowed)} with cascade_blocks="
                f"{self.cascade_blocks}. Received: output_stride={self.output_stride!r}"
            )

        multi_grid = _validation.int_tuple("multi_grid", self.multi_grid, allow_none=True)
        if multi_grid is not None:
            if any(r < 1 for r in multi_grid):
                raise ValueError(
                    f"multi_grid rates must be ints >= 1. Received: multi_grid={multi_grid}"
                )
            if len(multi_grid) != stage_depths[-1]:
                raise ValueError(
                    f"multi_grid must give one rate per unit of the last stage (and of each "
                    f"cascaded block): {stage_depths[-1]} rates. Received: multi_grid="
                    f"{multi_grid} ({len(multi_grid)} rates)"
                )
        set_("multi_grid", multi_grid)

        if self.stride_in_1x1 is None:
            # ResNeXt strides its grouped 3x3 (Xie et al. 2017; torchvision, timm); ResNet v1
            # as keras.applications has it strides the 1x1.
            set_("stride_in_1x1", self.groups == 1)
        for name in ("stride_in_1x1", "synchronized_bn"):
            _validation.boolean(name, getattr(self, name))
        momentum = self.norm_momentum
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not (
            0.0 <= momentum < 1.0
        ):
            raise ValueError(
                f"norm_momentum must be in [0, 1). Received: norm_momentum={momentum!r}"
            )
        _validation.positive_number("norm_epsilon", self.norm_epsilon)

    @staticmethod
    def allowed_output_strides(cascade_blocks=0):
        """`defaults.OUTPUT_STRIDES`, then the powers of two up to the undilated stride of the
        last cascaded block, 32 * 2**cascade."""
        top = max(defaults.OUTPUT_STRIDES)
        return defaults.OUTPUT_STRIDES + tuple(top * 2**k for k in range(1, cascade_blocks + 1))

    @property
    def resolved_multi_grid(self):
        return self.multi_grid or (1,) * self.stage_depths[-1]

    def replace(self, **changes):
        """A copy with some fields changed, validated again.

        Fields that were derived (left None) are derived again from the changed ones, and
        changing `depth` or `stage_depths` re-derives the other:
        `BackboneConfig(depth=50).replace(depth=101).stage_depths == (3, 4, 23, 3)`.
        """
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in self._derived:
            values[name] = None
        if "depth" in changes:
            values["stage_depths"] = None
        if "stage_depths" in changes:
            values["depth"] = None
        values.update(changes)
        return type(self)(**values)

    def to_dict(self):
        """A JSON/YAML-friendly dict (tuples become lists) that `from_dict` reads back."""
        return {
            f.name: list(v) if isinstance(v, tuple) else v
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }

    @classmethod
    def from_dict(cls, values):
        """Builds a config from a dict (e.g. a YAML section); unknown keys are an error."""
        if isinstance(values, cls):
            return values
        if not isinstance(values, dict):
            raise ValueError(f"A backbone config must be a dict. Received: {values!r}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"Unknown backbone config key(s) {unknown}. Allowed keys: {known}")
        return cls(**values)
