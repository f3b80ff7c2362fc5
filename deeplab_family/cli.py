"""What the command-line tools share: exit statuses, the error line and the `--config` rule.

A library for `train`, `evaluate`, `export` and `predict`, not a command line itself: it
imports nothing but the standard library at load time, so `--help` stays fast.

Exit statuses, the same for every tool:

- `EXIT_OK` (0): done.
- `EXIT_FAILURE` (1): what the command line names does not work: a config that does not load
  or validate, a model dir without a checkpoint, a checkpoint that does not fit the model, an
  image that `predict` could not segment.
- `EXIT_USAGE` (2): the command line leads to nothing to run: argparse rejects it (argparse
  exits with 2 itself), no `--config` and no `<model_dir>/config.yaml`, a `predict --model`
  that is no exported model.
- `EXIT_DIVERGED` (3): training stopped on a NaN or Inf loss.

An error is one line on stderr, `error: <what went wrong and what to do>`, never a traceback.

`--config` is optional wherever a tool reads a model dir (`evaluate`, `export`): without it the
resolved `<model_dir>/config.yaml` that training wrote is used (`load_experiment_config`).
`train` requires it: it writes that file.

>>> import io
>>> stream = io.StringIO()
>>> error(UsageError("no --config"), stream=stream) == EXIT_USAGE
True
>>> stream.getvalue()
'error: no --config\\n'
"""

import os
import sys

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
ERROR_PREFIX = "error: "


class UsageError(Exception):
    """A command line that leads to nothing to run; reported with `EXIT_USAGE`."""


# What a tool reports as one `error: ` line (a bad config, a missing file or checkpoint); any
# other exception is a bug, and its traceback is kept.
TOOL_ERRORS = (UsageError, FileNotFoundError, ValueError)


def error(message, status=None, stream=None):
    """Prints `error: <message>` on stderr and returns the exit status for it.

    Args:
        message: str or exception.
        status: the exit status; None: `EXIT_USAGE` for a `UsageError`, else `EXIT_FAILURE`.
        stream: where to print (stderr).
    """
    if status is None:
        status = EXIT_USAGE if isinstance(message, UsageError) else EXIT_FAILURE
    print(f"{ERROR_PREFIX}{message}", file=stream or sys.stderr, flush=True)
    return status


def add_experiment_arguments(parser, model_dir_help, config_required=False):
    """Adds `--config`, `--model-dir` and `--set` (as `overrides`), the same in every tool.

    `--config` is optional unless `config_required`: `load_experiment_config` then reads
    `<model_dir>/config.yaml`.

    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_experiment_arguments(parser, "the training model dir")
    >>> parser.parse_args(["--model-dir", "m", "--set", "a.b=1"])
    Namespace(config=None, model_dir='m', overrides=['a.b=1'])
    """
    if config_required:
        parser.add_argument("--config", required=True, help="experiment YAML (train_configs/)")
    else:
        parser.add_argument("--config", help="experiment YAML (default: <model-dir>/config.yaml)")
    parser.add_argument("--model-dir", required=True, help=model_dir_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="override a config value (YAML syntax); repeatable")


def config_path(config, model_dir):
    """`config` if given, else `<model_dir>/config.yaml`; a `UsageError` when neither is there."""
    from deeplab_family.config import CONFIG_FILENAME

    if config:
        return config
    path = os.path.join(model_dir, CONFIG_FILENAME)
    if not os.path.exists(path):
        raise UsageError(
            f"no --config given and no {CONFIG_FILENAME} in {model_dir}: pass the experiment's "
            "YAML with --config"
        )
    return path


def load_experiment_config(config, model_dir, overrides=None):
    """The experiment config of a tool that reads a model dir (see `config_path`), with the
    `--set` overrides applied."""
    from deeplab_family.config import load_config

    return load_config(config_path(config, model_dir), overrides)
