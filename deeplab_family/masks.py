"""Drawing a class map: the palette PNG mask, the overlay, the class shares and the legend.

In the colours and names of a dataset spec (`data/spec.py`); VOC's without one. Shared by
`python -m deeplab_family.predict` (files, folders, videos) and `deeplab_family.serve` (the
page).

>>> import numpy as np
>>> mask = np.array([[0, 0, 15], [15, 15, 15]])
>>> [(c, round(float(share), 3)) for c, share in class_shares(mask, 21)]
[(15, 0.667), (0, 0.333)]
"""

import numpy as np
from PIL import Image

from deeplab_family.data.palette import VOC_COLORMAP, pil_palette
from deeplab_family.data.spec import load_spec


def save_mask_png(mask, path, spec=None):
    """Writes classes `(H, W)` as a VOC-style palette PNG (mode "P", indices preserved), in the
    spec's colours (VOC's without one)."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    image.putpalette(pil_palette(_colormap(spec)))
    image.save(path)


def _spec(spec):
    return spec if spec is not None else load_spec("voc")


def _colormap(spec):
    """The spec's colours by class id; VOC's whole 256-entry devkit map without a spec."""
    return spec.colormap() if spec is not None else VOC_COLORMAP


def unblended_classes(spec):
    """The ids of the classes an overlay leaves as they are: those named "background"."""
    return [i for i, name in enumerate(_spec(spec).classes) if name.lower() == "background"]


def overlay(image, mask, alpha=0.5, spec=None):
    """The image with every pixel of a class other than "background" blended with its colour."""
    image = np.asarray(image, np.float32)
    mask = np.asarray(mask, np.int64)
    colours = _colormap(spec)[mask].astype(np.float32)
    blended = (1.0 - alpha) * image + alpha * colours
    keep = np.isin(mask, unblended_classes(spec))
    out = np.where(keep[..., None], image, blended)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def class_shares(mask, num_classes):
    """`[(class_id, share of the pixels)]` of the classes in the mask, largest first."""
    counts = np.bincount(np.asarray(mask, np.int64).ravel(), minlength=num_classes)
    total = max(int(counts.sum()), 1)
    present = [(int(c), counts[c] / total) for c in np.flatnonzero(counts)]
    return sorted(present, key=lambda item: (-item[1], item[0]))


def overlay_with_legend(image, mask, alpha=0.5, spec=None):
    """`overlay` with, under it, the legend of the classes present and their shares."""
    from deeplab_family.legend import legend_strip

    spec = _spec(spec)
    blended = overlay(image, mask, alpha, spec)
    strip = legend_strip(spec, class_shares(mask, spec.num_classes), blended.shape[1])
    return np.concatenate([blended, strip], axis=0)


def frame_overlay(image, mask, alpha=0.5, spec=None, legend=True):
    """`overlay`, with the legend of the frame's classes drawn into its bottom rows: at most a
    third of the frame's height, as many legend rows as fit, the largest classes first (none
    when not one row fits). The frame keeps its size, as a video's frames must."""
    from deeplab_family.legend import PAD, ROW, legend_strip

    spec = _spec(spec)
    blended = overlay(image, mask, alpha, spec)
    rows = (blended.shape[0] // 3 - PAD) // ROW
    if not legend or rows < 1:
        return blended
    strip = legend_strip(spec, class_shares(mask, spec.num_classes), blended.shape[1])
    strip = strip[: min(len(strip), PAD + rows * ROW)]
    blended[blended.shape[0] - len(strip):] = strip
    return blended
