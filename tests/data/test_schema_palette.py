"""The TFRecord keys, the VOC colour map and the class tables."""

import ast
import os

import numpy as np
import pytest

from deeplab_family.data import classes, palette, schema

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_keys_are_research_deeplabs():
    assert (schema.IMAGE_ENCODED, schema.IMAGE_FILENAME, schema.IMAGE_FORMAT) == (
        "image/encoded",
        "image/filename",
        "image/format",
    )
    assert (schema.IMAGE_HEIGHT, schema.IMAGE_WIDTH, schema.IMAGE_CHANNELS) == (
        "image/height",
        "image/width",
        "image/channels",
    )
    assert (schema.LABEL_ENCODED, schema.LABEL_FORMAT) == (
        "image/segmentation/class/encoded",
        "image/segmentation/class/format",
    )
    assert schema.shard_name("train_aug", 3, 21) == "train_aug-00003-of-00021.tfrecord"
    assert schema.manifest_name("val") == "val-manifest.json"


def test_keys_are_spelled_out_only_in_schema():
    """One source of truth: no other module of the package or the builders has a key literal."""
    offenders = []
    for package in ("deeplab_family", "tfrecords_tools"):
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                path = os.path.join(folder, name)
                if not name.endswith(".py") or path.endswith(os.path.join("data", "schema.py")):
                    continue
                with open(path) as f:
                    tree = ast.parse(f.read())
                offenders += [
                    f"{path}:{node.lineno}"
                    for node in ast.walk(tree)
                    if isinstance(node, ast.Constant) and node.value in schema.ALL_KEYS
                ]
    assert offenders == []


def test_voc_colormap():
    cmap = palette.voc_colormap()
    assert cmap.shape == (256, 3) and cmap.dtype == np.uint8
    expected = {
        0: (0, 0, 0),
        1: (128, 0, 0),
        2: (0, 128, 0),
        3: (128, 128, 0),
        15: (192, 128, 128),
        20: (0, 64, 128),
        255: (224, 224, 192),
    }
    for index, rgb in expected.items():
        assert tuple(cmap[index]) == rgb
    assert palette.pil_palette()[:6] == [0, 0, 0, 128, 0, 0] and len(palette.pil_palette()) == 768
    np.testing.assert_array_equal(palette.voc_colormap(21), cmap[:21])
    with pytest.raises(
        ValueError,
        match=r"num_colors must be an int in 1..256. Received: "
        r"num_colors=0",
    ):
        palette.voc_colormap(0)


def test_colorize():
    label = np.array([[0, 1], [15, 255]])
    np.testing.assert_array_equal(
        palette.colorize(label), [[[0, 0, 0], [128, 0, 0]], [[192, 128, 128], [224, 224, 192]]]
    )
    with pytest.raises(ValueError, match="label values must be in 0..20"):
        palette.colorize(label, palette.voc_colormap(21))


def test_voc_classes():
    assert len(classes.VOC_CLASSES) == classes.VOC_NUM_CLASSES == 21
    assert classes.VOC_CLASSES[0] == "background" and classes.VOC_CLASSES[15] == "person"
