"""Small shards for the pipeline tests, written with the project's TensorFlow-free writer."""

import io
import os

import numpy as np
from PIL import Image

from deeplab_family.data import schema
from tfrecords_tools import example, framing

# One colour per class, so that an image "says" its label: flip or crop mistakes show up as
# colours on the wrong label.
CLASS_COLORS = np.array(
    [[(37 * c) % 256, (200 - 9 * c) % 256, (60 + 97 * c) % 256] for c in range(256)], np.uint8
)


def encode(image, fmt="jpeg"):
    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=100, subsampling=0)
    else:
        Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def colour_coded(label, fmt="jpeg"):
    """Image bytes whose every pixel is its class colour."""
    return encode(CLASS_COLORS[label], fmt)


def write_shards(folder, split, examples, num_shards=1):
    """examples: list of ``(id, image_bytes, label)``; dealt round-robin, as the builder does.

    Returns the glob of the shards.
    """
    os.makedirs(folder, exist_ok=True)
    for index in range(num_shards):
        name = schema.shard_name(split, index, num_shards)
        out = framing.TFRecordFile(os.path.join(folder, name))
        for sample_id, image_bytes, label in examples[index::num_shards]:
            height, width = label.shape
            fmt = "jpeg" if image_bytes[:2] == b"\xff\xd8" else "png"
            out.write(
                example.segmentation_example(
                    image_bytes, fmt, example.encode_label_png(label), sample_id, height, width
                )
            )
        out.close()
    return os.path.join(folder, f"{split}-*.tfrecord")


def two_block_label(height, width, left=3, right=12, border=True):
    """Class ``left`` on the left, ``right`` on the right, background between, a 255 line."""
    label = np.zeros((height, width), np.uint8)
    label[height // 8 : height - height // 8, width // 16 : width * 7 // 16] = left
    label[height // 4 : height * 7 // 8, width * 9 // 16 : width - width // 16] = right
    if border:
        label[height // 8 - 2 : height // 8, width // 16 : width * 7 // 16] = 255
    return label


def index_image(index, height, width, fmt="png"):
    """A flat image whose blue channel is ``8 * index``: lets a test tell examples apart."""
    image = np.full((height, width, 3), 100, np.uint8)
    image[..., 2] = 8 * index
    return encode(image, fmt)
