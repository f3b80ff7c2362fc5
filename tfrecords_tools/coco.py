"""COCO instance annotations to TFRecord shards, rendered to another dataset's classes.

    python -m tfrecords_tools.coco --coco-root DIR --splits train2017,val2017 --target voc \\
        --output-dir DIR [--min-area 1000]

Reads ``DIR/annotations/instances_<split>.json`` and the images ``DIR/<split>/<file_name>``
(or ``DIR/images/<split>/<file_name>``) with pycocotools' mask API; each split keeps its COCO
name (``train2017-*.tfrecord``). ``--target voc`` renders the 80 COCO categories to PASCAL VOC's
20 classes plus background with the built-in spec ``coco_voc`` (``deeplab_family/data/specs``),
which the manifests carry; another target is one more entry in ``TARGETS`` and one more spec.

What is kept and how it is drawn (DeepLabv3 Sec 4.2, ExFuse Sec 4.2):

- **Kept images.** An image is kept when one of its non-crowd annotations of a target class
  covers more than ``--min-area`` pixels (1000). DeepLabv3 says "annotation regions larger than
  1000 pixels"; we count the pixels of that one instance's mask as pycocotools rasterises it at
  the image size, not the JSON's ``area`` field (the polygon's area, which differs from the
  pixels drawn by the edge pixels, and is whatever an exporter wrote in other COCO-format
  files). Crowd regions do not count: they are not labelled as a class. The paper kept "about
  60K" images of trainval_minus_minival; the counts kept and dropped go to stdout and to each
  manifest (``coco_selection``).
- **Classes.** Target categories get their target class; every other COCO category is
  background (0); crowd regions (``iscrowd: 1``, of any category) are ignore (255).
- **Overlaps.** Crowd regions are drawn first, then the non-crowd instances from the largest
  mask to the smallest (ties by annotation id): a smaller object drawn over a larger one stays
  visible (a cup on a table, a person on a horse), and a labelled instance wins over a crowd
  region, which is the coarser annotation.
- **Segmentations.** Polygons, uncompressed RLE (``counts`` a list, COCO's crowds) and
  compressed RLE (``counts`` a string). An RLE whose ``size`` is not the image's, or whose
  counts do not add up to its pixels, is an error (pycocotools would read memory past a short
  one); polygons of fewer than 3 points enclose nothing and are left out.

Bad input stops the split with a message naming the file: a missing annotation file or image
folder, an image the JSON lists that is not on disk, an image file in the folder that the JSON
does not list, an annotation of an image or a category the JSON does not list, an unreadable
segmentation. ``--skip-invalid`` records such images in the manifest and goes on. A rerun
replaces each split atomically.

Rendering runs in the writer's worker processes: an example's label reader is the module-level
`read_coco_label` bound (``functools.partial``) to the spec, the image size and its annotations.
"""

import argparse
import functools
import json
import os
import re
import sys

import numpy as np

from deeplab_family import _validation
from deeplab_family.data.spec import load_spec
from tfrecords_tools import cli, writer
from tfrecords_tools.sources import ExampleSource, InvalidExampleError
from tfrecords_tools.writer import BuildError

# --target -> the built-in spec whose label_map sends COCO category ids to its classes (class 0
# is background) and every other category to background (label_map_default: 0).
TARGETS = {"voc": "coco_voc"}
DEFAULT_MIN_AREA = 1000  # pixels, DeepLabv3 Sec 4.2
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MIN_POLYGON_COORDINATES = 6  # 3 points; pycocotools reads a 4-number list as a box [x, y, w, h]
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
# Rendered raw values are COCO category ids (uint8), 0 for unannotated pixels and the spec's
# ignore_label for crowds: category ids must be 1..254.
MAX_CATEGORY_ID = 254

nonnegative_int = _validation.argparse_type(_validation.positive_int, minimum=0)


def _mask_api():
    try:
        from pycocotools import mask
    except ImportError:
        raise BuildError(
            "tfrecords_tools.coco needs pycocotools (pip install pycocotools; it is in "
            "requirements.lock)"
        ) from None
    return mask


def split_names(text):
    """An argparse type: comma-separated COCO split names (``train2017,val2017``).

    >>> split_names("train2017, val2017,train2017")
    ['train2017', 'val2017']
    """
    splits = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in splits if not _SPLIT_NAME.match(s)]
    if bad or not splits:
        raise argparse.ArgumentTypeError(
            f"split names are letters, digits and _ (the <split> of "
            f"annotations/instances_<split>.json). Received: {text!r}"
        )
    return list(dict.fromkeys(splits))


# --------------------------------------------------------------------------------------------
# Segmentations to RLE, and the label reader (module-level, so that worker processes can
# unpickle it).
# --------------------------------------------------------------------------------------------


def rle_string_counts(counts):
    """The run lengths of a compressed COCO RLE string (``maskApi.c``'s ``rleFrString``).

    Six bits a character (offset 48): five of value, one "more follows"; the last character's
    top value bit is the sign; from the fourth count on, a count is stored as its difference
    from the count two before.

    >>> rle_string_counts("0h3")   # a 10x12 mask of ones: no zeros, then 120 ones
    [0, 120]
    """
    values, p = [], 0
    while p < len(counts):
        x = k = 0
        more = True
        while more:
            if p >= len(counts):
                raise ValueError("the string ends inside a count")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {counts[p]!r} is not in the RLE alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(values) > 2:
            x += values[-2]
        values.append(x)
    return values


def annotation_rle(annotation, height, width, where):
    """The RLE of one annotation's segmentation at ``height x width``, or None if it draws
    nothing. Raises InvalidExampleError naming ``where`` and the annotation."""
    mask_api = _mask_api()
    what = f"{where}: annotation {annotation.get('id')}"
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list):
        polygons = []
        for k, polygon in enumerate(segmentation):
            try:
                coords = np.asarray(polygon, dtype=np.float64)
            except (TypeError, ValueError):
                coords = None
            if coords is None or coords.ndim != 1 or not np.all(np.isfinite(coords)):
                raise InvalidExampleError(f"{what}: polygon {k} is not a list of numbers")
            if coords.size % 2:
                raise InvalidExampleError(
                    f"{what}: polygon {k} has {coords.size} coordinates, an odd number (x, y "
                    "pairs are expected)"
                )
            if coords.size >= MIN_POLYGON_COORDINATES:
                polygons.append(coords.tolist())
        if not polygons:
            return None
        return mask_api.merge(mask_api.frPyObjects(polygons, height, width))
    if not isinstance(segmentation, dict) or "counts" not in segmentation:
        raise InvalidExampleError(
            f"{what}: segmentation is neither a list of polygons nor an RLE "
            f"{{size, counts}}. Received: {type(segmentation).__name__}"
        )
    size = segmentation.get("size")
    if not isinstance(size, list) or size != [height, width]:
        raise InvalidExampleError(
            f"{what}: RLE size {size} is not the image's [{height}, {width}] (height, width)"
        )
    counts = segmentation["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise InvalidExampleError(f"{what}: RLE counts must be integers >= 0")
        values, rle = counts, None
    elif isinstance(counts, str):
        try:
            values = rle_string_counts(counts)
        except ValueError as e:
            raise InvalidExampleError(f"{what}: cannot read the compressed RLE: {e}") from None
        if any(v < 0 for v in values):
            raise InvalidExampleError(f"{what}: the compressed RLE has a negative run length")
        rle = {"size": [height, width], "counts": counts.encode("ascii")}
    else:
        raise InvalidExampleError(
            f"{what}: RLE counts must be a list of run lengths or a compressed string. "
            f"Received: {type(counts).__name__}"
        )
    if sum(values) != height * width:
        raise InvalidExampleError(
            f"{what}: the RLE counts add up to {sum(values)} pixels; the image has "
            f"{height}x{width} = {height * width}"
        )
    if rle is None:
        rle = mask_api.frPyObjects(segmentation, height, width)
    return rle


def read_coco_label(spec, height, width, annotations, path, display):
    """Renders one image's annotations to stored labels (class ids, 255 = ignore).

    COCO category ids are drawn (crowds first as the spec's ``ignore_label``, then instances
    from the largest mask to the smallest, see the module docstring) and mapped through
    ``spec.lookup_table()``. ``path`` is the annotation file, already read: the annotations are
    bound with ``functools.partial(read_coco_label, spec, height, width, annotations)``.
    """
    mask_api = _mask_api()
    raw = np.zeros((height, width), dtype=np.uint8)
    instances = []
    for annotation in annotations:
        rle = annotation_rle(annotation, height, width, display)
        if rle is None:
            continue
        if annotation["iscrowd"]:
            raw[mask_api.decode(rle) > 0] = spec.ignore_label
        else:
            area = int(mask_api.area(rle))
            instances.append((-area, annotation["id"], annotation["category_id"], rle))
    for _, _, category, rle in sorted(instances, key=lambda t: t[:2]):
        raw[mask_api.decode(rle) > 0] = category
    label = spec.lookup_table()[raw]
    if label.size and label.min() < 0:
        bad = int(raw[label < 0][0])
        raise InvalidExampleError(
            f"{display}: category {bad} is not in the label_map of dataset {spec.name!r}"
        )
    return label.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Planning a split.
# --------------------------------------------------------------------------------------------


def resolve_image_dir(root, split):
    for rel in (split, f"images/{split}"):
        path = os.path.join(root, *rel.split("/"))
        if os.path.isdir(path):
            return path, rel
    raise BuildError(
        f"no image folder for split {split!r}: neither {split}/ nor images/{split}/ is in "
        f"--coco-root {root}"
    )


def load_instances(path, display):
    """The parsed ``instances_<split>.json``; a missing or malformed file is a BuildError."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise BuildError(f"missing file: {display}") from None
    except (OSError, ValueError) as e:
        raise BuildError(f"cannot read {display} as JSON: {e}") from None
    if not isinstance(data, dict):
        raise BuildError(f"{display} is not a COCO annotation file (not a JSON object)")
    missing = [
        k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)
    ]
    if missing:
        raise BuildError(f"{display} is not a COCO instances file: no {', '.join(missing)} list")
    return data


def _index_images(data, display):
    images = {}
    stems = {}
    for entry in data["images"]:
        try:
            image_id, file_name = entry["id"], entry["file_name"]
            height, width = int(entry["height"]), int(entry["width"])
        except (KeyError, TypeError, ValueError):
            raise BuildError(
                f"{display}: an image entry lacks id, file_name, height or width: {entry!r:.200}"
            ) from None
        if image_id in images:
            raise BuildError(f"{display}: image id {image_id} is listed twice")
        if (
            not isinstance(file_name, str)
            or not file_name
            or os.path.basename(file_name) != file_name
            or file_name in (".", "..")
        ):
            raise BuildError(
                f"{display}: image {image_id} has file_name {file_name!r}; expected a file "
                "name without folders"
            )
        stem = os.path.splitext(file_name)[0]
        if stem in stems:
            raise BuildError(
                f"{display}: images {stems[stem]} and {image_id} have the same file name stem "
                f"{stem!r} (the example id)"
            )
        stems[stem] = image_id
        images[image_id] = {"file_name": file_name, "height": height, "width": width}
    return images


def _category_problem(category_id, categories, spec, table):
    if isinstance(category_id, bool) or not isinstance(category_id, int):
        return "is not an integer"
    if category_id not in categories:
        return "is not in the file's categories"
    if not 1 <= category_id <= MAX_CATEGORY_ID or category_id == spec.ignore_label:
        return f"is outside 1..{MAX_CATEGORY_ID}"
    if table[category_id] < 0:
        return f"is not in the label_map of dataset {spec.name!r}"
    return None


def has_target_region(annotations, target_categories, height, width, min_area, where):
    """Whether one non-crowd annotation of a target category covers more than ``min_area``
    pixels when rendered (the selection rule of the module docstring)."""
    mask_api = _mask_api()
    for annotation in annotations:
        if annotation["iscrowd"] or annotation["category_id"] not in target_categories:
            continue
        rle = annotation_rle(annotation, height, width, where)
        if rle is not None and int(mask_api.area(rle)) > min_area:
            return True
    return False


class CocoLayout:
    """The COCO root and the target; plans one split at a time."""

    def __init__(self, coco_root, target="voc", min_area=DEFAULT_MIN_AREA, skip_invalid=False):
        if target not in TARGETS:
            raise BuildError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
        if not os.path.isdir(os.path.join(coco_root, "annotations")):
            raise BuildError(f"--coco-root {coco_root} has no annotations folder")
        self.root = coco_root
        self.target = target
        self.spec = load_spec(TARGETS[target])
        self.min_area = _validation.positive_int("min_area", min_area, minimum=0)
        self.skip_invalid = skip_invalid
        self.table = table = self.spec.lookup_table()
        # Category ids that draw a class other than background (0) or ignore.
        self.target_categories = {
            int(c) for c in np.flatnonzero((table > 0) & (table != 255)) if 1 <= c <= 254
        }

    def _problem(self, skipped, sample_id, message):
        if not self.skip_invalid:
            raise BuildError(
                f"{message} (run with --skip-invalid to record such examples in the manifest "
                "and go on)"
            )
        skipped.append({"id": sample_id, "reason": message})

    def _group_annotations(self, data, images, categories, json_rel, skipped):
        """``{image id: [annotation]}`` (the keys a label needs), and ``{image id: problem}`` for
        the images with an annotation of a bad category or ``iscrowd``."""
        per_image = {image_id: [] for image_id in images}
        bad_images = {}
        for a in data["annotations"]:
            if not isinstance(a, dict) or "image_id" not in a:
                raise BuildError(f"{json_rel}: an annotation has no image_id: {a!r:.200}")
            image_id = a["image_id"]
            if image_id not in images:
                self._problem(
                    skipped,
                    f"annotation {a.get('id')}",
                    f"annotation {a.get('id')} in {json_rel} is of image {image_id}, which "
                    "the file's images do not list",
                )
                continue
            problem = _category_problem(a.get("category_id"), categories, self.spec, self.table)
            if problem is not None:
                problem = f"category {a.get('category_id')!r} {problem}"
            elif a.get("iscrowd", 0) not in (0, 1):
                problem = f"has iscrowd {a.get('iscrowd')!r}; expected 0 or 1"
            if problem is not None:
                where = f"{json_rel} (image {image_id}, {images[image_id]['file_name']})"
                bad_images.setdefault(image_id, f"{where}: annotation {a.get('id')} {problem}")
                continue
            per_image[image_id].append(
                {
                    "id": a.get("id"),
                    "category_id": a["category_id"],
                    "iscrowd": int(a.get("iscrowd", 0)),
                    "segmentation": a.get("segmentation"),
                }
            )
        return per_image, bad_images

    def plan(self, split):
        """Returns ``(sources, skipped, selection)`` for a split; raises BuildError on bad input.

        ``selection`` holds the counts kept and dropped, recorded in the manifest.
        """
        json_rel = f"annotations/instances_{split}.json"
        json_path = os.path.join(self.root, "annotations", f"instances_{split}.json")
        data = load_instances(json_path, json_rel)
        image_dir, image_rel = resolve_image_dir(self.root, split)
        images = _index_images(data, json_rel)
        categories = {
            c["id"]: str(c.get("name", c["id"]))
            for c in data["categories"]
            if isinstance(c, dict) and "id" in c
        }
        skipped = []
        per_image, bad_images = self._group_annotations(data, images, categories, json_rel, skipped)
        listed = {entry["file_name"] for entry in images.values()}
        on_disk = set(os.listdir(image_dir))
        for name in sorted(on_disk - listed):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                message = f"image file {image_rel}/{name} is not in {json_rel}"
                self._problem(skipped, os.path.splitext(name)[0], message)

        sources, dropped, invalid = [], 0, 0
        for image_id in sorted(images, key=lambda i: images[i]["file_name"]):
            entry = images[image_id]
            sample_id = os.path.splitext(entry["file_name"])[0]
            where = f"{json_rel} (image {image_id}, {entry['file_name']})"
            annotations = tuple(per_image[image_id])
            try:
                if image_id in bad_images:
                    raise InvalidExampleError(bad_images[image_id])
                keep = has_target_region(
                    annotations,
                    self.target_categories,
                    entry["height"],
                    entry["width"],
                    self.min_area,
                    where,
                )
                if keep and entry["file_name"] not in on_disk:
                    raise InvalidExampleError(f"missing file: {image_rel}/{entry['file_name']}")
            except InvalidExampleError as e:
                self._problem(skipped, sample_id, str(e))
                invalid += 1
                continue
            if not keep:
                dropped += 1
                continue
            sources.append(
                ExampleSource(
                    id=sample_id,
                    image_path=os.path.join(image_dir, entry["file_name"]),
                    label_path=json_path,
                    label_reader=functools.partial(
                        read_coco_label, self.spec, entry["height"], entry["width"], annotations
                    ),
                    image_display=f"{image_rel}/{entry['file_name']}",
                    label_display=where,
                    label_origin=f"COCO instances_{split}",
                )
            )
        if not sources:
            raise BuildError(
                f"split {split!r} is empty: none of the {len(images)} images of {json_rel} has "
                f"a {self.target} class region over {self.min_area} pixels"
                + (f" ({invalid} skipped as invalid)" if invalid else "")
            )
        selection = {
            "target": self.target,
            "min_area": self.min_area,
            "region": "pixels of one non-crowd instance's rendered mask",
            "images_in_annotations": len(images),
            "kept": len(sources),
            "dropped_no_target_region": dropped,
            # Images of the JSON skipped while selecting (--skip-invalid); those found while
            # writing are in the manifest's "skipped" only.
            "invalid": invalid,
            "target_categories": {
                categories[c]: self.spec.classes[self.table[c]]
                for c in sorted(self.target_categories)
                if c in categories
            },
        }
        return sources, skipped, selection

    def inputs(self, split):
        image_dir, _ = resolve_image_dir(self.root, split)
        return {
            "coco_root": os.path.abspath(self.root),
            "annotations": os.path.abspath(
                os.path.join(self.root, "annotations", f"instances_{split}.json")
            ),
            "images": os.path.abspath(image_dir),
        }


def build(
    coco_root,
    splits,
    output_dir,
    *,
    target="voc",
    min_area=DEFAULT_MIN_AREA,
    num_shards=None,
    num_workers=1,
    skip_invalid=False,
    progress=True,
):
    """Builds the splits one after the other. Returns ``{split: manifest}``; each manifest's
    ``coco_selection`` holds the images kept and dropped.

    Every split is planned (annotations read, images selected) before any is written.
    """
    for split in splits:
        if not isinstance(split, str) or not _SPLIT_NAME.match(split):
            raise BuildError(f"split names are letters, digits and _. Received: {split!r}")
    layout = CocoLayout(coco_root, target, min_area, skip_invalid)
    plans = {split: layout.plan(split) for split in splits}
    manifests = {}
    with writer.WorkerPool(num_workers) as pool:
        for split, (sources, skipped, selection) in plans.items():
            manifests[split] = writer.write_split(
                split,
                sources,
                output_dir,
                spec=layout.spec,
                num_shards=num_shards,
                num_workers=num_workers,
                skip_invalid=skip_invalid,
                skipped=skipped,
                dataset=f"coco_{split}_as_{target}",
                extra={
                    "created_by": "tfrecords_tools.coco",
                    "inputs": layout.inputs(split),
                    "coco_selection": selection,
                },
                progress=progress,
                pool=pool,
            )
    return manifests


def selection_line(split, manifest):
    s = manifest["coco_selection"]
    invalid = f", {s['invalid']} invalid" if s["invalid"] else ""
    return (
        f"{split}: kept {s['kept']} of {s['images_in_annotations']} images ("
        f"{s['dropped_no_target_region']} without a {s['target']} class region over "
        f"{s['min_area']} pixels{invalid})"
    )


def _build_and_report(*args, **kwargs):
    manifests = build(*args, **kwargs)
    for split, manifest in manifests.items():
        print(selection_line(split, manifest))
    return manifests


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tfrecords_tools.coco",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--coco-root", required=True, help="the folder holding annotations/ and the image folders"
    )
    parser.add_argument(
        "--splits",
        type=split_names,
        required=True,
        help="COCO split names, e.g. train2017,val2017 (annotations/instances_<split>.json)",
    )
    parser.add_argument(
        "--target", choices=sorted(TARGETS), default="voc", help="the classes to render to"
    )
    parser.add_argument(
        "--min-area",
        type=nonnegative_int,
        default=DEFAULT_MIN_AREA,
        help="keep an image when one instance of a target class covers more than this many "
        f"pixels (default {DEFAULT_MIN_AREA}, DeepLabv3 Sec 4.2)",
    )
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    return cli.run_build(
        _build_and_report, args, args.coco_root, target=args.target, min_area=args.min_area
    )


if __name__ == "__main__":
    sys.exit(main())
