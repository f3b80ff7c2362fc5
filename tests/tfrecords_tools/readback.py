"""Reads shards back with TensorFlow's own reader (which checks every CRC) and protobuf parser."""

import glob
import io
import json
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from deeplab_family.data import schema


def read_records(path):
    return [r.numpy() for r in tf.data.TFRecordDataset(path)]


def parse(record):
    feature = tf.train.Example.FromString(record).features.feature
    label_png = feature[schema.LABEL_ENCODED].bytes_list.value[0]
    label_image = Image.open(io.BytesIO(label_png))
    return {
        "id": feature[schema.IMAGE_FILENAME].bytes_list.value[0].decode(),
        "image_bytes": feature[schema.IMAGE_ENCODED].bytes_list.value[0],
        "format": feature[schema.IMAGE_FORMAT].bytes_list.value[0].decode(),
        "height": feature[schema.IMAGE_HEIGHT].int64_list.value[0],
        "width": feature[schema.IMAGE_WIDTH].int64_list.value[0],
        "channels": feature[schema.IMAGE_CHANNELS].int64_list.value[0],
        "label_format": feature[schema.LABEL_FORMAT].bytes_list.value[0].decode(),
        "label_mode": label_image.mode,
        "label": np.asarray(label_image),
    }


def shard_files(output_dir, split):
    return sorted(glob.glob(os.path.join(output_dir, schema.shard_glob(split))))


def read_split(output_dir, split):
    """``{id: parsed example}`` over every shard of the split, and the shard each id is in."""
    examples, where = {}, {}
    for path in shard_files(output_dir, split):
        for record in read_records(path):
            example = parse(record)
            assert example["id"] not in examples, f"{example['id']} written twice"
            examples[example["id"]] = example
            where[example["id"]] = os.path.basename(path)
    return examples, where


def read_manifest(output_dir, split):
    with open(os.path.join(output_dir, schema.manifest_name(split))) as f:
        return json.load(f)


def listing(output_dir):
    return sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
