"""Cityscapes (fine and coarse annotations) to TFRecord shards.

    python -m tfrecords_tools.cityscapes --cityscapes-root DIR --splits train,val --output-dir DIR

Splits, each made of parts ``leftImg8bit/<folder>/<city>/<id>_leftImg8bit.png`` with the label
``<gt>/<folder>/<city>/<id>_<gt>_labelIds.png``:

- ``train``, ``val``: the 2975 and 500 finely annotated images (``gtFine``).
- ``train_extra``: the 19998 coarsely annotated images (``gtCoarse/train_extra``).
- ``train_coarse``: ``train`` (fine) + ``train_extra`` (coarse), 22973 images.
- ``trainval_coarse``: ``train`` + ``val`` (fine) + ``train_extra`` (coarse), 23473 images.

``trainval_coarse`` is DeepLabv3's (Appendix C: "the 3475 finely annotated images and the extra
20000 coarsely annotated images"); research/deeplab lists it, and ``train_coarse``, with these
sizes. Cityscapes also ships ``gtCoarse`` for train and val, but where an image has a fine
annotation the combined splits use it: it is the better one (as VOC's over SBD's). Every part
must be present: a ``trainval_coarse`` without ``train_extra`` on disk is an error, not a
silently fine-only split. The id is ``<city>_<seq>_<frame>``; cities do not repeat across the
folders, and a combined split whose parts share an id is an error naming both files.

Label ids go through the ``cityscapes`` dataset spec (``deeplab_family/data/specs``), whose
label map is the official table (id -> the 19 train ids, 255 for everything ignored); an id
above 33 is an error naming the file. The manifests carry the spec. The image PNG is stored byte
for byte (``image/format`` = ``png``), as research/deeplab does.
"""

import argparse
import functools
import glob
import os
import sys

import numpy as np

from deeplab_family.data.spec import load_spec
from tfrecords_tools import cli, writer
from tfrecords_tools.sources import (
    LABEL_VALUES,
    ExampleSource,
    InvalidExampleError,
    read_index_png,
)
from tfrecords_tools.writer import BuildError

IMAGE_SUFFIX = "_leftImg8bit.png"
FINE, COARSE = "gtFine", "gtCoarse"
# Split -> its parts, (folder under leftImg8bit/, annotation). The fine annotation wins where an
# image has both (see the module docstring).
PARTS = {
    "train": (("train", FINE),),
    "val": (("val", FINE),),
    "train_extra": (("train_extra", COARSE),),
    "train_coarse": (("train", FINE), ("train_extra", COARSE)),
    "trainval_coarse": (("train", FINE), ("val", FINE), ("train_extra", COARSE)),
}
SPLITS = tuple(PARTS)
# The manifest's "dataset" of each split.
DATASET_NAMES = {(FINE,): "cityscapes_fine", (COARSE,): "cityscapes_coarse"}


def label_suffix(annotation):
    return f"_{annotation}_labelIds.png"


def read_cityscapes_label(spec, path, display):
    """A ``*_labelIds.png`` (gtFine or gtCoarse), mapped by the spec's label map to train ids
    (0..18, 255 = ignore). Bind the spec with ``functools.partial`` for an ``ExampleSource``."""
    label_ids = read_index_png(path, display)
    table = spec.lookup_table()
    max_id = max(spec.label_map)
    counts = np.bincount(label_ids.ravel(), minlength=LABEL_VALUES)
    # 255 too is refused, though the spec reads it as ignore: labelIds files never hold it, and
    # a *_labelTrainIds.png (0..18 and 255) given in their place would otherwise pass, mis-mapped.
    bad = np.flatnonzero((counts > 0) & ((table < 0) | (np.arange(LABEL_VALUES) > max_id)))
    if bad.size:
        more = f" (other bad ids: {', '.join(map(str, bad[1:6]))})" if bad.size > 1 else ""
        hint = "; is it a *_labelTrainIds.png?" if bad[-1] == 255 else ""
        raise InvalidExampleError(
            f"label id {bad[0]} in {display} is not a Cityscapes label id "
            f"(0..{max_id}): {int(counts[bad[0]])} pixels{more}{hint}"
        )
    return table[label_ids].astype(np.uint8)


def resolve_root(path):
    for candidate in (path, os.path.join(path, "cityscapes")):
        if os.path.isdir(os.path.join(candidate, "leftImg8bit")):
            return candidate
    raise BuildError(f"--cityscapes-root {path} has no leftImg8bit folder")


def dataset_name(split):
    return DATASET_NAMES.get(tuple(sorted({a for _, a in PARTS[split]})), "cityscapes_fine+coarse")


def plan(root, split, spec, skip_invalid=False):
    """Returns ``(sources, skipped)``: one source per image, its id ``<city>_<seq>_<frame>``."""
    reader = functools.partial(read_cityscapes_label, spec)  # picklable, for the workers
    sources, skipped, first_seen = [], [], {}
    for folder, annotation in PARTS[split]:
        pattern = os.path.join(glob.escape(root), "leftImg8bit", folder, "*", "*" + IMAGE_SUFFIX)
        images = sorted(glob.glob(pattern))
        if not images:
            wanted = f"leftImg8bit/{folder}/*/*{IMAGE_SUFFIX}"
            if len(PARTS[split]) == 1:
                raise BuildError(f"split {split!r} is empty: no {wanted}")
            raise BuildError(
                f"split {split!r} needs {wanted} (its {folder} part, with {annotation} labels): "
                "none found"
            )
        for image_path in images:
            city = os.path.basename(os.path.dirname(image_path))
            sample_id = os.path.basename(image_path)[: -len(IMAGE_SUFFIX)]
            image_rel = f"leftImg8bit/{folder}/{city}/{sample_id}{IMAGE_SUFFIX}"
            label_rel = f"{annotation}/{folder}/{city}/{sample_id}{label_suffix(annotation)}"
            label_path = os.path.join(root, *label_rel.split("/"))
            message = None
            if sample_id in first_seen:
                message = f"duplicate id {sample_id}: {image_rel} and {first_seen[sample_id]}"
            elif not os.path.isfile(label_path):
                message = f"missing file: {label_rel}"
            if message is not None:
                if not skip_invalid:
                    raise BuildError(f"{message} (run with --skip-invalid to record it and go on)")
                skipped.append({"id": sample_id, "reason": message})
                continue
            first_seen[sample_id] = image_rel
            sources.append(
                ExampleSource(
                    id=sample_id,
                    image_path=image_path,
                    label_path=label_path,
                    label_reader=reader,
                    image_display=image_rel,
                    label_display=label_rel,
                    label_origin=f"{annotation} labelIds",
                )
            )
    return sources, skipped


def build(
    root, splits, output_dir, *, num_shards=None, num_workers=1, skip_invalid=False, progress=True
):
    """Builds the splits one after the other. Returns ``{split: manifest}``.

    Every split is planned (files found) before any is written.
    """
    root = resolve_root(root)
    for split in splits:
        if split not in SPLITS:
            raise BuildError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    spec = load_spec("cityscapes")
    plans = {split: plan(root, split, spec, skip_invalid) for split in splits}
    extra = {
        "created_by": "tfrecords_tools.cityscapes",
        "inputs": {"cityscapes_root": os.path.abspath(root)},
    }
    return writer.write_splits(
        plans,
        output_dir,
        spec=spec,
        num_shards=num_shards,
        num_workers=num_workers,
        skip_invalid=skip_invalid,
        extra=extra,
        progress=progress,
        # Each split's own dataset name (fine, coarse or both).
        split_options={split: {"dataset": dataset_name(split)} for split in plans},
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tfrecords_tools.cityscapes",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--cityscapes-root",
        required=True,
        help="the folder holding leftImg8bit/ and gtFine/ (and gtCoarse/ for the coarse splits)",
    )
    parser.add_argument(
        "--splits",
        type=cli.split_parser(SPLITS),
        default=["train", "val"],
        help=f"{', '.join(SPLITS)} (default: train,val)",
    )
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    return cli.run_build(build, args, args.cityscapes_root)


if __name__ == "__main__":
    sys.exit(main())
