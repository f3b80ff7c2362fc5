"""The ADE20K SceneParsing builder: 150 classes, raw 0 -> ignore and k -> k - 1."""

import os

import numpy as np
import pytest

from deeplab_family.data.spec import load_spec
from tests.tfrecords_tools import fixtures
from tests.tfrecords_tools.readback import listing, read_manifest, read_split
from tfrecords_tools import ade20k
from tfrecords_tools.writer import BuildError

# split -> (folder, ids), as in ADEChallengeData2016.
LAYOUT = {
    "train": ("training", ["ADE_train_00000001", "ADE_train_00000002"]),
    "val": ("validation", ["ADE_val_00000001"]),
}


def make_ade(parent):
    """``<parent>/ADEChallengeData2016`` with JPEG images and grayscale (mode L) annotations of
    raw values 0..150. Returns ``{id: {"split", "image_bytes", "raw"}}``."""
    root = os.path.join(parent, "ADEChallengeData2016")
    written = {}
    for index, (split, (folder, ids)) in enumerate(LAYOUT.items()):
        for k, sample_id in enumerate(ids):
            seed = 10 * index + k
            height, width = 13 + seed, 18 + 2 * seed  # odd and even sizes, all different
            rng = np.random.default_rng(seed)
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            raw = rng.integers(0, 151, (height, width)).astype(np.uint8)
            raw[0, :3] = (0, 1, 150)  # unlabelled, the first class, the last class
            jpeg = fixtures.jpeg_bytes(image)
            _write(os.path.join(root, "images", folder, f"{sample_id}.jpg"), jpeg)
            _write(
                os.path.join(root, "annotations", folder, f"{sample_id}.png"),
                fixtures.png_bytes(raw),
            )
            written[sample_id] = {"split": split, "image_bytes": jpeg, "raw": raw}
    return written


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _label_path(parent, split, sample_id):
    folder = LAYOUT[split][0]
    return os.path.join(parent, "ADEChallengeData2016", "annotations", folder, f"{sample_id}.png")


def test_spec_has_the_150_classes_and_palette():
    spec = load_spec("ade20k")
    assert spec.num_classes == 150 and len(set(spec.classes)) == 150
    assert spec.classes[:5] == ("wall", "building", "sky", "floor", "tree")
    assert spec.classes[7] == "bed"  # mmsegmentation spells it 'bed ': no stray spaces here
    assert spec.classes[-1] == "flag" and spec.classes[20] == "car"
    assert spec.palette[:2] == ((120, 120, 120), (180, 120, 120))
    assert spec.palette[-1] == (92, 0, 255)
    assert spec.encoding == "index" and spec.reduce_zero_label
    assert "reduce_zero_label" in spec.description
    table = spec.lookup_table()
    assert (table[0], table[1], table[150], table[151]) == (255, 0, 149, -1)


@pytest.mark.parametrize("num_workers", [1, 2])
def test_build_maps_labels_pixel_for_pixel(tmp_path, num_workers):
    written = make_ade(str(tmp_path))
    out = str(tmp_path / "out")
    # The folder holding ADEChallengeData2016 is accepted as well as the root itself.
    manifests = ade20k.build(
        str(tmp_path),
        ["train", "val"],
        out,
        num_shards=2,
        num_workers=num_workers,
        progress=False,
    )
    assert manifests["train"]["count"] == 2 and manifests["val"]["count"] == 1
    for split in ("train", "val"):
        examples, _ = read_split(out, split)
        assert sorted(examples) == LAYOUT[split][1]
        for sample_id, example in examples.items():
            source = written[sample_id]
            assert example["image_bytes"] == source["image_bytes"]
            assert example["format"] == "jpeg" and example["label_mode"] == "L"
            raw = source["raw"].astype(np.int32)
            np.testing.assert_array_equal(example["label"], np.where(raw == 0, 255, raw - 1))
            assert tuple(example["label"][0, :3]) == (255, 0, 149)
        manifest = read_manifest(out, split)
        assert manifest["dataset_spec"] == load_spec("ade20k").to_dict()
        assert manifest["dataset_spec"]["name"] == "ade20k"
        assert len(manifest["dataset_spec"]["classes"]) == 150
        assert manifest["num_classes"] == 150
        expected = np.zeros(256, np.int64)
        for sample_id in LAYOUT[split][1]:
            raw = written[sample_id]["raw"].astype(np.int32)
            expected += np.bincount(np.where(raw == 0, 255, raw - 1).ravel(), minlength=256)
        assert manifest["class_pixel_histogram"]["255"] == expected[255]
        assert manifest["class_pixel_histogram"]["149"] == expected[149]


def test_the_root_itself_is_accepted(tmp_path):
    make_ade(str(tmp_path))
    manifests = ade20k.build(
        str(tmp_path / "ADEChallengeData2016"), ["val"], str(tmp_path / "out"), progress=False
    )
    assert manifests["val"]["count"] == 1
    with pytest.raises(BuildError, match=r"--ade-root .* does not look like ADEChallengeData2016"):
        ade20k.build(str(tmp_path / "out"), ["val"], str(tmp_path / "out2"), progress=False)


def test_value_above_150_is_an_error_naming_the_file(tmp_path):
    written = make_ade(str(tmp_path))
    raw = written["ADE_train_00000002"]["raw"].copy()
    raw[3, 4] = 151
    with open(_label_path(str(tmp_path), "train", "ADE_train_00000002"), "wb") as f:
        f.write(fixtures.png_bytes(raw))
    out = str(tmp_path / "out")
    with pytest.raises(
        BuildError,
        match=r"label value 151 in annotations/training/ADE_train_00000002\.png is outside "
        r"1\.\.150 .*: 1 pixels",
    ):
        ade20k.build(str(tmp_path), ["train"], out, progress=False)
    assert listing(out) == []


def test_missing_annotation(tmp_path):
    make_ade(str(tmp_path))
    os.remove(_label_path(str(tmp_path), "train", "ADE_train_00000001"))
    out = str(tmp_path / "out")
    with pytest.raises(
        BuildError, match=r"missing file: annotations/training/ADE_train_00000001\.png"
    ):
        ade20k.build(str(tmp_path), ["train", "val"], out, progress=False)
    assert listing(out) == []
    manifest = ade20k.build(str(tmp_path), ["train"], out, skip_invalid=True, progress=False)[
        "train"
    ]
    assert manifest["count"] == 1
    assert [s["id"] for s in manifest["skipped"]] == ["ADE_train_00000001"]
    assert "annotations/training/ADE_train_00000001.png" in manifest["skipped"][0]["reason"]


def test_cli(tmp_path, capsys):
    make_ade(str(tmp_path))
    out = str(tmp_path / "out")
    argv = ["--ade-root", str(tmp_path), "--output-dir", out, "--num-workers", "1", "--no-progress"]
    assert ade20k.main(argv) == 0
    assert "train: 2 examples" in capsys.readouterr().out
    assert {"train-manifest.json", "val-manifest.json"} <= set(listing(out))
    assert ade20k.main(["--ade-root", str(tmp_path / "nope"), "--output-dir", out]) == 1
    assert "no images/ and annotations/" in capsys.readouterr().err
