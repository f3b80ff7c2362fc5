"""Every bad-input case: a clear message naming the file and nothing written, or, with
``skip_invalid``, a skip recorded in the manifest; and kills mid-write leave no final shard."""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.io
from PIL import Image

from tests.tfrecords_tools import fixtures
from tests.tfrecords_tools.readback import listing, read_manifest, read_split
from tfrecords_tools import voc, writer
from tfrecords_tools.writer import BuildError

VOC_ID, SBD_ID = "2007_000002", "2008_000001"


def _voc(tree, *parts):
    return os.path.join(tree["voc_root"], *parts)


def _sbd(tree, *parts):
    return os.path.join(tree["sbd_root"], *parts)


def _label(tree, sample_id):
    return tree["expected"][sample_id]["label"]


def missing_jpeg(tree):
    os.remove(_voc(tree, "JPEGImages", f"{VOC_ID}.jpg"))


def missing_label(tree):
    os.remove(_voc(tree, "SegmentationClass", f"{VOC_ID}.png"))


def missing_mat(tree):
    os.remove(_sbd(tree, "cls", f"{SBD_ID}.mat"))


def truncated_jpeg(tree):
    with open(_voc(tree, "JPEGImages", f"{VOC_ID}.jpg"), "r+b") as f:
        f.truncate(os.path.getsize(f.name) // 2)


def corrupt_jpeg(tree):
    with open(_voc(tree, "JPEGImages", f"{VOC_ID}.jpg"), "wb") as f:
        f.write(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())


def size_mismatch(tree):
    with open(_voc(tree, "SegmentationClass", f"{VOC_ID}.png"), "wb") as f:
        f.write(fixtures.palette_png_bytes(_label(tree, VOC_ID)[:-1]))


def label_value_42(tree):
    label = _label(tree, VOC_ID).copy()
    label[5, 5] = 42
    with open(_voc(tree, "SegmentationClass", f"{VOC_ID}.png"), "wb") as f:
        f.write(fixtures.palette_png_bytes(label))


def mat_value_21(tree):
    label = _label(tree, SBD_ID).copy()
    label[3, 3] = 21
    fixtures.write_sbd_mat(_sbd(tree, "cls", f"{SBD_ID}.mat"), label)


def rgb_label(tree):
    Image.open(_voc(tree, "SegmentationClass", f"{VOC_ID}.png")).convert("RGB").save(
        _voc(tree, "SegmentationClass", f"{VOC_ID}.png")
    )


def mat_without_gtcls(tree):
    scipy.io.savemat(_sbd(tree, "cls", f"{SBD_ID}.mat"), {"GTinst": np.zeros((2, 2))})


def _append_to_train_list(line, name="append_to_train_list"):
    def mutate(tree):
        with open(_voc(tree, "ImageSets", "Segmentation", "train.txt"), "a") as f:
            f.write(line + "\n")

    mutate.__name__ = name
    return mutate


# (case, split, the id that is skipped, message regex)
CASES = [
    (
        missing_jpeg,
        "train",
        VOC_ID,
        rf"missing file: neither JPEGImages/{VOC_ID}\.jpg nor SBD img/{VOC_ID}\.jpg exists",
    ),
    (
        missing_label,
        "train",
        VOC_ID,
        rf"missing file: neither SegmentationClass/{VOC_ID}\.png nor SBD cls/{VOC_ID}\.mat exists",
    ),
    (missing_mat, "train_aug", SBD_ID, rf"missing file: .*SBD cls/{SBD_ID}\.mat"),
    (truncated_jpeg, "train", VOC_ID, rf"corrupt or truncated image JPEGImages/{VOC_ID}\.jpg"),
    (corrupt_jpeg, "train", VOC_ID, rf"corrupt or truncated image JPEGImages/{VOC_ID}\.jpg"),
    (
        size_mismatch,
        "train",
        VOC_ID,
        (
            rf"image JPEGImages/{VOC_ID}\.jpg is 25x34 \(HxW\) but its label "
            rf"SegmentationClass/{VOC_ID}\.png is 24x34"
        ),
    ),
    (
        label_value_42,
        "train",
        VOC_ID,
        rf"label value 42 in SegmentationClass/{VOC_ID}\.png is outside 0\.\.20 and is not 255",
    ),
    (
        mat_value_21,
        "train_aug",
        SBD_ID,
        rf"label value 21 in SBD cls/{SBD_ID}\.mat is outside 0\.\.20 and is not 255",
    ),
    (
        rgb_label,
        "train",
        VOC_ID,
        (
            rf"label SegmentationClass/{VOC_ID}\.png has mode RGB; expected a palette "
            r"\(mode P\) or grayscale \(mode L\) PNG"
        ),
    ),
    (mat_without_gtcls, "train_aug", SBD_ID, rf"SBD cls/{SBD_ID}\.mat has no GTcls struct"),
    (
        _append_to_train_list("2007/000009", "id_with_separator"),
        "train",
        "2007/000009",
        (
            r"id '2007/000009' on line 4 of ImageSets/Segmentation/train\.txt contains a path "
            r"separator"
        ),
    ),
    (
        _append_to_train_list("2007..000009", "id_with_dotdot"),
        "train",
        "2007..000009",
        r"id '2007\.\.000009' on line 4 of ImageSets/Segmentation/train\.txt contains '\.\.'",
    ),
]


CASE_IDS = [case.__name__ for case, *_ in CASES]


@pytest.fixture
def tree(tmp_path):
    return fixtures.make_voc_sbd(str(tmp_path / "data"))


def _build(tree, split, out, **kwargs):
    return voc.build(
        tree["voc_root"],
        [split],
        out,
        sbd_root=tree["sbd_root"],
        num_shards=2,
        progress=False,
        **kwargs,
    )


@pytest.mark.parametrize("case, split, bad_id, message", CASES, ids=CASE_IDS)
def test_bad_input_fails_with_a_clear_message_and_writes_nothing(
    tree, tmp_path, case, split, bad_id, message
):
    case(tree)
    out = str(tmp_path / "out")
    with pytest.raises(BuildError, match=message):
        _build(tree, split, out)
    assert listing(out) == []  # no shard, final or temporary, and no manifest


@pytest.mark.parametrize("case, split, bad_id, message", CASES, ids=CASE_IDS)
def test_skip_invalid_records_the_example_and_goes_on(tree, tmp_path, case, split, bad_id, message):
    case(tree)
    out = str(tmp_path / "out")
    manifest = _build(tree, split, out, skip_invalid=True)[split]
    assert len(manifest["skipped"]) == 1
    assert manifest["skipped"][0]["id"] == bad_id
    assert re.search(message, manifest["skipped"][0]["reason"])
    expected = [i for i in fixtures.EXPECTED[split] if i != bad_id]
    assert sorted(read_split(out, split)[0]) == expected
    assert manifest["count"] == len(expected)
    assert read_manifest(out, split) == manifest


def test_duplicate_ids(tree, tmp_path):
    _append_to_train_list("2007_000001", "duplicate")(tree)
    out = str(tmp_path / "out")
    message = (
        r"id '2007_000001' on line 4 of ImageSets/Segmentation/train\.txt is a duplicate "
        r"\(first on line 1\)"
    )
    with pytest.raises(BuildError, match=message):
        _build(tree, "train", out)
    assert listing(out) == []
    manifest = _build(tree, "train", out, skip_invalid=True)["train"]
    assert [s["id"] for s in manifest["skipped"]] == ["2007_000001"]
    assert re.search(message, manifest["skipped"][0]["reason"])
    assert sorted(read_split(out, "train")[0]) == fixtures.VOC_TRAIN  # written once


@pytest.mark.parametrize("skip_invalid", [False, True])
def test_empty_split(tree, tmp_path, skip_invalid):
    open(_voc(tree, "ImageSets", "Segmentation", "train.txt"), "w").close()
    out = str(tmp_path / "out")
    with pytest.raises(BuildError, match=r"split 'train' is empty"):
        _build(tree, "train", out, skip_invalid=skip_invalid)
    assert listing(out) == []


def test_split_with_every_example_skipped_is_empty(tree, tmp_path):
    for sample_id in fixtures.VOC_VAL:
        os.remove(_voc(tree, "JPEGImages", f"{sample_id}.jpg"))
    out = str(tmp_path / "out")
    with pytest.raises(BuildError, match=r"split 'val' is empty.*all 2 were skipped"):
        voc.build(tree["voc_root"], ["val"], out, skip_invalid=True, progress=False)
    assert listing(out) == []


def test_missing_list_file(tree, tmp_path):
    os.remove(_sbd(tree, "val.txt"))
    with pytest.raises(BuildError, match=r"missing file: SBD val\.txt"):
        _build(tree, "train_aug", str(tmp_path / "out"))


# ---- kills during writing -------------------------------------------------------------------


def test_interrupt_mid_split_leaves_no_file(tree, tmp_path, monkeypatch):
    real, calls = writer.load_example, []

    def load_then_interrupt(source, num_classes):
        calls.append(source.id)
        if len(calls) == 6:  # shard 0 (4 examples) is complete, shard 1 is half written
            raise KeyboardInterrupt
        return real(source, num_classes)

    monkeypatch.setattr(writer, "load_example", load_then_interrupt)
    out = str(tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        _build(tree, "trainval_aug", out)
    assert len(calls) == 6
    assert listing(out) == []


def test_worker_process_dying_leaves_no_file(tree, tmp_path):
    layout = voc.VocLayout(tree["voc_root"], tree["sbd_root"])
    sources, _ = layout.plan("train")
    sources = [
        writer.ExampleSource(**{**s.__dict__, "label_reader": fixtures.exit_when_reading})
        for s in sources
    ]
    out = str(tmp_path / "out")
    with pytest.raises(BuildError, match="a worker process died while writing split 'train'"):
        writer.write_split(
            "train", sources, out, num_classes=21, num_shards=3, num_workers=2, progress=False
        )
    assert listing(out) == []


def test_killed_builder_leaves_only_hidden_temporary_files(tree, tmp_path):
    out = str(tmp_path / "out")
    script = textwrap.dedent(
        f"""
        import os, signal
        from tfrecords_tools import voc, writer
        real, calls = writer.load_example, []
        def load(source, num_classes):
            calls.append(1)
            if len(calls) == 6:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(source, num_classes)
        writer.load_example = load
        voc.build({tree["voc_root"]!r}, ["trainval_aug"], {out!r}, sbd_root={tree["sbd_root"]!r},
                  num_shards=2, progress=False)
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, timeout=120, check=False
    )
    assert result.returncode == -9, result.stderr.decode()
    left = listing(out)
    assert left and all(name.startswith(".") and ".tmp-" in name for name in left), left
    # A rerun cleans up and writes the split.
    manifest = _build(tree, "trainval_aug", out)["trainval_aug"]
    assert manifest["count"] == 7
    assert not [name for name in listing(out) if name.startswith(".")]
