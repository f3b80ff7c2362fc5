"""TFRecord builder throughput on the synthetic VOC + SBD set, and before/after a change.

    python benchmarks/build_tfrecords.py [--num-train 200 --num-val 50] [--workers 1,2]
        [--builders voc,folder,folder_color,coco]
    python benchmarks/build_tfrecords.py --compare-rev 6bcf9ba [--repeats 3]

Writes the synthetic dataset to a temporary folder (timed too), derives the inputs of the other
builders from its VOC part (timed apart: no build figure includes it), then builds each of
``--builders`` (default all) once per worker count, each build in a fresh Python process whose
``PYTHONPATH`` is the tree under test:

- ``voc``: ``tfrecords_tools.voc``, splits ``train_aug`` and ``val`` (VOC + SBD);
- ``folder``: ``tfrecords_tools.folder`` on ``JPEGImages`` + ``SegmentationClass`` (palette
  PNGs through the ``voc`` spec, index masks), splits ``train=0.8,val=0.2``;
- ``folder_color``: the same, the masks converted to RGB PNGs and the ``voc`` spec switched to
  ``encoding: color``: the difference with ``folder`` is the cost of the colour -> id mapping;
- ``coco``: ``tfrecords_tools.coco`` (``--target voc``, ``--min-area`` 1000) on a COCO tree of
  the same images, ``annotations/instances_train2017.json`` + ``train2017/``: one polygon
  annotation (``cv2.findContours``, outer contours: holes are filled) per connected component
  of each class present, in the COCO category that ``coco_voc``'s label map sends to that VOC
  class, ``area`` the polygon's. Its figures include the selection (every image's instances
  rasterised once before writing); the images kept and dropped are printed under the table.

Reported per builder, worker count and tree: seconds, images/s and MB/s of shards written (wall,
including the start of the worker processes), CPU-ms per image (the process and its children);
per tree: the raw throughput of its ``crc32c`` on a 200 KB record (a JPEG and its label PNG) and
the time of one on the 8-byte length field of a record header.

``--compare-rev REV`` extracts REV's ``tfrecords_tools`` and ``deeplab_family`` (``git
archive``) to a temporary folder and runs the same builds with that tree and with the working
tree in one run, alternating them, and keeps the fastest of ``--repeats`` runs of each: a
side-by-side table with the ratio. It also checks that both trees wrote byte-identical shards.
A builder that REV lacks is skipped for that tree, with a note. Never run by the tests.
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

import cv2
import numpy as np
import yaml
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from deeplab_family.data.spec import load_spec  # noqa: E402
from tfrecords_tools import synthetic  # noqa: E402

BUILDERS = ("voc", "folder", "folder_color", "coco")
# The module each builder runs: a tree without tfrecords_tools/<module>.py lacks the builder.
MODULES = {"voc": "voc", "folder": "folder", "folder_color": "folder", "coco": "coco"}
FOLDER_SPLITS = "train=0.8,val=0.2"
COCO_SPLIT = "train2017"

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
builder = importlib.import_module("tfrecords_tools." + job["module"])
try:
    from tfrecords_tools.framing import crc32c
except ImportError:  # a tree from before the split by job
    from tfrecords_tools.writer import crc32c

wall, cpu = time.perf_counter(), cpu_seconds()
manifests = builder.build(*job["args"], job["out"], **job["kwargs"], num_shards=job["num_shards"],
                          num_workers=job["workers"], progress=False)
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
    "selection": {s: m["coco_selection"] for s, m in manifests.items() if "coco_selection" in m},
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


def _link(source, target):
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copyfile(source, target)


def _stems(folder, extension):
    return {os.path.splitext(n)[0] for n in os.listdir(folder) if n.endswith(extension)}


def _folder_inputs(voc_root, folder):
    """``(images dir, masks dir, ids)``: the VOC part's images that have a mask (linked into a
    folder of their own if ``JPEGImages`` holds others)."""
    images = os.path.join(voc_root, "JPEGImages")
    masks = os.path.join(voc_root, "SegmentationClass")
    ids = sorted(_stems(images, ".jpg") & _stems(masks, ".png"))
    if set(ids) != _stems(images, ".jpg"):
        paired = os.path.join(folder, "images")
        os.makedirs(paired)
        for sample_id in ids:
            _link(os.path.join(images, f"{sample_id}.jpg"), os.path.join(paired, f"{sample_id}.jpg"))
        images = paired
    return images, masks, ids


def _color_inputs(masks, ids, folder):
    """RGB copies of the palette masks and the ``voc`` spec with ``encoding: color``."""
    color_masks = os.path.join(folder, "color_masks")
    os.makedirs(color_masks)
    for sample_id in ids:
        with Image.open(os.path.join(masks, f"{sample_id}.png")) as mask:
            mask.convert("RGB").save(os.path.join(color_masks, f"{sample_id}.png"))
    spec = load_spec("voc").to_dict()
    spec.update(name="voc_color", encoding="color")
    spec_path = os.path.join(folder, "voc_color.yaml")
    with open(spec_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    return color_masks, spec_path


def _coco_inputs(images, masks, ids, folder):
    """A COCO tree of the same images: one polygon per connected component per class."""
    spec = load_spec("coco_voc")
    voc_classes = load_spec("voc").classes
    category = {voc: coco for coco, voc in spec.label_map.items() if 0 < voc < 255}
    root = os.path.join(folder, "coco")
    os.makedirs(os.path.join(root, "annotations"))
    os.makedirs(os.path.join(root, COCO_SPLIT))
    entries, annotations = [], []
    for image_id, sample_id in enumerate(ids, start=1):
        _link(os.path.join(images, f"{sample_id}.jpg"),
              os.path.join(root, COCO_SPLIT, f"{sample_id}.jpg"))
        with Image.open(os.path.join(masks, f"{sample_id}.png")) as mask:
            label = np.asarray(mask)  # palette indices: the VOC classes, 255 the void border
        height, width = label.shape
        entries.append({"id": image_id, "file_name": f"{sample_id}.jpg", "height": height,
                        "width": width})
        for cls in np.unique(label):
            if cls in (0, 255):
                continue
            contours, _ = cv2.findContours(
                (label == cls).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            for contour in contours:
                if len(contour) < 3:  # a point or a line encloses nothing
                    continue
                x, y, w, h = cv2.boundingRect(contour)
                annotations.append({
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category[int(cls)],
                    "iscrowd": 0,
                    "segmentation": [contour.reshape(-1).astype(float).tolist()],
                    "area": float(cv2.contourArea(contour)),
                    "bbox": [x, y, w, h],
                })
    categories = [{"id": coco, "name": voc_classes[voc], "supercategory": "voc"}
                  for voc, coco in sorted(category.items())]
    with open(os.path.join(root, "annotations", f"instances_{COCO_SPLIT}.json"), "w") as f:
        json.dump({"images": entries, "annotations": annotations, "categories": categories}, f)
    return root, len(annotations)


def _inputs(builders, generated, folder):
    """The positional and keyword arguments of each builder's ``build`` (all but the output
    folder, the shards, the workers and progress), and a line on what was generated."""
    voc_root = generated["voc_root"]
    jobs = {"voc": ([voc_root, ["train_aug", "val"]], {"sbd_root": generated["sbd_root"]})}
    notes = []
    if {"folder", "folder_color", "coco"} & set(builders):
        images, masks, ids = _folder_inputs(voc_root, folder)
        jobs["folder"] = ([images, FOLDER_SPLITS], {"masks_dir": masks, "spec": "voc"})
        if "folder_color" in builders:
            color_masks, spec_path = _color_inputs(masks, ids, folder)
            jobs["folder_color"] = (
                [images, FOLDER_SPLITS], {"masks_dir": color_masks, "spec": spec_path}
            )
            notes.append(f"{len(ids)} RGB masks")
        if "coco" in builders:
            coco_root, count = _coco_inputs(images, masks, ids, folder)
            jobs["coco"] = ([coco_root, [COCO_SPLIT]], {"target": "voc"})
            notes.append(f"a COCO tree of {len(ids)} images, {count} polygons")
    return {b: jobs[b] for b in builders}, ", ".join(notes)


def _build(tree, builder, job, out, workers, num_shards):
    args, kwargs = job
    job = dict(module=MODULES[builder], args=args, kwargs=kwargs, out=out, workers=workers,
               num_shards=num_shards)
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
    strays = [m for m in measured["modules"] if not m.startswith(os.path.join(tree, ""))]
    if strays:
        raise RuntimeError(f"the build with {tree} imported modules of another tree: {strays}")
    return measured


def _row(builder, workers, name, m):
    return (
        f"{builder:<12} {workers:>7} {name:<22} {m['seconds']:>7.2f} {m['images']:>6} "
        f"{m['images'] / m['seconds']:>8.1f} {m['bytes'] / 1e6 / m['seconds']:>7.1f} "
        f"{1000 * m['cpu_seconds'] / m['images']:>9.1f} "
        f"{m['crc_mb_s']:>10.0f} {m['crc_header_us']:>9.2f}"
    )


def _builders(text):
    names = [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in names if b not in BUILDERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown builder(s) {unknown}; choose from {', '.join(BUILDERS)}"
        )
    return list(dict.fromkeys(names))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-train", type=int, default=200)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument("--builders", type=_builders, default=list(BUILDERS),
                        help=f"comma-separated, from {','.join(BUILDERS)} (default all)")
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
        wall = time.perf_counter()
        jobs, made = _inputs(args.builders, generated, os.path.join(tmp, "inputs"))
        if made:
            print(f"folder/COCO inputs (not in the build figures): {made}, "
                  f"{time.perf_counter() - wall:.2f} s")
        rows, notes = [], []
        for builder, job in jobs.items():
            runnable = {}
            for name, tree in trees.items():
                if os.path.exists(os.path.join(tree, "tfrecords_tools", f"{MODULES[builder]}.py")):
                    runnable[name] = tree
                else:
                    notes.append(f"{builder}: skipped for {name}, which has no "
                                 f"tfrecords_tools/{MODULES[builder]}.py")
            for workers in [int(w) for w in args.workers.split(",")]:
                best = {}
                for _ in range(repeats):
                    for name, tree in runnable.items():  # alternate, so load drifts hit both
                        out = os.path.join(tmp, "out")
                        m = _build(tree, builder, job, out, workers, args.num_shards)
                        shutil.rmtree(out)
                        if name not in best or m["seconds"] < best[name]["seconds"]:
                            best[name] = m
                rows.extend((builder, workers, name, m) for name, m in best.items())
                if len(best) == 2:
                    old, new = best.values()
                    same = old["shards"] == new["shards"]
                    notes.append(
                        f"{builder}, {workers} worker(s), after/before: images/s "
                        f"x{old['seconds'] / new['seconds']:.2f}, CRC MB/s "
                        f"x{new['crc_mb_s'] / old['crc_mb_s']:.0f}; shards byte-identical: "
                        f"{'yes' if same else 'NO'}"
                    )
        print(
            f"\nbuilds, {args.num_shards} shards/split, best of {repeats} (voc: train_aug+val; "
            f"folder: {FOLDER_SPLITS}; coco: {COCO_SPLIT}):\n"
            f"{'builder':<12} {'workers':>7} {'tree':<22} {'seconds':>7} {'images':>6} "
            f"{'images/s':>8} {'MB/s':>7} {'CPU-ms/im':>9} {'CRC MB/s':>10} {'CRC 8B us':>9}"
        )
        for row in rows:
            print(_row(*row))
        selections = {}
        for builder, _, name, m in rows:
            for split, s in m["selection"].items():
                selections[(name, split)] = (
                    f"{builder} {split} ({name}): kept {s['kept']} of "
                    f"{s['images_in_annotations']} images, dropped "
                    f"{s['dropped_no_target_region']} (no VOC class region over "
                    f"{s['min_area']} pixels), {s['invalid']} invalid"
                )
        for line in [*selections.values(), *notes]:
            print(line)
    print(
        f"\nCPUs visible: {os.cpu_count()}; load average: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
