"""The VOC 2012 + SBD builder on generated fixtures in the real formats."""

import hashlib
import os
import re
import shutil

import numpy as np
import pytest

from tests.tfrecords_tools import fixtures
from tests.tfrecords_tools.readback import listing, read_manifest, read_split, shard_files
from tfrecords_tools import voc
from tfrecords_tools.writer import BuildError

ALL_SPLITS = ["train", "val", "trainval", "train_aug", "trainval_aug"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc_sbd")
    tree = fixtures.make_voc_sbd(str(root))
    out = str(root / "tfrecords")
    manifests = voc.build(
        tree["voc_root"],
        ALL_SPLITS,
        out,
        sbd_root=tree["sbd_root"],
        num_shards=2,
        progress=False,
    )
    return tree, out, manifests


@pytest.fixture
def tree(tmp_path):
    return fixtures.make_voc_sbd(str(tmp_path / "data"))


def _read(folder, name):
    with open(os.path.join(folder, name), "rb") as f:
        return f.read()


def _build(tree, splits, out, **kwargs):
    kwargs.setdefault("progress", False)
    return voc.build(tree["voc_root"], splits, out, sbd_root=tree["sbd_root"], **kwargs)


@pytest.mark.parametrize("split", ALL_SPLITS)
def test_split_ids(built, split):
    _, out, manifests = built
    examples, _ = read_split(out, split)
    assert sorted(examples) == fixtures.EXPECTED[split]
    manifest = manifests[split]
    assert manifest == read_manifest(out, split)
    assert manifest["count"] == len(fixtures.EXPECTED[split])
    ids_text = "".join(f"{i}\n" for i in fixtures.EXPECTED[split]).encode()
    assert manifest["ids_sha256"] == hashlib.sha256(ids_text).hexdigest()


def test_train_aug_drops_voc_val_and_keeps_sbd_only_ids(built):
    _, out, _ = built
    ids = set(read_split(out, "train_aug")[0])
    assert "2007_000005" not in ids  # VOC val, though SBD lists it for training
    assert {"2008_000001", "2008_000002"} <= ids  # SBD train and SBD val only


def test_readback_gives_exact_jpeg_bytes_and_label_indices(built):
    tree, out, _ = built
    examples, _ = read_split(out, "trainval_aug")
    for sample_id, expected in tree["expected"].items():
        example = examples[sample_id]
        assert example["image_bytes"] == expected["image_bytes"], sample_id
        np.testing.assert_array_equal(example["label"], expected["label"], err_msg=sample_id)
        assert example["label_mode"] == "L"  # grayscale indices, never a palette
        assert (example["format"], example["label_format"], example["channels"]) == (
            "jpeg",
            "png",
            3,
        )
        assert (example["height"], example["width"]) == expected["label"].shape


def test_voc_label_and_jpeg_win_over_sbd(built):
    tree, out, manifests = built
    example = read_split(out, "train_aug")[0]["2007_000003"]
    assert tree["expected"]["2007_000003"]["origin"] == "voc"
    assert 255 in example["label"]  # the SBD version has no 255 and all objects set to 20
    assert manifests["train_aug"]["label_sources"] == {"SBD cls": 2, "VOC SegmentationClass": 3}


def test_manifest_histogram_and_shard_hashes(built):
    tree, out, manifests = built
    manifest = manifests["trainval_aug"]
    counts = np.zeros(256, np.int64)
    for sample_id in fixtures.EXPECTED["trainval_aug"]:
        counts += np.bincount(tree["expected"][sample_id]["label"].ravel(), minlength=256)
    expected = {str(c): int(counts[c]) for c in list(range(21)) + [255]}
    assert manifest["class_pixel_histogram"] == expected
    assert manifest["skipped"] == []
    files = shard_files(out, "trainval_aug")
    assert [os.path.basename(f) for f in files] == [s["file"] for s in manifest["shards"]]
    for path, shard in zip(files, manifest["shards"]):
        with open(path, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == shard["sha256"]
    assert sum(s["count"] for s in manifest["shards"]) == manifest["count"] == 7


def test_examples_are_dealt_round_robin_in_sorted_order(built):
    _, out, _ = built
    _, where = read_split(out, "trainval_aug")
    ids = fixtures.EXPECTED["trainval_aug"]
    assert [where[i] for i in ids] == [
        f"trainval_aug-{k % 2:05d}-of-00002.tfrecord" for k in range(len(ids))
    ]


def test_deterministic_whatever_the_number_of_workers(tree, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _build(tree, ["trainval_aug"], a, num_shards=3, num_workers=1)
    _build(tree, ["trainval_aug"], b, num_shards=3, num_workers=2)  # spawn pool
    files_a, files_b = shard_files(a, "trainval_aug"), shard_files(b, "trainval_aug")
    assert len(files_a) == 3
    for fa, fb in zip(files_a, files_b):
        with open(fa, "rb") as x, open(fb, "rb") as y:
            assert x.read() == y.read()


def test_voc_label_dir_takes_grayscale_aug_labels(tmp_path):
    tree = fixtures.make_voc_sbd(str(tmp_path / "data"), with_aug=True)
    shutil.rmtree(os.path.join(tree["voc_root"], "SegmentationClass"))
    out = str(tmp_path / "out")
    manifest = voc.build(
        tree["voc_root"], ["val"], out, voc_label_dir="SegmentationClassAug", progress=False
    )["val"]
    examples, _ = read_split(out, "val")
    for sample_id in fixtures.VOC_VAL:
        np.testing.assert_array_equal(
            examples[sample_id]["label"], tree["expected"][sample_id]["label"]
        )
    assert manifest["label_sources"] == {"VOC SegmentationClassAug": 2}


def test_roots_may_be_given_as_their_parents(tree, tmp_path):
    data = os.path.dirname(os.path.dirname(tree["voc_root"]))  # the folder holding VOCdevkit
    manifest = voc.build(data, ["train_aug"], str(tmp_path / "o"), sbd_root=data, progress=False)[
        "train_aug"
    ]
    assert manifest["count"] == 5


def test_aug_splits_need_sbd(tree, tmp_path):
    with pytest.raises(BuildError, match="need --sbd-root"):
        voc.build(tree["voc_root"], ["train_aug"], str(tmp_path / "o"), progress=False)


def test_rerun_replaces_a_split_and_drops_stale_shards(tree, tmp_path):
    out = str(tmp_path / "out")
    _build(tree, ["train", "val"], out, num_shards=3)
    val_before = {f: _read(out, f) for f in listing(out) if f.startswith("val")}
    _build(tree, ["train"], out, num_shards=2)
    names = listing(out)
    assert [n for n in names if n.startswith("train")] == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
        "train-manifest.json",
    ]
    assert read_manifest(out, "train")["num_shards"] == 2
    # Other splits are left alone.
    assert {f: _read(out, f) for f in names if f.startswith("val")} == val_before
    assert not [n for n in names if n.startswith(".")]


def test_failed_rerun_keeps_the_previous_split(tree, tmp_path):
    out = str(tmp_path / "out")
    _build(tree, ["train"], out, num_shards=2)
    before = {f: _read(out, f) for f in listing(out)}
    with open(os.path.join(tree["voc_root"], "JPEGImages", "2007_000002.jpg"), "r+b") as f:
        f.truncate(200)
    with pytest.raises(BuildError, match="2007_000002.jpg"):
        _build(tree, ["train"], out, num_shards=3)
    assert {f: _read(out, f) for f in listing(out)} == before


def test_cli(tree, tmp_path, capsys):
    out = str(tmp_path / "out")
    code = voc.main(
        [
            "--voc-root",
            tree["voc_root"],
            "--sbd-root",
            tree["sbd_root"],
            "--splits",
            "train_aug,val",
            "--output-dir",
            out,
            "--num-shards",
            "2",
            "--num-workers",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "train_aug: 5 examples in 2 shard(s)" in printed
    assert "val: 2 examples in 2 shard(s)" in printed
    os.remove(os.path.join(tree["voc_root"], "JPEGImages", "2007_000004.jpg"))
    code = voc.main(
        [
            "--voc-root",
            tree["voc_root"],
            "--splits",
            "val",
            "--output-dir",
            out,
            "--num-workers",
            "1",
            "--no-progress",
        ]
    )
    assert code == 1
    assert "error: missing file: JPEGImages/2007_000004.jpg" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        voc.main(["--voc-root", tree["voc_root"], "--splits", "test", "--output-dir", out])


def test_progress_in_a_log_is_one_line_per_update_and_no_redraws(tree, tmp_path, capsys):
    """Off a terminal (CI, a log file) the builder prints whole lines, never a `\\r` redraw."""
    _build(tree, ["train_aug", "val"], str(tmp_path / "out"), num_shards=2, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "\033" not in err
    lines = err.splitlines()
    pattern = r"(train_aug \d/5|val \d/2) \[[=> ]{24}\] \d+\.\d img/s (ETA|in) \d+:\d\d"
    assert lines and all(re.fullmatch(pattern, line) for line in lines), lines
    assert lines[-1].startswith("val 2/2 [" + "=" * 24 + "]") and " in " in lines[-1]
    assert sum(line.startswith("train_aug 5/5 ") for line in lines) == 1
