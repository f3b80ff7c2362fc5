"""The PASCAL VOC colour map: the one source of truth for label colours.

The VOC devkit (``VOClabelcolormap.m``) spreads the bits of a label index three at a time over
R, G and B, from the top bit down: 1 = (128, 0, 0), 2 = (0, 128, 0), 15 = (192, 128, 128),
255 = (224, 224, 192). VOC ``SegmentationClass`` PNGs are palette images with this map; the
palette index of a pixel is its class.
"""

import numpy as np

from deeplab_family import _validation


def voc_colormap(num_colors=256):
    """Returns the VOC colour map as a ``(num_colors, 3)`` uint8 array.

    Args:
        num_colors: int. How many entries (256 covers every 8-bit label, 255 included).

    Example:
        >>> voc_colormap()[15].tolist()
        [192, 128, 128]

    Reference:
        PASCAL VOC 2012 devkit, ``VOCcode/VOClabelcolormap.m``.
    """
    _validation.int_in_range("num_colors", num_colors, 1, 256)
    index = np.arange(num_colors)
    cmap = np.zeros((num_colors, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (index >> (3 * shift + channel)) & 1
            cmap[:, channel] |= bit << (7 - shift)
    return cmap.astype(np.uint8)


VOC_COLORMAP = voc_colormap()
VOC_COLORMAP.setflags(write=False)


def pil_palette(colormap=VOC_COLORMAP):
    """The colour map as the flat 768-entry list that ``PIL.Image.putpalette`` takes."""
    flat = np.zeros((256, 3), dtype=np.uint8)
    flat[: len(colormap)] = colormap
    return flat.reshape(-1).tolist()


def colorize(label, colormap=VOC_COLORMAP):
    """Maps an integer label map ``(H, W)`` to an RGB uint8 image ``(H, W, 3)``.

    Values outside the colour map (for example 255 with a 21-entry map) raise a ValueError.
    """
    label = np.asarray(label)
    if label.size and (label.min() < 0 or label.max() >= len(colormap)):
        raise ValueError(
            f"label values must be in 0..{len(colormap) - 1}. "
            f"Received: min={label.min()}, max={label.max()}"
        )
    return np.asarray(colormap, dtype=np.uint8)[label.astype(np.int64)]
