"""Dataset specs: the shipped ones against their sources' tables, validation, the raw -> stored
lookup, colour and index masks read through a spec, and the spec found from the shards."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from deeplab_family.data import classes, palette
from deeplab_family.data.spec import (
    DatasetSpec,
    SpecError,
    builtin_specs,
    check_num_classes,
    load_spec,
    spec_for_files,
    spec_for_pattern,
)
from tfrecords_tools.sources import InvalidExampleError, read_spec_label

FIVE = dict(name="five", classes=["bg", "road", "car", "person", "tree"],
            palette=[[0, 0, 0], [128, 64, 128], [0, 0, 142], [220, 20, 60], [107, 142, 35]])

# COCO 2017 category names of the 20 VOC classes (instances_*.json "categories").
COCO_NAMES = {1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus",
              7: "train", 9: "boat", 16: "bird", 17: "cat", 18: "dog", 19: "horse",
              20: "sheep", 21: "cow", 44: "bottle", 62: "chair", 63: "couch",
              64: "potted plant", 67: "dining table", 72: "tv"}
COCO_TO_VOC_NAME = {"airplane": "aeroplane", "motorcycle": "motorbike", "couch": "sofa",
                    "potted plant": "pottedplant", "dining table": "diningtable",
                    "tv": "tvmonitor"}


def test_builtin_specs_match_the_tables_they_come_from():
    assert {"voc", "cityscapes", "coco_voc"} <= set(builtin_specs())
    voc = load_spec("voc")
    assert voc.classes == classes.VOC_CLASSES
    np.testing.assert_array_equal(voc.colormap()[:21], palette.VOC_COLORMAP[:21])
    assert voc.ignore_color == tuple(palette.VOC_COLORMAP[255])
    np.testing.assert_array_equal(voc.lookup_table()[:21], np.arange(21))
    assert voc.lookup_table()[255] == 255 and (voc.lookup_table()[21:255] == -1).all()

    city = load_spec("cityscapes")
    assert city.classes == classes.CITYSCAPES_CLASSES
    np.testing.assert_array_equal(city.colormap()[:19], classes.cityscapes_colormap()[:19])
    table = city.lookup_table()
    np.testing.assert_array_equal(table[:34], classes.cityscapes_id_to_train_id()[:34])
    assert (table[34:255] == -1).all()  # an id above 33 is an error, not ignore
    assert table[255] == 255  # the spec's ignore_label: 255 is "not labelled" in every spec

    coco = load_spec("coco_voc")
    assert coco.classes == classes.VOC_CLASSES
    for coco_id, name in COCO_NAMES.items():
        assert coco.classes[coco.label_map[coco_id]] == COCO_TO_VOC_NAME.get(name, name)
    assert coco.lookup_table()[25] == 0  # giraffe: background
    assert coco.lookup_table()[255] == 255  # crowd


def test_round_trips_through_yaml_and_json(tmp_path):
    for name in builtin_specs():
        spec = load_spec(name)
        assert DatasetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec.to_dict()))
        assert load_spec(str(path)) == spec


@pytest.mark.parametrize("change, message", [
    (dict(palette=FIVE["palette"][:4]),
     r"the palette has 4 colours for 5 classes \(shorter than the classes\)"),
    (dict(palette=FIVE["palette"] + [[1, 2, 3]]), r"6 colours for 5 classes \(longer"),
    (dict(encoding="color", palette=FIVE["palette"][:4] + [[0, 0, 142]]),
     r"classes 2 \(car\) and 4 \(tree\) have the same colour \[0, 0, 142\]"),
    (dict(encoding="color", ignore_color=[0, 0, 0]),
     r"ignore_color \[0, 0, 0\] is also the colour of class 0 \(bg\)"),
    (dict(classes=["bg", "road", "car", "road", "tree"]), "class name 'road' is given twice"),
    (dict(palette=FIVE["palette"][:4] + [[0, 0, 256]]), r"palette\[4\] \(tree\) must be three"),
    (dict(encoding="rgb"), "encoding must be one of index, color"),
    (dict(ignore_label=3), "ignore_label 3 is also a class id"),
    (dict(label_map={1: 7}), r"label_map\[1\] is 7: not a class id \(0..4\)"),
    (dict(label_map_default=0), "label_map_default needs a label_map"),
    (dict(encoding="color", label_map={1: 1}), "label_map and reduce_zero_label apply to index"),
    (dict(colours=[]), r"unknown key\(s\) \['colours'\]"),
])
def test_invalid_specs_name_the_file_and_the_problem(tmp_path, change, message):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({**FIVE, **change}))
    with pytest.raises(SpecError, match=message) as info:
        load_spec(str(path))
    assert str(path) in str(info.value)


def test_index_specs_may_share_colours_and_unknown_names_are_errors():
    # Drawing two classes alike is a choice for index masks (Cityscapes' labels.py has shared
    # colours among its ignored ids); colour masks could not be read back, so they refuse it.
    DatasetSpec(**{**FIVE, "palette": FIVE["palette"][:4] + [[0, 0, 0]]})
    with pytest.raises(SpecError, match="no dataset spec 'vocc'.*voc"):
        load_spec("vocc")


def test_lookup_table_reduce_zero_label_label_map_and_raw_ignore():
    ade = DatasetSpec(name="a", classes=["x", "y", "z"], palette=[[1, 1, 1], [2, 2, 2], [3, 3, 3]],
                      reduce_zero_label=True)
    t = ade.lookup_table()
    assert (t[0], t[1], t[3], t[4], t[255]) == (255, 0, 2, -1, 255)
    mapped = DatasetSpec(**FIVE, label_map={10: 0, 20: 1, 30: 4, 99: 255}, ignore_label=0)
    t = mapped.lookup_table()
    assert (t[10], t[20], t[30], t[99], t[0], t[1], t[255]) == (0, 1, 4, 255, 255, -1, 255)
    default = DatasetSpec(**FIVE, label_map={7: 1}, label_map_default=0)
    assert (default.lookup_table()[7], default.lookup_table()[8]) == (1, 0)
    raw_ignore = DatasetSpec(**FIVE, ignore_label=99)
    assert raw_ignore.lookup_table()[99] == 255 and raw_ignore.lookup_table()[98] == -1


def _png(path, array, mode=None):
    image = Image.fromarray(array) if mode is None else Image.fromarray(array, mode)
    image.save(path)
    return str(path)


def test_colour_masks_map_through_the_palette_and_name_unknown_colours(tmp_path):
    spec = DatasetSpec(**FIVE, encoding="color", ignore_color=[255, 255, 255])
    ids = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    colours = spec.colormap().copy()
    colours[255] = (255, 255, 255)
    path = _png(tmp_path / "m.png", colours[ids])
    np.testing.assert_array_equal(read_spec_label(spec, path, "masks/m.png"), ids)
    # A palette PNG of the same colours reads the same.
    p = Image.fromarray(ids, "L").convert("P")
    p.putpalette(colours.reshape(-1).tolist())
    p.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_spec_label(spec, str(tmp_path / "p.png"), "p"), ids)
    bad = colours[ids].copy()
    bad[0, :2] = (10, 20, 30)
    bad[1, 0] = (1, 2, 3)
    path = _png(tmp_path / "bad.png", bad)
    with pytest.raises(InvalidExampleError,
                       match=r"colour \[10, 20, 30\] in masks/bad.png is not in the palette of "
                             r"dataset 'five': 2 pixels have it .*\[1, 2, 3\] \(1 pixels\)"):
        read_spec_label(spec, path, "masks/bad.png")
    with pytest.raises(InvalidExampleError, match="grayscale PNG.*set encoding: index"):
        read_spec_label(spec, _png(tmp_path / "g.png", ids), "g.png")


def test_index_masks_go_through_the_lookup_and_name_bad_values(tmp_path):
    spec = DatasetSpec(**FIVE, label_map={10: 0, 20: 1, 30: 4}, label_map_default=None)
    raw = np.array([[10, 20], [30, 255]], np.uint8)
    np.testing.assert_array_equal(
        read_spec_label(spec, _png(tmp_path / "a.png", raw), "a.png"), [[0, 1], [4, 255]])
    raw[0, 0] = 40
    with pytest.raises(InvalidExampleError,
                       match="label value 40 in b.png is not in the label_map of dataset 'five'"):
        read_spec_label(spec, _png(tmp_path / "b.png", raw), "b.png")
    plain = DatasetSpec(**FIVE)
    with pytest.raises(InvalidExampleError,
                       match=r"label value 7 in c.png is outside 0..4 and is not 255: 4 pixels"):
        read_spec_label(plain, _png(tmp_path / "c.png", np.full((2, 2), 7, np.uint8)), "c.png")
    rgb = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(InvalidExampleError, match="RGB PNG.*set encoding: color"):
        read_spec_label(plain, _png(tmp_path / "d.png", rgb), "d.png")


def _manifest(folder, split, spec):
    shard = folder / f"{split}-00000-of-00001.tfrecord"
    shard.write_bytes(b"")
    values = {"shards": [{"file": shard.name, "count": 0}]}
    if spec is not None:
        values["dataset_spec"] = spec.to_dict()
    (folder / f"{split}-manifest.json").write_text(json.dumps(values))
    return str(shard)


def test_the_spec_is_found_from_the_shards_and_must_agree(tmp_path):
    voc, coco = load_spec("voc"), load_spec("coco_voc")
    a = _manifest(tmp_path, "train", voc)
    b = _manifest(tmp_path, "coco", coco)
    assert spec_for_files([a]) == voc
    assert spec_for_files([a, b]).name == "voc"  # same classes: mixable
    assert spec_for_pattern(str(tmp_path / "coco-*.tfrecord")) == coco
    other = tmp_path / "other"
    other.mkdir()
    c = _manifest(other, "train", load_spec("cityscapes"))
    with pytest.raises(SpecError, match="mix datasets with other classes.*21.*19"):
        spec_for_files([a, c])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    assert spec_for_files([_manifest(foreign, "train", None)]) is None
    with pytest.raises(ValueError, match=r"model.num_classes=19 but the dataset 'voc' has 21 "
                                         r"classes \(.*train-manifest.json\)"):
        check_num_classes(19, spec_for_files([a]))
    check_num_classes(21, spec_for_files([a]))


def test_a_bare_name_is_the_builtin_spec_beside_a_data_folder_of_that_name(tmp_path,
                                                                          monkeypatch):
    (tmp_path / "voc").mkdir()  # the shards' folder, as in the README's commands
    monkeypatch.chdir(tmp_path)
    assert load_spec("voc").classes == classes.VOC_CLASSES
    with pytest.raises(SpecError, match="label_map maps raw 255, which is always ignore"):
        DatasetSpec(**FIVE, label_map={0: 0, 255: 1})
