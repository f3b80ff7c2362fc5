"""Training from several sources (`train_data.sources`) and hard-image oversampling
(`train_data.oversample`): the shares of what the pipeline reads, over 10,000 examples."""

import collections
import functools

import numpy as np
import pytest
import tensorflow as tf

from deeplab_family.data import schema
from deeplab_family.data.pipeline import InputConfig, make_dataset, training_records
from deeplab_family.data.spec import SpecError, load_spec
from tests.data import helpers
from tfrecords_tools import writer
from tfrecords_tools.sources import ExampleSource

SAMPLES = 10_000
CHAIR = 9  # a hard class of ExFuse Sec 4.2 (bicycle, chair, table, pottedplant, sofa)


def _label_reader(classes, path, display):
    label = np.zeros((6, 6), np.uint8)
    for k, c in enumerate(classes):
        label[k, :] = c
    return label


def _build(tmp_path, name, count, hard_every=0, num_shards=2):
    """`count` 6x6 images `<name>_<i>` of the VOC spec; every `hard_every`-th holds a chair."""
    folder = tmp_path / name
    folder.mkdir()
    image = folder / "image.png"
    image.write_bytes(helpers.encode(np.full((6, 6, 3), 90, np.uint8), "png"))
    sources = []
    for i in range(count):
        classes = [15] + ([CHAIR] if hard_every and i % hard_every == 0 else [])
        sources.append(ExampleSource(
            id=f"{name}_{i:04d}", image_path=str(image), label_path="",
            label_reader=functools.partial(_label_reader, tuple(classes))))
    writer.write_split("train", sources, str(folder), spec=load_spec("voc"),
                       num_shards=num_shards, progress=False)
    return str(folder / "train-*.tfrecord")


def _ids(config, n=SAMPLES, seed=0):
    records = training_records(config, seed).take(n)
    names = records.map(lambda r: tf.io.parse_single_example(
        r, {schema.IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string)})[schema.IMAGE_FILENAME])
    return [x.decode() for x in names.as_numpy_iterator()]


def test_sources_are_drawn_in_proportion_to_their_weights(tmp_path):
    weights = {"coco": 0.6, "sbd": 0.3, "voc": 0.1}
    # Sources of different sizes: the share follows the weight, not the size.
    sizes = {"coco": 7, "sbd": 40, "voc": 13}
    config = InputConfig(sources=[
        {"file_pattern": _build(tmp_path, name, sizes[name]), "weight": w}
        for name, w in weights.items()], crop_size=5, seed=3)
    counts = collections.Counter(i.split("_")[0] for i in _ids(config))
    for name, w in weights.items():
        assert abs(counts[name] / SAMPLES - w) < 0.02, (name, counts)
    # Each source's examples all come up (every one of the 40 SBD ids, say).
    seen = set(_ids(config, 2000))
    assert {f"sbd_{i:04d}" for i in range(40)} <= seen


def test_weights_need_not_sum_to_one_and_a_lone_pattern_is_one_source(tmp_path):
    a, b = _build(tmp_path, "a", 10), _build(tmp_path, "b", 10)
    config = InputConfig(sources=[{"file_pattern": a, "weight": 3},
                                  {"file_pattern": [b], "weight": 1}], crop_size=5, seed=0)
    counts = collections.Counter(i.split("_")[0] for i in _ids(config))
    assert abs(counts["a"] / SAMPLES - 0.75) < 0.02, counts
    # `file_pattern` alone: the same stream as before sources existed (source 0's seeds).
    alone = InputConfig(file_pattern=a, crop_size=5, seed=0, deterministic=True)
    one = InputConfig(sources=[{"file_pattern": a}], crop_size=5, seed=0, deterministic=True)
    assert _ids(alone, 200) == _ids(one, 200)


def test_mixed_sources_make_batches(tmp_path):
    config = InputConfig(sources=[{"file_pattern": _build(tmp_path, "a", 4), "weight": 1},
                                  {"file_pattern": _build(tmp_path, "b", 4), "weight": 1}],
                         crop_size=5, batch_size=4, seed=0, min_scale=1.0, max_scale=1.0)
    images, labels = next(iter(make_dataset(config)))
    assert images.shape == (4, 5, 5, 3) and labels.shape == (4, 5, 5)


def _hard_share(ids, hard_every):
    hard = [int(i.rsplit("_", 1)[1]) % hard_every == 0 for i in ids]
    return sum(hard) / len(hard)


@pytest.mark.parametrize("classes", [["chair"], [CHAIR], ["sofa", "chair"]])
def test_oversampling_multiplies_the_hard_images_by_the_factor(tmp_path, classes):
    pattern = _build(tmp_path, "voc", 100, hard_every=5)  # 20 of 100 hold a chair
    base = InputConfig(file_pattern=pattern, crop_size=5, seed=1)
    share = _hard_share(_ids(base), 5)
    assert abs(share - 0.2) < 0.02
    for factor in (2, 3):
        over = InputConfig(file_pattern=pattern, crop_size=5, seed=1,
                           oversample={"classes": classes, "factor": factor})
        share = _hard_share(_ids(over), 5)
        # Each hard image is read `factor` times per pass: 20f hard reads for 80 others.
        expected = 20 * factor / (20 * factor + 80)
        assert abs(share - expected) < 0.02, (factor, share, expected)


def test_oversampling_reads_the_labels_of_shards_from_other_tools(tmp_path):
    # research/deeplab-style shards: no classes-present key and no manifest (so no spec).
    examples = []
    for i in range(50):
        label = np.full((6, 6), 15, np.uint8)
        if i % 5 == 0:
            label[0, :] = CHAIR
        if i == 1:
            label[:] = 255  # all ignore: holds no class
        examples.append((f"x_{i:04d}", helpers.encode(np.zeros((6, 6, 3), np.uint8), "png"),
                         label))
    pattern = helpers.write_shards(str(tmp_path / "foreign"), "train", examples)
    config = InputConfig(file_pattern=pattern, crop_size=5, seed=2,
                         oversample={"classes": [CHAIR], "factor": 2})
    assert abs(_hard_share(_ids(config), 5) - 20 / 60) < 0.02
    named = InputConfig(file_pattern=pattern, crop_size=5, seed=2,
                        oversample={"classes": ["chair"], "factor": 2})
    with pytest.raises(SpecError, match="no dataset spec.*give class ids"):
        _ids(named, 1)


def test_oversampling_names_an_unknown_class(tmp_path):
    pattern = _build(tmp_path, "voc", 5)
    config = InputConfig(file_pattern=pattern, crop_size=5,
                         oversample={"classes": ["table"], "factor": 2})
    with pytest.raises(SpecError, match="'table' is not a class of dataset 'voc'.*diningtable"):
        _ids(config, 1)


def test_config_errors():
    with pytest.raises(ValueError, match="file_pattern .* or sources .*not both"):
        InputConfig(file_pattern="a", sources=[{"file_pattern": "b"}])
    with pytest.raises(ValueError, match=r"sources\[1\].weight must be a number > 0"):
        InputConfig(sources=[{"file_pattern": "a"}, {"file_pattern": "b", "weight": 0}])
    with pytest.raises(ValueError, match=r"sources\[0\] has unknown key\(s\) \['weigth'\]"):
        InputConfig(sources=[{"file_pattern": "a", "weigth": 2}])
    with pytest.raises(ValueError, match=r"sources\[0\].file_pattern is empty"):
        InputConfig(sources=[{"weight": 2}])
    with pytest.raises(ValueError, match="oversample.factor must be an int >= 1"):
        InputConfig(file_pattern="a", oversample={"classes": ["chair"], "factor": 1.5})
    with pytest.raises(ValueError, match="oversample.classes must be a non-empty list"):
        InputConfig(file_pattern="a", oversample={"classes": [], "factor": 2})
    with pytest.raises(ValueError, match="sources and oversample are for training"):
        make_dataset(InputConfig(sources=[{"file_pattern": "a"}]), training=False)


def test_sources_without_weights_mix_every_image_equally(tmp_path):
    """ExFuse's stage 1 "mix[es] up all images": each source in proportion to its size."""
    config = InputConfig(sources=[{"file_pattern": _build(tmp_path, "coco", 60)},
                                  {"file_pattern": _build(tmp_path, "voc", 20)}],
                         crop_size=5, seed=4)
    counts = collections.Counter(i.split("_")[0] for i in _ids(config))
    assert abs(counts["coco"] / SAMPLES - 0.75) < 0.02, counts
    with pytest.raises(ValueError, match="give every source a weight, or none"):
        InputConfig(sources=[{"file_pattern": "a", "weight": 1}, {"file_pattern": "b"}])
    foreign = helpers.write_shards(str(tmp_path / "foreign"), "train", [
        ("x", helpers.encode(np.zeros((6, 6, 3), np.uint8), "png"), np.zeros((6, 6), np.uint8))])
    no_counts = InputConfig(sources=[{"file_pattern": foreign}, {"file_pattern": foreign}],
                            crop_size=5)
    with pytest.raises(ValueError, match="no builder manifest to count their examples"):
        _ids(no_counts, 1)


def test_training_names_its_sources_and_oversampling(tmp_path):
    from deeplab_family.config import ExperimentConfig
    from deeplab_family.training.loop import _data_lines

    a, b = _build(tmp_path, "a", 30), _build(tmp_path, "b", 10)
    config = ExperimentConfig.from_dict({"train_data": {
        "sources": [{"file_pattern": a}, {"file_pattern": b}],
        "oversample": {"classes": ["chair", "sofa"], "factor": 2}}})
    sources, over = _data_lines(config)
    assert f"{a} (30 examples, 75.0%); {b} (10 examples, 25.0%)" in sources
    assert over == "oversample: images holding class(es) [9, 18] (chair, sofa) read 2 times"


def test_tensorboard_images_use_the_dataset_colours():
    from deeplab_family.data.spec import DatasetSpec
    from deeplab_family.training.loop import _summary_images

    spec = DatasetSpec(name="two", classes=["a", "b"], palette=[[10, 20, 30], [200, 100, 0]],
                       ignore_color=[1, 2, 3])
    labels = np.array([[[0, 1, 255]]])
    _, truth, predicted = _summary_images(np.zeros((1, 1, 3, 3)), labels, labels[:, :, ::-1],
                                          spec)
    assert truth[0, 0].tolist() == [[10, 20, 30], [200, 100, 0], [1, 2, 3]]
    assert predicted[0, 0].tolist() == [[1, 2, 3], [200, 100, 0], [10, 20, 30]]
