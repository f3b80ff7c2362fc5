"""Tiny VOC 2012 + SBD and Cityscapes trees in the real file formats, written from scratch.

- VOC labels: palette PNGs (mode P) with the palette from ``deeplab_family.data.palette``
  (``tfrecords_tools.synthetic.encode_palette_png``); the optional ``SegmentationClassAug`` copy
  is grayscale (mode L).
- SBD labels: ``.mat`` files written with ``scipy.io.savemat`` in the ``GTcls`` layout
  (``Boundaries``: 20x1 cell of sparse matrices, ``Segmentation``: uint8, ``CategoriesPresent``).
- Lists that overlap the way the real ones do.

TensorFlow-free, so that spawned writer processes can import it quickly.
"""

import io
import os

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from tfrecords_tools import synthetic

# id -> where it is listed. 2007_000003 is in VOC train and SBD train with different labels and
# JPEGs (VOC must win); 2007_000005 is a VOC val id that SBD lists for training (train_aug must
# drop it); 2008_* exist only in SBD.
VOC_TRAIN = ["2007_000001", "2007_000002", "2007_000003"]
VOC_VAL = ["2007_000004", "2007_000005"]
SBD_TRAIN = ["2007_000003", "2007_000005", "2008_000001"]
SBD_VAL = ["2008_000002"]
EXPECTED = {
    "train": VOC_TRAIN,
    "val": VOC_VAL,
    "trainval": VOC_TRAIN + VOC_VAL,
    "train_aug": ["2007_000001", "2007_000002", "2007_000003", "2008_000001", "2008_000002"],
    "trainval_aug": [
        "2007_000001",
        "2007_000002",
        "2007_000003",
        "2007_000004",
        "2007_000005",
        "2008_000001",
        "2008_000002",
    ],
}


def jpeg_bytes(image, quality=95):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# A VOC-style palette PNG (mode P, the VOC colour map): the synthetic set's own encoder.
palette_png_bytes = synthetic.encode_palette_png


def write_sbd_mat(path, segmentation):
    """An SBD ``cls/<id>.mat``: struct GTcls with Boundaries, Segmentation, CategoriesPresent."""
    h, w = segmentation.shape
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        mask = segmentation == k + 1
        edge = mask & ~np.pad(mask, 1, mode="edge")[2:, 1:-1]
        boundaries[k, 0] = scipy.sparse.csc_matrix(edge, shape=(h, w))
    present = np.unique(segmentation)
    present = present[present > 0].astype(np.uint8).reshape(-1, 1)
    scipy.io.savemat(
        path,
        {
            "GTcls": {
                "Boundaries": boundaries,
                "Segmentation": segmentation.astype(np.uint8),
                "CategoriesPresent": present,
            }
        },
    )


def sample(index, height=24, width=32, with_border=True):
    """A deterministic image and label: two class blocks, optionally a 255 border, as VOC."""
    rng = np.random.default_rng(index)
    label = np.zeros((height, width), np.uint8)
    a, b = 1 + index % 20, 1 + (index * 7 + 3) % 20
    label[2 : height // 2, 3 : width // 2] = a
    label[height // 2 + 2 : height - 2, width // 2 : width - 3] = b
    if with_border:
        label[1, 2 : width // 2 + 1] = 255
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return image, label


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _write_list(path, ids):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(f"{i}\n" for i in ids))


def make_voc_sbd(root, with_aug=False):
    """Writes the tree under ``root``. Returns a dict with the roots and, per id, the expected
    ``image_bytes`` (the file that must be stored) and ``label`` (the indices that must be
    stored)."""
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    sbd = os.path.join(root, "benchmark_RELEASE", "dataset")
    expected = {}
    all_ids = sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL))
    for index, sample_id in enumerate(all_ids):
        height, width = 24 + index, 32 + 2 * index  # odd and even sizes, all different
        image, label = sample(index, height, width)
        in_voc = sample_id in VOC_TRAIN + VOC_VAL
        in_sbd = sample_id in SBD_TRAIN + SBD_VAL
        if in_voc:
            jpeg = jpeg_bytes(image)
            _write(os.path.join(voc, "JPEGImages", f"{sample_id}.jpg"), jpeg)
            _write(
                os.path.join(voc, "SegmentationClass", f"{sample_id}.png"), palette_png_bytes(label)
            )
            if with_aug:
                _write(
                    os.path.join(voc, "SegmentationClassAug", f"{sample_id}.png"), png_bytes(label)
                )
            expected[sample_id] = {"image_bytes": jpeg, "label": label, "origin": "voc"}
        if in_sbd:
            # SBD has no 255; its annotation of a VOC id differs (and its JPEG is re-encoded).
            sbd_label = np.where(label == 255, 0, label).astype(np.uint8)
            if in_voc:
                sbd_label[sbd_label > 0] = 20
            sbd_jpeg = jpeg_bytes(image, quality=80)
            _write(os.path.join(sbd, "img", f"{sample_id}.jpg"), sbd_jpeg)
            os.makedirs(os.path.join(sbd, "cls"), exist_ok=True)
            write_sbd_mat(os.path.join(sbd, "cls", f"{sample_id}.mat"), sbd_label)
            if not in_voc:
                expected[sample_id] = {"image_bytes": sbd_jpeg, "label": sbd_label, "origin": "sbd"}
    lists = os.path.join(voc, "ImageSets", "Segmentation")
    _write_list(os.path.join(lists, "train.txt"), VOC_TRAIN)
    _write_list(os.path.join(lists, "val.txt"), VOC_VAL)
    _write_list(os.path.join(lists, "trainval.txt"), VOC_TRAIN + VOC_VAL)
    _write_list(os.path.join(sbd, "train.txt"), SBD_TRAIN)
    _write_list(os.path.join(sbd, "val.txt"), SBD_VAL)
    return {"voc_root": voc, "sbd_root": sbd, "expected": expected}


def make_cityscapes(root):
    """Two train images and one val image in the Cityscapes layout; returns the label ids."""
    written = {}
    for split, city, frames in (("train", "aachen", (19, 20)), ("val", "lindau", (1,))):
        for frame in frames:
            sample_id = f"{city}_000000_{frame:06d}"
            rng = np.random.default_rng(frame)
            image = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
            label_ids = rng.choice([0, 1, 7, 8, 11, 24, 26, 33], size=(16, 24)).astype(np.uint8)
            image_png = png_bytes(image)
            _write(
                os.path.join(root, "leftImg8bit", split, city, f"{sample_id}_leftImg8bit.png"),
                image_png,
            )
            _write(
                os.path.join(root, "gtFine", split, city, f"{sample_id}_gtFine_labelIds.png"),
                png_bytes(label_ids),
            )
            written[sample_id] = {"split": split, "image_bytes": image_png, "label_ids": label_ids}
    return written


def exit_when_reading(path, display):
    """A label reader that kills its worker process outright (simulates a crash mid-shard)."""
    if "2007_000002" in path:
        os._exit(3)
    from tfrecords_tools.voc import read_voc_label

    return read_voc_label(path, display)
