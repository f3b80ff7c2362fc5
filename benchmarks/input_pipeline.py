"""Training input pipeline throughput: ours, the decode-only ceiling, and Model Garden's parser.

    python benchmarks/input_pipeline.py [--data "DIR/train_aug-*.tfrecord"] [--num-images 200]

Without ``--data``, it writes a synthetic VOC-layout set of ``--num-images`` images (about
500x375 JPEGs) to a temporary folder and builds shards with the real builder. All three pipelines
then read the same shards in the same run, with the same parallelism (AUTOTUNE) and batch:

1. ours: ``deeplab_family.data.pipeline`` (scale 0.5..2.0 step 0.25, pad, crop 513, flip);
2. decode-only: read + parse + decode the JPEG and the label PNG, nothing else;
3. Model Garden: ``official.vision.dataloaders.segmentation_input`` Decoder + Parser (output
   513x513, aug_scale 0.5..2.0, random flip), when tf-models-official is installed.

Reported: images/s (wall) and CPU-ms per image (user + system time of this process over the
images), the steadier figure on a shared machine. Each figure is the median of ``--repeats``
timed runs after a warm-up. Never run by the tests.
"""

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf

from deeplab_family.data import pipeline, schema


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_synthetic_shards(folder, num_images, num_shards=4):
    from tfrecords_tools import synthetic, voc

    print(f"writing {num_images} synthetic VOC-sized images to {folder} ...", flush=True)
    generated = synthetic.generate(folder, num_train=num_images, num_val=1, seed=0)
    out = os.path.join(folder, "tfrecords")
    voc.build(
        generated["voc_root"],
        ["train_aug"],
        out,
        sbd_root=generated["sbd_root"],
        num_shards=num_shards,
        num_workers=2,
        progress=False,
    )
    return os.path.join(out, "train_aug-*.tfrecord")


def _records(files):
    ds = tf.data.Dataset.from_tensor_slices(files).repeat()
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=len(files),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,
    )
    return ds


def _options(ds):
    options = tf.data.Options()
    options.deterministic = False
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)


def decode_only(files, batch_size):
    def fn(serialized):
        features = pipeline.parse_example(serialized)
        image = tf.io.decode_jpeg(features[schema.IMAGE_ENCODED], channels=3)
        label = tf.io.decode_png(features[schema.LABEL_ENCODED], channels=1)
        # Shapes only: the decodes run, nothing is copied out (a ceiling, not a pipeline).
        return tf.shape(image), tf.shape(label)

    ds = _records(files).map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return _options(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))


def model_garden(files, batch_size, crop):
    from official.vision.dataloaders import segmentation_input

    decoder = segmentation_input.Decoder()
    parser = segmentation_input.Parser(
        output_size=[crop, crop],
        aug_rand_hflip=True,
        aug_scale_min=0.5,
        aug_scale_max=2.0,
        ignore_label=schema.IGNORE_LABEL,
    )
    parse = parser.parse_fn(is_training=True)
    ds = (
        _records(files)
        .shuffle(64)
        .map(
            lambda s: parse(decoder.decode(s)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=False,
        )
    )
    return _options(ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def ours(pattern, batch_size, crop):
    config = pipeline.InputConfig(
        file_pattern=pattern, crop_size=crop, batch_size=batch_size, shuffle_buffer=64
    )
    return pipeline.make_dataset(config)


def measure(name, ds, batch_size, warmup, batches, repeats):
    iterator = iter(ds)
    for _ in range(warmup):
        next(iterator)
    rates, cpu_ms = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), _cpu_seconds()
        for _ in range(batches):
            next(iterator)
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
        images = batches * batch_size
        rates.append(images / wall)
        cpu_ms.append(1000 * cpu / images)
    result = {
        "name": name,
        "img_per_s": statistics.median(rates),
        "cpu_ms_per_img": statistics.median(cpu_ms),
    }
    print(
        f"{name:<34} {result['img_per_s']:8.1f} img/s   {result['cpu_ms_per_img']:6.2f} CPU-ms/img"
        f"   (runs: {', '.join(f'{r:.0f}' for r in rates)} img/s; "
        f"{', '.join(f'{c:.2f}' for c in cpu_ms)} CPU-ms/img)",
        flush=True,
    )
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="glob of existing shards (else synthetic)")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--crop-size", type=int, default=513)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=5, help="batches before timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-model-garden", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        pattern = args.data or build_synthetic_shards(tmp, args.num_images)
        files = sorted(tf.io.gfile.glob(pattern))
        sizes = []
        for record in tf.data.TFRecordDataset(files).take(50):
            sizes.append(len(pipeline.parse_example(record)[schema.IMAGE_ENCODED].numpy()))
        print(
            f"shards: {len(files)} files; JPEG mean {statistics.mean(sizes) / 1024:.0f} KiB; "
            f"batch {args.batch_size}, crop {args.crop_size}; CPUs visible: {os.cpu_count()}"
        )
        run = {
            "batch_size": args.batch_size,
            "warmup": args.warmup,
            "batches": args.batches,
            "repeats": args.repeats,
        }
        results = [
            measure("decode-only (JPEG + PNG)", decode_only(files, args.batch_size), **run),
            measure(
                "ours (deeplab_family.data)", ours(pattern, args.batch_size, args.crop_size), **run
            ),
        ]
        if not args.skip_model_garden:
            try:
                mg = model_garden(files, args.batch_size, args.crop_size)
            except ImportError as e:
                print(f"Model Garden parser: skipped ({e})")
            else:
                results.append(measure("Model Garden segmentation_input", mg, **run))
    by_name = {r["name"].split(" ")[0]: r for r in results}
    ceiling, ours_r = by_name["decode-only"], by_name["ours"]
    print(
        f"ours vs decode-only ceiling: {ours_r['img_per_s'] / ceiling['img_per_s']:.2f}x img/s, "
        f"{ours_r['cpu_ms_per_img'] / ceiling['cpu_ms_per_img']:.2f}x CPU-ms"
    )
    if "Model" in by_name:
        mg_r = by_name["Model"]
        print(
            f"ours vs Model Garden: {ours_r['img_per_s'] / mg_r['img_per_s']:.2f}x img/s, "
            f"{mg_r['cpu_ms_per_img'] / ours_r['cpu_ms_per_img']:.2f}x less CPU per image "
            "(target >= 2x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
