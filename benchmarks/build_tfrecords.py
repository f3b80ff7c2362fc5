"""TFRecord builder throughput on the synthetic VOC + SBD set, with 1 and 2 worker processes.

    python benchmarks/build_tfrecords.py [--num-train 200 --num-val 50] [--workers 1,2]

Writes the synthetic dataset to a temporary folder (timed too), then builds ``train_aug`` and
``val`` with ``tfrecords_tools.voc`` once per worker count. Reported: images/s (wall, including
the start of the worker processes) and CPU-ms per image (this process and its finished children).
Never run by the tests.
"""

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfrecords_tools import synthetic, voc


def _cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-train", type=int, default=200)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--num-shards", type=int, default=4)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        images = args.num_train + args.num_val
        wall, cpu = time.perf_counter(), _cpu_seconds()
        data = synthetic.generate(tmp, args.num_train, args.num_val, seed=0)
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
        print(
            f"synthetic generation: {images} images, {images / wall:.1f} img/s, "
            f"{1000 * cpu / images:.1f} CPU-ms/img (one process)"
        )
        for workers in [int(w) for w in args.workers.split(",")]:
            out = os.path.join(tmp, f"tfrecords_{workers}")
            wall, cpu = time.perf_counter(), _cpu_seconds()
            manifests = voc.build(
                data["voc_root"],
                ["train_aug", "val"],
                out,
                sbd_root=data["sbd_root"],
                num_shards=args.num_shards,
                num_workers=workers,
                progress=False,
            )
            wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
            written = sum(m["count"] for m in manifests.values())
            size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
            print(
                f"build train_aug+val, {workers} worker(s), {args.num_shards} shards/split: "
                f"{written} images in {wall:.2f} s = {written / wall:.1f} img/s, "
                f"{1000 * cpu / written:.1f} CPU-ms/img, {size / 2**20:.1f} MiB"
            )
            shutil.rmtree(out)
    print(
        f"CPUs visible: {os.cpu_count()}; load average: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
