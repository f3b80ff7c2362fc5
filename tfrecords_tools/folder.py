"""Your own data: a folder of images and a folder of masks, read the way a dataset spec says.

    python -m tfrecords_tools.folder --images DIR --masks DIR --spec SPEC.yaml \\
        --splits train=train.txt,val=val.txt --output-dir DIR
    python -m tfrecords_tools.folder --images DIR --masks DIR --spec SPEC.yaml \\
        --splits train=0.9,val=0.1 --seed 0 --output-dir DIR

- **Images**: every ``.jpg``, ``.jpeg`` and ``.png`` under ``--images`` (any case, in subfolders
  too), stored byte for byte (a PNG stays a PNG). Hidden files and folders (``.DS_Store``,
  ``._a.jpg``) are passed over; other files are left out with a warning. An image's **id** is
  its path relative to ``--images`` without the extension, ``/``-separated: ``a`` for
  ``DIR/a.jpg``, ``street/a`` for ``DIR/street/a.png``. Two images with one id (``a.jpg`` and
  ``a.png``) are an error naming both.
- **Masks**: ``<id>.png`` under ``--masks`` (the same relative path). They are read with the
  spec (``deeplab_family.data.spec``): ``index`` masks through its label map, ``color`` masks
  through its palette; a value or colour the spec does not know is an error naming the mask, the
  value and its pixel count. An image without a mask is an error naming the image; a mask without
  an image is a warning, and the manifests list it (``masks_without_image``).
- **Splits**, ``name=VALUE`` separated by commas. A value is either a file of ids (one per line;
  blank lines and lines starting with ``#`` are passed over) or a fraction in (0, 1] for a
  random split, seeded by ``--seed``: the ids are sorted, shuffled with the seed, and dealt out in
  the order of the split names (not the command line's), each split taking its fraction of them,
  rounded so that the counts add up. Fractions must sum to at most 1; what is left over is in no
  split. Lists and fractions may be mixed: the fractions then split the ids that no list names
  (a fixed test list, a random train/val of the rest). Images that no split takes are not
  written.

Every split is planned (lists read, masks matched) before any is written, so a layout error
stops the run with nothing written. The mask contents are checked while a split is written;
a bad mask stops that split with nothing of it written (a split written before it in the same
run stays, complete, with its manifest). ``--skip-invalid`` records bad examples in the
manifest and goes on. A spec that does not load or validate (unknown keys, duplicate colours in a
colour spec, a palette shorter than the classes) is an error naming the spec file, before
anything is written. The manifests carry the spec, so training, evaluation, TensorBoard,
``predict`` and the export know the classes and colours.
"""

import argparse
import functools
import math
import os
import re
import sys

import numpy as np

from deeplab_family import _validation
from deeplab_family.data.spec import SpecError, load_spec
from tfrecords_tools import cli, writer
from tfrecords_tools.sources import ExampleSource, InvalidExampleError, read_spec_label
from tfrecords_tools.writer import BuildError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MASK_EXTENSION = ".png"
CREATED_BY = "tfrecords_tools.folder"

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
# A number, not a path: `0.9`, `.25`, `1`. ("inf" and "1e-1" are read as file names.)
_FRACTION = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)$")
_SPLIT_HELP = (
    "--splits takes NAME=FILE (ids, one per line) or NAME=FRACTION (in (0, 1], e.g. val=0.1)"
)
_FLOAT_SLACK = 1e-9  # 0.7 + 0.2 + 0.1 is 0.9999999999999999; 0.6 + 0.3 + 0.1 is 1.0000000000000002


def _warn(message):
    print(f"warning: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Splits.
# --------------------------------------------------------------------------------------------


def split_rules(splits):
    """Checks ``{name: list path or fraction}`` (or its ``name=value,...`` text) and returns it
    as a dict, fractions as floats. Raises ValueError with what is wrong and the rule.

    >>> split_rules("train=0.9,val=lists/val.txt")
    {'train': 0.9, 'val': 'lists/val.txt'}
    """
    if isinstance(splits, str):
        rules = {}
        for item in (s.strip() for s in splits.split(",")):
            if not item:
                continue
            name, sep, value = (part.strip() for part in item.partition("="))
            if not sep or not name or not value:
                raise ValueError(f"{item!r} is not NAME=VALUE; {_SPLIT_HELP}")
            if name in rules:
                raise ValueError(f"split {name!r} is given twice")
            rules[name] = float(value) if _FRACTION.match(value) else value
    else:
        rules = dict(splits)
    if not rules:
        raise ValueError(f"no split given; {_SPLIT_HELP}")
    for name, value in rules.items():
        if not isinstance(name, str) or not _SPLIT_NAME.match(name):
            raise ValueError(f"split name {name!r} must match [A-Za-z0-9_]+")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"split {name}: {value!r} is neither a list file nor a fraction")
        if not isinstance(value, str):
            if not 0 < value <= 1:
                raise ValueError(
                    f"split {name}={value}: a fraction must be in (0, 1]; {_SPLIT_HELP}"
                )
            rules[name] = float(value)
    total = sum(v for v in rules.values() if not isinstance(v, str))
    if total > 1 + _FLOAT_SLACK:
        given = " + ".join(f"{n}={v:g}" for n, v in rules.items() if not isinstance(v, str))
        raise ValueError(f"the fractions sum to {total:g} ({given}); they must sum to at most 1")
    return rules


def _parse_splits(text):
    try:
        return split_rules(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def fraction_split(ids, fractions, seed=0):
    """Deals the ids out to the splits at random, deterministically: ``{split: sorted ids}``.

    The ids are sorted and shuffled with ``seed``; the splits, in name order, take consecutive
    runs of the shuffled list. A split takes ``fraction * len(ids)`` ids, rounded by largest
    remainder so that the counts add up to ``round(sum(fractions) * len(ids))``.

    >>> fraction_split(["a", "b", "c", "d", "e", "f", "g", "h"], {"val": 0.25, "train": 0.75})
    {'train': ['a', 'c', 'd', 'e', 'f', 'g'], 'val': ['b', 'h']}
    """
    ids = sorted(ids)
    n = len(ids)
    names = sorted(fractions)
    exact = [fractions[name] * n for name in names]
    counts = [math.floor(x + _FLOAT_SLACK) for x in exact]
    total = min(n, round(sum(exact)))
    by_remainder = sorted(range(len(names)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: max(0, total - sum(counts))]:
        counts[i] += 1
    order = np.random.default_rng(seed).permutation(n)
    out, start = {}, 0
    for name, count in zip(names, counts, strict=True):
        out[name] = sorted(ids[k] for k in order[start : start + count])
        start += count
    return out


def read_id_list(path, skipped, skip_invalid):
    """The ids of a split list: one per line; blank lines and ``#`` lines are passed over.

    Returns ``[(id, line number)]``; a duplicate raises, or is recorded in ``skipped``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise BuildError(f"missing file: split list {path}; {_SPLIT_HELP}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BuildError(f"cannot read split list {path}: {e}") from None
    ids, first_line = [], {}
    for number, line in enumerate(lines, start=1):
        sample_id = line.strip()
        if not sample_id or sample_id.startswith("#"):
            continue
        if sample_id in first_line:
            message = (
                f"id {sample_id!r} on line {number} of {path} is a duplicate (first on line "
                f"{first_line[sample_id]})"
            )
            if not skip_invalid:
                raise BuildError(message)
            skipped.append({"id": sample_id, "reason": message})
            continue
        first_line[sample_id] = number
        ids.append((sample_id, number))
    return ids


# --------------------------------------------------------------------------------------------
# Finding the files.
# --------------------------------------------------------------------------------------------


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def scan_folder(root, extensions, exclude=None):
    """The files under ``root`` by id (relative path without the extension, ``/``-separated).

    Hidden files and folders are passed over, and so is the ``exclude`` folder when it is
    inside ``root``.

    Returns:
        ``(found, others)``: ``{id: [relative paths]}`` of the files with one of
        ``extensions`` (any case; more than one path is a clash), and the same of the others.
    """
    if exclude is not None and not _inside(exclude, root):
        exclude = None
    found, others = {}, {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and not (exclude and _inside(os.path.join(folder, d), exclude))
        )
        for name in sorted(files):
            if name.startswith("."):
                continue
            rel = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
            stem, ext = os.path.splitext(rel)
            target = found if ext.lower() in extensions else others
            target.setdefault(stem, []).append(rel)
    return found, others


def _listed(paths, limit=3):
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(paths[:limit]) + more


class FolderLayout:
    """The images, the masks and the spec; plans the splits.

    Args:
        images_dir: str. The image folder.
        masks_dir: str. The mask folder (it may be inside ``images_dir``; it is passed over
            there).
        spec: ``DatasetSpec``.
        skip_invalid: bool. Record bad examples instead of stopping.
    """

    def __init__(self, images_dir, masks_dir, spec, skip_invalid=False):
        for flag, path in (("--images", images_dir), ("--masks", masks_dir)):
            if not os.path.isdir(path):
                raise BuildError(f"{flag} {path}: no such folder")
        if os.path.realpath(images_dir) == os.path.realpath(masks_dir):
            raise BuildError(
                f"--images and --masks are the same folder ({images_dir}); keep the masks in a "
                "folder of their own (their ids would clash with PNG images)"
            )
        self.images_dir, self.masks_dir = images_dir, masks_dir
        self.spec = spec
        self.skip_invalid = skip_invalid
        self.pool_size = 0
        # Either folder may hold the other (data/ and data/masks/): each scan passes over it.
        self.images, ignored = scan_folder(images_dir, IMAGE_EXTENSIONS, exclude=masks_dir)
        if not self.images:
            raise BuildError(f"no JPEG or PNG image under --images {images_dir}")
        ignored = sorted(p for paths in ignored.values() for p in paths)
        if ignored:
            _warn(
                f"{len(ignored)} file(s) under {images_dir} are not .jpg, .jpeg or .png and are "
                f"left out: {_listed(ignored)}"
            )
        self.masks, self.other_masks = scan_folder(masks_dir, (MASK_EXTENSION,), images_dir)
        self.masks_without_image = sorted(
            p for i, paths in self.masks.items() if i not in self.images for p in paths
        )
        if self.masks_without_image:
            _warn(
                f"{len(self.masks_without_image)} mask(s) under {masks_dir} have no image and "
                f"are left out: {_listed(self.masks_without_image)}"
            )
        self._reader = functools.partial(read_spec_label, spec)

    def _image_display(self, rel):
        return os.path.join(self.images_dir, rel)

    def _mask_display(self, rel):
        return os.path.join(self.masks_dir, rel)

    def listed_ids(self, path):
        """``(ids, skipped)`` of a split list, each id checked against the images."""
        ids, skipped = [], []
        for sample_id, line in read_id_list(path, skipped, self.skip_invalid):
            if sample_id in self.images:
                ids.append(sample_id)
                continue
            message = (
                f"id {sample_id!r} on line {line} of {path}: no image {sample_id}.jpg, .jpeg or "
                f".png under --images {self.images_dir} (ids are image paths relative to "
                "--images, without the extension)"
            )
            if not self.skip_invalid:
                raise BuildError(message)
            skipped.append({"id": sample_id, "reason": message})
        return ids, skipped

    def assign(self, rules, seed):
        """``{split: (ids, skipped)}`` in the order of ``rules``; the fractions split the ids
        that no list names (images named in a list with a problem count as named)."""
        assigned = {s: self.listed_ids(r) for s, r in rules.items() if isinstance(r, str)}
        listed = {i for ids, skipped in assigned.values() for i in ids + [s["id"] for s in skipped]}
        fractions = {s: r for s, r in rules.items() if not isinstance(r, str)}
        if fractions:
            pool = sorted(set(self.images) - listed)
            self.pool_size = len(pool)
            for split, ids in fraction_split(pool, fractions, seed).items():
                if not ids:
                    raise BuildError(
                        f"split {split}={fractions[split]:g} of {len(pool)} image(s) is empty; "
                        "give it a larger fraction"
                    )
                assigned[split] = (ids, [])
        return {split: assigned[split] for split in rules}

    def source(self, sample_id):
        """The ``ExampleSource`` of an id; an ambiguous id or a missing mask raises
        InvalidExampleError naming the files."""
        images = self.images[sample_id]
        if len(images) > 1:
            shown = " and ".join(self._image_display(p) for p in images)
            raise InvalidExampleError(
                f"images {shown} have the same id {sample_id!r}; keep one (ids are paths "
                "relative to --images without the extension)"
            )
        masks = self.masks.get(sample_id, [])
        if len(masks) > 1:
            shown = " and ".join(self._mask_display(p) for p in masks)
            raise InvalidExampleError(f"masks {shown} have the same id {sample_id!r}; keep one")
        if not masks:
            expected = self._mask_display(sample_id + MASK_EXTENSION)
            message = f"no mask for image {self._image_display(images[0])}: expected {expected}"
            others = self.other_masks.get(sample_id)
            if others:
                message += (
                    f" (found {self._mask_display(others[0])}; masks must be PNG: JPEG "
                    "compression changes the values)"
                )
            raise InvalidExampleError(message)
        return ExampleSource(
            id=sample_id,
            image_path=os.path.join(self.images_dir, *images[0].split("/")),
            label_path=os.path.join(self.masks_dir, *masks[0].split("/")),
            label_reader=self._reader,
            image_display=self._image_display(images[0]),
            label_display=self._mask_display(masks[0]),
            label_origin=f"{self.spec.encoding} masks",
        )

    def plan(self, split, ids, skipped):
        """``(sources, skipped)`` of one split; a problem raises BuildError or is skipped."""
        sources = cli.plan_sources(ids, self.source, split, self.skip_invalid, skipped)
        if not sources:
            reasons = "; ".join(f"{s['id']}: {s['reason']}" for s in skipped[:3])
            raise BuildError(
                f"split {split!r} is empty: no example to write"
                + (f" (all {len(skipped)} were skipped: {reasons})" if skipped else "")
            )
        return sources, skipped


def build(
    images_dir,
    splits,
    output_dir,
    *,
    masks_dir,
    spec,
    seed=0,
    num_shards=None,
    num_workers=1,
    skip_invalid=False,
    progress=True,
):
    """Builds the splits one after the other. Returns ``{split: manifest}``.

    Args:
        images_dir: str. The image folder.
        splits: ``{name: list path or fraction}`` or its ``name=value,...`` text.
        output_dir: str. Where the shards and manifests go.
        masks_dir: str. The mask folder.
        spec: str or ``DatasetSpec``. A YAML path or a built-in spec name (``load_spec``).
        seed: int. Seeds the fraction splits.
        num_shards, num_workers, skip_invalid, progress: as in ``writer.write_split``.

    Raises:
        BuildError: the message names the file and the problem.
    """
    try:
        rules = split_rules(splits)
    except ValueError as e:
        raise BuildError(f"--splits: {e}") from None
    _validation.positive_int("seed", seed, minimum=0)
    try:
        spec = load_spec(spec)
    except SpecError as e:
        raise BuildError(str(e)) from None
    layout = FolderLayout(images_dir, masks_dir, spec, skip_invalid)
    plans = {
        split: layout.plan(split, ids, skipped)
        for split, (ids, skipped) in layout.assign(rules, seed).items()
    }
    inputs = {
        "images": os.path.abspath(images_dir),
        "masks": os.path.abspath(masks_dir),
        "spec": os.path.abspath(spec.source) if spec.source else spec.name,
    }
    manifests = {}
    with writer.WorkerPool(num_workers) as pool:
        for split, (sources, skipped) in plans.items():
            rule = rules[split]
            if isinstance(rule, str):
                split_rule = {"list": os.path.abspath(rule)}
            else:
                split_rule = {"fraction": rule, "seed": seed, "of": layout.pool_size}
            manifests[split] = writer.write_split(
                split,
                sources,
                output_dir,
                spec=spec,
                num_shards=num_shards,
                num_workers=num_workers,
                skip_invalid=skip_invalid,
                skipped=skipped,
                extra={
                    "created_by": CREATED_BY,
                    "inputs": {**inputs, "split": split_rule},
                    "masks_without_image": layout.masks_without_image,
                },
                progress=progress,
                pool=pool,
            )
    return manifests


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tfrecords_tools.folder",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--images", required=True, help="the image folder (JPEG or PNG)")
    parser.add_argument("--masks", required=True, help="the mask folder (<id>.png)")
    parser.add_argument(
        "--spec", required=True, help="dataset spec: a YAML file or a built-in name (voc, ...)"
    )
    parser.add_argument(
        "--splits",
        type=_parse_splits,
        required=True,
        help="NAME=FILE or NAME=FRACTION, comma-separated: train=train.txt,val=val.txt or "
        "train=0.9,val=0.1",
    )
    parser.add_argument(
        "--seed",
        type=_validation.argparse_type(_validation.positive_int, minimum=0),
        default=0,
        help="seed of the fraction splits (default: 0)",
    )
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    return cli.run_build(
        build, args, args.images, masks_dir=args.masks, spec=args.spec, seed=args.seed
    )


if __name__ == "__main__":
    sys.exit(main())
