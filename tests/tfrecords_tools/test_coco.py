"""The COCO builder: instance annotations rendered to VOC's classes, read back with TensorFlow.

The fixture is a COCO-format tree written here: ``annotations/instances_<split>.json`` with
polygons, uncompressed RLE (a crowd), compressed RLE strings, a non-VOC class (giraffe, 25),
regions under 1000 pixels, and images that must be dropped. The expected masks are drawn
independently: axis-aligned rectangles with PIL's ``ImageDraw`` (pycocotools fills the polygon
with corners ``(x0, y0), (x1, y1)`` as the pixels ``[y0:y1, x0:x1]``, checked first), RLE from
numpy masks with run lengths counted here, in the order the module docstring promises.
"""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.tfrecords_tools.readback import listing, read_manifest, read_split
from tfrecords_tools import coco
from tfrecords_tools.writer import BuildError

# COCO category ids and the VOC class ids they must become.
PERSON, BICYCLE, CAR, DOG, CAT, GIRAFFE, TV = 1, 2, 3, 18, 17, 25, 72
VOC = {PERSON: 15, BICYCLE: 2, CAR: 7, DOG: 12, CAT: 8, TV: 20, GIRAFFE: 0}
CATEGORIES = [
    {"id": c, "name": n, "supercategory": "x"}
    for c, n in [
        (PERSON, "person"),
        (BICYCLE, "bicycle"),
        (CAR, "car"),
        (CAT, "cat"),
        (DOG, "dog"),
        (GIRAFFE, "giraffe"),
        (TV, "tv"),
    ]
]
IGNORE = 255


# --------------------------------------------------------------------------------------------
# Writing COCO formats from numpy, independently of the code under test.
# --------------------------------------------------------------------------------------------


def box(x0, y0, x1, y1):
    """A polygon (COCO's flat x, y list) of the rectangle with corners (x0, y0), (x1, y1)."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def draw_box(canvas, x0, y0, x1, y1, value):
    """The pixels pycocotools fills for ``box(x0, y0, x1, y1)``: columns x0..x1-1, rows
    y0..y1-1 (PIL's rectangle includes both corners)."""
    image = Image.fromarray(canvas)
    ImageDraw.Draw(image).rectangle([x0, y0, x1 - 1, y1 - 1], fill=value)
    canvas[...] = np.asarray(image)


def box_mask(height, width, x0, y0, x1, y1):
    mask = np.zeros((height, width), np.uint8)
    draw_box(mask, x0, y0, x1, y1, 1)
    return mask


def rle_counts(mask):
    """COCO's uncompressed RLE: run lengths over the column-major pixels, zeros first."""
    flat = mask.flatten(order="F").astype(bool)
    counts, value, run = [], False, 0
    for pixel in flat:
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    counts.append(run)
    return counts


def rle_string(counts):
    """COCO's compressed RLE string (``maskApi.c`` ``rleToString``), written out here."""
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def uncompressed(mask):
    return {"size": list(mask.shape), "counts": rle_counts(mask)}


def compressed(mask):
    return {"size": list(mask.shape), "counts": rle_string(rle_counts(mask))}


def jpeg(height, width, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png(height, width, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# The fixture tree.
# --------------------------------------------------------------------------------------------


def _annotation(ann_id, image_id, category, segmentation, iscrowd=0, area=0.0):
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category,
        "segmentation": segmentation,
        "iscrowd": iscrowd,
        "area": area,
        "bbox": [0, 0, 1, 1],
    }


def make_coco(root):
    """Writes train2017 (``<root>/train2017``) and val2017 (``<root>/images/val2017``).

    Returns ``{split: {"json": dict, "expected": {id: mask}, "dropped": [ids]}}``.
    """
    out = {}
    # train2017 -------------------------------------------------------------------------------
    images, annotations, expected, files = [], [], {}, {}

    # 1: polygons. A person (1440 px, its `area` field wrongly says 500: the rendered pixels
    # decide), a dog inside it (100 px, listed first and with the lower id: the size decides the
    # order, not the file), a giraffe inside it (background over the person), a person crowd as
    # uncompressed RLE over the right part, which the person covers where they overlap.
    h, w = 48, 64
    images.append({"id": 1, "file_name": "000000000001.jpg", "height": h, "width": w})
    files["000000000001.jpg"] = jpeg(h, w, 1)
    crowd = np.zeros((h, w), np.uint8)
    crowd[:, 40:60] = 1
    annotations += [
        _annotation(10, 1, DOG, [box(10, 10, 20, 20)], area=100.0),
        _annotation(11, 1, PERSON, [box(4, 4, 44, 40)], area=500.0),
        _annotation(12, 1, GIRAFFE, [box(30, 20, 40, 30)], area=100.0),
        _annotation(13, 1, PERSON, uncompressed(crowd), iscrowd=1, area=960.0),
    ]
    mask = np.zeros((h, w), np.uint8)
    mask[crowd > 0] = IGNORE  # crowds first
    draw_box(mask, 4, 4, 44, 40, VOC[PERSON])  # then the largest instance
    draw_box(mask, 10, 10, 20, 20, VOC[DOG])  # the smaller ones over it
    draw_box(mask, 30, 20, 40, 30, VOC[GIRAFFE])
    expected["000000000001"] = mask

    # 2: a PNG image, compressed RLE. A car (an L shape of 1100 px) and a bicycle (a 60 px
    # diagonal band, drawn over the car); a TV of two polygons (two rectangles, 2 x 80 px) after
    # a degenerate 2-point part, which pycocotools would read as a box [x, y, w, h] if first; a
    # giraffe crowd over the top rows: a crowd of any category is ignore.
    h, w = 40, 50
    images.append({"id": 2, "file_name": "000000000002.png", "height": h, "width": w})
    files["000000000002.png"] = png(h, w, 2)
    car = np.zeros((h, w), np.uint8)
    car[5:35, 5:45] = 1
    car[5:15, 35:45] = 0
    bicycle = np.zeros((h, w), np.uint8)
    for k in range(20):
        bicycle[10 + k, 10 + k : 13 + k] = 1
    giraffes = np.zeros((h, w), np.uint8)
    giraffes[0:5, :] = 1
    annotations += [
        _annotation(23, 2, GIRAFFE, uncompressed(giraffes), iscrowd=1, area=250.0),
        _annotation(20, 2, CAR, compressed(car), area=1100.0),
        _annotation(21, 2, BICYCLE, compressed(bicycle), area=60.0),
        _annotation(22, 2, TV, [[0, 0, 5, 5], box(0, 36, 20, 40), box(30, 36, 50, 40)]),
    ]
    mask = np.zeros((h, w), np.uint8)
    mask[giraffes > 0] = IGNORE
    mask[car > 0] = VOC[CAR]
    mask[bicycle > 0] = VOC[BICYCLE]
    draw_box(mask, 0, 36, 20, 40, VOC[TV])
    draw_box(mask, 30, 36, 50, 40, VOC[TV])
    expected["000000000002"] = mask

    # 3: only regions that do not count: a cat of exactly 1000 px (not "larger than" 1000; its
    # `area` field says 5000), a giraffe of 2000 px (not a VOC class), a person crowd of 1500 px.
    h, w = 60, 60
    images.append({"id": 3, "file_name": "000000000003.jpg", "height": h, "width": w})
    files["000000000003.jpg"] = jpeg(h, w, 3)
    crowd = np.zeros((h, w), np.uint8)
    crowd[:, 35:60] = 1
    annotations += [
        _annotation(30, 3, CAT, [box(0, 0, 40, 25)], area=5000.0),
        _annotation(31, 3, GIRAFFE, [box(0, 25, 50, 65)], area=2000.0),
        _annotation(32, 3, PERSON, uncompressed(crowd), iscrowd=1, area=1500.0),
    ]
    # 4: no annotation at all.
    images.append({"id": 4, "file_name": "000000000004.jpg", "height": 30, "width": 40})
    files["000000000004.jpg"] = jpeg(30, 40, 4)
    train = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    _write_split(root, "train2017", "train2017", train, files)
    out["train2017"] = {
        "json": train,
        "expected": expected,
        "dropped": ["000000000003", "000000000004"],
    }

    # val2017, under images/ ------------------------------------------------------------------
    h, w = 36, 40
    person = box_mask(h, w, 0, 0, 40, 30)  # 1200 px
    val = {
        "images": [{"id": 7, "file_name": "000000000007.jpg", "height": h, "width": w}],
        "annotations": [_annotation(70, 7, PERSON, compressed(person), area=1200.0)],
        "categories": CATEGORIES,
    }
    mask = np.where(person > 0, VOC[PERSON], 0).astype(np.uint8)
    _write_split(root, "val2017", "images/val2017", val, {"000000000007.jpg": jpeg(h, w, 7)})
    out["val2017"] = {"json": val, "expected": {"000000000007": mask}, "dropped": []}
    return out


def _write_split(root, split, image_rel, data, files):
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    write_json(root, split, data)
    image_dir = os.path.join(root, *image_rel.split("/"))
    os.makedirs(image_dir, exist_ok=True)
    for name, data_bytes in files.items():
        with open(os.path.join(image_dir, name), "wb") as f:
            f.write(data_bytes)


def write_json(root, split, data):
    with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump(data, f)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Both splits built once, with two spawn workers (the label readers are pickled)."""
    root = str(tmp_path_factory.mktemp("coco"))
    tree = make_coco(root)
    out = os.path.join(root, "tfrecords")
    manifests = coco.build(
        root,
        ["train2017", "val2017"],
        out,
        num_shards=2,
        num_workers=2,
        progress=False,
    )
    return tree, out, manifests


@pytest.fixture
def tree(tmp_path):
    root = str(tmp_path / "coco")
    return root, make_coco(root)


def _build(root, splits, out, **kwargs):
    kwargs.setdefault("progress", False)
    return coco.build(root, splits, out, **kwargs)


# --------------------------------------------------------------------------------------------
# The formats the expectations rely on.
# --------------------------------------------------------------------------------------------


def test_pycocotools_fills_a_box_polygon_as_the_half_open_pixel_range():
    from pycocotools import mask as mask_api

    rle = mask_api.merge(mask_api.frPyObjects([box(2, 3, 6, 8)], 10, 12))
    expected = np.zeros((10, 12), np.uint8)
    expected[3:8, 2:6] = 1
    np.testing.assert_array_equal(mask_api.decode(rle), expected)
    np.testing.assert_array_equal(box_mask(10, 12, 2, 3, 6, 8), expected)


def test_the_tests_rle_writers_match_pycocotools():
    from pycocotools import mask as mask_api

    mask = np.zeros((40, 50), np.uint8)
    mask[5:35, 5:45] = 1
    mask[12, :] = 1
    official = mask_api.encode(np.asfortranarray(mask))
    assert rle_string(rle_counts(mask)) == official["counts"].decode()
    assert coco.rle_string_counts(official["counts"].decode()) == rle_counts(mask)
    decoded = mask_api.decode(mask_api.frPyObjects(uncompressed(mask), 40, 50))
    np.testing.assert_array_equal(decoded, mask)


# --------------------------------------------------------------------------------------------
# The build.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_masks_pixel_for_pixel(built, split):
    tree, out, _ = built
    examples, _ = read_split(out, split)
    expected = tree[split]["expected"]
    assert sorted(examples) == sorted(expected)
    for sample_id, mask in expected.items():
        example = examples[sample_id]
        assert example["label_mode"] == "L"
        np.testing.assert_array_equal(example["label"], mask, err_msg=sample_id)
        assert (example["height"], example["width"]) == mask.shape
    if split == "train2017":  # the image bytes are the files': the PNG stays PNG
        assert examples["000000000002"]["format"] == "png"
        assert examples["000000000001"]["format"] == "jpeg"


def test_manifest_counts_and_spec(built):
    tree, out, manifests = built
    train = read_manifest(out, "train2017")
    assert train == json.loads(json.dumps(manifests["train2017"]))  # JSON keys are strings
    assert train["dataset_spec"]["name"] == "coco_voc"
    assert train["num_classes"] == 21 and train["count"] == 2
    selection = train["coco_selection"]
    assert selection["kept"] == 2 and selection["dropped_no_target_region"] == 2
    assert selection["images_in_annotations"] == 4 and selection["min_area"] == 1000
    assert selection["target"] == "voc" and selection["invalid"] == 0
    assert selection["target_categories"]["person"] == "person"
    assert "giraffe" not in selection["target_categories"]
    assert train["skipped"] == []
    expected = tree["train2017"]["expected"]
    histogram = np.bincount(np.concatenate([m.ravel() for m in expected.values()]), minlength=256)
    assert train["class_pixel_histogram"]["255"] == histogram[255]
    for c in range(21):
        assert train["class_pixel_histogram"][str(c)] == histogram[c], c
    val = manifests["val2017"]
    assert val["coco_selection"]["kept"] == 1
    assert val["coco_selection"]["dropped_no_target_region"] == 0
    assert val["inputs"]["images"].endswith(os.path.join("images", "val2017"))


def test_min_area_is_the_rendered_pixel_count(tree, tmp_path):
    root, data = tree
    out = str(tmp_path / "out")
    # The cat of image 3 covers exactly 1000 pixels: kept above 999, not above 1000.
    manifest = _build(root, ["train2017"], out, min_area=999)["train2017"]
    assert manifest["coco_selection"]["kept"] == 3
    examples, _ = read_split(out, "train2017")
    label = examples["000000000003"]["label"]
    expected = np.zeros((60, 60), np.uint8)
    expected[:, 35:60] = IGNORE
    draw_box(expected, 0, 25, 50, 65, VOC[GIRAFFE])
    draw_box(expected, 0, 0, 40, 25, VOC[CAT])
    np.testing.assert_array_equal(label, expected)
    # 1440 pixels of the person (its area field says 500) keep image 1 up to --min-area 1439.
    manifest = _build(root, ["train2017"], out, min_area=1439)["train2017"]
    assert sorted(read_split(out, "train2017")[0]) == ["000000000001"]  # the car has 1100
    with pytest.raises(BuildError, match=r"split 'train2017' is empty: none of the 4 images"):
        _build(root, ["train2017"], out, min_area=1440)


def test_cli_prints_the_counts(tree, tmp_path, capsys):
    root, _ = tree
    out = str(tmp_path / "out")
    argv = ["--coco-root", root, "--splits", "train2017,val2017", "--target", "voc"]
    argv += ["--output-dir", out, "--num-workers", "1", "--no-progress"]
    assert coco.main(argv) == 0
    printed = capsys.readouterr().out
    assert "train2017: kept 2 of 4 images (2 without a voc class region over 1000 pixels)" in (
        printed
    )
    assert "val2017: kept 1 of 1 images" in printed
    assert "train2017-manifest.json" in listing(out)


# --------------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------------


def test_missing_image_file(tree, tmp_path):
    root, _ = tree
    os.remove(os.path.join(root, "train2017", "000000000002.png"))
    # A dropped image's file is not needed.
    os.remove(os.path.join(root, "train2017", "000000000004.jpg"))
    out = str(tmp_path / "out")
    with pytest.raises(BuildError, match=r"missing file: train2017/000000000002\.png"):
        _build(root, ["train2017"], out)
    assert listing(out) == []
    manifest = _build(root, ["train2017"], out, skip_invalid=True)["train2017"]
    assert manifest["count"] == 1 and manifest["coco_selection"]["invalid"] == 1
    assert manifest["skipped"] == [
        {"id": "000000000002", "reason": "missing file: train2017/000000000002.png"}
    ]


def test_image_file_not_in_the_json(tree, tmp_path):
    root, _ = tree
    with open(os.path.join(root, "train2017", "000000000099.jpg"), "wb") as f:
        f.write(jpeg(8, 8, 9))
    out = str(tmp_path / "out")
    with pytest.raises(
        BuildError,
        match=r"image file train2017/000000000099\.jpg is not in "
        r"annotations/instances_train2017\.json",
    ):
        _build(root, ["train2017"], out)
    assert listing(out) == []
    manifest = _build(root, ["train2017"], out, skip_invalid=True)["train2017"]
    assert manifest["count"] == 2 and manifest["skipped"][0]["id"] == "000000000099"


def test_annotation_of_an_image_not_in_the_json(tree, tmp_path):
    root, data = tree
    train = data["train2017"]["json"]
    train["annotations"].append(_annotation(99, 555, PERSON, [box(0, 0, 40, 40)]))
    write_json(root, "train2017", train)
    out = str(tmp_path / "out")
    with pytest.raises(
        BuildError,
        match=r"annotation 99 in annotations/instances_train2017\.json is of image 555",
    ):
        _build(root, ["train2017"], out)
    assert listing(out) == []


BAD_SEGMENTATIONS = {
    "an odd coordinate count": ([[0, 0, 40, 0, 40, 40, 0]], r"polygon 0 has 7 coordinates"),
    "RLE of another size": (
        {"size": [10, 10], "counts": [100]},
        r"RLE size \[10, 10\] is not the image's \[48, 64\]",
    ),
    "short RLE counts": (
        {"size": [48, 64], "counts": [100, 20]},
        r"the RLE counts add up to 120 pixels; the image has 48x64 = 3072",
    ),
    "a bad RLE string": (
        {"size": [48, 64], "counts": "ab c"},
        r"cannot read the compressed RLE: character ' '",
    ),
    "no segmentation": (None, r"segmentation is neither a list of polygons nor an RLE"),
}


@pytest.mark.parametrize("case", sorted(BAD_SEGMENTATIONS))
def test_bad_segmentation(tree, tmp_path, case):
    root, data = tree
    segmentation, message = BAD_SEGMENTATIONS[case]
    train = data["train2017"]["json"]
    # The person of image 1, which decides whether the image is kept (found while selecting).
    next(a for a in train["annotations"] if a["id"] == 11)["segmentation"] = segmentation
    write_json(root, "train2017", train)
    out = str(tmp_path / "out")
    where = r"annotations/instances_train2017\.json \(image 1, 000000000001\.jpg\): annotation 11"
    with pytest.raises(BuildError, match=where + ": " + message):
        _build(root, ["train2017"], out)
    assert listing(out) == []
    manifest = _build(root, ["train2017"], out, skip_invalid=True)["train2017"]
    assert [s["id"] for s in manifest["skipped"]] == ["000000000001"]


def test_bad_segmentation_found_while_rendering(tree, tmp_path):
    root, data = tree
    train = data["train2017"]["json"]
    # The giraffe of image 1 does not decide the selection: the worker finds it.
    giraffe = next(a for a in train["annotations"] if a["id"] == 12)
    giraffe["segmentation"] = {"size": [48, 64], "counts": [3000]}
    write_json(root, "train2017", train)
    out = str(tmp_path / "out")
    with pytest.raises(BuildError, match=r"image 1, 000000000001\.jpg\): annotation 12: the RLE"):
        _build(root, ["train2017"], out)
    assert listing(out) == []


def test_unknown_category_and_layout_errors(tree, tmp_path):
    root, data = tree
    out = str(tmp_path / "out")
    with pytest.raises(BuildError, match=r"missing file: annotations/instances_test2017\.json"):
        _build(root, ["test2017"], out)
    with pytest.raises(BuildError, match=r"unknown target 'cityscapes'; choose from voc"):
        _build(root, ["train2017"], out, target="cityscapes")
    train = data["train2017"]["json"]
    train["annotations"][0]["category_id"] = 91
    write_json(root, "train2017", train)
    with pytest.raises(
        BuildError, match=r"annotation 10 category 91 is not in the file's categories"
    ):
        _build(root, ["train2017"], out)
    assert listing(out) == []
