"""The tf.data input pipeline: shapes, labels, padding, flips, scales, distribution, compat."""

import collections

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from deeplab_family.data import augment, pipeline
from deeplab_family.data.pipeline import InputConfig, make_dataset
from tests.data import helpers

MEAN = np.float32(augment.IMAGENET_MEAN_RGB)


def _take(ds, n):
    return [tuple(t.numpy() for t in batch) for batch in ds.take(n)]


@pytest.fixture(scope="module")
def two_block_shards(tmp_path_factory):
    """Colour-coded images, class 3 on the left and 12 on the right: JPEG, PNG, and both."""
    folder = str(tmp_path_factory.mktemp("two_block"))
    examples = {"jpg": [], "png": []}
    for k, (h, w) in enumerate([(48, 64), (56, 40), (45, 71), (64, 64)]):
        label = helpers.two_block_label(h, w)
        for fmt, found in examples.items():
            image = helpers.colour_coded(label, "jpeg" if fmt == "jpg" else "png")
            found.append((f"{fmt}_{k}", image, label))
    return {
        "jpg": helpers.write_shards(folder + "/jpg", "train", examples["jpg"], num_shards=2),
        "png": helpers.write_shards(folder + "/png", "train", examples["png"], num_shards=2),
        "both": [folder + "/jpg/train-*", folder + "/png/train-*"],
    }


def test_training_shapes_and_dtypes(two_block_shards):
    cfg = InputConfig(
        file_pattern=two_block_shards["both"], crop_size=(65, 97), batch_size=3, seed=0
    )
    ds = make_dataset(cfg)
    assert ds.element_spec == (
        tf.TensorSpec((3, 65, 97, 3), tf.float32),
        tf.TensorSpec((3, 65, 97), tf.int32),
    )
    images, labels = _take(ds, 1)[0]
    assert images.shape == (3, 65, 97, 3) and images.dtype == np.float32
    assert labels.shape == (3, 65, 97) and labels.dtype == np.int32
    assert images.min() >= 0 and images.max() <= 255


def test_labels_only_classes_or_ignore(two_block_shards):
    cfg = InputConfig(file_pattern=two_block_shards["both"], crop_size=40, batch_size=4, seed=1)
    values = set()
    for _, labels in _take(make_dataset(cfg), 8):
        values |= set(np.unique(labels).tolist())
    assert values <= set(range(21)) | {255}
    assert {0, 3, 12, 255} <= values


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_flip_keeps_image_and_label_together(two_block_shards, fmt):
    cfg = InputConfig(
        file_pattern=two_block_shards[fmt],
        crop_size=(72, 96),
        batch_size=8,
        seed=2,
        shuffle_buffer=16,
        deterministic=True,
    )
    orders = collections.Counter()
    checked = 0
    for images, labels in _take(make_dataset(cfg), 12):
        for image, label in zip(images, labels):
            # Only pixels whose 5x5 neighbourhood has one class: away from edges and resampling.
            flat = (
                (scipy.ndimage.maximum_filter(label, 5) == label)
                & (scipy.ndimage.minimum_filter(label, 5) == label)
                & (label != 255)
            )
            expected = helpers.CLASS_COLORS[label].astype(np.float32)
            error = np.abs(image - expected).max(axis=-1)[flat]
            assert error.size and np.percentile(error, 99) < 12, np.percentile(error, 99)
            checked += 1
            cols = {c: np.nonzero(label == c)[1].mean() for c in (3, 12) if (label == c).any()}
            if len(cols) == 2:
                orders["flipped" if cols[3] > cols[12] else "kept"] += 1
    assert checked == 96
    assert orders["flipped"] >= 5 and orders["kept"] >= 5, orders


@pytest.fixture(scope="module")
def square_shards(tmp_path_factory):
    """40x40 images fully labelled class 1: the labelled area of a sample is (40 * scale)^2."""
    folder = str(tmp_path_factory.mktemp("square"))
    label = np.ones((40, 40), np.uint8)
    examples = [(f"sq_{k}", helpers.colour_coded(label, "png"), label) for k in range(8)]
    return helpers.write_shards(folder, "train", examples)


def _scales(pattern, n_batches, **kwargs):
    cfg = InputConfig(
        file_pattern=pattern, crop_size=96, batch_size=16, flip=False, deterministic=True, **kwargs
    )
    scales = []
    for _, labels in _take(make_dataset(cfg), n_batches):
        for label in labels:
            rows = np.nonzero((label != 255).any(axis=1))[0]
            cols = np.nonzero((label != 255).any(axis=0))[0]
            assert (label[: rows[-1] + 1, : cols[-1] + 1] == 1).all()  # top-left, no hole
            assert rows[0] == 0 and cols[0] == 0
            assert rows[-1] == cols[-1]
            scales.append((rows[-1] + 1) / 40)
    return np.array(scales)


def test_scale_distribution_matches_the_configured_set(square_shards):
    scales = _scales(square_shards, 42, seed=3)  # 672 samples, 96 per scale expected
    counts = collections.Counter(scales.round(4).tolist())
    assert sorted(counts) == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    expected = len(scales) / 7
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 22.5, counts  # p ~ 0.001 for 6 degrees of freedom


def test_scale_set_follows_the_config(square_shards):
    scales = _scales(square_shards, 6, seed=4, min_scale=1.0, max_scale=1.5, scale_step=0.5)
    assert set(scales.round(4).tolist()) == {1.0, 1.5}
    continuous = _scales(square_shards, 8, seed=5, min_scale=0.5, max_scale=2.0, scale_step=0)
    assert continuous.min() >= 0.5 and continuous.max() <= 2.0
    assert len(set(continuous.round(3).tolist())) > 30  # not a handful of discrete values
    assert continuous.std() > 0.3


def test_padding_is_labelled_ignore_and_filled_with_the_mean(tmp_path):
    label = np.full((30, 20), 7, np.uint8)
    pattern = helpers.write_shards(
        str(tmp_path), "train", [("a", helpers.colour_coded(label, "png"), label)]
    )
    cfg = InputConfig(
        file_pattern=pattern,
        crop_size=(40, 50),
        min_scale=1.0,
        max_scale=1.0,
        batch_size=8,
        seed=6,
        deterministic=True,
    )
    sides = collections.Counter()
    for images, labels in _take(make_dataset(cfg), 2):
        for image, out in zip(images, labels):
            pad = out == 255
            assert pad.sum() == 40 * 50 - 30 * 20
            np.testing.assert_array_equal(image[pad], np.broadcast_to(MEAN, (pad.sum(), 3)))
            np.testing.assert_array_equal(
                image[~pad],
                np.broadcast_to(helpers.CLASS_COLORS[7].astype(np.float32), ((~pad).sum(), 3)),
            )
            assert pad[30:].all()  # bottom
            # right, or left when the crop was flipped (flip comes after pad and crop)
            sides["right" if pad[:30, 20:].all() else "left"] += 1
            assert pad[:30, 20:].all() or pad[:30, :30].all()
    assert sides["right"] and sides["left"]


def test_same_seed_same_batches(two_block_shards):
    def first(seed):
        cfg = InputConfig(
            file_pattern=two_block_shards["both"],
            crop_size=33,
            batch_size=4,
            seed=seed,
            deterministic=True,
        )
        return _take(make_dataset(cfg), 3)

    a, b, c = first(11), first(11), first(12)
    for (ia, la), (ib, lb) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c))


def test_crop_first_equals_resize_pad_crop_flip_reference():
    """The window computation against the textbook order on the whole image."""
    rng = np.random.default_rng(0)
    h, w = 37, 53
    label = rng.integers(0, 21, (h // 4 + 1, w // 4 + 1)).repeat(4, 0).repeat(4, 1)[:h, :w]
    label = label.astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([4 * yy, 3 * xx, 2 * (xx + yy)], -1).astype(np.uint8)
    image_bytes = tf.constant(helpers.encode(image, "png"))
    crop = (64, 80)

    def reference(scale, oy, ox, flip):
        sh, sw = round(h * scale), round(w * scale)
        big = tf.image.resize(image.astype(np.float32), (sh, sw), method="bilinear").numpy()
        lab = tf.image.resize(label[..., None], (sh, sw), method="nearest").numpy()[..., 0]
        ph, pw = max(sh, crop[0]), max(sw, crop[1])
        canvas = np.empty((ph, pw, 3), np.float32)
        canvas[:] = MEAN
        canvas[:sh, :sw] = big
        lab_canvas = np.full((ph, pw), 255, np.int32)
        lab_canvas[:sh, :sw] = lab
        out_i = canvas[oy : oy + crop[0], ox : ox + crop[1]]
        out_l = lab_canvas[oy : oy + crop[0], ox : ox + crop[1]]
        return (out_i[:, ::-1], out_l[:, ::-1]) if flip else (out_i, out_l)

    for scale, oy, ox, flip in [
        (0.5, 0, 0, False),
        (1.0, 0, 0, True),
        (1.25, 0, 0, False),
        (1.5, 0, 0, True),
    ]:
        # the whole scaled image lies in the crop: the window is the whole image, exact result
        got_i, got_l = augment.scale_crop_flip(
            image_bytes, tf.constant(label), scale, oy, ox, flip, crop
        )
        ref_i, ref_l = reference(scale, oy, ox, flip)
        np.testing.assert_allclose(got_i.numpy(), ref_i, atol=1e-3)
        np.testing.assert_array_equal(got_l.numpy(), ref_l)
    for scale, oy, ox, flip in [
        (2.0, 5, 17, False),
        (2.0, 10, 26, True),
        (1.75, 0, 12, False),
        (1.5, 9, 0, True),
        (0.75, 0, 0, False),
    ]:
        # A crop inside the scaled image. Its source window is a whole number of source pixels:
        # within one source pixel of the ideal window, so the scale is off by under 1 px over
        # the window, and image and label share it. Against the textbook order restricted to
        # that window, the result is exact.
        sh, sw = round(h * scale), round(w * scale)
        window = [int(v) for v in augment.crop_window(h, w, scale, oy, ox, *crop)]
        y, x, wh, ww, vh, vw = window
        assert (vh, vw) == (min(crop[0], sh - oy), min(crop[1], sw - ox))
        assert abs(y - oy * h / sh) <= 0.5 and abs(x - ox * w / sw) <= 0.5
        assert abs(wh - vh * h / sh) <= 0.5 and abs(ww - vw * w / sw) <= 0.5
        got_i, got_l = augment.scale_crop_flip(
            image_bytes, tf.constant(label), scale, oy, ox, flip, crop
        )
        part_i = image[y : y + wh, x : x + ww].astype(np.float32)
        part_l = label[y : y + wh, x : x + ww, None]
        if flip:
            part_i, part_l = part_i[:, ::-1], part_l[:, ::-1]
        ref_i = np.empty(crop + (3,), np.float32)
        ref_i[:] = MEAN
        ref_l = np.full(crop, 255, np.int32)
        cols = slice(crop[1] - vw, None) if flip else slice(0, vw)
        ref_i[:vh, cols] = tf.image.resize(part_i, (vh, vw), method="bilinear").numpy()
        ref_l[:vh, cols] = tf.image.resize(part_l, (vh, vw), method="nearest").numpy()[..., 0]
        np.testing.assert_allclose(got_i.numpy(), ref_i, atol=1e-3)
        np.testing.assert_array_equal(got_l.numpy(), ref_l)


def test_research_deeplab_example_reads(tmp_path):
    """An example written with plain tf.train.Example code and research/deeplab's keys."""
    rng = np.random.default_rng(1)
    label = rng.integers(0, 21, (30, 41)).astype(np.uint8)
    label[0] = 255
    image = rng.integers(0, 256, (30, 41, 3)).astype(np.uint8)
    image_jpeg = tf.io.encode_jpeg(image, quality=100).numpy()
    label_png = tf.io.encode_png(label[..., None]).numpy()

    def bytes_feature(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def int_feature(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "image/encoded": bytes_feature(image_jpeg),
                "image/filename": bytes_feature(b"2007_000032"),
                "image/format": bytes_feature(b"jpeg"),
                "image/height": int_feature(30),
                "image/width": int_feature(41),
                "image/channels": int_feature(3),
                "image/segmentation/class/encoded": bytes_feature(label_png),
                "image/segmentation/class/format": bytes_feature(b"png"),
            }
        )
    )
    path = str(tmp_path / "val-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        w.write(example.SerializeToString())

    images, labels = _take(
        make_dataset(InputConfig(file_pattern=path, batch_size=1), training=False), 1
    )[0]
    np.testing.assert_array_equal(labels[0], label)
    np.testing.assert_array_equal(images[0], tf.io.decode_jpeg(image_jpeg).numpy())
    images, labels = _take(
        make_dataset(InputConfig(file_pattern=path, batch_size=2, crop_size=32, seed=0)), 1
    )[0]
    assert images.shape == (2, 32, 32, 3) and set(np.unique(labels)) <= set(range(21)) | {255}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """12 examples of different sizes whose blue channel tells the example index."""
    folder = str(tmp_path_factory.mktemp("indexed"))
    examples = []
    for k in range(12):
        h, w = 20 + k, 30 - k
        label = np.full((h, w), k % 21, np.uint8)
        examples.append((f"ex_{k:02d}", helpers.index_image(k, h, w), label))
    return {
        "one_file": helpers.write_shards(folder + "/one", "val", examples, 1),
        "four_files": helpers.write_shards(folder + "/four", "val", examples, 4),
    }


def _indices(images):
    return [round(float(image[0, 0, 2]) / 8) for image in images]


def test_evaluation_native_size_and_padding(indexed):
    batches = _take(
        make_dataset(InputConfig(file_pattern=indexed["one_file"], batch_size=1), training=False),
        20,
    )
    assert len(batches) == 12
    for k, (images, labels) in enumerate(batches):
        assert images.shape == (1, 20 + k, 30 - k, 3) and _indices(images) == [k]
        assert (labels == k % 21).all()
    batches = _take(
        make_dataset(InputConfig(file_pattern=indexed["one_file"], batch_size=5), training=False), 5
    )
    assert [b[0].shape[0] for b in batches] == [5, 5, 2]  # nothing dropped
    images, labels = batches[0]
    assert images.shape == (5, 24, 30, 3)  # the largest height and width of the batch
    last = labels[4]  # example 4: 24x26 inside 24x30
    assert (last[:, 26:] == 255).all() and (last[:, :26] == 4).all()
    np.testing.assert_allclose(images[4][:, 26:], np.broadcast_to(MEAN, (24, 4, 3)), atol=1e-4)
    images, labels = _take(
        make_dataset(
            InputConfig(file_pattern=indexed["one_file"], batch_size=4, eval_crop_size=(40, 33)),
            training=False,
        ),
        1,
    )[0]
    assert images.shape == (4, 40, 33, 3) and (labels[:, 31:] == 255).all()
    # Both pads wait for the size check, so ours is the message every time, never TensorFlow's
    # "Paddings must be non-negative" from a pad that ran first (that race lost 10 of 200
    # tries under load; benchmarks/eval_crop_check.py counts it over many tries).
    for _ in range(15):
        with pytest.raises(
            tf.errors.InvalidArgumentError, match="larger than eval_crop_size=25x33"
        ):
            _take(
                make_dataset(
                    InputConfig(
                        file_pattern=indexed["one_file"], batch_size=4, eval_crop_size=(25, 33)
                    ),
                    training=False,
                ),
                3,
            )


def test_eval_crop_check_runs_before_either_pad():
    """The graph behind the 15 tries above: the size check is an ancestor of the label's pad
    (PadV2) and of the image's (a cond of concatenations), so neither can run first."""
    fn = pipeline._eval_map_fn(InputConfig(file_pattern="unused", eval_crop_size=(25, 33)))
    graph = tf.function(fn).get_concrete_function(tf.TensorSpec([], tf.string)).graph

    def ancestors(op):
        seen, stack = set(), [op]
        while stack:
            current = stack.pop()
            for parent in [t.op for t in current.inputs] + list(current.control_inputs):
                if parent.name not in seen:
                    seen.add(parent.name)
                    stack.append(parent)
        return seen

    asserts = {op.name for op in graph.get_operations() if op.type == "Assert"}
    pads = [op for op in graph.get_operations() if op.type in ("PadV2", "If", "StatelessIf")]
    assert asserts and {op.type for op in pads} >= {"PadV2"} and len(pads) >= 2
    for op in pads:
        assert asserts & ancestors(op), f"{op.name} ({op.type}) does not wait for the check"


def _per_pipeline(cfg, replicas, training, batches):
    """The first `batches` batches of each of two input pipelines."""
    for pipeline_id in range(2):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=replicas
        )
        yield _take(make_dataset(cfg, ctx, training=training), batches)


@pytest.mark.parametrize("files", ["four_files", "one_file"])
def test_input_pipelines_split_the_data(indexed, files):
    cfg = InputConfig(file_pattern=indexed[files], batch_size=2, eval_crop_size=32)
    seen = []
    for batches in _per_pipeline(cfg, replicas=2, training=False, batches=20):
        assert all(b[0].shape[0] == 1 for b in batches)  # per-replica batch: 2 / 2 replicas
        seen.append([i for images, _ in batches for i in _indices(images)])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(12))


@pytest.mark.parametrize("files", ["four_files", "one_file"])
def test_training_pipelines_split_the_data(indexed, files):
    cfg = InputConfig(
        file_pattern=indexed[files],
        batch_size=8,
        crop_size=16,
        min_scale=1.0,
        max_scale=1.0,
        seed=3,
        deterministic=True,
    )
    seen = []
    for batches in _per_pipeline(cfg, replicas=4, training=True, batches=24):
        assert all(b[0].shape == (2, 16, 16, 3) for b in batches)  # 8 / 4 replicas
        seen.append({i for images, _ in batches for i in _indices(images)})
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(12))


def test_mirrored_strategy_gives_each_replica_its_share(indexed):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2
    strategy = tf.distribute.MirroredStrategy(devices)
    # shuffle_buffer=1: the first four records come from the four files, so all differ
    cfg = InputConfig(
        file_pattern=indexed["four_files"],
        crop_size=16,
        batch_size=4,
        seed=0,
        min_scale=1.0,
        max_scale=1.0,
        shuffle_buffer=1,
    )
    dist = strategy.distribute_datasets_from_function(lambda ctx: make_dataset(cfg, ctx))
    images, labels = next(iter(dist))
    local_images = strategy.experimental_local_results(images)
    local_labels = strategy.experimental_local_results(labels)
    assert len(local_images) == 2
    assert [t.shape.as_list() for t in local_images] == [[2, 16, 16, 3]] * 2
    assert [t.shape.as_list() for t in local_labels] == [[2, 16, 16]] * 2
    assert [t.device.split("/")[-1] for t in local_images] == ["device:CPU:0", "device:CPU:1"]
    indices = [i for t in local_images for i in _indices(t.numpy())]
    assert len(set(indices)) == 4  # four different examples, two per replica

    cfg = InputConfig(file_pattern=indexed["four_files"], batch_size=4, eval_crop_size=32)
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: make_dataset(cfg, ctx, training=False)
    )
    seen = []
    for images, _ in dist:
        for t in strategy.experimental_local_results(images):
            seen += _indices(t.numpy())
    assert sorted(seen) == list(range(12))  # evaluation sees every example once


def test_config_validation():
    with pytest.raises(ValueError, match=r"crop_size must be an int >= 1 or a pair"):
        InputConfig(crop_size=(0, 5))
    with pytest.raises(ValueError, match=r"min_scale must be > 0. Received: min_scale=0"):
        InputConfig(min_scale=0)
    with pytest.raises(ValueError, match=r"max_scale must be >= min_scale"):
        InputConfig(min_scale=2.0, max_scale=1.0)
    with pytest.raises(ValueError, match=r"scale_step must divide max_scale - min_scale"):
        InputConfig(scale_step=0.4)
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1"):
        InputConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"mean_pixel must have 3 values"):
        InputConfig(mean_pixel=(1, 2))
    assert InputConfig(crop_size=[321, 481]).crop_size == (321, 481)
    assert InputConfig().scales == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert InputConfig(scale_step=0).scales is None
    with pytest.raises(ValueError, match="no TFRecord files match"):
        make_dataset(InputConfig(file_pattern="/nonexistent/train-*.tfrecord"))


def test_split_glob_skips_the_manifest_and_temporary_files(tmp_path):
    label = np.full((8, 8), 2, np.uint8)
    helpers.write_shards(str(tmp_path), "val", [("a", helpers.colour_coded(label, "png"), label)])
    (tmp_path / "val-manifest.json").write_text("{}")
    (tmp_path / ".val-00000-of-00002.tfrecord.tmp-99").write_bytes(b"partial")
    cfg = InputConfig(file_pattern=str(tmp_path / "val-*"), batch_size=1)
    assert pipeline.list_files(cfg.file_pattern) == [str(tmp_path / "val-00000-of-00001.tfrecord")]
    ((images, labels),) = _take(make_dataset(cfg, training=False), 5)
    assert images.shape == (1, 8, 8, 3) and (labels == 2).all()
