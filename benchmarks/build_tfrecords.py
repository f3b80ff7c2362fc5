"""TFRecord builder throughput on the synthetic VOC + SBD set, and before/after a change.

    python benchmarks/build_tfrecords.py [--num-train 200 --num-val 50] [--workers 1,2]
    python benchmarks/build_tfrecords.py --compare-rev 6bcf9ba [--repeats 3]

Writes the synthetic dataset to a temporary folder (timed too), then builds ``train_aug`` and
``val`` with ``tfrecords_tools.voc`` once per worker count, each build in a fresh Python process
whose ``PYTHONPATH`` is the tree under test. Reported per build: seconds, images/s and MB/s of
shards written (wall, including the start of the worker processes), CPU-ms per image (the
process and its children); per tree: the raw throughput of its ``crc32c`` on a 200 KB record
(a JPEG and its label PNG) and the time of one on the 8-byte length field of a record header.

``--compare-rev REV`` extracts REV's ``tfrecords_tools`` and ``deeplab_family`` (``git
archive``) to a temporary folder and runs the same builds with that tree and with the working
tree in one run, alternating them, and keeps the fastest of ``--repeats`` runs of each: a
side-by-side table with the ratio. It also checks that both trees wrote byte-identical shards.
Never run by the tests.
"""

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tfrecords_tools import synthetic  # noqa: E402

# Runs in a fresh process with the tree under test first on sys.path: one build, then the CRC.
_CHILD = r"""
import json, os, resource, sys, time

def cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

job = json.loads(sys.argv[1])
# The venv's editable install would serve the modules a tree lacks from the working tree.
sys.meta_path[:] = [f for f in sys.meta_path if not f.__module__.startswith("__editable__")]
from tfrecords_tools import voc
try:
    from tfrecords_tools.framing import crc32c
except ImportError:  # a tree from before the split by job
    from tfrecords_tools.writer import crc32c

wall, cpu = time.perf_counter(), cpu_seconds()
manifests = voc.build(job["voc_root"], ["train_aug", "val"], job["out"], sbd_root=job["sbd_root"],
                      num_shards=job["num_shards"], num_workers=job["workers"], progress=False)
wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu

def per_call(fn, data, seconds=0.3):
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(data)
        calls += 1
    return (time.perf_counter() - start) / calls

record = os.urandom(200_000)
print(json.dumps({
    "modules": sorted(m.__file__ for n, m in sys.modules.items()
                      if n.split(".")[0] in ("tfrecords_tools", "deeplab_family")),
    "seconds": wall,
    "cpu_seconds": cpu,
    "images": sum(m["count"] for m in manifests.values()),
    "bytes": sum(os.path.getsize(os.path.join(job["out"], f)) for f in os.listdir(job["out"])),
    "shards": {s: [x["sha256"] for x in m["shards"]] for s, m in manifests.items()},
    "crc_mb_s": len(record) / per_call(crc32c, record) / 1e6,
    "crc_header_us": per_call(crc32c, (200_000).to_bytes(8, "little")) * 1e6,
}))
"""


def _cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _extract(rev, folder):
    """REV's tfrecords_tools and deeplab_family under ``folder``; returns the short commit id."""
    commit = subprocess.run(
        ["git", "-C", REPO, "rev-parse", "--short", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", REPO, "archive", commit, "tfrecords_tools", "deeplab_family"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return commit


def _build(tree, data, out, workers, num_shards):
    job = dict(data, out=out, workers=workers, num_shards=num_shards)
    env = dict(os.environ, PYTHONPATH=tree)
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(job)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise RuntimeError(f"the build with {tree} failed:\n{result.stderr}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    strays = [m for m in measured["modules"] if not m.startswith(os.path.join(tree, ""))]
    if strays:
        raise RuntimeError(f"the build with {tree} imported modules of another tree: {strays}")
    return measured


def _row(name, m):
    return (
        f"{name:<22} {m['seconds']:>7.2f} {m['images'] / m['seconds']:>8.1f} "
        f"{m['bytes'] / 1e6 / m['seconds']:>7.1f} {1000 * m['cpu_seconds'] / m['images']:>8.1f} "
        f"{m['crc_mb_s']:>10.0f} {m['crc_header_us']:>9.2f}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-train", type=int, default=200)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument("--compare-rev", default=None, help="also build with this revision")
    parser.add_argument("--repeats", type=int, default=None, help="builds per tree (best kept)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.compare_rev else 1)

    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        if args.compare_rev:
            before = os.path.join(tmp, "before")
            trees[f"{_extract(args.compare_rev, before)} (before)"] = before
        trees["working tree"] = REPO
        images = args.num_train + args.num_val
        wall, cpu = time.perf_counter(), _cpu_seconds()
        generated = synthetic.generate(os.path.join(tmp, "data"), args.num_train, args.num_val)
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
        print(
            f"synthetic generation: {images} images, {images / wall:.1f} img/s, "
            f"{1000 * cpu / images:.1f} CPU-ms/img (one process)"
        )
        data = {"voc_root": generated["voc_root"], "sbd_root": generated["sbd_root"]}
        for workers in [int(w) for w in args.workers.split(",")]:
            best = {}
            for repeat in range(repeats):
                for name, tree in trees.items():  # alternate, so that load drifts hit both
                    out = os.path.join(tmp, "out")
                    m = _build(tree, data, out, workers, args.num_shards)
                    shutil.rmtree(out)
                    if name not in best or m["seconds"] < best[name]["seconds"]:
                        best[name] = m
            print(
                f"\nbuild train_aug+val, {workers} worker(s), {args.num_shards} shards/split, "
                f"best of {repeats}:\n"
                f"{'tree':<22} {'seconds':>7} {'images/s':>8} {'MB/s':>7} {'CPU-ms/im':>8} "
                f"{'CRC MB/s':>10} {'CRC 8B us':>9}"
            )
            for name, m in best.items():
                print(_row(name, m))
            if len(best) == 2:
                old, new = best.values()
                same = old["shards"] == new["shards"]
                print(
                    f"after/before: images/s x{old['seconds'] / new['seconds']:.2f}, "
                    f"CRC MB/s x{new['crc_mb_s'] / old['crc_mb_s']:.0f}; "
                    f"shards byte-identical: {'yes' if same else 'NO'}"
                )
    print(
        f"\nCPUs visible: {os.cpu_count()}; load average: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
