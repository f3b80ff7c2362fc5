"""ADE20K SceneParsing (ADEChallengeData2016, 150 classes) to TFRecord shards.

    python -m tfrecords_tools.ade20k --ade-root ADEChallengeData2016 --splits train,val \\
        --output-dir DIR

Reads ``images/<folder>/<id>.jpg`` and ``annotations/<folder>/<id>.png`` (``training`` for
``train``, ``validation`` for ``val``); the id is the file stem (``ADE_train_00000001``).
``--ade-root`` is ``ADEChallengeData2016`` itself or the folder holding it.

Annotations are grayscale PNGs of 0..150, 0 meaning "other objects" (not labelled). They go
through the ``ade20k`` dataset spec (``deeplab_family/data/specs/ade20k.yaml``), whose
``reduce_zero_label`` stores 0 as 255 (ignore) and ``k`` as class ``k - 1``, so that wall (1) is
class 0: the 150-class convention of the benchmark's evaluation (mmsegmentation's). A value
above 150 is an error naming the file. The JPEG is stored byte for byte; the manifests carry the
spec.

Bad input (an image without its annotation, a corrupt file, an image and annotation of
different sizes, an empty split) stops the split with a message naming the file and leaves no
shard behind; ``--skip-invalid`` records such examples in the manifest and goes on.
"""

import argparse
import functools
import glob
import os
import sys

from deeplab_family.data.spec import load_spec
from tfrecords_tools import cli, writer
from tfrecords_tools.sources import ExampleSource, read_spec_label
from tfrecords_tools.writer import BuildError

ROOT_NAME = "ADEChallengeData2016"
# Split name -> the folder under images/ and annotations/.
FOLDERS = {"train": "training", "val": "validation"}
SPLITS = tuple(FOLDERS)
IMAGE_SUFFIX = ".jpg"
LABEL_SUFFIX = ".png"
LABEL_ORIGIN = "ADEChallengeData2016 annotations"


def resolve_root(path):
    """Accepts ``ADEChallengeData2016`` itself, or the folder holding it."""
    for candidate in (path, os.path.join(path, ROOT_NAME)):
        if os.path.isdir(os.path.join(candidate, "images")) and os.path.isdir(
            os.path.join(candidate, "annotations")
        ):
            return candidate
    raise BuildError(
        f"--ade-root {path} does not look like {ROOT_NAME}: no images/ and annotations/ folders "
        "in it or in its ADEChallengeData2016/"
    )


def plan(root, split, spec, skip_invalid=False):
    """Returns ``(sources, skipped)``: one source per image of the split, its id the stem."""
    folder = FOLDERS[split]
    pattern = os.path.join(glob.escape(root), "images", folder, "*" + IMAGE_SUFFIX)
    images = sorted(glob.glob(pattern))
    if not images:
        raise BuildError(f"split {split!r} is empty: no images/{folder}/*{IMAGE_SUFFIX}")
    reader = functools.partial(read_spec_label, spec)  # picklable, for the worker processes
    sources, skipped = [], []
    for image_path in images:
        sample_id = os.path.basename(image_path)[: -len(IMAGE_SUFFIX)]
        label_rel = f"annotations/{folder}/{sample_id}{LABEL_SUFFIX}"
        label_path = os.path.join(root, "annotations", folder, sample_id + LABEL_SUFFIX)
        if not os.path.isfile(label_path):
            message = (
                f"missing file: {label_rel} (the annotation of images/{folder}/{sample_id}"
                f"{IMAGE_SUFFIX})"
            )
            if not skip_invalid:
                raise BuildError(f"{message}; run with --skip-invalid to record it and go on")
            skipped.append({"id": sample_id, "reason": message})
            continue
        sources.append(
            ExampleSource(
                id=sample_id,
                image_path=image_path,
                label_path=label_path,
                label_reader=reader,
                image_display=f"images/{folder}/{sample_id}{IMAGE_SUFFIX}",
                label_display=label_rel,
                label_origin=LABEL_ORIGIN,
            )
        )
    return sources, skipped


def build(
    root, splits, output_dir, *, num_shards=None, num_workers=1, skip_invalid=False, progress=True
):
    """Builds the splits one after the other. Returns ``{split: manifest}``.

    Every split is planned (files found) before any is written.
    """
    for split in splits:
        if split not in SPLITS:
            raise BuildError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    root = resolve_root(root)
    spec = load_spec("ade20k")
    plans = {split: plan(root, split, spec, skip_invalid) for split in splits}
    return writer.write_splits(
        plans,
        output_dir,
        spec=spec,
        num_shards=num_shards,
        num_workers=num_workers,
        skip_invalid=skip_invalid,
        dataset="ade20k_sceneparsing",
        extra={
            "created_by": "tfrecords_tools.ade20k",
            "inputs": {"ade_root": os.path.abspath(root)},
        },
        progress=progress,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tfrecords_tools.ade20k",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--ade-root",
        required=True,
        help=f"{ROOT_NAME} (holding images/ and annotations/), or the folder holding it",
    )
    parser.add_argument(
        "--splits",
        type=cli.split_parser(SPLITS),
        default=list(SPLITS),
        help="train, val (default: both)",
    )
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    return cli.run_build(build, args, args.ade_root)


if __name__ == "__main__":
    sys.exit(main())
