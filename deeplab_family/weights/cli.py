"""Inspect a pretrained weights file, or convert it once into our own format.

    python -m deeplab_family.weights inspect PATH [--format F]
    python -m deeplab_family.weights convert PATH --config YAML --output FILE.weights.h5
                                     [--format F] [--set model.backbone.KEY=VALUE ...]

`inspect` prints the format, the tensor count, the architecture the file implies (depth, stem,
groups x width, stride placement, normalisation) and the `model.backbone` YAML that loads it.
`convert` builds the config's backbone, imports the file into it (checking that they fit) and
writes `FILE.weights.h5`, which `model.backbone_weights` then reads into any output stride.

Exit status (`deeplab_family.cli`): 0 done, 1 a file that cannot be read or does not fit the
config, 2 a bad command line.
"""

import argparse
import sys

import yaml

from deeplab_family import cli
from deeplab_family.weights.source import FORMATS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m deeplab_family.weights", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    formats = ["auto", *FORMATS]
    inspect = commands.add_parser("inspect", help="what a weights file holds")
    inspect.add_argument("path", help="weights file, checkpoint prefix or directory")
    inspect.add_argument("--format", default="auto", choices=formats)
    convert = commands.add_parser("convert", help="convert into our .weights.h5")
    convert.add_argument("path", help="weights file, checkpoint prefix or directory")
    convert.add_argument("--config", required=True,
                         help="experiment YAML whose model.backbone the weights go into")
    convert.add_argument("--output", required=True, help="FILE.weights.h5 to write")
    convert.add_argument("--format", default="auto", choices=formats)
    convert.add_argument("--set", dest="overrides", action="append", default=[],
                         metavar="SECTION.KEY=VALUE",
                         help="override a config value (YAML syntax); repeatable")
    args = parser.parse_args(argv)
    if args.command == "convert" and not args.output.endswith(".weights.h5"):
        parser.error(f"--output must end in .weights.h5. Received: {args.output}")
    return args


def format_inspection(info):
    """The text `inspect` prints: facts, then the YAML section that loads the file."""
    lines = [
        f"format: {info['format']}",
        f"path: {info['path']}",
        f"tensors: {info['tensors']} ({info['unused']} unused by the backbone)",
        f"architecture: {info['architecture']}",
    ]
    if info["head"]:
        lines.append(f"head layers: {', '.join(info['head'])}")
    lines += [f"note: {note}" for note in info["notes"]]
    section = yaml.safe_dump({"model": {"backbone": info["backbone"]}}, sort_keys=False,
                             default_flow_style=None)
    return "\n".join(lines) + "\n# the model.backbone keys that load it:\n" + section


def main(argv=None):
    args = parse_args(argv)
    try:
        from deeplab_family import weights

        if args.command == "inspect":
            print(format_inspection(weights.inspect(args.path, args.format)), end="")
            return cli.EXIT_OK
        from deeplab_family.config import load_config

        config = load_config(args.config, args.overrides)
        report = weights.convert(args.path, config.model.backbone, args.output, args.format)
    except cli.TOOL_ERRORS as e:
        return cli.error(e)
    print(report.summary(), file=sys.stderr)
    print(args.output)
    return cli.EXIT_OK
