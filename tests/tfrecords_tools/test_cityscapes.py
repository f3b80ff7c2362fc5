"""The Cityscapes builder: label ids mapped to the 19 train ids by the official table."""

import os

import numpy as np
import pytest

from deeplab_family.data import classes
from tests.tfrecords_tools import fixtures
from tests.tfrecords_tools.readback import listing, read_split
from tfrecords_tools import cityscapes
from tfrecords_tools.writer import BuildError

# A few rows of the official table, spelled out: id -> trainId.
OFFICIAL = {0: 255, 1: 255, 7: 0, 8: 1, 11: 2, 24: 11, 26: 13, 33: 18}


def test_table_matches_the_official_rows():
    table = classes.cityscapes_id_to_train_id()
    for label_id, train_id in OFFICIAL.items():
        assert table[label_id] == train_id
    assert classes.CITYSCAPES_NUM_CLASSES == 19
    assert classes.CITYSCAPES_CLASSES[0] == "road" and classes.CITYSCAPES_CLASSES[18] == "bicycle"
    assert sorted(set(table[:34]) - {255}) == list(range(19))


def test_build_maps_labels_and_keeps_the_png_bytes(tmp_path):
    written = fixtures.make_cityscapes(str(tmp_path / "cs"))
    out = str(tmp_path / "out")
    manifests = cityscapes.build(str(tmp_path / "cs"), ["train", "val"], out, progress=False)
    assert manifests["train"]["count"] == 2 and manifests["val"]["count"] == 1
    assert manifests["train"]["num_classes"] == 19
    for split in ("train", "val"):
        examples, _ = read_split(out, split)
        for sample_id, example in examples.items():
            source = written[sample_id]
            assert source["split"] == split
            assert example["image_bytes"] == source["image_bytes"]
            assert example["format"] == "png"
            expected = np.vectorize(OFFICIAL.get)(source["label_ids"])
            np.testing.assert_array_equal(example["label"], expected)


def test_unknown_label_id_and_missing_label(tmp_path):
    written = fixtures.make_cityscapes(str(tmp_path / "cs"))
    sample_id = min(i for i in written if written[i]["split"] == "train")
    path = os.path.join(
        str(tmp_path / "cs"), "gtFine", "train", "aachen", f"{sample_id}_gtFine_labelIds.png"
    )
    bad = written[sample_id]["label_ids"].copy()
    bad[0, 0] = 40
    with open(path, "wb") as f:
        f.write(fixtures.png_bytes(bad))
    out = str(tmp_path / "out")
    with pytest.raises(
        BuildError,
        match=rf"label id 40 in gtFine/train/aachen/{sample_id}"
        r"_gtFine_labelIds\.png is not a Cityscapes label id",
    ):
        cityscapes.build(str(tmp_path / "cs"), ["train"], out, progress=False)
    assert listing(out) == []
    os.remove(path)
    with pytest.raises(BuildError, match=rf"missing file: gtFine/train/aachen/{sample_id}"):
        cityscapes.build(str(tmp_path / "cs"), ["train"], out, progress=False)
    manifest = cityscapes.build(
        str(tmp_path / "cs"), ["train"], out, skip_invalid=True, progress=False
    )["train"]
    assert manifest["count"] == 1 and manifest["skipped"][0]["id"] == sample_id


def test_cli(tmp_path):
    fixtures.make_cityscapes(str(tmp_path / "cs"))
    out = str(tmp_path / "out")
    assert (
        cityscapes.main(
            [
                "--cityscapes-root",
                str(tmp_path / "cs"),
                "--output-dir",
                out,
                "--num-workers",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "train-manifest.json" in listing(out) and "val-manifest.json" in listing(out)
