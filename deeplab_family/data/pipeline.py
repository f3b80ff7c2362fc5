"""The tf.data input pipeline: TFRecord shards to batches of images and labels.

Both modes yield ``(images, labels)``:

- images: float32 ``(batch, H, W, 3)``, RGB in 0..255 (the model normalises inside);
- labels: int32 ``(batch, H, W)`` class indices, ``ignore_label`` (255) = not scored. There is
  no channel axis: that is what ``SparseCategoricalCrossentropy(ignore_class=255)`` and
  ``MeanIoU`` take next to ``(batch, H, W, num_classes)`` logits.

Training (DeepLabv3 Sec 4.1): shards read interleaved and repeated, shuffled, then random scale
from ``{min_scale, min_scale + scale_step, ..., max_scale}`` (step 0: continuous), bilinear for the
image and nearest for the label, pad to ``crop_size`` (mean pixel / 255), random crop, random
left-right flip; batches drop the remainder. The crop is computed before the resize, and each
image is decoded once, only over the crop window (see ``augment.py``).

Evaluation: one pass, in order, no rescaling. At the native size (``eval_crop_size=None``;
batches above 1 are padded to the largest image in the batch), or padded to a fixed
``eval_crop_size``. Padding is labelled ``ignore_label`` and never scored.

Distribution: ``make_dataset`` takes the ``tf.distribute.InputContext`` that
``strategy.distribute_datasets_from_function`` passes, shards by input pipeline (training: by
file when there are at least as many files as pipelines, else by record; evaluation: by record,
so pipelines differ by at most one example) and batches ``config.batch_size`` (global) split per
replica.

Example (a one-image shard written to a temporary directory, then read the way the training
loop reads it; any strategy, e.g. MirroredStrategy, takes the same call):

    >>> import os, tempfile
    >>> import numpy as np
    >>> import tensorflow as tf
    >>> from deeplab_family.data.pipeline import InputConfig, make_dataset
    >>> from tfrecords_tools import example, framing
    >>> folder = tempfile.mkdtemp()
    >>> image = tf.io.encode_png(np.full((40, 50, 3), 128, np.uint8)).numpy()
    >>> label = example.encode_label_png(np.zeros((40, 50), np.uint8))
    >>> shard = framing.TFRecordFile(os.path.join(folder, "train_aug-00000-of-00001.tfrecord"))
    >>> shard.write(example.segmentation_example(image, "png", label, "a", 40, 50))
    >>> shard.close()
    >>> cfg = InputConfig(file_pattern=os.path.join(folder, "train_aug-*.tfrecord"),
    ...                   crop_size=33, batch_size=2, shuffle_buffer=4)
    >>> strategy = tf.distribute.get_strategy()
    >>> ds = strategy.distribute_datasets_from_function(lambda ctx: make_dataset(cfg, ctx))
    >>> images, labels = next(iter(ds))
    >>> tuple(images.shape), tuple(labels.shape)
    ((2, 33, 33, 3), (2, 33, 33))
"""

import os
import random

import tensorflow as tf

from deeplab_family.data import augment, schema
from deeplab_family.data.config import InputConfig  # noqa: F401  (re-exported)

_FEATURES = {
    schema.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string),
    schema.LABEL_ENCODED: tf.io.FixedLenFeature((), tf.string),
    schema.IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string, default_value=""),
}


def parse_example(serialized):
    """``{"image/encoded", "image/segmentation/class/encoded", "image/filename"}`` tensors.

    Only the keys the pipeline needs are read, so research/deeplab shards (same keys) work as
    they are.
    """
    return tf.io.parse_single_example(serialized, _FEATURES)


def decode_example(serialized):
    """A full decode: ``{"image": uint8 (H, W, 3), "label": uint8 (H, W), "filename"}``."""
    features = parse_example(serialized)
    return {
        "image": augment.decode_image(features[schema.IMAGE_ENCODED]),
        "label": augment.decode_label(features[schema.LABEL_ENCODED]),
        "filename": features[schema.IMAGE_FILENAME],
    }


def list_files(file_pattern):
    """The sorted shard files matching the pattern(s).

    ``<split>-manifest.json`` and hidden (temporary) files are left out, so that the natural
    pattern ``DIR/<split>-*`` works on a builder's output folder.
    """
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted(
        f
        for f in {f for p in patterns if p for f in tf.io.gfile.glob(p)}
        if not os.path.basename(f).startswith(".") and not f.endswith(schema.manifest_name(""))
    )
    if not files:
        raise ValueError(f"no TFRecord files match file_pattern={file_pattern!r}")
    return files


def _train_map_fn(config, base_seed):
    def fn(index, serialized):
        features = parse_example(serialized)
        label = augment.decode_label(features[schema.LABEL_ENCODED])
        seed = tf.stack([tf.constant(base_seed, tf.int64), index])
        return augment.random_scale_crop_flip(
            features[schema.IMAGE_ENCODED],
            label,
            seed,
            config.crop_size,
            config.min_scale,
            config.max_scale,
            config.scale_step,
            config.flip,
            config.mean_pixel,
            config.ignore_label,
        )

    return fn


def _eval_map_fn(config):
    def fn(serialized):
        example = decode_example(serialized)
        image = tf.cast(example["image"], tf.float32)
        label = example["label"]
        if config.eval_crop_size is not None:
            crop_h, crop_w = config.eval_crop_size
            h, w = tf.shape(label)[0], tf.shape(label)[1]
            check = tf.debugging.assert_less_equal(
                tf.stack([h, w]),
                tf.constant([crop_h, crop_w]),
                message=(
                    f"an evaluation image is larger than eval_crop_size={crop_h}x{crop_w}"
                    "; set eval_crop_size to at least the largest image, or None for "
                    "the native size"
                ),
            )
            # Both pads wait for the check: a pad with a negative amount raises TensorFlow's
            # own "Paddings must be non-negative", and whichever op runs first reports.
            with tf.control_dependencies([check]):
                image = augment.pad_image(tf.identity(image), crop_h, crop_w, config.mean_pixel)
                label = augment.pad_label(tf.identity(label), crop_h, crop_w, config.ignore_label)
        return image, tf.cast(label, tf.int32)

    return fn


def make_dataset(config, input_context=None, training=True):
    """Builds the dataset of ``(images, labels)`` batches for one input pipeline.

    Args:
        config: InputConfig.
        input_context: tf.distribute.InputContext or None. With one, this pipeline reads its
            share of the data and batches ``input_context.get_per_replica_batch_size(
            config.batch_size)``.
        training: bool. Augmented, shuffled and repeated batches (remainder dropped), or one
            ordered evaluation pass.

    Returns:
        A ``tf.data.Dataset``.
    """
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    batch_size = (
        input_context.get_per_replica_batch_size(config.batch_size)
        if input_context
        else config.batch_size
    )
    if not training and (config.sources or config.oversample):
        raise ValueError(
            "sources and oversample are for training; an evaluation section reads one "
            "file_pattern, each image once"
        )
    # One base seed drawn here when none is given, so that seeded and unseeded runs share a path.
    base_seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
    parallel = config.num_parallel_calls
    deterministic = config.deterministic

    if training:
        ds = training_records(config, base_seed, pipeline_id, num_pipelines)
        ds = ds.shuffle(config.shuffle_buffer, seed=_mix(base_seed, pipeline_id, 2))
        # Each element's augmentation is a function of (seed, pipeline, index): reproducible
        # under parallel maps, different on every pipeline and every pass.
        ds = ds.enumerate()
        ds = ds.map(
            _train_map_fn(config, _mix(base_seed, pipeline_id, 3)),
            num_parallel_calls=parallel,
            deterministic=deterministic,
        )
        ds = ds.batch(
            batch_size,
            drop_remainder=True,
            num_parallel_calls=parallel,
            deterministic=deterministic,
        )
    else:
        ds = _records(list_files(config.file_pattern), config, base_seed, pipeline_id,
                      num_pipelines, training=False)
        ds = ds.map(_eval_map_fn(config), num_parallel_calls=parallel, deterministic=True)
        if config.eval_crop_size is not None or batch_size == 1:
            ds = ds.batch(batch_size)
        else:
            ds = _padded_eval_batch(ds, batch_size, config)
    ds = ds.prefetch(tf.data.AUTOTUNE)

    options = tf.data.Options()
    options.deterministic = deterministic if training else True
    # Each op runs on one thread: the parallelism is across examples, which is cheaper.
    options.threading.max_intra_op_parallelism = 1
    if input_context is not None:
        # This pipeline sharded itself (above); tf.distribute must not shard it again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)


def eval_records(config):
    """The serialized examples of ``config.file_pattern`` in the order an evaluation pass
    (``make_dataset(config, training=False)`` on one pipeline) reads them: the shards
    interleaved record by record. For a tool that must see the images `evaluate` sees, in the
    same order (``export.verify``)."""
    return _records(list_files(config.file_pattern), config, 0, 0, 1, training=False)


def training_records(config, base_seed, pipeline_id=0, num_pipelines=1):
    """The endless stream of serialized training examples of one pipeline, before shuffling.

    Each source (``config.source_list``) is read, sharded and repeated on its own, with hard
    images repeated ``oversample.factor`` times; several sources are then drawn from at random
    in proportion to their weights (``tf.data.Dataset.sample_from_datasets``, seeded).
    """
    hard = hard_class_ids(config)
    streams, weights = [], []
    for k, (pattern, weight) in enumerate(config.source_list):
        # Source k's seeds differ from source 0's, which keeps the one-source seeds of before.
        seed = base_seed + k * 104_729
        ds = _records(list_files(pattern), config, seed, pipeline_id, num_pipelines,
                      training=True)
        if hard:
            ds = oversample(ds, hard, config.oversample["factor"])
        streams.append(ds)
        weights.append(weight)
    if len(streams) == 1:
        return streams[0]
    if weights[0] is None:
        weights = _example_counts(config)
    total = sum(weights)
    return tf.data.Dataset.sample_from_datasets(
        streams, weights=[w / total for w in weights], seed=_mix(base_seed, pipeline_id, 4)
    )


def _example_counts(config):
    """Each source's example count from the manifests (the weights when none are given)."""
    from deeplab_family.data.spec import count_examples

    counts = []
    for pattern, _ in config.source_list:
        count = count_examples(pattern)
        if not count:
            raise ValueError(
                f"train_data.sources: the shards of {pattern!r} have no builder manifest to "
                "count their examples; give every source a weight"
            )
        counts.append(count)
    return counts


def hard_class_ids(config):
    """The class ids of ``config.oversample.classes`` (names looked up in the shards' spec)."""
    if not config.oversample or config.oversample["factor"] == 1:
        return []
    from deeplab_family.data.spec import SpecError, spec_for_pattern

    names = config.oversample["classes"]
    spec = spec_for_pattern(config.all_patterns)
    if spec is None:
        if any(isinstance(c, str) for c in names):
            raise SpecError(
                f"oversample.classes {names} names classes, but the shards {config.all_patterns} "
                "have no dataset spec in their manifests: give class ids instead"
            )
        return sorted(set(names))
    return sorted(set(spec.class_ids(names, what="oversample.classes")))


def classes_present(serialized):
    """int64 class ids of one example (255 left out): the ids recorded at build time, or, for
    shards without them (other tools), those of its decoded label."""
    features = tf.io.parse_single_example(serialized, {
        schema.LABEL_CLASSES_PRESENT: tf.io.RaggedFeature(tf.int64),
        schema.LABEL_ENCODED: tf.io.FixedLenFeature((), tf.string),
    })
    recorded = features[schema.LABEL_CLASSES_PRESENT]

    def from_label():
        values, _ = tf.unique(tf.reshape(augment.decode_label(features[schema.LABEL_ENCODED]),
                                         [-1]))
        values = tf.cast(values, tf.int64)
        return tf.sort(tf.boolean_mask(values, values != schema.IGNORE_LABEL))

    # An empty list is also what an all-ignore label records; decoding it then says the same.
    return tf.cond(tf.size(recorded) > 0, lambda: recorded, from_label)


def oversample(ds, class_ids, factor):
    """Repeats each serialized example that holds any of ``class_ids`` ``factor`` times in a row
    (the shuffle that follows spreads the copies)."""
    hard = tf.constant(sorted(class_ids), tf.int64)
    factor = tf.constant(factor, tf.int64)

    def repeat(serialized):
        present = classes_present(serialized)
        is_hard = tf.reduce_any(tf.equal(present[:, None], hard[None, :]))
        count = tf.where(is_hard, factor, tf.constant(1, tf.int64))
        return tf.data.Dataset.from_tensors(serialized).repeat(count)

    return ds.flat_map(repeat)


def _records(files, config, base_seed, pipeline_id, num_pipelines, training):
    """Serialized examples of ``files`` for one pipeline: sharded, and shuffled by file and
    repeated when training."""
    # Training shards by file when there are enough files. Evaluation always shards by record:
    # pipelines then differ by at most one example, and every example is seen exactly once.
    shard_by_file = training and len(files) >= num_pipelines
    if shard_by_file:
        files = files[pipeline_id::num_pipelines]
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training and len(files) > 1 and (shard_by_file or config.seed is not None):
        # Sharding by record needs every pipeline to see the same order: only a shared seed
        # gives that, so unseeded record-sharded pipelines keep the sorted file order.
        file_seed = _mix(base_seed, pipeline_id if shard_by_file else 0, 1)
        ds = ds.shuffle(len(files), seed=file_seed, reshuffle_each_iteration=True)
    if training:
        ds = ds.repeat()
    if len(files) > 1:
        ds = ds.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(config.cycle_length, len(files)),
            block_length=1,
            num_parallel_calls=config.num_parallel_calls,
            # Record sharding needs one order on every pipeline; evaluation is an ordered pass.
            deterministic=config.deterministic if shard_by_file else True,
        )
    else:
        ds = ds.flat_map(tf.data.TFRecordDataset)
    if not shard_by_file and num_pipelines > 1:
        ds = ds.shard(num_pipelines, pipeline_id)
    return ds


def _mix(seed, pipeline_id, purpose):
    """A 62-bit seed for one purpose on one pipeline, from the base seed."""
    return (seed * 1_000_003 + pipeline_id * 7_919 + purpose) % (1 << 62)


def _padded_eval_batch(ds, batch_size, config):
    """Native-size batches padded to the largest image: images with the mean, labels with 255."""
    mean = tf.constant(config.mean_pixel, tf.float32)
    ds = ds.map(lambda image, label: (image - mean, label))
    ds = ds.padded_batch(
        batch_size,
        padded_shapes=([None, None, 3], [None, None]),
        padding_values=(0.0, config.ignore_label),
    )
    return ds.map(lambda images, labels: (images + mean, labels))
