"""Trains a model: `python -m deeplab_family.train --config YAML --model-dir DIR [--set k=v ...]`.

    python -m deeplab_family.train --config train_configs/deeplabv3_r101_os16_voc_trainaug.yaml \\
        --model-dir runs/deeplabv3_stage1 --set train_data.file_pattern=data/train_aug-*.tfrecord

The strategy comes from `runtime.strategy` (mirrored, the default: every local GPU;
multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG; tpu; one_device). On a machine without
GPUs, `--cpu-replicas N` (= `--set runtime.cpu_replicas=N`) splits the CPU into N logical devices
so that MirroredStrategy runs N replicas. Running the same command again with the same
`--model-dir` resumes from the latest checkpoint. See `training/loop.py`.

Exit status (`deeplab_family.cli`): 0 done, 1 a bad config file or override, 2 a bad command
line, 3 the loss diverged (NaN/Inf; nothing written after the last good checkpoint).
"""

import argparse
import os
import sys

from deeplab_family import cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m deeplab_family.train", description=__doc__.split("\n\n")[0]
    )
    cli.add_experiment_arguments(
        parser, "checkpoints, summaries and the resolved config; resumes from it",
        config_required=True)
    parser.add_argument("--cpu-replicas", type=int, default=None, metavar="N",
                        help="without GPUs, split the CPU into N logical devices "
                             "(runtime.cpu_replicas)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from deeplab_family.config import load_config

    overrides = list(args.overrides)
    if args.cpu_replicas is not None:
        overrides.append(f"runtime.cpu_replicas={args.cpu_replicas}")
    try:
        config = load_config(args.config, overrides)
    except cli.TOOL_ERRORS as e:
        return cli.error(e)

    from deeplab_family.training import loop, strategies

    # The CPU split must happen before TensorFlow runs anything.
    if config.runtime.cpu_replicas > 1 and config.runtime.strategy == "mirrored":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            strategies.split_cpu(config.runtime.cpu_replicas)
    try:
        result = loop.train(config, args.model_dir)
    except loop.TrainingDiverged as e:
        return cli.error(e, cli.EXIT_DIVERGED)
    except cli.TOOL_ERRORS as e:  # e.g. a head option checked when the model is built
        return cli.error(e)
    loss = result["loss"]
    print(
        f"done: step {result['step']} ({result['steps_run']} run"
        + (f", last loss {loss:.4f}" if loss is not None else "")
        + f"); checkpoint {result['checkpoint']}"
    )
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
