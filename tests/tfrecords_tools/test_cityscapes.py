"""The Cityscapes builder: label ids mapped to the 19 train ids by the official table (the
`cityscapes` spec); the fine splits and the coarse ones (train_extra, train_coarse,
trainval_coarse)."""

import os

import numpy as np
import pytest

from deeplab_family.data import classes
from deeplab_family.data.spec import DatasetSpec, load_spec
from tests.tfrecords_tools import fixtures
from tests.tfrecords_tools.readback import listing, read_manifest, read_split
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


# --------------------------------------------------------------------------------------------
# The label map from the dataset spec, and the coarse splits.
# --------------------------------------------------------------------------------------------

# Coarse fixtures use other ids than the fine ones (21 vegetation -> 8, 23 sky -> 10), so that a
# label read from the wrong annotation shows.
COARSE_IDS = [0, 7, 21, 23, 26, 33]
OFFICIAL_COARSE = {**OFFICIAL, 21: 8, 23: 10}
EXTRA = {"augsburg": (1, 2), "bamberg": (5,)}


def make_coarse(root):
    """`fixtures.make_cityscapes` plus ``train_extra`` images with ``gtCoarse`` labels, and
    ``gtCoarse`` labels of the fine images too (all 0, as if nothing were labelled coarsely:
    the fine label must win). Returns ``{id: {"split", "image_bytes", "label_ids"}}``."""
    written = fixtures.make_cityscapes(root)
    for sample_id, source in written.items():
        city = sample_id.split("_")[0]
        _write(
            os.path.join(
                root, "gtCoarse", source["split"], city, f"{sample_id}_gtCoarse_labelIds.png"
            ),
            fixtures.png_bytes(np.zeros_like(source["label_ids"])),
        )
    for city, frames in EXTRA.items():
        for frame in frames:
            sample_id = f"{city}_000000_{frame:06d}"
            rng = np.random.default_rng(100 + frame)
            shape = (12 + frame, 20 + frame)
            image_png = fixtures.png_bytes(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
            label_ids = rng.choice(COARSE_IDS, size=shape).astype(np.uint8)
            label_ids[0, :2] = (21, 23)
            _write(
                os.path.join(
                    root, "leftImg8bit", "train_extra", city, f"{sample_id}_leftImg8bit.png"
                ),
                image_png,
            )
            _write(
                os.path.join(
                    root, "gtCoarse", "train_extra", city, f"{sample_id}_gtCoarse_labelIds.png"
                ),
                fixtures.png_bytes(label_ids),
            )
            written[sample_id] = {
                "split": "train_extra",
                "image_bytes": image_png,
                "label_ids": label_ids,
            }
    return written


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_spec_label_map_is_the_official_table():
    spec = load_spec("cityscapes")
    table = classes.cityscapes_id_to_train_id()
    assert spec.label_map == {i: int(table[i]) for i in range(34)}
    assert spec.classes == classes.CITYSCAPES_CLASSES
    for label_id, train_id in OFFICIAL_COARSE.items():
        assert spec.lookup_table()[label_id] == train_id


COARSE_SPLITS = {
    "train_extra": ({"train_extra"}, {"gtCoarse labelIds": 3}, "cityscapes_coarse"),
    "train_coarse": (
        {"train", "train_extra"},
        {"gtFine labelIds": 2, "gtCoarse labelIds": 3},
        "cityscapes_fine+coarse",
    ),
    "trainval_coarse": (
        {"train", "val", "train_extra"},
        {"gtFine labelIds": 3, "gtCoarse labelIds": 3},
        "cityscapes_fine+coarse",
    ),
}


def test_coarse_splits_read_the_right_files(tmp_path):
    written = make_coarse(str(tmp_path / "cs"))
    out = str(tmp_path / "out")
    manifests = cityscapes.build(
        str(tmp_path / "cs"),
        ["train", *COARSE_SPLITS],
        out,
        num_shards=2,
        num_workers=2,
        progress=False,
    )
    spec = load_spec("cityscapes")
    assert manifests["train"]["dataset"] == "cityscapes_fine"
    for split, (parts, sources, dataset) in COARSE_SPLITS.items():
        examples, _ = read_split(out, split)
        assert sorted(examples) == sorted(i for i in written if written[i]["split"] in parts)
        for sample_id, example in examples.items():
            source = written[sample_id]
            assert example["image_bytes"] == source["image_bytes"], sample_id
            assert example["format"] == "png"
            # Fine images keep their gtFine label (their gtCoarse copy is all 0: all 255).
            expected = np.vectorize(OFFICIAL_COARSE.get)(source["label_ids"])
            np.testing.assert_array_equal(example["label"], expected, err_msg=sample_id)
            if source["split"] == "train_extra":
                assert tuple(example["label"][0, :2]) == (8, 10)
        manifest = read_manifest(out, split)
        assert manifest["label_sources"] == sources
        assert manifest["dataset"] == dataset and manifest["num_classes"] == 19
        # JSON keys are strings: compare the spec read back, label map included.
        assert DatasetSpec.from_dict(manifest["dataset_spec"]) == spec
    assert manifests["trainval_coarse"]["count"] == 6


def test_coarse_split_needs_every_part(tmp_path):
    fixtures.make_cityscapes(str(tmp_path / "cs"))  # no train_extra
    out = str(tmp_path / "out")
    with pytest.raises(BuildError, match=r"split 'trainval_coarse' needs leftImg8bit/train_extra"):
        cityscapes.build(str(tmp_path / "cs"), ["train", "trainval_coarse"], out, progress=False)
    with pytest.raises(BuildError, match=r"split 'train_extra' is empty: no leftImg8bit/train_"):
        cityscapes.build(str(tmp_path / "cs"), ["train_extra"], out, progress=False)
    assert listing(out) == []


def test_coarse_bad_label_missing_label_and_duplicate_id(tmp_path):
    root = str(tmp_path / "cs")
    written = make_coarse(root)
    out = str(tmp_path / "out")
    label = os.path.join(
        root, "gtCoarse", "train_extra", "bamberg", "bamberg_000000_000005_gtCoarse_labelIds.png"
    )
    for bad_id in (34, 255):
        bad = written["bamberg_000000_000005"]["label_ids"].copy()
        bad[1, 1] = bad_id
        with open(label, "wb") as f:
            f.write(fixtures.png_bytes(bad))
        with pytest.raises(
            BuildError,
            match=rf"label id {bad_id} in gtCoarse/train_extra/bamberg/bamberg_000000_000005"
            r"_gtCoarse_labelIds\.png is not a Cityscapes label id \(0\.\.33\): 1 pixels",
        ):
            cityscapes.build(root, ["trainval_coarse"], out, progress=False)
        assert listing(out) == []
    os.remove(label)
    with pytest.raises(BuildError, match=r"missing file: gtCoarse/train_extra/bamberg/bamberg_"):
        cityscapes.build(root, ["train_extra"], out, progress=False)
    # The same id in two parts of a combined split.
    train_image = os.path.join(
        root, "leftImg8bit", "train", "aachen", "aachen_000000_000019_leftImg8bit.png"
    )
    dup_image = os.path.join(
        root, "leftImg8bit", "train_extra", "aachen", "aachen_000000_000019_leftImg8bit.png"
    )
    dup_label = os.path.join(
        root, "gtCoarse", "train_extra", "aachen", "aachen_000000_000019_gtCoarse_labelIds.png"
    )
    _write(dup_image, written["aachen_000000_000019"]["image_bytes"])
    _write(dup_label, fixtures.png_bytes(written["aachen_000000_000019"]["label_ids"]))
    assert os.path.isfile(train_image)
    with pytest.raises(
        BuildError,
        match=r"duplicate id aachen_000000_000019: leftImg8bit/train_extra/aachen/\S+ and "
        r"leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit\.png",
    ):
        cityscapes.build(root, ["train_coarse"], out, progress=False)
    assert listing(out) == []
    manifest = cityscapes.build(root, ["train_coarse"], out, skip_invalid=True, progress=False)[
        "train_coarse"
    ]
    reasons = {s["reason"].split(":")[0] for s in manifest["skipped"]}
    assert reasons == {"duplicate id aachen_000000_000019", "missing file"}
    assert manifest["count"] == 2 + 2  # train, and the train_extra images that are left
    assert manifest["label_sources"] == {"gtFine labelIds": 2, "gtCoarse labelIds": 2}


def test_cli_coarse_splits(tmp_path, capsys):
    make_coarse(str(tmp_path / "cs"))
    out = str(tmp_path / "out")
    argv = ["--cityscapes-root", str(tmp_path / "cs"), "--output-dir", out, "--no-progress"]
    assert cityscapes.main([*argv, "--splits", "train_extra,trainval_coarse"]) == 0
    assert "trainval_coarse: 6 examples" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cityscapes.main([*argv, "--splits", "test"])
    assert "choose from train, val, train_extra, train_coarse, trainval_coarse" in (
        capsys.readouterr().err
    )
