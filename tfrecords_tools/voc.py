"""PASCAL VOC 2012 (+ SBD) to TFRecord shards.

    python -m tfrecords_tools.voc --voc-root VOCdevkit/VOC2012 \\
        --sbd-root benchmark_RELEASE/dataset --splits train_aug,val --output-dir DIR

Splits:

- ``train``, ``val``, ``trainval``: the VOC ``ImageSets/Segmentation`` lists.
- ``train_aug`` = (VOC train | SBD train | SBD val) - VOC val: 10,582 ids with the real data.
- ``trainval_aug`` = train_aug | VOC val: 12,031 ids.

For every id, the label is the VOC ``SegmentationClass`` PNG when there is one (it is the better
annotation, DeepLabv3 Sec 4.3), else SBD's ``cls/<id>.mat``; the JPEG is VOC's ``JPEGImages``
when present, else SBD's ``img``. ``--voc-label-dir`` takes another label folder of index PNGs
(for example the widely shared grayscale ``SegmentationClassAug``).

Bad input (a missing file, a truncated or corrupt JPEG, an image and label of different sizes, a
label value outside 0..20 that is not 255, an id with a path separator or ``..``, duplicate ids,
an empty split) stops the split with a message naming the file, and leaves no shard behind;
``--skip-invalid`` records such examples in the manifest and goes on. A rerun replaces each
split atomically. The manifests carry the ``voc`` dataset spec (``deeplab_family/data/specs``).
"""

import argparse
import os
import sys

import numpy as np

from deeplab_family.data import classes
from deeplab_family.data.spec import load_spec
from tfrecords_tools import cli, writer
from tfrecords_tools.sources import ExampleSource, InvalidExampleError, read_index_png
from tfrecords_tools.writer import BuildError

VOC_SPLITS = ("train", "val", "trainval")
AUG_SPLITS = ("train_aug", "trainval_aug")
SPLITS = VOC_SPLITS + AUG_SPLITS
NUM_CLASSES = classes.VOC_NUM_CLASSES  # 21: background + 20 classes

VOC_LABEL_ORIGIN = "VOC {}"
SBD_LABEL_ORIGIN = "SBD cls"


# --------------------------------------------------------------------------------------------
# Roots and id lists.
# --------------------------------------------------------------------------------------------


def resolve_voc_root(path):
    """Accepts ``VOCdevkit/VOC2012`` itself, ``VOCdevkit``, or the folder holding ``VOCdevkit``."""
    for candidate in (
        path,
        os.path.join(path, "VOC2012"),
        os.path.join(path, "VOCdevkit", "VOC2012"),
    ):
        if os.path.isdir(os.path.join(candidate, "ImageSets", "Segmentation")):
            return candidate
    raise BuildError(
        f"--voc-root {path} does not look like VOCdevkit/VOC2012: no ImageSets/Segmentation in it"
    )


def resolve_sbd_root(path):
    """Accepts ``benchmark_RELEASE/dataset``, ``benchmark_RELEASE``, or the folder holding it."""
    candidates = (
        path,
        os.path.join(path, "dataset"),
        os.path.join(path, "benchmark_RELEASE", "dataset"),
    )
    for candidate in candidates:
        if os.path.isdir(os.path.join(candidate, "cls")):
            return candidate
    raise BuildError(
        f"--sbd-root {path} does not look like benchmark_RELEASE/dataset: no cls folder in it"
    )


def _id_problem(sample_id):
    if not sample_id:
        return "is empty"
    if any(sep in sample_id for sep in ("/", "\\", os.sep)) or (
        os.altsep and os.altsep in sample_id
    ):
        return "contains a path separator"
    if ".." in sample_id:
        return "contains '..'"
    if any(c.isspace() for c in sample_id):
        return "contains whitespace (one id per line is expected)"
    return None


def read_id_list(path, display, skipped, skip_invalid):
    """Reads one id per line. Bad or duplicate ids raise, or are recorded in ``skipped``."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise BuildError(f"missing file: {display}") from None
    ids, first_line = [], {}
    for number, line in enumerate(lines, start=1):
        sample_id = line.strip()
        if not sample_id:
            continue
        problem = _id_problem(sample_id)
        if problem is None and sample_id in first_line:
            problem = f"is a duplicate (first on line {first_line[sample_id]})"
        if problem is not None:
            message = f"id {sample_id!r} on line {number} of {display} {problem}"
            if not skip_invalid:
                raise BuildError(message)
            skipped.append({"id": sample_id, "reason": message})
            continue
        first_line[sample_id] = number
        ids.append(sample_id)
    return ids


# --------------------------------------------------------------------------------------------
# Label readers (module-level, so that worker processes can unpickle them).
# --------------------------------------------------------------------------------------------


def read_voc_label(path, display):
    """A VOC ``SegmentationClass`` palette PNG or a grayscale index PNG, as class indices."""
    return read_index_png(path, display)


def read_sbd_label(path, display):
    """SBD ``cls/<id>.mat``: the ``Segmentation`` field of the ``GTcls`` struct (uint8 0..20)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except FileNotFoundError:
        raise InvalidExampleError(f"missing file: {display}") from None
    except Exception as e:  # noqa: BLE001 (scipy raises many types for a bad file)
        raise InvalidExampleError(f"cannot read {display} as a MATLAB file: {e}") from None
    if "GTcls" not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "nothing"
        raise InvalidExampleError(f"{display} has no GTcls struct (found: {found})")
    gt = mat["GTcls"]
    try:
        segmentation = gt[0, 0]["Segmentation"] if gt.dtype.names else None
    except (IndexError, ValueError):
        segmentation = None
    if segmentation is None:
        raise InvalidExampleError(f"{display}: GTcls has no Segmentation field")
    segmentation = np.asarray(segmentation)
    if segmentation.dtype == object and segmentation.size == 1:
        segmentation = np.asarray(segmentation.item())
    if segmentation.ndim != 2:
        raise InvalidExampleError(
            f"{display}: GTcls.Segmentation has shape {segmentation.shape}; expected (H, W)"
        )
    return segmentation


# --------------------------------------------------------------------------------------------
# Planning a split.
# --------------------------------------------------------------------------------------------


class VocLayout:
    """The input folders, and the id lists read on demand."""

    def __init__(self, voc_root, sbd_root=None, voc_label_dir=None, skip_invalid=False):
        self.voc_root = resolve_voc_root(voc_root)
        self.sbd_root = resolve_sbd_root(sbd_root) if sbd_root else None
        self.label_dir = self._resolve_label_dir(voc_label_dir)
        self.label_dir_name = os.path.basename(os.path.normpath(self.label_dir))
        self.skip_invalid = skip_invalid
        self._lists = {}

    def _resolve_label_dir(self, label_dir):
        if label_dir is None:
            return os.path.join(self.voc_root, "SegmentationClass")
        for candidate in (os.path.join(self.voc_root, label_dir), label_dir):
            if os.path.isdir(candidate):
                return candidate
        raise BuildError(f"--voc-label-dir {label_dir}: no such folder (in --voc-root or here)")

    def _list(self, key, path, display):
        if key not in self._lists:
            problems = []
            ids = read_id_list(path, display, problems, self.skip_invalid)
            self._lists[key] = (ids, problems)
        return self._lists[key]

    def voc_list(self, name):
        rel = f"ImageSets/Segmentation/{name}.txt"
        return self._list(("voc", name), os.path.join(self.voc_root, *rel.split("/")), rel)

    def sbd_list(self, name):
        if self.sbd_root is None:
            raise BuildError("train_aug and trainval_aug need --sbd-root (SBD's train/val lists)")
        return self._list(
            ("sbd", name), os.path.join(self.sbd_root, f"{name}.txt"), f"SBD {name}.txt"
        )

    def split_ids(self, split):
        """The sorted ids of a split, and the problems found in the lists it was made from.

        The ids come from set algebra on the lists, and sets have no stable order: sort them.
        """
        if split in VOC_SPLITS:
            lists = {"own": self.voc_list(split)}
        elif split in AUG_SPLITS:
            lists = {
                "voc_train": self.voc_list("train"),
                "sbd_train": self.sbd_list("train"),
                "sbd_val": self.sbd_list("val"),
                "voc_val": self.voc_list("val"),
            }
        else:
            raise BuildError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        ids = {name: set(found) for name, (found, _) in lists.items()}
        problems = [p for _, found_problems in lists.values() for p in found_problems]
        if split in VOC_SPLITS:
            return sorted(ids["own"]), problems
        train_aug = (ids["voc_train"] | ids["sbd_train"] | ids["sbd_val"]) - ids["voc_val"]
        if split == "train_aug":
            return sorted(train_aug), problems
        return sorted(train_aug | ids["voc_val"]), problems

    def source(self, sample_id):
        """Where an id's image and label come from; raises InvalidExampleError if missing."""
        voc_image = os.path.join(self.voc_root, "JPEGImages", f"{sample_id}.jpg")
        voc_label = os.path.join(self.label_dir, f"{sample_id}.png")
        sbd = self.sbd_root
        if os.path.isfile(voc_image):
            image_path, image_display = voc_image, f"JPEGImages/{sample_id}.jpg"
        elif sbd and os.path.isfile(os.path.join(sbd, "img", f"{sample_id}.jpg")):
            image_path = os.path.join(sbd, "img", f"{sample_id}.jpg")
            image_display = f"SBD img/{sample_id}.jpg"
        elif sbd:
            raise InvalidExampleError(
                f"missing file: neither JPEGImages/{sample_id}.jpg nor SBD img/{sample_id}.jpg "
                "exists"
            )
        else:
            raise InvalidExampleError(f"missing file: JPEGImages/{sample_id}.jpg")
        if os.path.isfile(voc_label):
            label_path, reader = voc_label, read_voc_label
            label_display = f"{self.label_dir_name}/{sample_id}.png"
            origin = VOC_LABEL_ORIGIN.format(self.label_dir_name)
        elif sbd and os.path.isfile(os.path.join(sbd, "cls", f"{sample_id}.mat")):
            label_path, reader = os.path.join(sbd, "cls", f"{sample_id}.mat"), read_sbd_label
            label_display, origin = f"SBD cls/{sample_id}.mat", SBD_LABEL_ORIGIN
        elif sbd:
            raise InvalidExampleError(
                f"missing file: neither {self.label_dir_name}/{sample_id}.png nor SBD "
                f"cls/{sample_id}.mat exists"
            )
        else:
            raise InvalidExampleError(f"missing file: {self.label_dir_name}/{sample_id}.png")
        return ExampleSource(
            id=sample_id,
            image_path=image_path,
            label_path=label_path,
            label_reader=reader,
            image_display=image_display,
            label_display=label_display,
            label_origin=origin,
        )

    def plan(self, split):
        """Returns ``(sources, skipped)`` for a split; raises BuildError on bad input."""
        ids, skipped = self.split_ids(split)
        if not ids:
            raise BuildError(f"split {split!r} is empty: its id lists name no example")
        sources = cli.plan_sources(ids, self.source, split, self.skip_invalid, skipped)
        return sources, skipped

    def inputs(self):
        return {
            "voc_root": os.path.abspath(self.voc_root),
            "sbd_root": os.path.abspath(self.sbd_root) if self.sbd_root else None,
            "voc_label_dir": os.path.abspath(self.label_dir),
        }


def build(
    voc_root,
    splits,
    output_dir,
    *,
    sbd_root=None,
    voc_label_dir=None,
    num_shards=None,
    num_workers=1,
    skip_invalid=False,
    progress=True,
):
    """Builds the splits one after the other. Returns ``{split: manifest}``.

    Every split is planned (lists read, files found) before any is written, so a bad list stops
    the run before it writes anything.
    """
    for split in splits:
        if split not in SPLITS:
            raise BuildError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    layout = VocLayout(voc_root, sbd_root, voc_label_dir, skip_invalid)
    plans = {split: layout.plan(split) for split in splits}
    return writer.write_splits(
        plans,
        output_dir,
        spec=load_spec("voc"),
        num_shards=num_shards,
        num_workers=num_workers,
        skip_invalid=skip_invalid,
        dataset="pascal_voc_2012" + ("+sbd" if layout.sbd_root else ""),
        extra={"created_by": "tfrecords_tools.voc", "inputs": layout.inputs()},
        progress=progress,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tfrecords_tools.voc",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--voc-root", required=True, help="VOCdevkit/VOC2012")
    parser.add_argument("--sbd-root", default=None, help="benchmark_RELEASE/dataset")
    parser.add_argument(
        "--splits", type=cli.split_parser(SPLITS), required=True, help=", ".join(SPLITS)
    )
    parser.add_argument(
        "--voc-label-dir",
        default=None,
        help="label folder of index PNGs, relative to --voc-root or not "
        "(default: SegmentationClass; e.g. SegmentationClassAug)",
    )
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    return cli.run_build(
        build, args, args.voc_root, sbd_root=args.sbd_root, voc_label_dir=args.voc_label_dir
    )


if __name__ == "__main__":
    sys.exit(main())
