"""Training throughput: images/s and peak RSS of the real train step on DeepLabV3-R101.

The step is `training.loop.Trainer`'s, the one `deeplab_family.train` runs: forward at the crop
size, logits upsampled, cross-entropy with 255 ignored, weight decay, SGD momentum update, BN
statistics updated. The model is the stage-1 paper config
(`train_configs/deeplabv3_r101_os16_voc_trainaug.yaml`: ResNet-101, OS16, MG (1, 2, 4),
ASPP (6, 12, 18) + image pooling) with random weights; the batches are random pixels and labels
(10% of them 255) held in memory, so the input pipeline is not measured.

    .venv/bin/python benchmarks/train_step.py                          # CPU: crop 513, batch 2
    .venv/bin/python benchmarks/train_step.py --batch 16 --mixed-precision mixed_float16 --xla
    .venv/bin/python benchmarks/train_step.py --strategy mirrored      # all GPUs

Prints the first (tracing) step's time, then images/s over `--steps` timed steps (median and
best of the per-step rates, and overall) and the process's peak resident memory (ru_maxrss).
"""

import argparse
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "train_configs", "deeplabv3_r101_os16_voc_trainaug.yaml")


def peak_rss_mib():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--batch", type=int, default=2, help="global batch")
    parser.add_argument("--crop", type=int, default=513)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first")
    parser.add_argument("--mixed-precision", default=None,
                        choices=[None, "mixed_float16", "mixed_bfloat16"])
    parser.add_argument("--xla", action="store_true", help="jit_compile each replica's step")
    parser.add_argument("--strategy", default="one_device", choices=["one_device", "mirrored"])
    args = parser.parse_args(argv)

    from deeplab_family.config import load_config
    from deeplab_family.data.schema import IGNORE_LABEL
    from deeplab_family.training import loop, strategies

    overrides = [
        f"train_data.batch_size={args.batch}",
        f"train_data.crop_size={args.crop}",
        f"runtime.strategy={args.strategy}",
        "model.backbone_weights=null",
        f"training.jit_compile={'true' if args.xla else 'false'}",
    ]
    if args.mixed_precision:
        overrides.append(f"training.mixed_precision={args.mixed_precision}")
    config = load_config(args.config, overrides)
    strategy = strategies.make_strategy(config.runtime)
    trainer = loop.Trainer(config, strategy)
    device = (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))[0]
    print(f"model {config.model.name} R{config.model.backbone.depth} "
          f"OS{config.model.backbone.output_stride}, {trainer.model.count_params():,} params; "
          f"crop {args.crop}, global batch {args.batch}, {args.mixed_precision or 'float32'}"
          f"{', XLA' if args.xla else ''}; {strategies.describe(strategy)}; device {device.name}; "
          f"{os.cpu_count()} CPUs visible")

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.batch, args.crop, args.crop, 3)).astype("float32")
    labels = rng.integers(0, config.model.num_classes, (args.batch, args.crop, args.crop))
    labels[rng.random(labels.shape) < 0.1] = IGNORE_LABEL
    dataset = tf.data.Dataset.from_tensors((images, labels.astype("int32"))).repeat()
    batches = iter(strategy.experimental_distribute_dataset(dataset))

    start = time.perf_counter()
    terms = trainer.train_step(*next(batches))
    first = time.perf_counter() - start
    print(f"first step (tracing + run): {first:.1f} s, loss {terms['loss']:.4f}", flush=True)
    rates = []
    total_start = time.perf_counter()
    for i in range(args.steps):
        start = time.perf_counter()
        terms = trainer.train_step(*next(batches))
        elapsed = time.perf_counter() - start
        rates.append(args.batch / elapsed)
        print(f"step {i + 2}: {elapsed:.2f} s, {rates[-1]:.3f} img/s, loss {terms['loss']:.4f}",
              flush=True)
    total = time.perf_counter() - total_start
    print(f"images/s: median {statistics.median(rates):.3f}, best {max(rates):.3f}, overall "
          f"{args.batch * args.steps / total:.3f} over {args.steps} steps")
    print(f"peak RSS: {peak_rss_mib():,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
