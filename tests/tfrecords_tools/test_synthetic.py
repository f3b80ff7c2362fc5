"""The synthetic VOC + SBD dataset: real layout and formats, overlaps, determinism."""

import hashlib
import os

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from deeplab_family.data import palette
from tests.tfrecords_tools.readback import read_split
from tfrecords_tools import synthetic, voc

NUM_TRAIN, NUM_VAL, SIZE = 12, 6, (60, 80)


def _tree_digest(root):
    digest = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digest[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digest


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    return root, synthetic.generate(root, NUM_TRAIN, NUM_VAL, seed=0, image_size=SIZE)


def test_same_seed_same_bytes_other_seed_other_bytes(generated, tmp_path):
    root, _ = generated
    synthetic.generate(str(tmp_path / "again"), NUM_TRAIN, NUM_VAL, seed=0, image_size=SIZE)
    assert _tree_digest(root) == _tree_digest(str(tmp_path / "again"))
    synthetic.generate(str(tmp_path / "other"), NUM_TRAIN, NUM_VAL, seed=1, image_size=SIZE)
    other = _tree_digest(str(tmp_path / "other"))
    assert other.keys() == _tree_digest(root).keys() and other != _tree_digest(root)


def test_voc_labels_are_palette_pngs_with_a_void_border(generated):
    _, out = generated
    folder = os.path.join(out["voc_root"], "SegmentationClass")
    names = sorted(os.listdir(folder))
    assert len(names) == len(out["ids"]["voc_train"]) + NUM_VAL
    for name in names:
        image = Image.open(os.path.join(folder, name))
        assert image.mode == "P"
        assert image.getpalette() == palette.pil_palette()
        label = np.asarray(image)
        assert set(np.unique(label)) <= set(range(21)) | {255}
        assert 255 in label and label.max() == 255 and (label[(label > 0) & (label < 255)]).size
        jpeg = Image.open(os.path.join(out["voc_root"], "JPEGImages", name[:-4] + ".jpg"))
        assert jpeg.format == "JPEG" and jpeg.size == image.size


def test_sbd_mat_files_have_the_gtcls_layout(generated):
    _, out = generated
    names = sorted(os.listdir(os.path.join(out["sbd_root"], "cls")))
    assert len(names) == len(out["ids"]["sbd_annotated"])
    for name in names:
        gt = scipy.io.loadmat(os.path.join(out["sbd_root"], "cls", name))["GTcls"]
        assert set(gt.dtype.names) == {"Boundaries", "Segmentation", "CategoriesPresent"}
        segmentation = gt[0]["Segmentation"][0]
        assert segmentation.dtype == np.uint8 and 255 not in segmentation
        present = gt[0]["CategoriesPresent"][0].ravel().tolist()
        assert present == [c for c in np.unique(segmentation).tolist() if c > 0]
        boundaries = gt[0]["Boundaries"][0]
        assert boundaries.shape == (20, 1) and scipy.sparse.issparse(boundaries[0, 0])
        assert boundaries[0, 0].shape == segmentation.shape


def test_builder_on_synthetic_data(generated, tmp_path):
    _, out = generated
    manifests = voc.build(
        out["voc_root"],
        ["train_aug", "val"],
        str(tmp_path / "tf"),
        sbd_root=out["sbd_root"],
        progress=False,
    )
    assert manifests["train_aug"]["count"] == NUM_TRAIN
    assert manifests["val"]["count"] == NUM_VAL
    examples, _ = read_split(str(tmp_path / "tf"), "train_aug")
    assert sorted(examples) == out["ids"]["train"]
    leaked = set(out["ids"]["sbd_train"]) & set(out["ids"]["val"])
    assert leaked and not leaked & set(examples)  # val ids listed by SBD are left out
    both = set(out["ids"]["voc_train"]) & out["ids"]["sbd_annotated"]
    assert both
    for sample_id in both:  # VOC's label (with its 255 border) wins over SBD's
        assert 255 in examples[sample_id]["label"]
    hist = manifests["train_aug"]["class_pixel_histogram"]
    assert sum(1 for c in range(1, 21) if hist[str(c)] > 0) >= 10


def test_class_styles_are_distinct():
    styles = [synthetic.class_style(c) for c in range(1, 21)]
    keys = {(s["shape"], s["texture"], tuple(np.round(s["color"], 2))) for s in styles}
    assert len(keys) == 20
    assert len({s["shape"] for s in styles}) == 10


def test_cli(tmp_path, capsys):
    assert (
        synthetic.main(
            ["--output-dir", str(tmp_path), "--num-train", "3", "--num-val", "2", "--no-progress"]
        )
        == 0
    )
    assert "python -m tfrecords_tools.voc" in capsys.readouterr().out
    lists = os.path.join(tmp_path, "VOCdevkit", "VOC2012", "ImageSets", "Segmentation")
    with open(os.path.join(lists, "val.txt")) as f:
        assert f.read().split() == ["synth_000003", "synth_000004"]
    with pytest.raises(SystemExit):
        synthetic.main(["--output-dir", str(tmp_path), "--num-train", "0"])
