"""TFRecord builder throughput on the synthetic VOC + SBD set, and before/after a change.

    python benchmarks/build_tfrecords.py [--num-train 200 --num-val 50] [--workers 1,2]
        [--builders voc,folder,folder_color,coco]
    python benchmarks/build_tfrecords.py --compare-rev 6bcf9ba [--repeats 3]

Writes the synthetic dataset to a temporary folder (timed too) and, from its VOC part, the
inputs of the other builders (timed apart, not in the build figures). Then, once per builder
and worker count:

- ``voc``: ``tfrecords_tools.voc``, ``train_aug`` and ``val`` (VOC palette PNGs, SBD ``.mat``);
- ``folder``: ``tfrecords_tools.folder`` on ``JPEGImages`` + ``SegmentationClass`` through the
  ``voc`` spec (index masks), ``train=0.8,val=0.2``;
- ``folder_color``: the same masks as RGB colour PNGs through the ``voc`` spec with
  ``encoding: color`` (the colour -> class id mapping);
- ``coco``: ``tfrecords_tools.coco --target voc`` on a COCO tree made from the same images: one
  polygon annotation per connected region of each class (``cv2.findContours``), with the COCO
  category ids of the VOC classes (the ``coco_voc`` spec), rendered back with pycocotools.

Each build runs in a fresh Python process whose ``PYTHONPATH`` is the tree under test. Reported
per build: seconds, images/s and MB/s of shards written (wall, including the start of the worker
processes), CPU-ms per image (the process and its children); per tree: the raw throughput of its
``crc32c`` on a 200 KB record (a JPEG and its label PNG) and the time of one on the 8-byte length
field of a record header.

``--compare-rev REV`` extracts REV's ``tfrecords_tools`` and ``deeplab_family`` (``git
archive``) to a temporary folder and runs the same builds with that tree and with the working
tree in one run, alternating them, and keeps the fastest of ``--repeats`` runs of each: a
side-by-side table with the ratio. It also checks that both trees wrote byte-identical shards.
A builder that REV does not have is skipped for it. Never run by the tests.
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
import importlib, json, os, resource, sys, time

def cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

job = json.loads(sys.argv[1])
# The venv's editable install would serve the modules a tree lacks from the working tree.
sys.meta_path[:] = [f for f in sys.meta_path if not f.__module__.startswith("__editable__")]
try:
    builder = importlib.import_module("tfrecords_tools." + job["module"])
except ImportError as e:  # a tree from before this builder
    print(json.dumps({"skipped": str(e)}))
    sys.exit(0)
try:
    from tfrecords_tools.framing import crc32c
except ImportError:  # a tree from before the split by job
    from tfrecords_tools.writer import crc32c

common = dict(num_shards=job["num_shards"], num_workers=job["workers"], progress=False)
wall, cpu = time.perf_counter(), cpu_seconds()
if job["builder"] == "voc":
    manifests = builder.build(job["voc_root"], ["train_aug", "val"], job["out"],
                              sbd_root=job["sbd_root"], **common)
elif job["builder"] == "coco":
    manifests = builder.build(job["coco_root"], ["train2017"], job["out"], target="voc", **common)
else:
    manifests = builder.build(job["images"], "train=0.8,val=0.2", job["out"],
                              masks_dir=job["masks"], spec=job["spec"], **common)
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
    "selection": {s: {k: m["coco_selection"][k] for k in ("kept", "dropped_no_target_region")}
                  for s, m in manifests.items() if "coco_selection" in m},
    "crc_mb_s": len(record) / per_call(crc32c, record) / 1e6,
    "crc_header_us": per_call(crc32c, (200_000).to_bytes(8, "little")) * 1e6,
}))
"""

# builder -> the tfrecords_tools module that builds it
BUILDERS = {"voc": "voc", "folder": "folder", "folder_color": "folder", "coco": "coco"}
WHAT = {"voc": "train_aug+val", "folder": "train+val", "folder_color": "train+val",
        "coco": "train2017"}


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


def _folder_inputs(voc_root, folder):
    """The synthetic VOC masks as RGB colour PNGs, and the ``voc`` spec switched to colour."""
    import yaml
    from PIL import Image

    from deeplab_family.data.spec import load_spec

    masks = os.path.join(folder, "masks_rgb")
    os.makedirs(masks)
    source = os.path.join(voc_root, "SegmentationClass")
    for name in sorted(os.listdir(source)):
        Image.open(os.path.join(source, name)).convert("RGB").save(os.path.join(masks, name))
    spec_path = os.path.join(folder, "voc_color.yaml")
    with open(spec_path, "w") as f:
        yaml.safe_dump(dict(load_spec("voc").to_dict(), encoding="color"), f)
    return masks, spec_path


def _coco_inputs(voc_root, folder):
    """A COCO tree of the synthetic VOC images: a polygon per connected region of each class.

    Returns ``(root, images, annotations)``.
    """
    import cv2
    import numpy as np
    from PIL import Image

    from deeplab_family.data.spec import load_spec

    coco_id = {v: k for k, v in load_spec("coco_voc").label_map.items()}  # VOC id -> COCO id
    images_dir = os.path.join(folder, "train2017")
    os.makedirs(images_dir)
    os.makedirs(os.path.join(folder, "annotations"))
    images, annotations = [], []
    labels = os.path.join(voc_root, "SegmentationClass")
    for index, name in enumerate(sorted(os.listdir(labels)), start=1):
        stem = os.path.splitext(name)[0]
        label = np.asarray(Image.open(os.path.join(labels, name)))
        h, w = label.shape
        shutil.copy(os.path.join(voc_root, "JPEGImages", stem + ".jpg"),
                    os.path.join(images_dir, stem + ".jpg"))
        images.append({"id": index, "file_name": stem + ".jpg", "height": h, "width": w})
        for voc_class in np.unique(label):
            if voc_class in (0, 255):
                continue
            binary = (label == voc_class).astype(np.uint8)
            contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for contour in contours:
                if len(contour) < 3:
                    continue
                annotations.append({
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": coco_id[int(voc_class)],
                    "iscrowd": 0,
                    "segmentation": [contour.reshape(-1).astype(float).tolist()],
                    "area": float(cv2.contourArea(contour)),
                    "bbox": [float(v) for v in cv2.boundingRect(contour)],
                })
    categories = [{"id": c, "name": f"category_{c}"} for c in sorted(coco_id.values())]
    with open(os.path.join(folder, "annotations", "instances_train2017.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return folder, len(images), len(annotations)


def _build(tree, data, out, workers, num_shards, builder):
    job = dict(data, out=out, workers=workers, num_shards=num_shards, builder=builder,
               module=BUILDERS[builder])
    if builder == "folder_color":
        job.update(masks=data["color_masks"], spec=data["color_spec"])
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
        raise RuntimeError(f"the {builder} build with {tree} failed:\n{result.stderr}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    if "skipped" in measured:
        return measured
    strays = [m for m in measured["modules"] if not m.startswith(os.path.join(tree, ""))]
    if strays:
        raise RuntimeError(f"the build with {tree} imported modules of another tree: {strays}")
    return measured


def _best_builds(trees, data, tmp, workers, num_shards, builder, repeats):
    """The fastest of ``repeats`` builds per tree; the trees alternate, so that load drifts hit
    both."""
    best = {}
    for _ in range(repeats):
        for name, tree in trees.items():
            out = os.path.join(tmp, "out")
            m = _build(tree, data, out, workers, num_shards, builder)
            shutil.rmtree(out, ignore_errors=True)
            if "skipped" in m or name not in best or m["seconds"] < best[name]["seconds"]:
                best[name] = m
    return best


def _row(name, m):
    return (
        f"{name:<22} {m['seconds']:>7.2f} {m['images'] / m['seconds']:>8.1f} "
        f"{m['bytes'] / 1e6 / m['seconds']:>7.1f} {1000 * m['cpu_seconds'] / m['images']:>8.1f} "
        f"{m['crc_mb_s']:>10.0f} {m['crc_header_us']:>9.2f}"
    )


def _print_table(builder, workers, num_shards, repeats, best):
    print(
        f"\n{builder}: build {WHAT[builder]}, {workers} worker(s), {num_shards} shards/split, "
        f"best of {repeats}:\n"
        f"{'tree':<22} {'seconds':>7} {'images/s':>8} {'MB/s':>7} {'CPU-ms/im':>8} "
        f"{'CRC MB/s':>10} {'CRC 8B us':>9}"
    )
    for name, m in best.items():
        if "skipped" in m:
            print(f"{name:<22} skipped: the tree has no such builder ({m['skipped']})")
            continue
        print(_row(name, m))
        for split, counts in m["selection"].items():
            print(f"{'':<22} {split}: kept {counts['kept']}, dropped "
                  f"{counts['dropped_no_target_region']} (no VOC-class region over 1000 px)")
    measured = [m for m in best.values() if "skipped" not in m]
    if len(measured) == 2:
        old, new = measured
        same = old["shards"] == new["shards"]
        print(
            f"after/before: images/s x{old['seconds'] / new['seconds']:.2f}, "
            f"CRC MB/s x{new['crc_mb_s'] / old['crc_mb_s']:.0f}; "
            f"shards byte-identical: {'yes' if same else 'NO'}"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-train", type=int, default=200)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument("--builders", default=",".join(BUILDERS),
                        help=f"comma-separated, of {', '.join(BUILDERS)} (default: all)")
    parser.add_argument("--compare-rev", default=None, help="also build with this revision")
    parser.add_argument("--repeats", type=int, default=None, help="builds per tree (best kept)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.compare_rev else 1)
    builders = [b.strip() for b in args.builders.split(",") if b.strip()]
    unknown = [b for b in builders if b not in BUILDERS]
    if unknown or not builders:
        parser.error(f"--builders: unknown {unknown}; choose from {', '.join(BUILDERS)}")

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
        voc_root = generated["voc_root"]
        data = {
            "voc_root": voc_root,
            "sbd_root": generated["sbd_root"],
            "images": os.path.join(voc_root, "JPEGImages"),
            "masks": os.path.join(voc_root, "SegmentationClass"),
            "spec": "voc",
        }
        wall = time.perf_counter()
        if "folder_color" in builders:
            data["color_masks"], data["color_spec"] = _folder_inputs(voc_root, tmp)
        if "coco" in builders:
            data["coco_root"], n_images, n_annotations = _coco_inputs(
                voc_root, os.path.join(tmp, "coco"))
            print(f"COCO tree: {n_images} images, {n_annotations} polygon annotations")
        if set(builders) & {"folder_color", "coco"}:
            print(f"colour masks and COCO tree written in {time.perf_counter() - wall:.1f} s "
                  "(not in the figures below)")
        for builder in builders:
            for workers in [int(w) for w in args.workers.split(",")]:
                best = _best_builds(trees, data, tmp, workers, args.num_shards, builder, repeats)
                _print_table(builder, workers, args.num_shards, repeats, best)
    print(
        f"\nCPUs visible: {os.cpu_count()}; load average: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
