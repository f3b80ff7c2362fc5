"""The folder builder (`tfrecords_tools.folder`) on image and mask folders written here: index
masks (mode L and VOC palette mode P), colour masks (the VOC palette and a custom 5-class one),
JPEG and PNG images, a label map; read back with TensorFlow's own reader and research/deeplab's
keys. Bad inputs give an error naming the file and leave no final name behind, or a manifest
``skipped`` entry with ``skip_invalid``; fraction splits are deterministic and disjoint."""

import fnmatch
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import yaml

from deeplab_family.data import schema
from deeplab_family.data.spec import load_spec
from tests.tfrecords_tools import fixtures
from tests.tfrecords_tools.readback import (
    listing,
    read_manifest,
    read_records,
    read_split,
    shard_files,
)
from tfrecords_tools import folder
from tfrecords_tools.writer import BuildError

FINAL_NAMES = ("*-?????-of-?????.tfrecord", "*-manifest.json")

# A custom dataset: five classes, none of them VOC's colours.
CUSTOM = {
    "name": "streets5",
    "classes": ["background", "road", "car", "person", "tree"],
    "palette": [[0, 0, 0], [128, 64, 128], [0, 0, 142], [220, 20, 60], [107, 142, 35]],
}


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _spec_file(tmp_path, values, name="spec.yaml"):
    path = str(tmp_path / name)
    with open(path, "w") as f:
        yaml.safe_dump(values, f)
    return path


def _voc_color_spec(tmp_path):
    return _spec_file(tmp_path, {**load_spec("voc").to_dict(), "encoding": "color"}, "voc_c.yaml")


def _label(index, height, width, values):
    """Blocks of the given values (class ids, or 255), different for each index."""
    label = np.full((height, width), values[0], np.uint8)
    for k, value in enumerate(values[1:]):
        top = (index + 2 * k) % (height - 2)
        label[top : top + 3, 1 + k * 3 : 4 + k * 3] = value
    return label


def _image(index, height, width):
    return np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _present(record):
    feature = tf.train.Example.FromString(record).features.feature
    return list(feature[schema.LABEL_CLASSES_PRESENT].int64_list.value)


def _expected_present(label):
    return [int(v) for v in np.unique(label) if v != schema.IGNORE_LABEL]


def _final_names(directory):
    return [n for n in listing(directory) if any(fnmatch.fnmatch(n, p) for p in FINAL_NAMES)]


def _build(root, splits, out, spec, **kwargs):
    kwargs.setdefault("progress", False)
    return folder.build(
        str(root / "images"), splits, out, masks_dir=str(root / "masks"), spec=spec, **kwargs
    )


def _check_readback(out, split, expected):
    """Every example's image bytes, format, label (pixel for pixel) and classes present."""
    examples, _ = read_split(out, split)
    assert sorted(examples) == sorted(expected)
    for sample_id, want in expected.items():
        example = examples[sample_id]
        assert example["image_bytes"] == want["image_bytes"], sample_id
        assert example["format"] == want["format"], sample_id
        assert (example["height"], example["width"]) == want["label"].shape
        assert example["label_format"] == "png" and example["label_mode"] == "L"
        np.testing.assert_array_equal(example["label"], want["label"], err_msg=sample_id)
    presents = {}
    for path in shard_files(out, split):
        for record in read_records(path):
            example_id = (
                tf.train.Example.FromString(record)
                .features.feature[schema.IMAGE_FILENAME]
                .bytes_list.value[0]
            )
            presents[example_id.decode()] = _present(record)
    for sample_id, want in expected.items():
        assert presents[sample_id] == _expected_present(want["label"]), sample_id


def _list_file(tmp_path, lines, name="train.txt"):
    path = str(tmp_path / name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------------------------
# Good inputs.
# --------------------------------------------------------------------------------------------


def test_index_masks_mode_l_and_p_jpeg_and_png_images(tmp_path):
    """VOC's spec: a palette PNG (mode P) mask is read as indices, a grayscale one too; the
    JPEG and the PNG image are stored byte for byte; ids keep their subfolder."""
    root, expected = tmp_path / "data", {}
    samples = [
        ("a", "jpeg", fixtures.palette_png_bytes, (0, 15, 255)),
        ("street/b", "png", fixtures.png_bytes, (0, 7, 20, 255)),
        ("c", "png", fixtures.palette_png_bytes, (3, 12)),
    ]
    for index, (sample_id, fmt, encode_mask, values) in enumerate(samples):
        height, width = 9 + index, 14 + index
        image = _image(index, height, width)
        data = fixtures.jpeg_bytes(image) if fmt == "jpeg" else fixtures.png_bytes(image)
        ext = ".jpg" if fmt == "jpeg" else ".png"
        _write(str(root / "images" / (sample_id + ext)), data)
        label = _label(index, height, width, values)
        _write(str(root / "masks" / (sample_id + ".png")), encode_mask(label))
        expected[sample_id] = {"image_bytes": data, "format": fmt, "label": label}
    ids = _list_file(tmp_path, ["# the training ids", "a", "", "street/b", "  c  "])
    out = str(tmp_path / "out")
    manifest = _build(root, {"train": ids}, out, "voc", num_shards=2)["train"]
    _check_readback(out, "train", expected)
    assert manifest == read_manifest(out, "train")
    assert manifest["count"] == 3 and manifest["num_classes"] == 21
    assert manifest["dataset_spec"] == load_spec("voc").to_dict()
    assert manifest["created_by"] == "tfrecords_tools.folder"
    assert manifest["inputs"]["images"] == os.path.abspath(root / "images")
    assert manifest["inputs"]["masks"] == os.path.abspath(root / "masks")
    assert manifest["inputs"]["split"] == {"list": os.path.abspath(ids)}
    assert manifest["label_sources"] == {"index masks": 3}
    assert manifest["class_image_counts"]["15"] == 1 and manifest["class_image_counts"]["3"] == 1


def test_voc_colour_masks_rgb_and_palette_png(tmp_path):
    """VOC's spec with ``encoding: color``: RGB masks in the VOC colours (the void colour is
    ignore), and a colour mask saved as a palette PNG, which is read by its colours. Two worker
    processes: the spec-bound reader pickles."""
    spec_path = _voc_color_spec(tmp_path)
    colormap = load_spec("voc").colormap()
    root, expected = tmp_path / "data", {}
    for index in range(4):
        height, width = 8, 12 + index
        label = _label(index, height, width, (0, 1 + 4 * index, 255, 20 - index))
        image = _image(index, height, width)
        data = fixtures.png_bytes(image)
        _write(str(root / "images" / f"im{index}.png"), data)
        mask = (
            fixtures.palette_png_bytes(label) if index == 3 else fixtures.png_bytes(colormap[label])
        )
        _write(str(root / "masks" / f"im{index}.png"), mask)
        expected[f"im{index}"] = {"image_bytes": data, "format": "png", "label": label}
    out = str(tmp_path / "out")
    manifest = _build(root, {"train": 1.0}, out, spec_path, num_shards=2, num_workers=2)["train"]
    _check_readback(out, "train", expected)
    assert manifest["dataset_spec"]["encoding"] == "color"
    assert manifest["inputs"]["spec"] == os.path.abspath(spec_path)
    assert manifest["class_pixel_histogram"]["255"] == sum(
        int((e["label"] == 255).sum()) for e in expected.values()
    )


def _custom_tree(root, count=3, fmt="jpeg"):
    """The custom 5-class set: JPEG images, RGB colour masks in its palette."""
    palette = np.asarray(CUSTOM["palette"], np.uint8)
    expected = {}
    for index in range(count):
        height, width = 8, 12
        label = _label(index, height, width, (0, 1 + index % 4, 1 + (index + 2) % 4))
        image = _image(index, height, width)
        data = fixtures.jpeg_bytes(image) if fmt == "jpeg" else fixtures.png_bytes(image)
        _write(str(root / "images" / f"s{index}.{'jpg' if fmt == 'jpeg' else 'png'}"), data)
        _write(str(root / "masks" / f"s{index}.png"), fixtures.png_bytes(palette[label]))
        expected[f"s{index}"] = {"image_bytes": data, "format": fmt, "label": label}
    return expected


def test_custom_five_class_colour_masks(tmp_path):
    spec_path = _spec_file(tmp_path, {**CUSTOM, "encoding": "color"})
    expected = _custom_tree(tmp_path / "data")
    out = str(tmp_path / "out")
    manifest = _build(tmp_path / "data", {"train": 1.0}, out, spec_path)["train"]
    _check_readback(out, "train", expected)
    assert manifest["num_classes"] == 5
    assert manifest["dataset_spec"]["classes"] == CUSTOM["classes"]
    assert manifest["dataset_spec"]["palette"] == CUSTOM["palette"]
    assert manifest["dataset"] == "streets5"


def test_label_map_raw_values_to_train_ids(tmp_path):
    """Raw 10, 20, 30 -> classes 0, 1, 2 and raw 0 -> 255 (ignore)."""
    spec_path = _spec_file(
        tmp_path,
        {
            "name": "mapped",
            "classes": ["sky", "ground", "thing"],
            "palette": [[0, 0, 255], [0, 255, 0], [255, 0, 0]],
            "label_map": {10: 0, 20: 1, 30: 2, 0: 255},
        },
    )
    root, expected = tmp_path / "data", {}
    for index, values in enumerate([(0, 10, 20), (20, 30, 0), (30, 10)]):
        raw = _label(index, 8, 12, values)
        data = fixtures.png_bytes(_image(index, 8, 12))
        _write(str(root / "images" / f"m{index}.png"), data)
        _write(str(root / "masks" / f"m{index}.png"), fixtures.png_bytes(raw))
        train_ids = np.select([raw == 10, raw == 20, raw == 30], [0, 1, 2], 255).astype(np.uint8)
        expected[f"m{index}"] = {"image_bytes": data, "format": "png", "label": train_ids}
    out = str(tmp_path / "out")
    manifest = _build(root, {"train": 1.0}, out, spec_path)["train"]
    _check_readback(out, "train", expected)
    assert manifest["dataset_spec"]["label_map"] == {0: 255, 10: 0, 20: 1, 30: 2}
    assert manifest["class_image_counts"] == {"0": 2, "1": 2, "2": 2, "255": 2}


def test_masks_inside_the_image_folder_and_a_mask_without_image(tmp_path, capsys):
    """``--masks data/masks`` inside ``--images data``: the mask folder is not scanned for
    images. A mask with no image is a warning and listed in the manifest; hidden files and
    non-image files are passed over (the latter with a warning)."""
    root = tmp_path / "data"
    expected = _custom_tree(root, count=2, fmt="png")
    images = str(root / "images")
    masks = os.path.join(images, "masks")
    os.rename(str(root / "masks"), masks)
    _write(os.path.join(masks, "orphan.png"), fixtures.png_bytes(np.zeros((8, 12, 3), np.uint8)))
    _write(os.path.join(images, ".DS_Store"), b"\0")
    _write(os.path.join(images, "notes.txt"), b"not an image")
    spec_path = _spec_file(tmp_path, {**CUSTOM, "encoding": "color"})
    out = str(tmp_path / "out")
    manifest = folder.build(
        images, "train=1", out, masks_dir=masks, spec=spec_path, progress=False
    )["train"]
    _check_readback(out, "train", expected)
    assert manifest["masks_without_image"] == ["orphan.png"]
    err = capsys.readouterr().err
    assert re.search(r"warning: 1 mask\(s\) under .*masks have no image .*orphan\.png", err)
    assert re.search(r"warning: 1 file\(s\) under .*images are not .*: notes\.txt", err)


# --------------------------------------------------------------------------------------------
# Bad inputs: a clear error naming the file and nothing with a final name, or a skipped entry.
# --------------------------------------------------------------------------------------------

BAD_ID = "s1"


def unknown_colour(root):
    palette = np.asarray(CUSTOM["palette"], np.uint8)
    mask = palette[_label(1, 8, 12, (0, 2))]
    mask[0, :7] = (1, 2, 3)
    _write(str(root / "masks" / "s1.png"), fixtures.png_bytes(mask))


def mask_of_another_size(root):
    palette = np.asarray(CUSTOM["palette"], np.uint8)
    _write(str(root / "masks" / "s1.png"), fixtures.png_bytes(palette[np.zeros((7, 12), int)]))


def image_without_mask(root):
    os.remove(str(root / "masks" / "s1.png"))


def two_images_with_one_id(root):
    _write(str(root / "images" / "s1.png"), fixtures.png_bytes(_image(1, 8, 12)))


def grayscale_mask_for_a_colour_spec(root):
    _write(str(root / "masks" / "s1.png"), fixtures.png_bytes(np.zeros((8, 12), np.uint8)))


# (case, message regex); the custom colour spec, split train = s0, s1, s2.
COLOUR_CASES = [
    (
        unknown_colour,
        r"colour \[1, 2, 3\] in \S*masks/s1\.png is not in the palette of dataset 'streets5': "
        r"7 pixels have it",
    ),
    (
        mask_of_another_size,
        r"image \S*images/s1\.jpg is 8x12 \(HxW\) but its label \S*masks/s1\.png is 7x12",
    ),
    (image_without_mask, r"no mask for image \S*images/s1\.jpg: expected \S*masks/s1\.png"),
    (
        two_images_with_one_id,
        r"images \S*images/s1\.jpg and \S*images/s1\.png have the same id 's1'",
    ),
    (grayscale_mask_for_a_colour_spec, r"label \S*masks/s1\.png is a grayscale PNG"),
]
COLOUR_IDS = [case.__name__ for case, _ in COLOUR_CASES]


@pytest.fixture
def custom(tmp_path):
    spec_path = _spec_file(tmp_path, {**CUSTOM, "encoding": "color"})
    expected = _custom_tree(tmp_path / "data")
    return tmp_path / "data", spec_path, expected


@pytest.mark.parametrize("case, message", COLOUR_CASES, ids=COLOUR_IDS)
def test_bad_input_is_an_error_naming_the_file_and_leaves_no_final_name(
    custom, tmp_path, case, message
):
    root, spec_path, _ = custom
    case(root)
    out = str(tmp_path / "out")
    with pytest.raises(BuildError, match=message) as raised:
        _build(root, {"train": 1.0}, out, spec_path, num_shards=2)
    assert "--skip-invalid" in str(raised.value)
    assert _final_names(out) == [] and listing(out) == []


@pytest.mark.parametrize("case, message", COLOUR_CASES, ids=COLOUR_IDS)
def test_skip_invalid_records_the_bad_example(custom, tmp_path, case, message):
    root, spec_path, expected = custom
    case(root)
    out = str(tmp_path / "out")
    manifest = _build(root, {"train": 1.0}, out, spec_path, num_shards=2, skip_invalid=True)
    manifest = manifest["train"]
    assert [s["id"] for s in manifest["skipped"]] == [BAD_ID]
    assert re.search(message, manifest["skipped"][0]["reason"])
    del expected[BAD_ID]
    _check_readback(out, "train", expected)


def test_class_id_outside_the_classes(tmp_path):
    """An index mask with value 7 for a 5-class spec: named with its pixel count."""
    spec_path = _spec_file(tmp_path, {**CUSTOM, "encoding": "index"})
    root = tmp_path / "data"
    for index in range(2):
        _write(str(root / "images" / f"k{index}.png"), fixtures.png_bytes(_image(index, 8, 12)))
        label = _label(index, 8, 12, (0, 4) if index == 0 else (0, 7))
        _write(str(root / "masks" / f"k{index}.png"), fixtures.png_bytes(label))
    out = str(tmp_path / "out")
    message = r"label value 7 in \S*masks/k1\.png is outside 0\.\.4 and is not 255: 9 pixels"
    with pytest.raises(BuildError, match=message):
        _build(root, {"train": 1.0}, out, spec_path)
    assert _final_names(out) == []
    manifest = _build(root, {"train": 1.0}, out, spec_path, skip_invalid=True)["train"]
    assert manifest["count"] == 1 and manifest["skipped"][0]["id"] == "k1"
    assert re.search(message, manifest["skipped"][0]["reason"])


SPEC_ERRORS = [
    (
        {**CUSTOM, "encoding": "color", "palette": CUSTOM["palette"][:4] + [[0, 0, 142]]},
        r"classes 2 \(car\) and 4 \(tree\) have the same colour \[0, 0, 142\]",
    ),
    (
        {**CUSTOM, "palette": CUSTOM["palette"][:3]},
        r"the palette has 3 colours for 5 classes \(shorter than the classes\)",
    ),
    ({**CUSTOM, "colors": []}, r"unknown key\(s\) \['colors'\]"),
]
SPEC_IDS = ["duplicate_colours", "palette_shorter_than_classes", "unknown_key"]


@pytest.mark.parametrize("values, message", SPEC_ERRORS, ids=SPEC_IDS)
def test_bad_spec_is_an_error_naming_the_spec_file_and_writes_nothing(
    custom, tmp_path, capsys, values, message
):
    root, _, _ = custom
    spec_path = _spec_file(tmp_path, values, "bad_spec.yaml")
    out = str(tmp_path / "out")
    with pytest.raises(BuildError, match=rf"dataset spec {re.escape(spec_path)}: {message}"):
        _build(root, {"train": 1.0}, out, spec_path, skip_invalid=True)
    argv = [
        "--images", str(root / "images"), "--masks", str(root / "masks"), "--spec", spec_path,
        "--splits", "train=1", "--output-dir", out, "--no-progress",
    ]  # fmt: skip
    assert folder.main(argv) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(rf"error: dataset spec {re.escape(spec_path)}: {message}.*\n", err)
    assert not os.path.exists(out)


def test_list_errors_name_the_list_and_line(custom, tmp_path):
    root, spec_path, _ = custom
    out = str(tmp_path / "out")
    ids = _list_file(tmp_path, ["s0", "s9"])
    with pytest.raises(BuildError, match=rf"id 's9' on line 2 of {re.escape(ids)}: no image s9"):
        _build(root, {"train": ids}, out, spec_path)
    ids = _list_file(tmp_path, ["s0", "s9", "s0"])
    with pytest.raises(BuildError, match=r"id 's0' on line 3 of \S* is a duplicate \(first on"):
        _build(root, {"train": ids}, out, spec_path)
    with pytest.raises(BuildError, match=r"missing file: split list \S*nope\.txt"):
        _build(root, {"train": str(tmp_path / "nope.txt")}, out, spec_path)
    manifest = _build(root, {"train": ids}, out, spec_path, skip_invalid=True)["train"]
    reasons = {s["reason"] for s in manifest["skipped"]}
    assert manifest["count"] == 1 and len(reasons) == 2
    assert any(
        re.search(r"'s0' on line 3 .* is a duplicate \(first on line 1\)", r) for r in reasons
    )


# --------------------------------------------------------------------------------------------
# Splits.
# --------------------------------------------------------------------------------------------


def test_fraction_split_is_deterministic_disjoint_and_counts_add_up():
    ids = [f"id{i:03d}" for i in range(103)]
    fractions = {"train": 0.7, "val": 0.2, "test": 0.1}
    dealt = folder.fraction_split(ids[::-1], fractions, seed=0)
    assert {k: len(v) for k, v in dealt.items()} == {"train": 72, "val": 21, "test": 10}
    assert sorted(sum(dealt.values(), [])) == ids  # disjoint, and every id is in one split
    assert all(v == sorted(v) for v in dealt.values())
    # The same ids in any order, and the splits in any order, give the same answer.
    reordered = {"val": 0.2, "test": 0.1, "train": 0.7}
    assert folder.fraction_split(ids, reordered, seed=0) == dealt
    assert folder.fraction_split(ids, fractions, seed=1) != dealt
    # A random split, not the sorted ids cut in runs.
    assert dealt["test"] != ids[:10] and dealt["test"] != ids[-10:]
    part = folder.fraction_split(ids, {"train": 0.5, "val": 0.25}, seed=0)
    assert (len(part["train"]), len(part["val"])) == (51, 26)  # 51.5, 25.75: 77 in all
    assert not set(part["train"]) & set(part["val"])
    halves = folder.fraction_split(ids[:7], {"a": 0.5, "b": 0.5})
    assert sorted(len(v) for v in halves.values()) == [3, 4]


@pytest.mark.parametrize(
    "text, message",
    [
        ("train=0.9,val=0.2", r"the fractions sum to 1\.1 \(train=0\.9 \+ val=0\.2\); .*at most 1"),
        ("train=0", r"split train=0\.0: a fraction must be in \(0, 1\]"),
        ("train=1.5", r"a fraction must be in \(0, 1\]"),
        ("train", r"'train' is not NAME=VALUE"),
        ("train=0.5,train=0.5", r"split 'train' is given twice"),
        ("tr-ain=0.5", r"split name 'tr-ain' must match"),
    ],
)
def test_split_rules_refuse_bad_splits(text, message):
    with pytest.raises(ValueError, match=message):
        folder.split_rules(text)


def test_split_rules_parse_lists_and_fractions():
    assert folder.split_rules(" train=0.7 , val=.3,test=lists/test.txt") == {
        "train": 0.7,
        "val": 0.3,
        "test": "lists/test.txt",
    }
    assert folder.split_rules("a=0.7,b=0.2,c=0.1") == {"a": 0.7, "b": 0.2, "c": 0.1}  # 0.99..


def test_lists_and_fractions_mixed_fractions_split_the_rest(custom, tmp_path):
    root, spec_path, _ = custom
    palette = np.asarray(CUSTOM["palette"], np.uint8)
    for index in range(3, 12):
        _write(str(root / "images" / f"s{index}.png"), fixtures.png_bytes(_image(index, 8, 12)))
        label = _label(index, 8, 12, (0, 1 + index % 4))
        _write(str(root / "masks" / f"s{index}.png"), fixtures.png_bytes(palette[label]))
    test_ids = _list_file(tmp_path, ["s0", "s5"], "test.txt")
    out = str(tmp_path / "out")
    splits = {"test": test_ids, "train": 0.75, "val": 0.25}
    manifests = _build(root, splits, out, spec_path, seed=5)
    ids = {split: sorted(read_split(out, split)[0]) for split in splits}
    assert ids["test"] == ["s0", "s5"]
    rest = sorted(f"s{i}" for i in range(12) if i not in (0, 5))
    assert (len(ids["train"]), len(ids["val"])) == (8, 2)
    assert sorted(ids["train"] + ids["val"]) == rest
    assert ids == {
        **folder.fraction_split(rest, {"train": 0.75, "val": 0.25}, 5),
        "test": ids["test"],
    }
    assert manifests["val"]["inputs"]["split"] == {"fraction": 0.25, "seed": 5, "of": 10}
    with pytest.raises(BuildError, match=r"split val=0\.01 of 10 image\(s\) is empty"):
        _build(root, {"test": test_ids, "val": 0.01}, str(tmp_path / "out2"), spec_path)


# --------------------------------------------------------------------------------------------
# The command line.
# --------------------------------------------------------------------------------------------


def test_cli_end_to_end(custom, tmp_path, capsys):
    root, spec_path, expected = custom
    out = str(tmp_path / "out")
    argv = [
        "--images", str(root / "images"), "--masks", str(root / "masks"), "--spec", spec_path,
        "--splits", "train=0.67,val=0.33", "--seed", "3", "--output-dir", out,
        "--num-workers", "1", "--no-progress",
    ]  # fmt: skip
    assert folder.main(argv) == 0
    printed = capsys.readouterr().out
    assert re.search(r"train: 2 examples in 1 shard\(s\) -> \S*out/train-\*\.tfrecord", printed)
    assert re.search(r"val: 1 examples in 1 shard\(s\)", printed)
    train, val = (read_split(out, s)[0] for s in ("train", "val"))
    assert sorted({**train, **val}) == sorted(expected) and not set(train) & set(val)
    assert (
        sorted(train) == folder.fraction_split(expected, {"train": 0.67, "val": 0.33}, 3)["train"]
    )
    assert read_manifest(out, "train")["dataset_spec"]["classes"] == CUSTOM["classes"]
    # A bad mask: exit 1, one error line naming the file, nothing written.
    unknown_colour(root)
    out2 = str(tmp_path / "out2")
    assert folder.main([*argv[:11], out2, *argv[12:]]) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: colour \[1, 2, 3\] in \S*masks/s1\.png .*\n", err)
    assert listing(out2) == []
    # Fractions over 1: argparse's usage error (exit 2).
    with pytest.raises(SystemExit) as raised:
        folder.main([*argv[:7], "train=0.9,val=0.2", *argv[8:]])
    assert raised.value.code == 2
    assert "must sum to at most 1" in capsys.readouterr().err
