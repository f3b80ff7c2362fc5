"""A legend of class colours and names, drawn with PIL: under `predict`'s overlays and on the
contact sheets of `tfrecords_tools.inspect`.

>>> import numpy as np
>>> from deeplab_family.data.spec import load_spec
>>> strip = legend_strip(load_spec("voc"), [(15, 0.42), (0, 0.58)], width=320)
>>> strip.shape[1], strip.dtype.name
(320, 'uint8')
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SWATCH = 14  # px, the colour square
ROW = 20  # px per legend row
PAD = 6


def _font():
    try:
        return ImageFont.load_default(size=13)
    except (TypeError, OSError):  # a Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def legend_strip(spec, entries, width, background=(255, 255, 255)):
    """An RGB uint8 ``(h, width, 3)`` strip: one swatch + name (+ share) per entry.

    Args:
        spec: `data.spec.DatasetSpec`: the names and colours.
        entries: list of ``class_id`` or ``(class_id, share)`` with share in [0, 1] (shown as a
            percentage), drawn in the given order, in as many columns as fit ``width``.
        width: int. The strip's width (that of the image it goes under).
    """
    font = _font()
    items = []
    for entry in entries:
        class_id, share = (entry, None) if np.isscalar(entry) else entry
        class_id = int(class_id)
        name = spec.classes[class_id] if class_id < spec.num_classes else "ignore"
        text = name if share is None else f"{name} {100 * share:.1f}%"
        colour = tuple(int(c) for c in spec.colormap()[class_id])
        items.append((colour, text))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max([measure.textlength(t, font=font) for _, t in items] or [0])
    cell = int(SWATCH + 6 + text_w + 2 * PAD)
    columns = max(1, min(len(items) or 1, width // max(cell, 1)))
    rows = -(-len(items) // columns) if items else 0
    height = rows * ROW + 2 * PAD if items else 0
    strip = Image.new("RGB", (width, max(height, 1)), background)
    draw = ImageDraw.Draw(strip)
    for k, (colour, text) in enumerate(items):
        x = PAD + (k % columns) * cell
        y = PAD + (k // columns) * ROW
        draw.rectangle([x, y + 2, x + SWATCH, y + 2 + SWATCH], fill=colour, outline=(0, 0, 0))
        draw.text((x + SWATCH + 6, y + 2), text, fill=(0, 0, 0), font=font)
    return np.asarray(strip, np.uint8)[:height] if items else np.zeros((0, width, 3), np.uint8)
