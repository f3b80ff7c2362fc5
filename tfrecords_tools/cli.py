"""What the builders' command lines share: the argparse types, the common options
(``--output-dir``, ``--num-shards``, ``--num-workers``, ``--skip-invalid``, ``--no-progress``),
and running a build with them: the summary on stdout, or ``error: ...`` on stderr and exit code 1.
"""

import argparse
import os

from deeplab_family import _validation, cli
from tfrecords_tools.sources import InvalidExampleError
from tfrecords_tools.writer import DEFAULT_EXAMPLES_PER_SHARD, BuildError

# `--num-shards 0` exits with "argument --num-shards: must be an int >= 1. Received: 0".
positive_int = _validation.argparse_type(_validation.positive_int)


def split_parser(allowed):
    """An argparse type for a comma-separated list of split names out of ``allowed``.

    >>> split_parser(("train", "val"))("val, train,val")
    ['val', 'train']
    """

    def parse(text):
        splits = [s.strip() for s in text.split(",") if s.strip()]
        unknown = [s for s in splits if s not in allowed]
        if unknown or not splits:
            raise argparse.ArgumentTypeError(
                f"unknown split(s) {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(allowed)}"
            )
        return list(dict.fromkeys(splits))

    return parse


def default_num_workers():
    """The CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def add_common_arguments(parser):
    parser.add_argument("--output-dir", required=True, help="where the shards and manifests go")
    parser.add_argument(
        "--num-shards",
        type=positive_int,
        default=None,
        help=f"shards per split (default: one per {DEFAULT_EXAMPLES_PER_SHARD} examples)",
    )
    parser.add_argument(
        "--num-workers",
        type=positive_int,
        default=default_num_workers(),
        help="worker processes (default: the CPU count, at most 8)",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="record invalid examples in the manifest and go on, instead of stopping",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def plan_sources(ids, make_source, split, skip_invalid, skipped):
    """``[make_source(id) for id in ids]``, where an ``InvalidExampleError`` stops the build
    with the message (a ``BuildError``) or, with ``skip_invalid``, is recorded in ``skipped``."""
    sources = []
    for sample_id in ids:
        try:
            sources.append(make_source(sample_id))
        except InvalidExampleError as e:
            if not skip_invalid:
                raise BuildError(
                    f"{e} (id {sample_id} of split {split!r}; run with --skip-invalid to "
                    "record such examples in the manifest and go on)"
                ) from None
            skipped.append({"id": sample_id, "reason": str(e)})
    return sources


def print_summary(manifests, output_dir):
    for split, m in manifests.items():
        skipped = f", {len(m['skipped'])} skipped (see the manifest)" if m["skipped"] else ""
        print(
            f"{split}: {m['count']} examples in {m['num_shards']} shard(s) -> "
            f"{os.path.join(output_dir, split)}-*.tfrecord{skipped}"
        )


def run_build(build_fn, args, root, **options):
    """Runs `build_fn(root, splits, output_dir, ...)` with the common CLI options of
    `add_common_arguments`; prints the summary, or the error; returns the exit code."""
    try:
        manifests = build_fn(
            root,
            args.splits,
            args.output_dir,
            num_shards=args.num_shards,
            num_workers=args.num_workers,
            skip_invalid=args.skip_invalid,
            progress=not args.no_progress,
            **options,
        )
    except BuildError as e:
        return cli.error(e)
    print_summary(manifests, args.output_dir)
    return cli.EXIT_OK
