"""`InputConfig`: what the input pipeline reads and how it augments it.

Free of TensorFlow, so the experiment config (`deeplab_family.config`) types its data sections
with it; `pipeline.make_dataset` turns it into a `tf.data.Dataset`.
"""

import dataclasses
from collections.abc import Mapping, Sequence

from deeplab_family import _validation
from deeplab_family.data import schema

# The RGB mean of torchvision's ImageNet normalisation x 255: `InputConfig`'s padding when no
# section names one (the experiment config pads with the backbone's zero pixel instead).
IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
AUTOTUNE = -1  # tf.data.AUTOTUNE's value, spelled without importing TensorFlow


def _size(name, value):
    return _validation.explained(
        _validation.int_pair, name, value,
        f"{name} must be an int >= 1 or a pair (height, width) of them.",
    )


def _sources(values):
    """`sources` as a tuple of `{"file_pattern": str | list, "weight": float}` dicts."""
    if isinstance(values, (str, Mapping)) or not isinstance(values, Sequence):
        raise ValueError(
            "sources must be a list of {file_pattern: ..., weight: ...}. "
            f"Received: sources={values!r}"
        )
    out = []
    for i, entry in enumerate(values):
        if not isinstance(entry, Mapping):
            raise ValueError(f"sources[{i}] must be a mapping {{file_pattern, weight}}. "
                             f"Received: {entry!r}")
        unknown = sorted(set(entry) - {"file_pattern", "weight"})
        if unknown:
            raise ValueError(f"sources[{i}] has unknown key(s) {unknown}; "
                             "allowed: file_pattern, weight")
        pattern = entry.get("file_pattern")
        if isinstance(pattern, Sequence) and not isinstance(pattern, str):
            pattern = [str(p) for p in pattern]
        if not pattern or (isinstance(pattern, list) and not all(pattern)):
            raise ValueError(f"sources[{i}].file_pattern is empty. Received: {entry!r}")
        weight = entry.get("weight")
        if weight is not None and (
            isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0
        ):
            raise ValueError(f"sources[{i}].weight must be a number > 0 (or left out). "
                             f"Received: weight={weight!r}")
        out.append({"file_pattern": pattern,
                    "weight": None if weight is None else float(weight)})
    if not out:
        raise ValueError("sources is empty: give at least one {file_pattern, weight}")
    given = [s["weight"] is not None for s in out]
    if any(given) and not all(given):
        raise ValueError(
            "give every source a weight, or none (then each is drawn in proportion to its "
            f"number of examples). Received: sources={values!r}")
    return tuple(out)


def _oversample(values):
    """`oversample` as `{"classes": [names or ids], "factor": int}`, or None."""
    if values is None:
        return None
    if not isinstance(values, Mapping):
        raise ValueError("oversample must be {classes: [...], factor: N}. "
                         f"Received: oversample={values!r}")
    unknown = sorted(set(values) - {"classes", "factor"})
    if unknown:
        raise ValueError(f"oversample has unknown key(s) {unknown}; allowed: classes, factor")
    classes = values.get("classes")
    if isinstance(classes, (str, int)):
        classes = [classes]
    if not classes or not all(
        isinstance(c, str) or (isinstance(c, int) and not isinstance(c, bool) and c >= 0)
        for c in classes
    ):
        raise ValueError("oversample.classes must be a non-empty list of class names or ids. "
                         f"Received: classes={values.get('classes')!r}")
    factor = values.get("factor", 2)
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"oversample.factor must be an int >= 1 (how many times an image with "
                         f"one of the classes is read). Received: factor={factor!r}")
    return {"classes": list(classes), "factor": factor}


def scale_values(min_scale, max_scale, scale_step):
    """The discrete scale set ``{min, min+step, ..., max}``, or None for continuous (step 0)."""
    if scale_step == 0 or min_scale == max_scale:
        return None if min_scale != max_scale else [float(min_scale)]
    count = round((max_scale - min_scale) / scale_step) + 1
    return [float(min_scale + i * scale_step) for i in range(count)]


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """What to read and how to augment it.

    Args:
        file_pattern: str or list of str. Glob(s) of TFRecord shards, e.g.
            ``"data/train_aug-*.tfrecord"``: one source.
        sources: list of ``{file_pattern, weight}`` (training only; instead of
            ``file_pattern``). Each source is read on its own and examples are drawn from them
            in proportion to the weights. Without weights, in proportion to each source's
            example count (from the builders' manifests): every image equally often, as if the
            sources were one set (ExFuse Sec 4.2's stage 1 "mix[es] up all images in COCO, SBD
            and standard PASCAL VOC 2012").
        oversample: ``{classes: [names or ids], factor: N}`` or None (training only). An image
            holding any of the classes is read ``factor`` times per pass over its source, the
            hard-image bootstrapping of DeepLabv3 Sec 4.3 and ExFuse Sec 4.2. The classes are
            looked up in the dataset spec of the shards' manifests; the classes of each image
            are those recorded at build time (``image/segmentation/class/present``), or read
            from its label for shards of other tools.
        crop_size: int or (height, width). Training crop (513 in DeepLabv3 Sec 4.1).
        min_scale, max_scale: floats. Range of the random scale (0.5 and 2.0 in the paper).
        scale_step: float. The scale is drawn from ``{min, min+step, ..., max}``; 0 draws it
            uniformly from ``[min, max]``.
        flip: bool. Random left-right flip.
        ignore_label: int. Label of padding and of unlabelled pixels.
        mean_pixel: three floats. Image padding value, RGB 0..255. The experiment config sets
            it to the pixel that the backbone's normalisation maps to zero
            (`backbones.config.zero_pixel`) unless the section names one; on its
            own, `InputConfig` pads with the ImageNet RGB mean.
        batch_size: int. The global batch; each replica gets ``batch_size / replicas``.
        shuffle_buffer: int. Examples in the shuffle buffer (training).
        deterministic: bool. Keep the element order fixed (parallel calls then wait for each
            other); with a seed, the same batches every run.
        seed: int or None. Seeds file order, shuffling and augmentation.
        num_parallel_calls: int. Parallelism of the reads and of the map; -1 is AUTOTUNE.
        eval_crop_size: None, int or (height, width). Evaluation: None keeps the native size;
            a size pads every image to it (and is an error for a larger image).
        cycle_length: int. Shards read at once.
    """

    file_pattern: str | Sequence[str] = ""
    sources: Sequence[Mapping] = ()
    oversample: Mapping | None = None
    crop_size: int | Sequence[int] = 513
    min_scale: float = 0.5
    max_scale: float = 2.0
    scale_step: float = 0.25
    flip: bool = True
    ignore_label: int = schema.IGNORE_LABEL
    mean_pixel: Sequence[float] = IMAGENET_MEAN_RGB
    batch_size: int = 16
    shuffle_buffer: int = 1000
    deterministic: bool = False
    seed: int | None = None
    num_parallel_calls: int = AUTOTUNE
    eval_crop_size: int | Sequence[int] | None = None
    cycle_length: int = 16

    def __post_init__(self):
        # Frozen, like the rest of the config: normalised values are set through object.
        object.__setattr__(self, "crop_size", _size("crop_size", self.crop_size))
        if self.sources:
            if self.file_pattern:
                raise ValueError(
                    "give file_pattern (one source) or sources (several), not both (with "
                    "--set, also set file_pattern=''). Received: "
                    f"file_pattern={self.file_pattern!r}, sources={self.sources!r}"
                )
            object.__setattr__(self, "sources", _sources(self.sources))
        else:
            object.__setattr__(self, "sources", ())
        object.__setattr__(self, "oversample", _oversample(self.oversample))
        if self.eval_crop_size is not None:
            object.__setattr__(self, "eval_crop_size", _size("eval_crop_size", self.eval_crop_size))
        _validation.require(
            self.min_scale > 0, f"min_scale must be > 0. Received: min_scale={self.min_scale!r}"
        )
        if not self.max_scale >= self.min_scale:
            raise ValueError(
                "max_scale must be >= min_scale. Received: "
                f"min_scale={self.min_scale!r}, max_scale={self.max_scale!r}"
            )
        if not self.scale_step >= 0:
            raise ValueError(f"scale_step must be >= 0. Received: scale_step={self.scale_step!r}")
        if self.scale_step > 0 and self.max_scale > self.min_scale:
            steps = (self.max_scale - self.min_scale) / self.scale_step
            if abs(steps - round(steps)) > 1e-6:
                raise ValueError(
                    "scale_step must divide max_scale - min_scale, so that max_scale is in the "
                    f"set. Received: min_scale={self.min_scale!r}, max_scale={self.max_scale!r}, "
                    f"scale_step={self.scale_step!r}"
                )
        mean = tuple(float(v) for v in self.mean_pixel)
        if len(mean) != 3:
            raise ValueError(f"mean_pixel must have 3 values (RGB). Received: {self.mean_pixel!r}")
        object.__setattr__(self, "mean_pixel", mean)
        for name in ("batch_size", "shuffle_buffer", "cycle_length"):
            _validation.positive_int(name, getattr(self, name))
        if not (self.num_parallel_calls == AUTOTUNE or self.num_parallel_calls >= 1):
            raise ValueError(
                "num_parallel_calls must be >= 1 or tf.data.AUTOTUNE (-1). Received: "
                f"num_parallel_calls={self.num_parallel_calls!r}"
            )
        if not 0 <= self.ignore_label <= 255:  # labels are 8-bit PNGs
            raise ValueError(
                f"ignore_label must be in 0..255. Received: ignore_label={self.ignore_label!r}"
            )

    @property
    def source_list(self):
        """``[(file_pattern, weight), ...]``: the sources (weight None: by example count), or
        ``file_pattern`` as one of weight 1."""
        if self.sources:
            return [(s["file_pattern"], s["weight"]) for s in self.sources]
        return [(self.file_pattern, 1.0)]

    @property
    def all_patterns(self):
        """Every glob the section reads (for manifests and specs)."""
        patterns = []
        for pattern, _ in self.source_list:
            patterns.extend([pattern] if isinstance(pattern, str) else list(pattern))
        return [p for p in patterns if p]

    @property
    def scales(self):
        """The discrete scale set, or None when the scale is continuous."""
        return scale_values(self.min_scale, self.max_scale, self.scale_step)
