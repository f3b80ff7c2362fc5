"""Cityscapes (fine annotations) to TFRecord shards.

    python -m tfrecords_tools.cityscapes --cityscapes-root DIR --splits train,val --output-dir DIR

Reads ``leftImg8bit/<split>/<city>/<id>_leftImg8bit.png`` and
``gtFine/<split>/<city>/<id>_gtFine_labelIds.png``. Label ids are mapped to the 19 train ids by
the official Cityscapes table (``deeplab_family.data.classes``), 255 for everything ignored. The
image PNG is stored byte for byte (``image/format`` = ``png``), as research/deeplab does.
"""

import argparse
import glob
import os
import sys

import numpy as np

from deeplab_family.data import classes
from tfrecords_tools import cli, writer
from tfrecords_tools.sources import ExampleSource, InvalidExampleError, read_index_png
from tfrecords_tools.writer import BuildError

SPLITS = ("train", "val")
NUM_CLASSES = classes.CITYSCAPES_NUM_CLASSES  # 19
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
_ID_TO_TRAIN_ID = classes.cityscapes_id_to_train_id()


def read_cityscapes_label(path, display):
    """A ``*_gtFine_labelIds.png``, mapped to train ids (0..18, 255 = ignore)."""
    label_ids = read_index_png(path, display)
    if label_ids.size and label_ids.max() > classes.CITYSCAPES_MAX_LABEL_ID:
        bad = np.unique(label_ids[label_ids > classes.CITYSCAPES_MAX_LABEL_ID])
        raise InvalidExampleError(
            f"label id {bad[0]} in {display} is not a Cityscapes label id "
            f"(0..{classes.CITYSCAPES_MAX_LABEL_ID})"
        )
    return _ID_TO_TRAIN_ID[label_ids]


def resolve_root(path):
    for candidate in (path, os.path.join(path, "cityscapes")):
        if os.path.isdir(os.path.join(candidate, "leftImg8bit")):
            return candidate
    raise BuildError(f"--cityscapes-root {path} has no leftImg8bit folder")


def plan(root, split, skip_invalid=False):
    """Returns ``(sources, skipped)``: one source per image, its id ``<city>_<seq>_<frame>``."""
    pattern = os.path.join(glob.escape(root), "leftImg8bit", split, "*", "*" + IMAGE_SUFFIX)
    images = sorted(glob.glob(pattern))
    if not images:
        raise BuildError(f"split {split!r} is empty: no leftImg8bit/{split}/*/*{IMAGE_SUFFIX}")
    sources, skipped = [], []
    for image_path in images:
        city = os.path.basename(os.path.dirname(image_path))
        sample_id = os.path.basename(image_path)[: -len(IMAGE_SUFFIX)]
        label_rel = f"gtFine/{split}/{city}/{sample_id}{LABEL_SUFFIX}"
        label_path = os.path.join(root, *label_rel.split("/"))
        if not os.path.isfile(label_path):
            message = f"missing file: {label_rel}"
            if not skip_invalid:
                raise BuildError(f"{message} (run with --skip-invalid to record it and go on)")
            skipped.append({"id": sample_id, "reason": message})
            continue
        sources.append(
            ExampleSource(
                id=sample_id,
                image_path=image_path,
                label_path=label_path,
                label_reader=read_cityscapes_label,
                image_display=f"leftImg8bit/{split}/{city}/{sample_id}{IMAGE_SUFFIX}",
                label_display=label_rel,
                label_origin="gtFine labelIds",
            )
        )
    return sources, skipped


def build(
    root, splits, output_dir, *, num_shards=None, num_workers=1, skip_invalid=False, progress=True
):
    """Builds the splits one after the other. Returns ``{split: manifest}``."""
    root = resolve_root(root)
    for split in splits:
        if split not in SPLITS:
            raise BuildError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    plans = {split: plan(root, split, skip_invalid) for split in splits}
    return writer.write_splits(
        plans,
        output_dir,
        num_classes=NUM_CLASSES,
        num_shards=num_shards,
        num_workers=num_workers,
        skip_invalid=skip_invalid,
        dataset="cityscapes_fine",
        extra={
            "created_by": "tfrecords_tools.cityscapes",
            "inputs": {"cityscapes_root": os.path.abspath(root)},
        },
        progress=progress,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tfrecords_tools.cityscapes",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--cityscapes-root", required=True, help="the folder holding leftImg8bit/ and gtFine/"
    )
    parser.add_argument(
        "--splits",
        type=cli.split_parser(SPLITS),
        default=["train", "val"],
        help="train, val (default: both)",
    )
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    return cli.run_build(build, args, args.cityscapes_root)


if __name__ == "__main__":
    sys.exit(main())
