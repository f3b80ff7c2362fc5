"""Which error an evaluation image larger than `eval_crop_size` gives, over many tries.

The evaluation pipeline checks each image against `eval_crop_size` before padding it; the pads
run in parallel map calls, so a check that guards only one of them (image or label) loses the
race now and then, and the user sees TensorFlow's "Paddings must be non-negative" instead of
the message that names the setting. This script builds a one-shard set of 12 images of
20x30 .. 31x19 pixels, asks for `eval_crop_size=25x33` (too small for images 6..11), and counts
the messages over `--tries` fresh pipelines. Run it on a loaded machine (e.g. next to `make
test`) to give the race its chance.

    python benchmarks/eval_crop_check.py --tries 200
"""

import argparse
import collections
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

from deeplab_family.data import schema  # noqa: E402
from deeplab_family.data.pipeline import InputConfig, make_dataset  # noqa: E402
from tfrecords_tools import example, framing  # noqa: E402

OURS = "larger than eval_crop_size=25x33"


def _write(folder):
    out = framing.TFRecordFile(os.path.join(folder, schema.shard_name("val", 0, 1)))
    for k in range(12):
        h, w = 20 + k, 30 - k
        image = np.full((h, w, 3), 100, np.uint8)
        image[..., 2] = 8 * k
        label = np.full((h, w), k % 21, np.uint8)
        out.write(example.segmentation_example(tf.io.encode_png(image).numpy(), "png",
                                              example.encode_label_png(label), f"ex_{k:02d}", h, w))
    out.close()
    return os.path.join(folder, "val-*.tfrecord")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tries", type=int, default=200)
    args = parser.parse_args(argv)
    counts = collections.Counter()
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        pattern = _write(folder)
        config = InputConfig(file_pattern=pattern, batch_size=4, eval_crop_size=(25, 33))
        for _ in range(args.tries):
            try:
                for _ in make_dataset(config, training=False):
                    pass
                counts["no error"] += 1
            except tf.errors.InvalidArgumentError as e:
                message = str(e)
                counts["ours" if OURS in message else message.splitlines()[0][:80]] += 1
    print(f"{args.tries} tries in {time.monotonic() - start:.0f} s:")
    for message, n in counts.most_common():
        print(f"  {n:4d}  {message}")
    return 0 if counts["ours"] == args.tries else 1


if __name__ == "__main__":
    sys.exit(main())
