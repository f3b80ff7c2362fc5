"""The TFRecord schema: the one place where the feature keys are spelled out.

The keys are those of tensorflow/models research/deeplab (``datasets/build_data.py``), so shards
written by its scripts and by ours are interchangeable:

- ``image/encoded``: the original image file bytes (JPEG for VOC, PNG for Cityscapes), never
  re-encoded.
- ``image/filename``: the example id (VOC: ``2007_000032``), stored as UTF-8 bytes.
- ``image/format``: ``jpeg`` or ``png``.
- ``image/height``, ``image/width``, ``image/channels``: int64.
- ``image/segmentation/class/encoded``: a single-channel (grayscale) PNG whose pixel values are
  class indices, 255 = ignore. It is never a palette PNG: ``tf.io.decode_png`` would expand the
  palette to colours.
- ``image/segmentation/class/format``: ``png``.

One key of ours, which research/deeplab's readers pass over (they parse only their own keys):

- ``image/segmentation/class/present``: int64 list, the sorted class ids that the label holds
  (255 left out). Written by the builders so that hard-image oversampling
  (``train_data.oversample``) need not decode labels; read as "absent" in shards of other
  tools, whose labels are then decoded instead.

This module is deliberately free of TensorFlow so that the TFRecord builders start fast.
"""

IMAGE_ENCODED = "image/encoded"
IMAGE_FILENAME = "image/filename"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_CHANNELS = "image/channels"
LABEL_ENCODED = "image/segmentation/class/encoded"
LABEL_FORMAT = "image/segmentation/class/format"
LABEL_CLASSES_PRESENT = "image/segmentation/class/present"

BYTES_KEYS = (IMAGE_ENCODED, IMAGE_FILENAME, IMAGE_FORMAT, LABEL_ENCODED, LABEL_FORMAT)
INT64_KEYS = (IMAGE_HEIGHT, IMAGE_WIDTH, IMAGE_CHANNELS, LABEL_CLASSES_PRESENT)
ALL_KEYS = BYTES_KEYS + INT64_KEYS

LABEL_FORMAT_PNG = "png"
IMAGE_FORMATS = ("jpeg", "png")

IGNORE_LABEL = 255

SHARD_NAME = "{split}-{index:05d}-of-{num_shards:05d}.tfrecord"
MANIFEST_NAME = "{split}-manifest.json"


def shard_name(split, index, num_shards):
    """The file name of shard ``index`` (0-based) of ``num_shards`` for ``split``."""
    return SHARD_NAME.format(split=split, index=index, num_shards=num_shards)


def manifest_name(split):
    return MANIFEST_NAME.format(split=split)


def shard_glob(split):
    """A glob that matches every shard of ``split`` (and no temporary file)."""
    return f"{split}-?????-of-?????.tfrecord"
