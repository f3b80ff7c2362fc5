"""Loading and validating one example: where its files are (``ExampleSource``), reading them,
and the checks whose messages name the file and the problem:
``"label value 42 in SegmentationClass/2007_000032.png is outside 0..20 and is not 255"``.
"""

import dataclasses
import io

import numpy as np
from PIL import Image

from deeplab_family.data import schema
from tfrecords_tools.example import encode_label_png, segmentation_example

LABEL_VALUES = 256  # labels are stored as 8-bit PNGs: values 0..255, one histogram bin each


class InvalidExampleError(ValueError):
    """One example cannot be written; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class ExampleSource:
    """Where one example's files are, and how to read its label.

    Args:
        id: str. The example id, stored as ``image/filename``.
        image_path: str. The image file, stored byte for byte.
        label_path: str. The label file.
        label_reader: callable ``(path, display) -> (H, W) integer array``. A module-level
            function, so that worker processes can unpickle it.
        image_display: str. How messages name the image (a path relative to the dataset root).
        label_display: str. How messages name the label.
        label_origin: str. A short name of the label source, counted in the manifest.
    """

    id: str
    image_path: str
    label_path: str
    label_reader: object
    image_display: str = ""
    label_display: str = ""
    label_origin: str = ""


def read_file_bytes(path, display):
    """The bytes of ``path``; a missing or unreadable file raises an error naming ``display``."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise InvalidExampleError(f"missing file: {display or path}") from None
    except OSError as e:
        raise InvalidExampleError(f"cannot read {display or path}: {e.strerror or e}") from None


def inspect_image(data, display):
    """Decodes the image fully (reduced-size for JPEG) to catch truncated or corrupt files.

    Returns ``(format, height, width)`` with format ``"jpeg"`` or ``"png"``.
    """
    try:
        image = Image.open(io.BytesIO(data))
        fmt = (image.format or "").lower()
        width, height = image.size
        if fmt == "jpeg":
            # A DCT-scaled decode still reads every byte of entropy-coded data, so truncation is
            # caught, at a fraction of the cost of a full decode.
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        image.load()
    except Exception as e:  # noqa: BLE001 (PIL raises OSError, SyntaxError, ValueError...)
        raise InvalidExampleError(
            f"corrupt or truncated image {display}: {e} ({type(e).__name__})"
        ) from None
    if fmt not in schema.IMAGE_FORMATS:
        raise InvalidExampleError(
            f"image {display} is {fmt.upper() or 'not an image'}; expected JPEG or PNG"
        )
    allowed_modes = ("RGB", "L") if fmt == "jpeg" else ("RGB", "RGBA", "L", "LA", "P")
    if image.mode not in allowed_modes:
        raise InvalidExampleError(
            f"image {display} has colour mode {image.mode}; expected RGB or grayscale"
        )
    return fmt, height, width


def _open_label(path, display):
    """The label file as a loaded PIL image; a missing or corrupt file is named."""
    data = read_file_bytes(path, display)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as e:  # noqa: BLE001 (PIL raises OSError, SyntaxError, ValueError...)
        raise InvalidExampleError(f"corrupt or truncated label {display}: {e}") from None
    return image


def read_index_png(path, display):
    """Reads a PNG of class indices: a VOC palette PNG (mode P) or a grayscale one (mode L).

    PIL keeps the palette indices; OpenCV and ``tf.io.decode_png`` would expand them to colours.
    """
    image = _open_label(path, display)
    if image.mode not in ("P", "L"):
        raise InvalidExampleError(
            f"label {display} has mode {image.mode}; expected a palette (mode P) or grayscale "
            "(mode L) PNG of class indices. Colour-coded labels must be converted to indices first"
        )
    return np.asarray(image)


def read_color_png(path, display):
    """Reads an RGB PNG of class colours as ``(H, W)`` int32 packed colours ``R<<16 | G<<8 | B``.

    Palette PNGs are expanded to their colours (a colour-coded mask saved with a palette);
    grayscale PNGs are refused: they hold indices, not colours.
    """
    image = _open_label(path, display)
    if image.mode in ("L", "I", "I;16"):
        raise InvalidExampleError(
            f"label {display} is a grayscale PNG (mode {image.mode}): it holds class ids, but "
            "the dataset spec says colour masks (encoding: color); set encoding: index"
        )
    rgb = np.asarray(image.convert("RGB"), dtype=np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _rgb(packed):
    return [int(packed) >> 16 & 255, int(packed) >> 8 & 255, int(packed) & 255]


def read_spec_label(spec, path, display):
    """Reads a mask the way a ``DatasetSpec`` says, as uint8 stored labels (255 = ignore).

    ``index`` masks go through the spec's lookup table (``reduce_zero_label``, ``label_map``,
    ``ignore_label``); ``color`` masks through its palette. A value or colour the spec does not
    know is an error naming the file, the value and how many pixels have it. Bind the spec with
    ``functools.partial(read_spec_label, spec)`` to get an ``ExampleSource.label_reader``.
    """
    if spec.encoding == "color":
        packed = read_color_png(path, display)
        entries = [((r << 16) | (g << 8) | b, i) for i, (r, g, b) in enumerate(spec.palette)]
        if spec.ignore_color is not None:
            r, g, b = spec.ignore_color
            entries.append(((r << 16) | (g << 8) | b, schema.IGNORE_LABEL))
        entries.sort()
        known = np.array([c for c, _ in entries], np.int32)
        ids = np.array([i for _, i in entries], np.uint8)
        # A binary search in the few known colours: 3x faster than np.unique over the pixels.
        where = np.minimum(np.searchsorted(known, packed), len(known) - 1)
        unknown = known[where] != packed
        if unknown.any():
            colours, counts = np.unique(packed[unknown], return_counts=True)
            worst = np.argsort(-counts, kind="stable")
            listed = ", ".join(f"{_rgb(colours[i])} ({int(counts[i])} pixels)" for i in worst[:3])
            more = f" and {colours.size - 3} more" if colours.size > 3 else ""
            raise InvalidExampleError(
                f"colour {_rgb(colours[worst[0]])} in {display} is not in the palette of "
                f"dataset {spec.name!r}: {int(counts[worst[0]])} pixels have it (unknown "
                f"colours: {listed}{more}); add the class to the spec, or set ignore_color"
            )
        return ids[where]
    try:
        raw = read_index_png(path, display)
    except InvalidExampleError as e:
        if "has mode RGB" in str(e) or "has mode RGBA" in str(e):
            raise InvalidExampleError(
                f"label {display} is an RGB PNG but dataset {spec.name!r} says index masks: if "
                "its pixels are class colours, set encoding: color in the spec (with the "
                "palette of the masks)"
            ) from None
        raise
    table = spec.lookup_table()
    counts = np.bincount(raw.ravel(), minlength=LABEL_VALUES)
    bad = np.flatnonzero((counts > 0) & (table < 0))
    if bad.size:
        raw_bad = int(bad[0])
        if spec.label_map is not None:
            why = f"is not in the label_map of dataset {spec.name!r}"
        elif spec.reduce_zero_label:
            why = (f"is outside 1..{spec.num_classes} (reduce_zero_label: 0 is ignore) and is "
                   f"not {spec.ignore_label}")
        else:
            why = f"is outside 0..{spec.num_classes - 1} and is not {spec.ignore_label}"
        more = f" (other bad values: {', '.join(map(str, bad[1:6]))})" if bad.size > 1 else ""
        raise InvalidExampleError(
            f"label value {raw_bad} in {display} {why}: {int(counts[raw_bad])} pixels{more}"
        )
    return table[raw].astype(np.uint8)


def check_label_values(label, num_classes, display, ignore_label=schema.IGNORE_LABEL):
    """Returns the label as uint8 after checking every value is a class index or ``ignore``."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise InvalidExampleError(f"label {display} has shape {label.shape}; expected (H, W)")
    integral = np.issubdtype(label.dtype, np.integer) or (
        np.issubdtype(label.dtype, np.floating) and np.all(label == np.round(label))
    )
    if not integral:
        raise InvalidExampleError(f"label {display} holds {label.dtype} values, not integers")
    if label.size and (label.min() < 0 or label.max() >= LABEL_VALUES):
        bad = int(label.min()) if label.min() < 0 else int(label.max())
        raise InvalidExampleError(
            f"label value {bad} in {display} is outside 0..{num_classes - 1} and is not "
            f"{ignore_label}"
        )
    label = label.astype(np.uint8, copy=False)
    counts = np.bincount(label.ravel(), minlength=LABEL_VALUES)
    valid = np.zeros(LABEL_VALUES, dtype=bool)
    valid[:num_classes] = True
    valid[ignore_label] = True
    bad = np.flatnonzero((counts > 0) & ~valid)
    if bad.size:
        more = f" (other bad values: {', '.join(map(str, bad[1:6]))})" if bad.size > 1 else ""
        raise InvalidExampleError(
            f"label value {bad[0]} in {display} is outside 0..{num_classes - 1} and is not "
            f"{ignore_label}{more}"
        )
    return label, counts


def load_example(source, num_classes):
    """Reads and validates one example. Returns ``(record bytes, class pixel counts)``.

    The record holds the classes present (``schema.LABEL_CLASSES_PRESENT``).
    """
    image_bytes = read_file_bytes(source.image_path, source.image_display)
    fmt, height, width = inspect_image(image_bytes, source.image_display)
    label = source.label_reader(source.label_path, source.label_display)
    label, counts = check_label_values(label, num_classes, source.label_display)
    if label.shape != (height, width):
        raise InvalidExampleError(
            f"image {source.image_display} is {height}x{width} (HxW) but its label "
            f"{source.label_display} is {label.shape[0]}x{label.shape[1]}"
        )
    present = np.flatnonzero(counts[:num_classes])
    record = segmentation_example(
        image_bytes, fmt, encode_label_png(label), source.id, height, width, present
    )
    return record, counts
