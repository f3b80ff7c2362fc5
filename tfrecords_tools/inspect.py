r"""Inspects TFRecord shards of segmentation examples: what they hold, and the mistakes in them.

    python -m tfrecords_tools.inspect 'shards/train-*.tfrecord' [--spec SPEC] \
        [--contact-sheet PATH] [--num-images 16] [--json PATH] [--max-images N]

It reports the example count, each class's share of the labelled pixels and the images that
hold it (with the class names), the image sizes (smallest, largest, most common) and formats,
and findings at three levels. The exit status is 1 when a finding is an ``error``, 0 otherwise,
and 2 for a bad command line or a pattern that matches no file.

The dataset spec (class names, palette) is the one in the shards' manifests
(``deeplab_family.data.spec.spec_for_files``); ``--spec`` (a built-in name or a YAML file)
overrides it. With neither, a warning says so, and the classes are the values seen (255 is
ignore).

Findings, each naming the images (``image/filename``) it is about:

- **error** ``out_of_range``: label values that are not a class id and not 255, with the values.
- **error** ``colour_coded``: masks that look like colour-coded labels stored as class ids (the
  heuristic is below).
- **error** ``size_mismatch``, ``undecodable_image``, ``undecodable_label``,
  ``label_not_grayscale`` (a palette or RGB label PNG: ``tf.io.decode_png(channels=1)``, which
  training uses, reads the grayscale of its colours, not its indices), ``corrupt_record`` (a
  CRC mismatch or a truncated file), ``bad_example`` (a record without the keys), and
  ``count_mismatch`` (a shard holding another count than its manifest says).
- **warning** ``binary_mask``: at least 90% of the images hold only 0 and one other value (0/1
  masks) while the spec has more than two classes; ``foreground_as_ignore``: at least 90% hold
  only 0 and 255 (binary masks saved 0/255: 255 is ignore, so nothing but background is
  learnt); ``all_ignore`` and ``all_background`` (every pixel 255, or every pixel class 0);
  ``duplicate_ids``; ``format_mismatch`` (``image/format`` is not what the bytes are);
  ``present_mismatch`` (``image/segmentation/class/present`` is not the classes in the label);
  ``no_spec``.
- **warning** or **info** ``classes_never_seen``: a warning when half the classes or more are
  never seen (the spec and the data do not match), else info (a subset can miss a class).

**The colour-coded heuristic.** A colour mask (RGB) saved as one channel, or converted to
grayscale, holds values such as 38, 75, 113 (the grayscale of VOC's (128, 0, 0), (0, 128, 0),
(128, 128, 0)) or 64, 128, 192 (one channel of them). The values are compared with what each of
seven conversions makes of the palette colours (the spec's palette with its ``ignore_color``,
and VOC's, the colour map most tools draw with): grayscale with the ITU-R 601 weights (PIL's
``convert("L")``, OpenCV, ``tf.io.decode_png``; rounded or truncated), the same on BGR (OpenCV
reads BGR), the ITU-R 709 weights (scikit-image), the channel mean, and the R, G or B channel.
An image is flagged when, of its labelled pixels other than 0 (black is 0 whatever the
conversion, and 0 is a valid class), at least a tenth are not a class id and at least 90% have a
value that one conversion makes of a palette colour. Both conditions matter. The first keeps a
correct mask whose class ids happen to be such values (15 is VOC's person, and the grayscale of
its boat) from being flagged; only a tenth is asked for, because a colour-coded mask holds such
values too (a large boat, a small aeroplane). The second keeps the ids of another dataset
(ADE20K's 150 classes under the VOC spec) an ``out_of_range`` error only; its 10% leave room
for anti-aliased edges. Without a spec the classes are the values seen, and a value counts as
"not a class id" when it is not below the number of distinct values (ids 0, 38, 75 are not a
dense numbering).

A contact sheet PNG (by default ``contact-sheet-<split>.png`` next to the first shard;
``--num-images 0`` writes none) shows the flagged images first and then a spread of the others,
each beside its mask in the spec's palette, with its id, and a legend of the classes seen.

The reader is TensorFlow-free: it reads the TFRecord framing itself, with every CRC checked
(``tfrecords_tools.framing``), and the ``tf.train.Example`` wire format (``example`` writes it),
so the tool starts in a fraction of a second.
"""

import argparse
import dataclasses
import glob
import io
import json
import math
import os
import re
import struct
import sys
from collections import Counter

import numpy as np
from PIL import Image, ImageDraw

from deeplab_family import _files, _validation
from deeplab_family import cli as tool_cli
from deeplab_family.data import schema
from deeplab_family.data.classes import VOC_CLASSES
from deeplab_family.data.palette import VOC_COLORMAP
from deeplab_family.data.spec import SpecError, load_spec, manifests_for_files, spec_for_files
from tfrecords_tools.framing import masked_crc32c
from tfrecords_tools.progress import image_progress
from tfrecords_tools.sources import LABEL_VALUES, InvalidExampleError, inspect_image

ERROR, WARNING, INFO = "error", "warning", "info"
LEVELS = (ERROR, WARNING, INFO)

# The thresholds of the findings (see the module docstring).
BINARY_SHARE = 0.9  # binary_mask / foreground_as_ignore: share of the images
COLOUR_NOT_CLASS_SHARE = 0.1  # colour_coded: labelled non-0 pixels that are not a class id
COLOUR_MATCH_SHARE = 0.9  # colour_coded: labelled non-0 pixels with a palette-derived value
UNSEEN_WARNING_SHARE = 0.5  # classes_never_seen is a warning from this share of the classes

IDS_SHOWN = 8  # ids named in a printed finding (the JSON has them all)

# Contact sheet geometry, in pixels (`sheet_layout`).
THUMB = 128  # each image and each mask fits in a THUMB x THUMB box
GAP = 4  # between an image and its mask
PAD = 8  # around and between cells
CAPTION = 26  # the two lines under a cell: the id, and the codes of its findings
TITLE = 18  # the title line at the top
COLUMNS = 4
LEGEND_ROW = 16
LEGEND_COLUMN = 180
SWATCH = 12
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
ERROR_TEXT = (200, 0, 0)
# Values that are not a class are drawn in the first of these that is no class's colour.
OFF_CLASS_COLOURS = ((255, 0, 255), (0, 255, 255), (255, 255, 0), (255, 128, 0))

_SHARD_NAME = re.compile(r"^(?P<split>.+)-\d{5}-of-\d{5}\.tfrecord$")
_HEADER = struct.Struct("<QI")


# --------------------------------------------------------------------------------------------
# Reading records and examples.
# --------------------------------------------------------------------------------------------


class RecordError(ValueError):
    """A TFRecord file that cannot be read on; the message names the file and the record."""


def iter_records(path):
    """Yields ``(offset, data)`` of each record of a TFRecord file, checking both CRCs.

    Raises:
        RecordError: a truncated record or a CRC mismatch (the message names the file, the
            record number and its byte offset).
    """
    with open(path, "rb") as f:
        index = 0
        while True:
            offset = f.tell()
            data = _read_record(f, path, index, offset)
            if data is None:
                return
            yield offset, data
            index += 1


def read_record_at(path, offset):
    """The data of the record at byte ``offset`` of ``path`` (one ``iter_records`` yielded)."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = _read_record(f, path, None, offset)
    if data is None:
        raise RecordError(f"{path}: no record at byte {offset}")
    return data


def _read_record(f, path, index, offset):
    where = (
        f"{path}: record {index} (byte {offset})"
        if index is not None
        else f"{path}: record at byte {offset}"
    )
    header = f.read(_HEADER.size)
    if not header:
        return None
    if len(header) < _HEADER.size:
        raise RecordError(f"{where} is truncated: {len(header)} bytes of its 12-byte header")
    length, length_crc = _HEADER.unpack(header)
    if masked_crc32c(header[:8]) != length_crc:
        raise RecordError(f"{where}: the CRC of the length field does not match (corrupt file)")
    data = f.read(length)
    footer = f.read(4)
    if len(data) < length or len(footer) < 4:
        raise RecordError(f"{where} is truncated: {len(data)} of {length} bytes")
    if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
        raise RecordError(f"{where}: the CRC of the data does not match (corrupt file)")
    return data


def count_records(path):
    """The number of records, from the length fields alone (for the progress total)."""
    count = 0
    try:
        size = os.path.getsize(path)
        f = open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError:
        return 0  # `iter_records` reports it
    with f:
        while True:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return count
            (length,) = struct.unpack("<Q", header[:8])
            position = f.tell() + length + 4
            if position > size:
                return count + 1  # a truncated record: `iter_records` reports it
            f.seek(position)
            count += 1


def _varint(data, pos):
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(data):
    """Yields ``(field number, wire type, value)``: an int for varints, bytes otherwise."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated length-delimited field")
            value, pos = data[pos : pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _int64(value):
    return value - (1 << 64) if value >= 1 << 63 else value


def _feature_values(data):
    for number, wire, value in _fields(data):
        if number == 1 and wire == 2:  # bytes_list
            return [v for n, w, v in _fields(value) if n == 1 and w == 2]
        if number == 3 and wire == 2:  # int64_list: packed, or one varint per value
            out = []
            for n, w, v in _fields(value):
                if n == 1 and w == 0:
                    out.append(_int64(v))
                elif n == 1 and w == 2:
                    pos = 0
                    while pos < len(v):
                        item, pos = _varint(v, pos)
                        out.append(_int64(item))
            return out
        if number == 2 and wire == 2:  # float_list
            out = []
            for n, w, v in _fields(value):
                if n == 1 and w == 5:
                    out.append(struct.unpack("<f", v)[0])
                elif n == 1 and w == 2:
                    out.extend(struct.unpack(f"<{len(v) // 4}f", v))
            return out
    return []


def decode_example(data):
    """``{key: list of values}`` of a serialised ``tf.train.Example`` (bytes, ints or floats).

    >>> from tfrecords_tools.example import encode_example
    >>> decode_example(encode_example({"a": b"x", "n": [1, -2]}))
    {'a': [b'x'], 'n': [1, -2]}

    Raises:
        ValueError: the bytes are not an Example.
    """
    features = {}
    for number, wire, value in _fields(data):
        if number != 1 or wire != 2:
            continue
        for n, w, entry in _fields(value):
            if n != 1 or w != 2:
                continue
            key, feature = None, b""
            for en, ew, ev in _fields(entry):
                if en == 1 and ew == 2:
                    key = ev.decode("utf-8")
                elif en == 2 and ew == 2:
                    feature = ev
            if key is not None:
                features[key] = _feature_values(feature)
    return features


def tf_gray(rgb):
    """The grayscale ``tf.io.decode_png(channels=1)`` makes of RGB values (libpng's
    ``png_set_rgb_to_gray`` with 0.299, 0.587 in 15-bit fixed point, truncated)."""
    rgb = np.asarray(rgb, np.int64)
    return ((9798 * rgb[..., 0] + 19235 * rgb[..., 1] + 3735 * rgb[..., 2]) >> 15).astype(np.uint8)


def read_label(data):
    """The label PNG as training reads it (``tf.io.decode_png(channels=1)``), and a problem.

    Returns ``(label, problem)``: ``label`` a uint8 ``(H, W)`` array, ``problem`` None for a
    single-channel 8-bit PNG, else why the values are not what was meant (a palette PNG is read
    as the grayscale of its colours, not its indices).

    Raises:
        ValueError: not a decodable PNG.
    """
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.format != "PNG":
        raise ValueError(f"the label is {image.format or 'not an image'}, not a PNG")
    mode = image.mode
    if mode == "L":
        return np.asarray(image), None
    if mode == "P":
        why = (
            "is a palette PNG: tf.io.decode_png(channels=1) reads the grayscale of its "
            "colours, not its indices; store a grayscale PNG of the indices"
        )
        return tf_gray(np.asarray(image.convert("RGB"))), why
    if mode in ("RGB", "RGBA"):
        why = (
            f"is an {mode} PNG: tf.io.decode_png(channels=1) reads its grayscale; store a "
            "grayscale PNG of the class indices"
        )
        return tf_gray(np.asarray(image.convert("RGB"))), why
    if mode == "LA":
        return np.asarray(image)[..., 0], "has an alpha channel (dropped when read)"
    if mode == "1":
        why = "is a 1-bit PNG: its 1s are read as 255 (ignore); store 8-bit class indices"
        return np.asarray(image).astype(np.uint8) * 255, why
    if mode.startswith("I"):
        why = f"is a 16-bit PNG (mode {mode}): it is read to 8 bits; store 8-bit class indices"
        return (np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8), why
    raise ValueError(f"the label PNG has mode {mode}; expected grayscale (mode L)")


# --------------------------------------------------------------------------------------------
# What each example holds.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ExampleStats:
    """What one example holds: where it is, its sizes, and its label's value counts."""

    id: str
    file: str
    offset: int
    image_format: str = ""  # what the bytes are ("jpeg", "png"); "" when undecodable
    recorded_format: str = ""
    image_size: tuple | None = None  # (H, W)
    label_size: tuple | None = None
    recorded_size: tuple | None = None
    values: np.ndarray | None = None  # the label values present, sorted
    counts: np.ndarray | None = None  # their pixel counts
    present: tuple | None = None  # image/segmentation/class/present, when recorded
    problems: list = dataclasses.field(default_factory=list)  # (code, message)

    @property
    def decodable(self):
        return self.image_size is not None and self.values is not None

    def value_set(self):
        return set() if self.values is None else {int(v) for v in self.values}


def _first(features, key, default=None):
    values = features.get(key) or []
    return values[0] if values else default


def inspect_record(data, file, offset, index):
    """The `ExampleStats` of one serialised example (problems recorded, never raised)."""
    where = f"{os.path.basename(file)} record {index}"
    try:
        features = decode_example(data)
    except (ValueError, UnicodeDecodeError) as e:
        stats = ExampleStats(f"({where})", file, offset)
        stats.problems.append(("bad_example", f"{where} is not a tf.train.Example: {e}"))
        return stats
    name = _first(features, schema.IMAGE_FILENAME, b"")
    sample_id = (
        name.decode("utf-8", "replace") if isinstance(name, bytes) and name else (f"({where})")
    )
    stats = ExampleStats(sample_id, file, offset)
    missing = [
        k
        for k in (schema.IMAGE_ENCODED, schema.LABEL_ENCODED)
        if not isinstance(_first(features, k), bytes)
    ]
    if missing:
        stats.problems.append(("bad_example", f"{sample_id} ({where}) has no {', '.join(missing)}"))
        return stats
    fmt = _first(features, schema.IMAGE_FORMAT, b"")
    stats.recorded_format = fmt.decode("utf-8", "replace") if isinstance(fmt, bytes) else ""
    height, width = _first(features, schema.IMAGE_HEIGHT), _first(features, schema.IMAGE_WIDTH)
    if isinstance(height, int) and isinstance(width, int):
        stats.recorded_size = (height, width)
    if schema.LABEL_CLASSES_PRESENT in features:
        stats.present = tuple(int(v) for v in features[schema.LABEL_CLASSES_PRESENT])
    try:
        fmt, h, w = inspect_image(features[schema.IMAGE_ENCODED][0], f"{sample_id} ({where})")
        stats.image_format, stats.image_size = fmt, (h, w)
    except InvalidExampleError as e:
        stats.problems.append(("undecodable_image", str(e)))
    try:
        label, why = read_label(features[schema.LABEL_ENCODED][0])
    except Exception as e:  # noqa: BLE001 (PIL raises OSError, SyntaxError, ValueError...)
        stats.problems.append(
            ("undecodable_label", f"label of {sample_id} ({where}) cannot be decoded: {e}")
        )
        return stats
    if why:
        stats.problems.append(("label_not_grayscale", f"label of {sample_id} {why}"))
    stats.label_size = label.shape
    counts = np.bincount(label.ravel(), minlength=LABEL_VALUES)
    stats.values = np.flatnonzero(counts)
    stats.counts = counts[stats.values]
    return stats


# --------------------------------------------------------------------------------------------
# The colour-coded heuristic.
# --------------------------------------------------------------------------------------------


def _gray_candidates(rgb, weights):
    value = rgb @ np.asarray(weights, np.float64)
    return [np.round(value), np.floor(value + 1e-9)]


# (name, how the message says it, colours (N, 3) int -> list of (N,) candidate value arrays)
DECODINGS = (
    (
        "grayscale",
        "the grayscale (ITU-R 601 weights: PIL's convert('L'), OpenCV, tf.io.decode_png)",
        lambda c: [*_gray_candidates(c, (0.299, 0.587, 0.114)), tf_gray(c)],
    ),
    (
        "grayscale_bgr",
        "the grayscale, read as BGR (OpenCV's order),",
        lambda c: _gray_candidates(c, (0.114, 0.587, 0.299)),
    ),
    (
        "grayscale_709",
        "the grayscale (ITU-R 709 weights: scikit-image's rgb2gray)",
        lambda c: _gray_candidates(c, (0.2125, 0.7154, 0.0721)),
    ),
    (
        "channel_mean",
        "the mean of R, G and B",
        lambda c: _gray_candidates(c, (1 / 3, 1 / 3, 1 / 3)),
    ),
    ("red", "the red channel", lambda c: [c[:, 0]]),
    ("green", "the green channel", lambda c: [c[:, 1]]),
    ("blue", "the blue channel", lambda c: [c[:, 2]]),
)


@dataclasses.dataclass(frozen=True)
class ColourSignature:
    """The values one conversion (`DECODINGS`) makes of one palette's colours."""

    palette: str  # whose palette ("voc", the spec's name)
    decoding: str
    description: str
    sources: dict  # value -> names of the colours that give it

    @property
    def values(self):
        return frozenset(self.sources)


def colour_signatures(palettes):
    """The `ColourSignature` of every conversion of every palette.

    Args:
        palettes: list of ``(palette name, [(colour name, (R, G, B)), ...])``.
    """
    out = []
    for palette_name, entries in palettes:
        colours = np.asarray([rgb for _, rgb in entries], np.int64).reshape(-1, 3)
        for name, description, convert in DECODINGS:
            sources = {}
            for candidate in convert(colours):
                for (colour_name, rgb), value in zip(entries, np.asarray(candidate), strict=True):
                    label = f"{colour_name} {list(rgb)}"
                    sources.setdefault(int(value), [])
                    if label not in sources[int(value)]:
                        sources[int(value)].append(label)
            out.append(ColourSignature(palette_name, name, description, sources))
    return out


def colour_coded_match(stats, num_classes, signatures):
    """The signature that explains ``stats``'s label as colour-coded, or None (the rule is in the
    module docstring)."""
    if stats.values is None:
        return None
    values, counts = stats.values, stats.counts
    labelled = values != schema.IGNORE_LABEL
    nonzero = labelled & (values != 0)
    total = int(counts[nonzero].sum())
    not_class = int(counts[nonzero & (values >= num_classes)].sum())
    if not_class == 0 or not_class < COLOUR_NOT_CLASS_SHARE * total:
        return None
    best, best_matched = None, 0
    for signature in signatures:
        matched = int(counts[nonzero & np.isin(values, list(signature.values))].sum())
        if matched > best_matched:
            best, best_matched = signature, matched
    return best if best_matched >= COLOUR_MATCH_SHARE * total else None


# --------------------------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Finding:
    level: str
    code: str
    message: str
    ids: list = dataclasses.field(default_factory=list)

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Report:
    """What `inspect_files` found. ``to_dict`` is the ``--json`` form, ``format`` the text."""

    files: list
    examples: list  # ExampleStats, in file order
    class_names: list  # index = class id
    colormap: np.ndarray  # (256, 3) uint8 by stored label
    spec_name: str | None
    spec_source: str | None
    findings: list
    histogram: np.ndarray  # (256,) pixels per value
    image_counts: np.ndarray  # (256,) images holding each value
    contact_sheet: str | None = None

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def exit_code(self):
        return 1 if any(f.level == ERROR for f in self.findings) else 0

    def image_sizes(self):
        """The smallest and largest (by area) ``[H, W]``, and the five most common."""
        sizes = Counter(s.image_size for s in self.examples if s.image_size is not None)
        if not sizes:
            return None
        area = lambda hw: (hw[0] * hw[1], hw)  # noqa: E731
        return {
            "min": list(min(sizes, key=area)),
            "max": list(max(sizes, key=area)),
            "most_common": [{"size": list(size), "count": n} for size, n in sizes.most_common(5)],
        }

    def image_formats(self):
        return dict(Counter(s.image_format or "undecodable" for s in self.examples))

    def class_rows(self):
        """``[(value, name, pixels, share, images)]``: the classes, then 255, then the values
        that are no class. ``share``: of the labelled pixels for classes, of all for the rest.
        Without a spec, only the values seen are classes."""
        labelled = int(self.histogram[: self.num_classes].sum())
        total = int(self.histogram.sum())
        rows = []
        for c, name in enumerate(self.class_names):
            pixels = int(self.histogram[c])
            if self.spec_name is None and not pixels:
                continue
            rows.append(
                (c, name, pixels, pixels / labelled if labelled else 0.0, int(self.image_counts[c]))
            )
        ignore = schema.IGNORE_LABEL
        rows.append(
            (
                ignore,
                "(ignore)",
                int(self.histogram[ignore]),
                self.histogram[ignore] / total if total else 0.0,
                int(self.image_counts[ignore]),
            )
        )
        off = [v for v in range(self.num_classes, ignore) if self.histogram[v]]
        if off:
            pixels = int(self.histogram[off].sum())
            images = sum(
                1
                for s in self.examples
                if s.values is not None and any(self.num_classes <= v < ignore for v in s.values)
            )
            rows.append((None, "(not a class)", pixels, pixels / total if total else 0.0, images))
        return rows

    def to_dict(self):
        return {
            "files": self.files,
            "count": len(self.examples),
            "spec": None
            if self.spec_name is None
            else {
                "name": self.spec_name,
                "source": self.spec_source,
                "num_classes": self.num_classes,
            },
            "classes": [
                {"id": v, "name": name, "pixels": pixels, "share": share, "images": images}
                for v, name, pixels, share, images in self.class_rows()
            ],
            "image_sizes": self.image_sizes(),
            "image_formats": self.image_formats(),
            "findings": [f.to_dict() for f in self.findings],
            "contact_sheet": self.contact_sheet,
            "exit_code": self.exit_code,
        }

    def format(self):
        """The human-readable report."""
        lines = [f"{len(self.examples)} examples in {len(self.files)} file(s)"]
        if self.spec_name is not None:
            lines.append(
                f"dataset spec: {self.spec_name} ({self.num_classes} classes) from "
                f"{self.spec_source}"
            )
        else:
            seen = sum(1 for v in range(self.num_classes) if self.histogram[v])
            lines.append(f"dataset spec: none (the classes are the {seen} values seen)")
        sizes = self.image_sizes()
        if sizes:
            common = ", ".join(
                f"{d['size'][0]}x{d['size'][1]} ({d['count']})" for d in sizes["most_common"][:3]
            )
            lines.append(
                f"image sizes (HxW): min {sizes['min'][0]}x{sizes['min'][1]}, max "
                f"{sizes['max'][0]}x{sizes['max'][1]}; most common {common}"
            )
        formats = ", ".join(f"{k} {v}" for k, v in sorted(self.image_formats().items()))
        lines.append(f"image formats: {formats or '-'}")
        lines.append("")
        lines.append(f"{'':>5} {'class':<24} {'pixels':>14} {'share':>7} {'images':>8}")
        for v, name, pixels, share, images in self.class_rows():
            if v == schema.IGNORE_LABEL and not pixels:
                continue
            lines.append(
                f"{'' if v is None else v:>5} {name[:24]:<24} {pixels:>14,} "
                f"{100 * share:>6.1f}% {images:>8}"
            )
        lines.append("(share: of the labelled pixels for the classes; of all pixels for the rest)")
        lines.append("")
        if self.findings:
            lines.append("findings:")
            for f in sorted(self.findings, key=lambda f: LEVELS.index(f.level)):
                lines.append(f"  {f.level:<7} {f.code}: {f.message}")
        else:
            lines.append("findings: none")
        if self.contact_sheet:
            lines.append(f"contact sheet: {self.contact_sheet}")
        return "\n".join(lines)


def _values_text(values, limit=12):
    values = [int(v) for v in values]
    more = f", ... ({len(values)} values)" if len(values) > limit else ""
    return ", ".join(map(str, values[:limit])) + more


def _ids_text(ids):
    more = f" and {len(ids) - IDS_SHOWN} more" if len(ids) > IDS_SHOWN else ""
    return ", ".join(ids[:IDS_SHOWN]) + more


def _count(n, what):
    return f"{n} {what}" + ("" if n == 1 else "s")


def _palettes(spec):
    """The palettes the colour-coded check compares with: the spec's, and VOC's."""
    voc = [(name, tuple(int(c) for c in VOC_COLORMAP[i])) for i, name in enumerate(VOC_CLASSES)]
    voc.append(("ignore", (224, 224, 192)))
    if spec is None:
        return [("voc", voc)]
    entries = list(zip(spec.classes, spec.palette, strict=True))
    if spec.ignore_color is not None:
        entries.append(("ignore", tuple(spec.ignore_color)))
    palettes = [(spec.name, entries)]
    if [rgb for _, rgb in entries[:21]] != [rgb for _, rgb in voc[: len(entries[:21])]]:
        palettes.append(("voc", voc))
    return palettes


def _findings(examples, spec, num_classes, class_names, manifests, files):
    """The findings; ``files``: those read to the end without error (their counts are
    checked against the manifests)."""
    findings = []
    add = lambda *a: findings.append(Finding(*a))  # noqa: E731
    # Records and decoding.
    by_code = {}
    for s in examples:
        for code, message in s.problems:
            by_code.setdefault(code, []).append((s.id, message))
    for code in (
        "corrupt_record",
        "bad_example",
        "undecodable_image",
        "undecodable_label",
        "label_not_grayscale",
    ):
        items = by_code.get(code, [])
        if items:
            first = items[0][1]
            more = f" (and {len(items) - 1} more like it)" if len(items) > 1 else ""
            add(
                ERROR,
                code,
                f"{_count(len(items), 'example')}: {first}{more}",
                [i for i, _ in items],
            )

    # Sizes.
    mismatched = []
    for s in examples:
        if s.image_size and s.label_size and s.image_size != s.label_size:
            mismatched.append(
                (
                    s.id,
                    f"image {s.image_size[0]}x{s.image_size[1]}, label "
                    f"{s.label_size[0]}x{s.label_size[1]}",
                )
            )
        elif s.image_size and s.recorded_size and s.image_size != s.recorded_size:
            mismatched.append(
                (
                    s.id,
                    f"image {s.image_size[0]}x{s.image_size[1]}, "
                    f"image/height x image/width {s.recorded_size[0]}x"
                    f"{s.recorded_size[1]}",
                )
            )
    if mismatched:
        shown = "; ".join(f"{i} ({why})" for i, why in mismatched[:IDS_SHOWN])
        add(
            ERROR,
            "size_mismatch",
            f"{_count(len(mismatched), 'example')} whose image and "
            f"label sizes (HxW) differ: {shown}",
            [i for i, _ in mismatched],
        )

    # Manifest counts.
    records = Counter(os.path.abspath(s.file) for s in examples if s.file)
    for path, manifest in manifests.items():
        directory = os.path.dirname(path)
        for shard in manifest.get("shards", []):
            file = os.path.abspath(os.path.join(directory, shard.get("file", "")))
            if file in files and shard.get("count") != records[file]:
                add(
                    ERROR,
                    "count_mismatch",
                    f"{file} holds {records[file]} examples but {path} says {shard.get('count')}",
                )

    decoded = [s for s in examples if s.values is not None]
    ignore = schema.IGNORE_LABEL

    # Values that are no class.
    if spec is not None:
        bad = [(s, [int(v) for v in s.values if num_classes <= v < ignore]) for s in decoded]
        bad = [(s, vs) for s, vs in bad if vs]
        if bad:
            all_values = sorted({v for _, vs in bad for v in vs})
            shown = "; ".join(f"{s.id} ({_values_text(vs, 6)})" for s, vs in bad[:IDS_SHOWN])
            more = f"; and {len(bad) - IDS_SHOWN} more" if len(bad) > IDS_SHOWN else ""
            add(
                ERROR,
                "out_of_range",
                f"{_count(len(bad), 'image')} hold label values outside 0..{num_classes - 1} "
                f"that are not {ignore} (ignore); {len(all_values)} distinct value(s): "
                f"{_values_text(all_values)}. Images: {shown}{more}",
                [s.id for s, _ in bad],
            )

    # Colour-coded masks.
    signatures = colour_signatures(_palettes(spec))
    if spec is None:
        seen = {v for s in decoded for v in s.values if v != ignore}
        dense = len(seen)
    else:
        dense = num_classes
    matches = [(s, colour_coded_match(s, dense, signatures)) for s in decoded]
    matches = [(s, m) for s, m in matches if m is not None]
    if matches:
        top = Counter((m.palette, m.decoding) for _, m in matches).most_common(1)[0][0]
        signature = next(m for _, m in matches if (m.palette, m.decoding) == top)
        values = sorted(
            {
                int(v)
                for s, m in matches
                if (m.palette, m.decoding) == top
                for v in s.values
                if v != 0 and v != ignore and v in m.values
            }
        )
        explained = "; ".join(f"{v} = {', '.join(signature.sources[v][:2])}" for v in values[:6])
        add(
            ERROR,
            "colour_coded",
            f"{_count(len(matches), 'image')} look like colour-coded masks stored as class "
            f"ids: their values are {signature.description} of the {signature.palette} palette's "
            f"colours ({explained}). Convert colour masks to class ids through the palette "
            "(tfrecords_tools.folder with encoding: color in the spec). Images: "
            f"{_ids_text([s.id for s, _ in matches])}",
            [s.id for s, _ in matches],
        )

    if decoded:
        # 0/1 masks, and 0/255 masks.
        sets = [s.value_set() - {ignore} for s in decoded]
        if spec is not None and num_classes > 2:
            candidates = Counter(v for vs in sets for v in vs if v != 0)
            for v, _ in candidates.most_common(1):
                binary = [s.id for s, vs in zip(decoded, sets, strict=True) if vs <= {0, v}]
                if len(binary) >= BINARY_SHARE * len(decoded):
                    what = "0/1 masks" if v == 1 else f"binary masks of 0 and {v}"
                    add(
                        WARNING,
                        "binary_mask",
                        f"{len(binary)} of {len(decoded)} images hold only 0 and {v} "
                        f"({class_names[v] if v < num_classes else 'not a class'}): {what}? The "
                        f"spec has {num_classes} classes (0..{num_classes - 1}); store each "
                        "pixel's class id",
                        binary,
                    )
        zero_ignore = [s.id for s in decoded if s.value_set() == {0, ignore}]
        if len(zero_ignore) >= BINARY_SHARE * len(decoded) and num_classes > 1:
            add(
                WARNING,
                "foreground_as_ignore",
                f"{len(zero_ignore)} of {len(decoded)} images hold only 0 and {ignore}: binary "
                f"masks saved as 0/{ignore}? {ignore} is ignore, so only class 0 is learnt; "
                "store the foreground's class id",
                zero_ignore,
            )

        # All ignore, all background.
        all_ignore = [s.id for s in decoded if s.value_set() == {ignore}]
        if all_ignore:
            add(
                WARNING,
                "all_ignore",
                f"{_count(len(all_ignore), 'image')} with every pixel "
                f"{ignore} (ignore), which teach nothing: {_ids_text(all_ignore)}",
                all_ignore,
            )
        all_zero = [s.id for s in decoded if s.value_set() == {0}]
        if all_zero:
            add(
                WARNING,
                "all_background",
                f"{_count(len(all_zero), 'image')} with every pixel "
                f"class 0 ({class_names[0] if class_names else 'background'}): "
                f"{_ids_text(all_zero)}",
                all_zero,
            )

        # Classes never seen.
        if spec is not None:
            seen = {v for vs in sets for v in vs}
            unseen = [c for c in range(num_classes) if c not in seen]
            if unseen:
                level = WARNING if len(unseen) >= UNSEEN_WARNING_SHARE * num_classes else INFO
                names = ", ".join(f"{c} {class_names[c]}" for c in unseen[:12])
                more = f", ... ({len(unseen)} classes)" if len(unseen) > 12 else ""
                add(
                    level,
                    "classes_never_seen",
                    f"{len(unseen)} of {num_classes} classes are in no image: {names}{more}",
                )

    # Ids, formats, class presence.
    ids = Counter(s.id for s in examples)
    dup = sorted(i for i, k in ids.items() if k > 1)
    if dup:
        add(
            WARNING,
            "duplicate_ids",
            f"{_count(len(dup), 'id')} occur more than once (the "
            f"same shard twice in the pattern?): {_ids_text(dup)}",
            dup,
        )
    wrong_format = [
        s.id
        for s in examples
        if s.image_format
        and s.recorded_format
        and s.recorded_format.lower()
        not in (s.image_format, "jpg" if s.image_format == "jpeg" else "")
    ]
    if wrong_format:
        add(
            WARNING,
            "format_mismatch",
            f"{_count(len(wrong_format), 'example')} whose "
            f"image/format is not what the bytes are: {_ids_text(wrong_format)}",
            wrong_format,
        )
    wrong_present = [
        s.id
        for s in decoded
        if s.present is not None and sorted(s.present) != sorted(s.value_set() - {ignore})
    ]
    if wrong_present:
        add(
            WARNING,
            "present_mismatch",
            f"{_count(len(wrong_present), 'example')} whose {schema.LABEL_CLASSES_PRESENT} is not "
            f"the classes in the label (hard-class oversampling reads it): "
            f"{_ids_text(wrong_present)}",
            wrong_present,
        )
    return findings


def inspect_files(files, spec=None, spec_source=None, max_images=None, progress=True):
    """Reads the shards and returns the `Report` (no contact sheet yet).

    Args:
        files: list of TFRecord paths.
        spec: DatasetSpec or None (then the classes are the values seen).
        spec_source: str. Where the spec came from, for the report.
        max_images: int or None. Stop after this many examples.
        progress: bool. A progress line on stderr.
    """
    total = sum(count_records(f) for f in files)
    if max_images is not None:
        total = min(total, max_images)
    bar = image_progress(total, "inspect", progress)
    examples, corrupt, complete = [], [], set()  # complete: the files read to the end
    try:
        for file in files:
            if max_images is not None and len(examples) >= max_images:
                break
            index = 0
            try:
                for offset, data in iter_records(file):
                    if max_images is not None and len(examples) >= max_images:
                        break
                    examples.append(inspect_record(data, file, offset, index))
                    index += 1
                    bar.update()
                else:
                    complete.add(os.path.abspath(file))
            except RecordError as e:
                corrupt.append(str(e))
            except OSError as e:
                corrupt.append(f"cannot read {file}: {e.strerror or e}")
    finally:
        bar.close()
    for message in corrupt:  # not an example: `Report.examples` leaves it out
        stats = ExampleStats(f"({os.path.basename(message.split(': ')[0])})", "", -1)
        stats.problems.append(("corrupt_record", message))
        examples.append(stats)

    histogram = np.zeros(LABEL_VALUES, np.int64)
    image_counts = np.zeros(LABEL_VALUES, np.int64)
    for s in examples:
        if s.values is not None:
            histogram[s.values] += s.counts
            image_counts[s.values] += 1
    if spec is not None:
        class_names, colormap = list(spec.classes), spec.colormap()
        spec_name = spec.name
    else:
        seen = [v for v in np.flatnonzero(histogram) if v != schema.IGNORE_LABEL]
        top = int(max(seen)) + 1 if seen else 1
        class_names = [f"value {v}" if histogram[v] else f"(value {v}, unseen)" for v in range(top)]
        colormap, spec_name = VOC_COLORMAP.copy(), None
    decoded_examples = [s for s in examples if s.file]
    manifests = manifests_for_files(files)
    findings = _findings(
        decoded_examples + [s for s in examples if not s.file],
        spec,
        len(class_names),
        class_names,
        manifests,
        complete,
    )
    if spec is None:
        findings.insert(
            0,
            Finding(
                WARNING,
                "no_spec",
                "no dataset spec: the shards have no manifest with one and no "
                "--spec was given; the classes are taken to be the values seen (255 is ignore), so "
                "values outside the classes cannot be told apart",
            ),
        )
    return Report(
        files=list(files),
        examples=[s for s in examples if s.file],
        class_names=class_names,
        colormap=colormap,
        spec_name=spec_name,
        spec_source=spec_source,
        findings=findings,
        histogram=histogram,
        image_counts=image_counts,
    )


# --------------------------------------------------------------------------------------------
# The contact sheet.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SheetLayout:
    """Where everything goes on the contact sheet (all boxes ``(left, top, right, bottom)``)."""

    size: tuple  # (width, height)
    cells: list  # [(image box, mask box, caption (x, y))]
    legend: tuple  # legend box
    legend_entries: list  # [(swatch box, text (x, y))]


def sheet_layout(num_cells, num_legend):
    """The geometry of a sheet of ``num_cells`` images and ``num_legend`` legend entries."""
    columns = max(1, min(COLUMNS, num_cells))
    rows = math.ceil(num_cells / columns)
    cell_w, cell_h = 2 * THUMB + GAP, THUMB + CAPTION
    width = PAD + columns * (cell_w + PAD)
    cells = []
    for k in range(num_cells):
        x = PAD + (k % columns) * (cell_w + PAD)
        y = TITLE + PAD + (k // columns) * (cell_h + PAD)
        cells.append(
            (
                (x, y, x + THUMB, y + THUMB),
                (x + THUMB + GAP, y, x + 2 * THUMB + GAP, y + THUMB),
                (x, y + THUMB + 2),
            )
        )
    legend_top = TITLE + PAD + rows * (cell_h + PAD)
    per_row = max(1, (width - PAD) // LEGEND_COLUMN)
    legend_rows = math.ceil(num_legend / per_row)
    entries = []
    for k in range(num_legend):
        x = PAD + (k % per_row) * LEGEND_COLUMN
        y = legend_top + LEGEND_ROW + (k // per_row) * LEGEND_ROW
        entries.append(((x, y, x + SWATCH, y + SWATCH), (x + SWATCH + 4, y)))
    height = legend_top + LEGEND_ROW * (1 + legend_rows) + PAD
    return SheetLayout((width, height), cells, (0, legend_top, width, height), entries)


def select_for_sheet(report, num_images):
    """Up to ``num_images`` decodable examples: one per finding first (errors, then warnings),
    then the others spread evenly over the set; each with the codes of its findings."""
    findings = sorted(report.findings, key=lambda f: LEVELS.index(f.level))
    codes = {}
    for finding in findings:
        for sample_id in finding.ids:
            codes.setdefault(sample_id, []).append(finding.code)
    usable = [s for s in report.examples if s.decodable and s.image_size == s.label_size]
    chosen, taken = [], set()
    for finding in findings:
        ids = set(finding.ids)
        s = next((s for s in usable if s.id in ids and id(s) not in taken), None)
        if s is not None:
            chosen.append(s)
            taken.add(id(s))
    chosen = chosen[:num_images]
    rest = [s for s in usable if id(s) not in taken]
    room = min(num_images - len(chosen), len(rest))
    if room > 0:
        chosen += [rest[int(k * len(rest) / room)] for k in range(room)]
    return [(s, codes.get(s.id, [])) for s in chosen]


def _off_class_colour(colormap, num_classes):
    used = {tuple(int(v) for v in c) for c in colormap[:num_classes]}
    used.add(tuple(int(v) for v in colormap[schema.IGNORE_LABEL]))
    return next((c for c in OFF_CLASS_COLOURS if c not in used), OFF_CLASS_COLOURS[0])


def mask_colours(report):
    """``(256, 3)`` uint8: the colour of each stored value on the sheet (the spec's colormap,
    with the values that are no class in a colour of their own)."""
    colours = report.colormap.copy()
    if report.spec_name is not None:
        colours[report.num_classes : schema.IGNORE_LABEL] = _off_class_colour(
            report.colormap, report.num_classes
        )
    return colours


def _fit(image, box, resample):
    """``image`` scaled to fit ``box``, and where to paste it (bottom-aligned, over the
    caption)."""
    scale = min(THUMB / image.width, THUMB / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, resample), (box[0], box[3] - size[1])


def draw_contact_sheet(report, num_images):
    """The contact sheet as a PIL image, and the examples on it."""
    chosen = select_for_sheet(report, num_images)
    colours = mask_colours(report)
    seen = [v for v in range(LABEL_VALUES) if report.histogram[v]]
    legend = [(v, f"{v} {report.class_names[v]}") for v in seen if v < report.num_classes]
    if report.histogram[schema.IGNORE_LABEL]:
        legend.append((schema.IGNORE_LABEL, f"{schema.IGNORE_LABEL} ignore"))
    off = [v for v in seen if report.num_classes <= v < schema.IGNORE_LABEL]
    if off and report.spec_name is not None:
        legend.append((off[0], f"not a class ({_count(len(off), 'value')})"))
    layout = sheet_layout(len(chosen), len(legend))
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    spec = report.spec_name or "no spec"
    draw.text((PAD, 3), f"{len(report.examples)} examples, {spec}: image | mask", fill=TEXT)
    for (s, codes), (image_box, mask_box, caption) in zip(chosen, layout.cells, strict=True):
        features = decode_example(read_record_at(s.file, s.offset))
        image = Image.open(io.BytesIO(features[schema.IMAGE_ENCODED][0])).convert("RGB")
        label, _ = read_label(features[schema.LABEL_ENCODED][0])
        mask = Image.fromarray(colours[label])
        sheet.paste(*_fit(image, image_box, Image.Resampling.BILINEAR))
        sheet.paste(*_fit(mask, mask_box, Image.Resampling.NEAREST))
        draw.text(caption, s.id[:44], fill=TEXT)
        if codes:
            draw.text((caption[0], caption[1] + 12), ", ".join(codes)[:44], fill=ERROR_TEXT)
    draw.text((PAD, layout.legend[1] + 2), "legend (classes seen):", fill=TEXT)
    for (value, text), (swatch, at) in zip(legend, layout.legend_entries, strict=True):
        draw.rectangle(swatch, fill=tuple(int(c) for c in colours[value]), outline=TEXT)
        draw.text(at, text[:26], fill=TEXT)
    return sheet, [s for s, _ in chosen]


def write_contact_sheet(report, path, num_images):
    """Draws the sheet and writes it to ``path`` atomically; returns the examples on it."""
    sheet, shown = draw_contact_sheet(report, num_images)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = _files.temporary_name(path)
    try:
        sheet.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return shown


def default_sheet_path(files):
    """``contact-sheet-<split>.png`` next to the first shard (a name that the natural patterns
    ``<split>-*`` and ``<split>*`` do not match, so that training never reads it as a shard)."""
    match = _SHARD_NAME.match(os.path.basename(files[0]))
    stem = match["split"] if match else os.path.splitext(os.path.basename(files[0]))[0]
    return os.path.join(os.path.dirname(files[0]), f"contact-sheet-{stem}.png")


# --------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------


_NOT_SHARDS = (".json", ".png", ".jpg", ".jpeg", ".txt", ".yaml", ".yml", ".md")


def list_shards(patterns):
    """The sorted files the glob patterns match, without hidden files, manifests and other
    files that are no TFRecords (``DIR/train-*`` matches ``train-manifest.json``)."""
    files = sorted({f for p in patterns for f in glob.glob(p)})
    return [
        f
        for f in files
        if os.path.isfile(f)
        and not os.path.basename(f).startswith(".")
        and not f.lower().endswith(_NOT_SHARDS)
    ]


_count_argument = _validation.argparse_type(_validation.positive_int, minimum=0)
_positive_argument = _validation.argparse_type(_validation.positive_int)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tfrecords_tools.inspect",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "patterns",
        nargs="+",
        metavar="PATTERN",
        help="shard files or globs (quote them: 'shards/train-*.tfrecord')",
    )
    parser.add_argument(
        "--spec", default=None, help="dataset spec (built-in name or YAML); default: the manifests'"
    )
    parser.add_argument(
        "--contact-sheet",
        default=None,
        metavar="PATH",
        help="the contact sheet PNG (default: contact-sheet-<split>.png next to the shards)",
    )
    parser.add_argument(
        "--num-images",
        type=_count_argument,
        default=16,
        help="images on the contact sheet (0: no sheet; default 16)",
    )
    parser.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="also write the report as JSON ('-': on stdout instead of the text)",
    )
    parser.add_argument(
        "--max-images",
        type=_positive_argument,
        default=None,
        help="inspect only the first N examples",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    files = list_shards(args.patterns)
    if not files:
        return tool_cli.error(
            f"no TFRecord files match {' '.join(map(repr, args.patterns))}", tool_cli.EXIT_USAGE
        )
    try:
        if args.spec is not None:
            spec = load_spec(args.spec)
            source = spec.source or args.spec
        else:
            spec = spec_for_files(files)
            source = spec.source if spec is not None else None
    except SpecError as e:
        return tool_cli.error(e, tool_cli.EXIT_USAGE if args.spec else tool_cli.EXIT_FAILURE)

    report = inspect_files(files, spec, source, args.max_images, not args.no_progress)
    if args.num_images:
        path = args.contact_sheet or default_sheet_path(files)
        try:
            shown = write_contact_sheet(report, path, args.num_images)
            report.contact_sheet = f"{path} ({_count(len(shown), 'image')})"
        except OSError as e:
            level = ERROR if args.contact_sheet else WARNING
            report.findings.append(
                Finding(
                    level,
                    "contact_sheet",
                    f"cannot write the contact sheet {path}: {e.strerror or e}",
                )
            )
    if args.json == "-":
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report.format())
        if args.json:
            _files.write_json(args.json, report.to_dict())
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
