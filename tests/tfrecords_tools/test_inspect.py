"""`python -m tfrecords_tools.inspect`: the report, the findings and their levels, the exit
codes and the contact sheet, on shards written by the test (through the writer for valid sets;
record by record, as a user's own tool would, for the sets the writer refuses)."""

import functools
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_family.data import schema
from deeplab_family.data.palette import VOC_COLORMAP
from deeplab_family.data.spec import DatasetSpec, load_spec
from tests.tfrecords_tools import fixtures, readback
from tfrecords_tools import inspect as inspect_tool
from tfrecords_tools.example import encode_label_png, segmentation_example
from tfrecords_tools.framing import TFRecordFile
from tfrecords_tools.sources import ExampleSource, read_spec_label
from tfrecords_tools.writer import write_split

VOC = load_spec("voc")


# --------------------------------------------------------------------------------------------
# Sets written by the test.
# --------------------------------------------------------------------------------------------


def _samples(n, height=24, width=32):
    """``[(id, image, label)]``: fixtures.sample's two class blocks and a 255 border."""
    return [(f"img{i}", *fixtures.sample(i, height + i, width + 2 * i)) for i in range(n)]


def _built(root, samples, spec=VOC, split="train"):
    """Shards written by the writer from image and mask files (index PNGs, mode L)."""
    files = os.path.join(root, "files")
    os.makedirs(files, exist_ok=True)
    sources = []
    for sample_id, image, label in samples:
        image_path = os.path.join(files, f"{sample_id}.jpg")
        label_path = os.path.join(files, f"{sample_id}.png")
        with open(image_path, "wb") as f:
            f.write(fixtures.jpeg_bytes(image))
        with open(label_path, "wb") as f:
            f.write(fixtures.png_bytes(label))
        sources.append(
            ExampleSource(
                sample_id, image_path, label_path, functools.partial(read_spec_label, spec)
            )
        )
    out = os.path.join(root, "shards")
    write_split(split, sources, out, spec=spec, progress=False)
    return out


def _raw(root, samples, spec=None, split="train", label_bytes=None, image_bytes=None):
    """Shards written record by record (what the writer refuses), with a manifest holding
    ``spec`` when one is given. ``label_bytes``/``image_bytes``: ``{id: bytes}`` to store
    instead of the encoded arrays."""
    out = os.path.join(root, "raw")
    os.makedirs(out, exist_ok=True)
    name = schema.shard_name(split, 0, 1)
    shard = TFRecordFile(os.path.join(out, name))
    for sample_id, image, label in samples:
        shard.write(
            segmentation_example(
                (image_bytes or {}).get(sample_id) or fixtures.jpeg_bytes(image),
                "jpeg",
                (label_bytes or {}).get(sample_id) or encode_label_png(label),
                sample_id,
                image.shape[0],
                image.shape[1],
            )
        )
    shard.close()
    if spec is not None:
        manifest = {
            "split": split,
            "count": shard.count,
            "shards": [{"file": name, "count": shard.count}],
            "dataset_spec": spec.to_dict(),
        }
        with open(os.path.join(out, schema.manifest_name(split)), "w") as f:
            json.dump(manifest, f)
    return out


def _voc_colours(label):
    """The VOC colour mask of ``label`` (255: the void colour (224, 224, 192))."""
    return VOC_COLORMAP[label]


def _inspect(shards, tmp_path, *args, split="train"):
    """Runs the command line; returns the exit code and the JSON report."""
    report = os.path.join(tmp_path, "report.json")
    code = inspect_tool.main(
        [os.path.join(shards, f"{split}-*"), "--json", report, "--no-progress", *args]
    )
    with open(report) as f:
        return code, json.load(f)


def _findings(report):
    return {f["code"]: f for f in report["findings"]}


def _errors(report):
    return sorted(f["code"] for f in report["findings"] if f["level"] == "error")


# --------------------------------------------------------------------------------------------
# The report of a clean set.
# --------------------------------------------------------------------------------------------


def test_a_clean_set_reports_counts_shares_sizes_and_no_error(tmp_path, capsys):
    samples = _samples(6)
    shards = _built(tmp_path, samples)
    code, report = _inspect(shards, tmp_path, "--num-images", "0")
    assert code == 0
    assert _errors(report) == []
    assert report["count"] == 6
    assert report["spec"]["name"] == "voc"
    assert report["spec"]["source"].endswith("train-manifest.json")
    labels = [label for _, _, label in samples]
    pixels = np.bincount(np.concatenate([lb.ravel() for lb in labels]), minlength=256)
    labelled = pixels[:21].sum()
    rows = {row["id"]: row for row in report["classes"]}
    for c in range(21):
        assert rows[c]["name"] == VOC.classes[c]
        assert rows[c]["pixels"] == pixels[c]
        assert rows[c]["share"] == pytest.approx(pixels[c] / labelled)
        assert rows[c]["images"] == sum(int((lb == c).any()) for lb in labels)
    assert rows[255]["pixels"] == pixels[255] and rows[255]["images"] == 6
    assert report["image_sizes"]["min"] == [24, 32]
    assert report["image_sizes"]["max"] == [29, 42]
    assert report["image_formats"] == {"jpeg": 6}
    # Fewer than half of the 21 classes are missing: info, not a warning.
    unseen = _findings(report)["classes_never_seen"]
    expected = [c for c in range(21) if not pixels[c]]
    assert unseen["level"] == "info" and len(expected) < 21 / 2
    assert all(f"{c} {VOC.classes[c]}" in unseen["message"] for c in expected)
    text = capsys.readouterr().out
    assert "6 examples" in text and "diningtable" in text and "findings:" in text


def test_the_reader_matches_tensorflows(tmp_path):
    """The TF-free framing and Example decoder read what TensorFlow reads."""
    shards = _built(tmp_path, _samples(3))
    path = readback.shard_files(shards, "train")[0]
    ours = [data for _, data in inspect_tool.iter_records(path)]
    assert ours == readback.read_records(path)
    for data in ours:
        feature = tf.train.Example.FromString(data).features.feature
        decoded = inspect_tool.decode_example(data)
        assert set(decoded) == set(feature)
        for key, value in feature.items():
            kind = value.WhichOneof("kind")
            assert decoded[key] == list(getattr(value, kind).value), key
    # A palette label PNG reads as TensorFlow's decode_png(channels=1) reads it.
    label = fixtures.sample(3)[1]
    png = fixtures.palette_png_bytes(label)
    ours, why = inspect_tool.read_label(png)
    assert "palette PNG" in why
    np.testing.assert_array_equal(ours, tf.io.decode_png(png, channels=1)[:, :, 0].numpy())


# --------------------------------------------------------------------------------------------
# Colour-coded masks stored as class ids.
# --------------------------------------------------------------------------------------------


def _gray_pil(label):
    return np.asarray(Image.fromarray(_voc_colours(label)).convert("L"))


def _red(label):
    return _voc_colours(label)[..., 0].copy()


def _mostly_boat():
    """A large boat (its grayscale, 15, is also the class id of person) and a small aeroplane:
    most of its colour-coded pixels hold a class id, and it is colour-coded all the same."""
    label = np.zeros((24, 32), np.uint8)
    label[2:20, 2:30] = 4
    label[20:23, 2:30] = 1
    return "boat", np.zeros((24, 32, 3), np.uint8), label


@pytest.mark.parametrize("convert", [_gray_pil, _red], ids=["grayscale", "red_channel"])
def test_a_colour_coded_set_stored_as_indices_is_an_error(tmp_path, convert, capsys):
    samples = [(i, image, convert(label)) for i, image, label in [*_samples(5), _mostly_boat()]]
    shards = _raw(tmp_path, samples, spec=VOC)
    code, report = _inspect(shards, tmp_path, "--num-images", "0")
    assert code == 1
    found = _findings(report)
    assert found["colour_coded"]["level"] == "error"
    assert found["colour_coded"]["ids"] == [i for i, _, _ in samples]
    assert found["out_of_range"]["level"] == "error"
    assert found["out_of_range"]["ids"] == [i for i, _, _ in samples]
    # The out-of-range values are named, image by image.
    values = sorted({int(v) for _, _, lb in samples for v in np.unique(lb) if 20 < v < 255})
    assert values and all(str(v) in found["out_of_range"]["message"] for v in values)
    assert "img0 (" in found["out_of_range"]["message"]
    what = "grayscale" if convert is _gray_pil else "red channel"
    assert what in found["colour_coded"]["message"]
    assert "aeroplane [128, 0, 0]" in found["colour_coded"]["message"]
    assert "error   colour_coded" in capsys.readouterr().out


def test_colour_coded_without_a_spec_and_with_spec_override(tmp_path):
    samples = [(i, image, _gray_pil(label)) for i, image, label in _samples(4)]
    shards = _raw(tmp_path, samples, spec=None)  # no manifest: a user's own shards
    code, report = _inspect(shards, tmp_path, "--num-images", "0")
    assert code == 1
    found = _findings(report)
    assert found["no_spec"]["level"] == "warning"
    assert found["colour_coded"]["level"] == "error"
    assert "out_of_range" not in found  # the classes are the values seen
    assert report["spec"] is None
    code, report = _inspect(shards, tmp_path, "--num-images", "0", "--spec", "voc")
    assert code == 1 and report["spec"]["name"] == "voc"
    assert {"colour_coded", "out_of_range"} <= set(_errors(report))
    assert "no_spec" not in _findings(report)


def test_a_palette_label_png_in_a_shard_is_read_as_training_reads_it(tmp_path):
    """tf.io.decode_png(channels=1) turns a palette label's indices into the grayscale of its
    colours: both the stored format and the values it gives are errors."""
    samples = _samples(3)
    pngs = {i: fixtures.palette_png_bytes(label) for i, _, label in samples}
    shards = _raw(tmp_path, samples, spec=VOC, label_bytes=pngs)
    code, report = _inspect(shards, tmp_path, "--num-images", "0")
    assert code == 1
    assert {"label_not_grayscale", "colour_coded", "out_of_range"} <= set(_errors(report))
    assert _findings(report)["label_not_grayscale"]["ids"] == ["img0", "img1", "img2"]


def test_class_ids_that_equal_palette_grays_are_not_colour_coded(tmp_path):
    """4 (boat), 15 (person) and 19 (train) are also the grayscale of VOC colours; masks of
    such classes only, with a few stray values, are out of range but not colour-coded."""
    samples = []
    for (i, image, label), c in zip(_samples(4), (4, 15, 19, 15), strict=True):
        label = np.where(label == 255, 255, np.where(label > 0, c, 0))
        samples.append((i, image, label.astype(np.uint8)))
    shards = _built(tmp_path, samples)
    code, report = _inspect(shards, tmp_path, "--num-images", "0")
    assert code == 0 and _errors(report) == []
    stray = []
    for i, image, label in samples:
        label = label.copy()
        label[-1, :3] = 38  # gray of aeroplane: 3 pixels
        stray.append((i, image, label))
    code, report = _inspect(_raw(tmp_path, stray, spec=VOC), tmp_path, "--num-images", "0")
    assert code == 1 and _errors(report) == ["out_of_range"]


def test_ids_of_a_larger_dataset_are_out_of_range_not_colour_coded(tmp_path):
    """ADE20K-like ids 0..150 under the VOC spec: values outside the classes, no colours."""
    rng = np.random.default_rng(0)
    samples = []
    for i, image, _ in _samples(4):
        label = np.repeat(np.repeat(rng.integers(0, 151, (6, 8)), 4, 0), 4, 1)
        samples.append((i, image[:24, :32], label.astype(np.uint8)))
    code, report = _inspect(_raw(tmp_path, samples, spec=VOC), tmp_path, "--num-images", "0")
    assert code == 1
    assert _errors(report) == ["out_of_range"]


# --------------------------------------------------------------------------------------------
# 0/1 masks, all-ignore, all-background and 0/255 masks.
# --------------------------------------------------------------------------------------------


def _binary(n_binary, n_multi):
    samples = []
    for k, (i, image, label) in enumerate(_samples(n_binary + n_multi)):
        if k < n_binary:
            label = np.where(label == 255, 255, (label > 0).astype(np.uint8)).astype(np.uint8)
        samples.append((i, image, label))
    return samples


def test_a_01_mask_set_under_a_21_class_spec_warns(tmp_path):
    samples = _binary(10, 0)
    all_ignore = np.full((20, 20), 255, np.uint8)
    samples.append(("void", np.zeros((20, 20, 3), np.uint8), all_ignore))
    code, report = _inspect(_built(tmp_path, samples), tmp_path, "--num-images", "0")
    assert code == 0
    found = _findings(report)
    assert found["binary_mask"]["level"] == "warning"
    assert "0/1 masks" in found["binary_mask"]["message"]
    assert len(found["binary_mask"]["ids"]) == 11
    assert found["all_ignore"]["level"] == "warning"
    assert found["all_ignore"]["ids"] == ["void"]
    assert "void" in found["all_ignore"]["message"]
    # Most classes are never seen: a warning now.
    assert found["classes_never_seen"]["level"] == "warning"


def test_binary_masks_below_the_share_or_under_a_two_class_spec_do_not_warn(tmp_path):
    code, report = _inspect(_built(tmp_path / "a", _binary(8, 2)), tmp_path, "--num-images", "0")
    assert code == 0 and "binary_mask" not in _findings(report)  # 80% < 90%
    two = DatasetSpec(name="fg", classes=["background", "thing"], palette=[[0, 0, 0], [255, 0, 0]])
    shards = _built(tmp_path / "b", _binary(10, 0), spec=two)
    code, report = _inspect(shards, tmp_path, "--num-images", "0")
    assert code == 0 and "binary_mask" not in _findings(report)


def test_0_255_masks_and_all_background_images_warn(tmp_path):
    samples = []
    for i, image, label in _samples(10):
        samples.append((i, image, np.where(label > 0, 255, 0).astype(np.uint8)))
    samples.append(("empty", np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20), np.uint8)))
    code, report = _inspect(_built(tmp_path, samples), tmp_path, "--num-images", "0")
    assert code == 0
    found = _findings(report)
    assert found["foreground_as_ignore"]["level"] == "warning"
    assert len(found["foreground_as_ignore"]["ids"]) == 10
    assert found["all_background"]["ids"] == ["empty"]
    assert "binary_mask" not in found


# --------------------------------------------------------------------------------------------
# Broken examples and files.
# --------------------------------------------------------------------------------------------


def test_size_mismatch_and_undecodable_examples_are_errors(tmp_path):
    samples = _samples(4)
    i, image, label = samples[1]
    samples[1] = (i, image, label[:-2])  # label 2 rows short
    jpeg = fixtures.jpeg_bytes(samples[2][1])
    shards = _raw(
        tmp_path,
        samples,
        spec=VOC,
        image_bytes={"img2": jpeg[: len(jpeg) // 2]},
        label_bytes={"img3": b"not a png"},
    )
    code, report = _inspect(shards, tmp_path, "--num-images", "0")
    assert code == 1
    found = _findings(report)
    assert found["size_mismatch"]["ids"] == ["img1"]
    assert "image 25x34, label 23x34" in found["size_mismatch"]["message"]
    assert found["undecodable_image"]["ids"] == ["img2"]
    assert "img2" in found["undecodable_image"]["message"]
    assert found["undecodable_label"]["ids"] == ["img3"]
    assert {f["level"] for f in report["findings"] if "undecodable" in f["code"]} == {"error"}


def test_a_corrupt_shard_and_a_wrong_manifest_count_are_errors(tmp_path):
    shards = _built(tmp_path, _samples(3))
    path = readback.shard_files(shards, "train")[0]
    with open(path, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    code, report = _inspect(shards, tmp_path, "--num-images", "0")
    assert code == 1
    message = _findings(report)["corrupt_record"]["message"]
    assert os.path.basename(path) in message and "record 0" in message and "CRC" in message

    shards = _built(tmp_path / "b", _samples(3))
    manifest = os.path.join(shards, schema.manifest_name("train"))
    with open(manifest) as f:
        values = json.load(f)
    values["shards"][0]["count"] = 4
    with open(manifest, "w") as f:
        json.dump(values, f)
    code, report = _inspect(shards, tmp_path, "--num-images", "0")
    assert code == 1 and _errors(report) == ["count_mismatch"]


# --------------------------------------------------------------------------------------------
# The command line.
# --------------------------------------------------------------------------------------------


def test_no_matching_file_and_bad_arguments_exit_2(tmp_path, capsys):
    pattern = os.path.join(tmp_path, "nothing-*.tfrecord")
    assert inspect_tool.main([pattern]) == 2
    assert pattern in capsys.readouterr().err
    shards = _built(tmp_path, _samples(2))
    assert inspect_tool.main([os.path.join(shards, "train-*"), "--spec", "no_such_spec"]) == 2
    assert "no_such_spec" in capsys.readouterr().err
    for bad in (["--num-images", "-1"], ["--max-images", "0"]):
        with pytest.raises(SystemExit) as e:
            inspect_tool.main([os.path.join(shards, "train-*"), *bad])
        assert e.value.code == 2


def test_max_images_and_json_on_stdout(tmp_path, capsys):
    shards = _built(tmp_path, _samples(5))
    code = inspect_tool.main(
        [
            os.path.join(shards, "train-*"),
            "--max-images",
            "3",
            "--json",
            "-",
            "--num-images",
            "0",
            "--no-progress",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["count"] == 3 and report["exit_code"] == 0


# --------------------------------------------------------------------------------------------
# The contact sheet.
# --------------------------------------------------------------------------------------------


def _expected_size(cells, legend):
    columns = min(inspect_tool.COLUMNS, cells)
    rows = math.ceil(cells / columns)
    width = inspect_tool.PAD + columns * (
        2 * inspect_tool.THUMB + inspect_tool.GAP + inspect_tool.PAD
    )
    per_row = (width - inspect_tool.PAD) // inspect_tool.LEGEND_COLUMN
    height = (
        inspect_tool.TITLE
        + inspect_tool.PAD
        + rows * (inspect_tool.THUMB + inspect_tool.CAPTION + inspect_tool.PAD)
        + inspect_tool.LEGEND_ROW * (1 + math.ceil(legend / per_row))
        + inspect_tool.PAD
    )
    return width, height


def _thumb(label, colours):
    mask = Image.fromarray(colours[label])
    scale = min(inspect_tool.THUMB / mask.width, inspect_tool.THUMB / mask.height)
    size = (round(mask.width * scale), round(mask.height * scale))
    return np.asarray(mask.resize(size, Image.Resampling.NEAREST))


def test_the_contact_sheet_shows_the_masks_in_the_palette(tmp_path):
    samples = _samples(6)
    shards = _built(tmp_path, samples)
    code, report = _inspect(shards, tmp_path, "--num-images", "4")
    assert code == 0
    path = os.path.join(shards, "contact-sheet-train.png")  # the default: next to the shards
    assert report["contact_sheet"].startswith(path)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    seen = {c for _, _, lb in samples for c in np.unique(lb)}  # classes and 255
    assert (sheet.shape[1], sheet.shape[0]) == _expected_size(4, len(seen))
    # No finding names an image: four spread over the six, each mask pixel for pixel.
    colours = VOC.colormap()
    layout = inspect_tool.sheet_layout(4, len(seen))
    for k, (_, mask_box, _) in zip((0, 1, 3, 4), layout.cells, strict=True):
        label = samples[k][2]
        thumb = _thumb(label, colours)
        left, bottom = mask_box[0], mask_box[3]
        shown = sheet[bottom - thumb.shape[0] : bottom, left : left + thumb.shape[1]]
        np.testing.assert_array_equal(shown, thumb)
        for c in np.unique(label):  # the palette colour of each class of the mask is there
            assert (shown == colours[c]).all(-1).any(), c
    # The legend has a swatch of each class seen.
    legend = sheet[layout.legend[1] :]
    for c in seen:
        assert (legend == colours[c]).all(-1).any(), c
    # A rerun with the natural pattern does not read the sheet as a shard.
    code, again = _inspect(shards, tmp_path, "--num-images", "4")
    assert code == 0 and again["count"] == 6


def test_the_contact_sheet_puts_flagged_images_first(tmp_path):
    samples = _samples(6)
    samples[4] = ("void", np.zeros((20, 20, 3), np.uint8), np.full((20, 20), 255, np.uint8))
    shards = _built(tmp_path, samples)
    sheet_path = os.path.join(tmp_path, "sheet.png")
    code, report = _inspect(shards, tmp_path, "--num-images", "2", "--contact-sheet", sheet_path)
    assert code == 0 and report["contact_sheet"].startswith(sheet_path)
    sheet = np.asarray(Image.open(sheet_path).convert("RGB"))
    layout = inspect_tool.sheet_layout(2, 0)  # the cells do not depend on the legend
    _, mask_box, _ = layout.cells[0]
    void = VOC.colormap()[255]  # (224, 224, 192): the all-ignore image is first
    corner = sheet[mask_box[3] - 1, mask_box[0]]
    np.testing.assert_array_equal(corner, void)
