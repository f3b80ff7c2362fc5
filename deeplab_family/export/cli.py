"""Export a trained model: a SavedModel for TF Serving, and TFLite models.

    python -m deeplab_family.export [--config YAML] --model-dir DIR --export-dir DIR
                                    [--tflite float32,float16,dynamic,int8] [--set k=v ...]

The latest checkpoint of `<model-dir>/checkpoints/` is restored into the model built at
`export.output_stride` (8 by default, as the papers evaluate: the weights do not depend on the
output stride). Without `--config`, the resolved `<model-dir>/config.yaml` is used.

Writes the next version `<export-dir>/<n>/` (see `deeplab_family.export`) and prints, as the
last line on stdout, `{"saved_model": <version dir>, "tflite": {<mode>: <file>}}`.

Exit status (`deeplab_family.cli`): 0 done, 1 a config that does not load, no checkpoint or
one that does not fit, 2 a bad command line or no config for the model dir.
"""

import argparse
import json
import os
import sys

from deeplab_family import cli
from deeplab_family.export.export_dir import export
from deeplab_family.export.tflite import TFLITE_MODES, check_modes


def _modes(values):
    """The `--tflite` values, split at commas and checked (`tflite.check_modes`)."""
    modes = [m.strip() for value in values for m in value.split(",") if m.strip()]
    return check_modes(modes, what="--tflite mode")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m deeplab_family.export", description=__doc__.split("\n")[0]
    )
    cli.add_experiment_arguments(parser, "the training model dir (checkpoints/, config.yaml)")
    parser.add_argument("--export-dir", required=True,
                        help="TF Serving base path; a new <version>/ is written in it")
    parser.add_argument("--tflite", action="append", metavar="MODE[,MODE]", nargs="+",
                        help=f"also convert to TFLite: {', '.join(TFLITE_MODES)}")
    args = parser.parse_args(argv)
    try:
        args.tflite = _modes([v for group in args.tflite or () for v in group])
    except ValueError as e:
        parser.error(str(e))
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        config = cli.load_experiment_config(args.config, args.model_dir, args.overrides)
        info = export(config, args.model_dir, args.export_dir, args.tflite,
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    except cli.TOOL_ERRORS as e:
        return cli.error(e)
    summary = {"saved_model": info["path"],
               "tflite": {m: os.path.join(info["path"], t["file"])
                          for m, t in info["tflite"].items()}}
    print(json.dumps(summary))
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
