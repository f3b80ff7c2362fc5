"""Full-size models: parameters, analytic FLOPs at 513x513, CPU latency; DeepLabV3 vs Model Garden.

For each registered model in `FULL_CONFIGS` (names not registered are skipped):

- the parameter count (`model.count_params()`: kernels, biases and BN's four vectors);
- FLOPs of one forward pass at 513x513 (`deeplab_family.flops.count_flops`, 2 x MACs of the
  convs and matmuls of the traced graph);
- CPU latency at batch 1, 513x513: the median (and the minimum) of `--runs` calls, after two
  warm-up calls, of `tf.function(lambda x: model(x, training=False))`, without and with
  `jit_compile` (XLA);
- the same at every precision of `--precisions` (default `float32,bfloat16`) in the same run:
  "bfloat16" is `precision.for_inference(model, "bfloat16")` (weights cast once, BN folded,
  float32 logits), on a row "<model> bf16" of its own, timed call by call in turn with the
  float32 model (always timed), and the ratio bf16 / float32 of the medians (and of the minima)
  is printed (the issue's goal on a CPU with bfloat16 matmuls: at most 0.55 without XLA). XLA's
  CPU convs gain little from bfloat16 (one 3x3 conv, 256 channels at 65x65: 60 ms against 68
  in float32 under XLA, 16 ms in bfloat16 without it). `--output-stride 8`
  builds every model at OS8 (DeepLabv3's evaluation stride; no Model Garden row there).

When tf-models-official is installed, the same run builds official/vision's DeepLabV3 with the
options of our "deeplabv3" entry (dilated ResNet-101, stem v1, ReLU, OS16, multi-grid (1, 2, 4),
ASPP (6, 12, 18) + image pooling, 21 classes, no head convs) and times it the same way,
alternating call by call with ours so both see the same machine load, then prints ours/theirs.
Their model takes normalised images and returns 1/16-resolution logits; ours takes raw pixels
and also normalises and upsamples to 513x513 inside the timed call, so the comparison, if
anything, favours them. A third row, "ours at 1/16", times our model up to the same point as
theirs (the logits before the final upsample), for a like-for-like ratio.

    .venv/bin/python benchmarks/models.py                      # everything
    .venv/bin/python benchmarks/models.py --models deeplabv3 --runs 9
    .venv/bin/python benchmarks/models.py --models deeplabv3 --no-xla --no-flops
    .venv/bin/python benchmarks/models.py --models deeplabv3 --no-xla --no-flops --runs 7 \
        --no-model-garden --output-stride 8          # bfloat16 vs float32 at OS8

The machine may be shared: re-run to check that the figures are stable, and compare ratios
from one run rather than absolute times across runs.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from deeplab_family.flops import count_flops  # noqa: E402
from deeplab_family.models import ModelConfig, build_model, registered_models  # noqa: E402
from deeplab_family.precision import PRECISIONS, for_inference  # noqa: E402

SIZE = 513
# The deeplabv3 entry has exactly Model Garden's architecture (stem v1, stride on the 3x3 conv,
# BN epsilon 1e-3) so that ours/theirs compares implementations, not architectures.
FULL_CONFIGS = {
    "deeplabv3": {  # DeepLabv3 Table 5's best row (77.21%)
        "name": "deeplabv3",
        "num_classes": 21,
        "backbone": {"depth": 101, "output_stride": 16, "multi_grid": [1, 2, 4],
                     "stem": "deep", "stride_in_1x1": False, "norm_epsilon": 1e-3},
        "head": {"image_pooling": True},
    },
    "deeplabv3_cascade": {  # DeepLabv3 Table 3's best row: block7, MG (1, 2, 1) (76.66%)
        "name": "deeplabv3_cascade",
        "num_classes": 21,
        "backbone": {"depth": 101, "output_stride": 16, "multi_grid": [1, 2, 1],
                     "cascade_blocks": 3},
    },
    "pan": {  # PAN Sec 3.3
        "name": "pan",
        "num_classes": 21,
        "backbone": {"depth": 101, "stem": "deep", "output_stride": 16},
    },
    "gcn": {  # ExFuse Table 3 #1: ResNeXt-101 32x4d, stride 32
        "name": "gcn",
        "num_classes": 21,
        "backbone": {"depth": 101, "groups": 32, "width_per_group": 4},
    },
    "exfuse": {  # ExFuse Table 3 #7: all five switches
        "name": "exfuse",
        "num_classes": 21,
        "backbone": {"depth": 101, "groups": 32, "width_per_group": 4},
    },
}


def build_model_garden_deeplabv3():
    """official/vision's DeepLabV3 with the options of FULL_CONFIGS["deeplabv3"], or None."""
    try:
        import tf_keras
        from official.core import exp_factory
        from official.vision.configs import semantic_segmentation  # noqa: F401 (registers)
        from official.vision.modeling import factory
    except ImportError:
        return None
    model = exp_factory.get_exp_config("seg_deeplabv3_pascal").task.model
    model.num_classes = 21
    resnet = model.backbone.dilated_resnet
    resnet.model_id, resnet.output_stride, resnet.multigrid = 101, 16, [1, 2, 4]
    resnet.stem_type = "v1"
    model.decoder.aspp.level = 4
    model.decoder.aspp.dilation_rates = [6, 12, 18]  # their experiment has (12, 24, 36) at OS16
    model.decoder.aspp.pool_kernel_size = None
    model.decoder.aspp.dropout_rate = 0.0
    model.head.level, model.head.num_convs = 4, 0
    model.norm_activation.activation = "relu"  # their experiment uses swish
    model.norm_activation.use_sync_bn = False
    model.norm_activation.norm_epsilon = 1e-3
    tf_keras.utils.set_random_seed(0)
    theirs = factory.build_segmentation_model(
        tf_keras.layers.InputSpec(shape=[None, None, None, 3]), model
    )
    theirs(tf_keras.Input((None, None, 3)))
    return theirs


def _compiled(model, jit_compile, output="logits"):
    if output is None:
        return tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)
    return tf.function(lambda x: model(x, training=False)[output], jit_compile=jit_compile)


def time_interleaved(fns_and_inputs, runs):
    """Warm-up (2 calls each), then `runs` rounds calling each function once per round.

    Returns one list of seconds per function."""
    for fn, x in fns_and_inputs:
        fn(x).numpy()
        fn(x).numpy()
    times = [[] for _ in fns_and_inputs]
    for _ in range(runs):
        for i, (fn, x) in enumerate(fns_and_inputs):
            start = time.perf_counter()
            fn(x).numpy()
            times[i].append(time.perf_counter() - start)
    return times


def _precisions(text):
    values = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(values) - set(PRECISIONS))
    if not values or unknown:
        raise argparse.ArgumentTypeError(
            f"--precisions takes a comma-separated list of {list(PRECISIONS)}. "
            f"Received: {text!r}")
    return values


def _fmt(seconds):
    return f"{np.median(seconds):6.3f} ({min(seconds):.3f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(FULL_CONFIGS),
                        help="comma-separated names (default: all in FULL_CONFIGS)")
    parser.add_argument("--runs", type=int, default=5, help="timed calls per setting (>= 5)")
    parser.add_argument("--no-xla", action="store_true", help="skip the jit_compile timings")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    parser.add_argument("--no-model-garden", action="store_true",
                        help="do not time official/vision's DeepLabV3")
    parser.add_argument("--precisions", type=_precisions, default=list(PRECISIONS),
                        help="comma-separated, timed in turn in the same run (default: "
                             "float32,bfloat16; float32 is always timed: the ratios need it)")
    parser.add_argument("--output-stride", type=int, default=None,
                        help="build every model at this output stride (default: its config's)")
    args = parser.parse_args()

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(FULL_CONFIGS))
    if unknown:
        parser.error(f"no full-size config for {unknown}; known: {sorted(FULL_CONFIGS)}")
    registered = set(registered_models())
    images = tf.constant(
        np.random.default_rng(0).uniform(0, 255, (1, SIZE, SIZE, 3)).astype("float32")
    )
    settings = [False] if args.no_xla else [False, True]
    print(f"CPU latency at batch 1, {SIZE}x{SIZE}: median (min) of {args.runs} runs, seconds; "
          f"{os.cpu_count()} CPUs, TF {tf.__version__}")
    header = f"{'model':20s} {'params':>12s} {'GFLOPs':>8s} {'no XLA':>16s}"
    header += "" if args.no_xla else f" {'XLA':>16s}"
    rows = []
    for name in names:
        if name not in registered:
            print(f"{name}: not registered, skipped")
            continue
        config = ModelConfig.from_dict(FULL_CONFIGS[name])
        if args.output_stride:
            config = config.with_output_stride(args.output_stride)
        model = build_model(config)
        params = model.count_params()
        gflops = float("nan") if args.no_flops else count_flops(model, (SIZE, SIZE, 3)) / 1e9
        label = name if not args.output_stride else f"{name} os{args.output_stride}"
        row = {"name": label, "params": params, "gflops": gflops, "times": {}}
        # The other precisions: the same weights, timed in turn with the float32 model.
        others = {}
        for precision in args.precisions:
            if precision != "float32":
                twin = for_inference(model, precision)
                others[precision] = {"name": f"{label} {_SHORT[precision]}",
                                     "params": twin.count_params(), "gflops": gflops,
                                     "times": {}, "model": twin}
        theirs = None
        if name == "deeplabv3" and not args.no_model_garden and args.output_stride in (None, 16):
            theirs = build_model_garden_deeplabv3()
            if theirs is None:
                print("tf-models-official is not installed: no Model Garden comparison")
        if theirs is not None:
            normalised = model.get_layer("backbone").get_layer("preprocess")(images)
            gflops_theirs = float("nan")
            if not args.no_flops:
                gflops_theirs = count_flops(theirs, (SIZE, SIZE, 3)) / 1e9
            their_row = {"name": "Model Garden DLv3", "params": theirs.count_params(),
                         "gflops": gflops_theirs, "times": {}}
            # Ours up to the same point as theirs: logits at 1/16, before the final upsample.
            pre = keras.Model(model.input, model.get_layer("logits_conv").output)
            pre_row = {"name": "  ours at 1/16", "params": params, "gflops": gflops,
                       "times": {}}
        for jit in settings:
            timed = [(row, _compiled(model, jit), images)]
            timed += [(other, _compiled(other["model"], jit), images)
                      for other in others.values()]
            if theirs is not None:
                timed += [(pre_row, _compiled(pre, jit, output=None), images),
                          (their_row, _compiled(theirs, jit), normalised)]
            times = time_interleaved([(fn, x) for _, fn, x in timed], args.runs)
            for (target, _, _), seconds in zip(timed, times):
                target["times"][jit] = seconds
        rows.append(row)
        print(_line(row, settings), flush=True)
        for precision, other in others.items():
            del other["model"]
            other["ratio"] = f"{_SHORT[precision]}/float32 {_ratios(other, row, settings)}"
            rows.append(other)
            print(_line(other, settings), flush=True)
            print(f"  {other['ratio']}", flush=True)
        if theirs is not None:
            rows += [pre_row, their_row]
            row["ratio"] = f"ours/theirs {_ratios(row, their_row, settings)}"
            pre_row["ratio"] = (
                f"ours at 1/16 (no upsample)/theirs {_ratios(pre_row, their_row, settings)}"
            )
            for extra in (pre_row, their_row):
                print(_line(extra, settings), flush=True)
            print(f"  {row['ratio']}\n  {pre_row['ratio']}", flush=True)

    print()
    print(header)
    for row in rows:
        print(_line(row, settings))
    for row in rows:
        if "ratio" in row:
            print(f"{row['name'].strip()}: {row['ratio']}")


_SHORT = {"bfloat16": "bf16"}


def _ratios(ours, theirs, settings):
    return "  ".join(
        f"{'XLA' if jit else 'no XLA'}: "
        f"{np.median(ours['times'][jit]) / np.median(theirs['times'][jit]):.2f}"
        f" (min {min(ours['times'][jit]) / min(theirs['times'][jit]):.2f})"
        for jit in settings
    )


def _line(row, settings):
    text = f"{row['name']:20s} {row['params']:12,d} {row['gflops']:8.1f}"
    for jit in settings:
        text += f" {_fmt(row['times'][jit]):>16s}"
    return text


if __name__ == "__main__":
    main()
