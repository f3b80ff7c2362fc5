"""Per-conv CPU latency: keras.layers.Conv2D(dilation_rate=r) against our AtrousConv2D.

Keras' Conv2D lowers a dilated conv to SpaceToBatch -> conv -> BatchToSpace on the TF backend;
AtrousConv2D runs one native dilated Conv2D op. The shapes are those of DeepLabV3-R101 at a
513x513 input: the dilated res5 3x3 convs at OS16 (33x33, 512->512, rates 2/4/8) and OS8
(65x65), and the ASPP branches (33x33, 2048->256, rates 6/12/18).

    .venv/bin/python benchmarks/atrous_conv.py [--runs 10]

Prints the median of --runs timed calls (after two warm-up calls) inside tf.function, and the
largest abs difference between the two outputs.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from deeplab_family.layers import AtrousConv2D  # noqa: E402

SHAPES = [
    # (name, H, Cin, Cout, rate, groups)
    ("res5 OS16 r2", 33, 512, 512, 2, 1),
    ("res5 OS16 r4", 33, 512, 512, 4, 1),
    ("res5 OS16 r8", 33, 512, 512, 8, 1),
    ("res4 OS8 r2", 65, 256, 256, 2, 1),
    ("res5 OS8 r4", 65, 512, 512, 4, 1),
    ("res5 OS8 r16", 65, 512, 512, 16, 1),
    ("ASPP OS16 r6", 33, 2048, 256, 6, 1),
    ("ASPP OS16 r12", 33, 2048, 256, 12, 1),
    ("ASPP OS16 r18", 33, 2048, 256, 18, 1),
    ("ResNeXt res5 OS16 r2 g32", 33, 1024, 1024, 2, 32),
]


def median_ms(fn, x, runs):
    fn(x)
    fn(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x).numpy()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print(f"{'conv':28s} {'keras Conv2D ms':>16s} {'AtrousConv2D ms':>16s} {'speed-up':>9s} "
          f"{'max|diff|':>10s}")
    total_k = total_n = 0.0
    for name, h, cin, cout, rate, groups in SHAPES:
        x = tf.random.normal([1, h, h, cin])
        ref = keras.layers.Conv2D(cout, 3, dilation_rate=rate, groups=groups, padding="same",
                                  use_bias=False)
        ours = AtrousConv2D(cout, 3, dilation_rate=rate, groups=groups, padding="same",
                            use_bias=False)
        ref.build(x.shape)
        ours.build(x.shape)
        ours.kernel.assign(ref.kernel)
        f_ref, f_ours = tf.function(ref), tf.function(ours)
        t_ref, t_ours = median_ms(f_ref, x, args.runs), median_ms(f_ours, x, args.runs)
        diff = float(tf.reduce_max(tf.abs(f_ref(x) - f_ours(x))))
        total_k += t_ref
        total_n += t_ours
        print(f"{name:28s} {t_ref:16.1f} {t_ours:16.1f} {t_ref / t_ours:8.2f}x {diff:10.2e}")
    print(f"{'sum':28s} {total_k:16.1f} {total_n:16.1f} {total_k / total_n:8.2f}x")


if __name__ == "__main__":
    main()
