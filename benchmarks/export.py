"""Exported-model latency and size: Keras vs SavedModel vs TFLite float32/float16/dynamic/int8.

For each model (random weights: latency does not depend on them):

- "tiny": the demo's model (`train_configs/tiny_deeplabv3_os16_synthetic.yaml`);
- "r101": DeepLabV3-R101, DeepLabv3 Table 5's best row (multi-grid (1, 2, 4), ASPP
  (6, 12, 18) + image pooling, 21 classes),

built at `--output-stride` (8 by default, the export default) as `deeplab_family.export`
builds it, and timed at 513x513, batch 1, on the CPU:

- keras: `tf.function(model(x, training=False))`, float32 pixels in, logits out;
- saved_model: the exported SavedModel reloaded with `tf.saved_model.load`, its
  `serve_image_tensor` signature (uint8 in; softmax and argmax included; single scale);
- tflite_<mode>: `ai_edge_litert` Interpreter, `--threads` threads (2), default delegates
  (XNNPACK), float32 or uint8 pixels in, classes out. int8 is calibrated on `--calibration`
  random images, or on TFRecords with `--calibration-pattern`;
- keras_bf16 and saved_model_bf16 (with "bfloat16" in `--precisions`, the default
  `float32,bfloat16`): the same two at `export.precision: bfloat16`
  (`precision.for_inference`: weights cast once, BN folded, float32 scores out), the network
  in bfloat16; a line after the table gives their latency / the float32 variant's.

Each variant: `--warmup` calls, then the median (and min) of `--runs` calls, the variants
taking turns call by call (a shared machine's load then falls on all alike). File sizes: the
`.keras` file, the SavedModel directory, the `.tflite` files. Ratios are to the Keras model
(latency: variant / keras, below 1 is faster; size: variant / keras).

    .venv/bin/python benchmarks/export.py                       # tiny and r101 at OS8
    .venv/bin/python benchmarks/export.py --models r101 --output-stride 16 --runs 5
    .venv/bin/python benchmarks/export.py --models r101 --modes '' --runs 7   # no TFLite

The machine may be shared: compare ratios from one run rather than absolute times across runs.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from deeplab_family import export as export_lib
from deeplab_family.config import ExportConfig, load_config
from deeplab_family.inference import build_inference_model
from deeplab_family.models import ModelConfig
from deeplab_family.precision import PRECISIONS, for_inference

SIZE = (513, 513)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
R101 = {
    "name": "deeplabv3",
    "num_classes": 21,
    "backbone": {"depth": 101, "output_stride": 16, "multi_grid": [1, 2, 4]},
    "head": {"image_pooling": True},
}


def model_config(name):
    if name == "r101":
        return ModelConfig.from_dict(R101)
    path = os.path.join(REPO, "train_configs", "tiny_deeplabv3_os16_synthetic.yaml")
    return load_config(path).model


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


def timed(variants, warmup, runs):
    """`{name: (median_s, min_s)}`; the variants take turns call by call, so that a load on a
    shared machine falls on all of them alike."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in variants}
    for _ in range(runs):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def bench(name, args, tmp):
    config = model_config(name).with_output_stride(args.output_stride)
    model = build_inference_model(config)
    export_lib.use_dense_atrous_convs(model)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1, *SIZE, 3), dtype=np.uint8)
    images = pixels.astype(np.float32)
    calls, sizes = {}, {}

    keras_path = os.path.join(tmp, f"{name}.keras")
    model.save(keras_path)
    call = tf.function(lambda x: model(x, training=False)["logits"])
    x = tf.constant(images)
    calls["keras"] = lambda: call(x).numpy()
    sizes["keras"] = os.path.getsize(keras_path)

    saved = os.path.join(tmp, f"{name}_saved_model")
    export_lib.write_saved_model(model, saved, ExportConfig(output_stride=args.output_stride))
    serve = tf.saved_model.load(saved).signatures["serve_image_tensor"]
    u8 = tf.constant(pixels)
    calls["saved_model"] = lambda: serve(images=u8)["semantic_predictions"].numpy()
    sizes["saved_model"] = dir_bytes(saved)

    for precision in args.precisions:
        if precision == "float32":
            continue
        suffix = _SUFFIX[precision]
        twin = for_inference(model, precision)
        twin_call = tf.function(lambda x, m=twin: m(x, training=False)["logits"])
        calls[f"keras{suffix}"] = lambda f=twin_call: f(x).numpy()
        twin_path = os.path.join(tmp, f"{name}{suffix}.keras")
        twin.save(twin_path)  # its size only: the folded backbone does not reload from it
        sizes[f"keras{suffix}"] = os.path.getsize(twin_path)
        twin_saved = os.path.join(tmp, f"{name}_saved_model{suffix}")
        export_lib.write_saved_model(
            twin, twin_saved, ExportConfig(output_stride=args.output_stride, precision=precision))
        twin_serve = tf.saved_model.load(twin_saved).signatures["serve_image_tensor"]
        calls[f"saved_model{suffix}"] = (
            lambda f=twin_serve: f(images=u8)["semantic_predictions"].numpy())
        sizes[f"saved_model{suffix}"] = dir_bytes(twin_saved)

    from deeplab_family.predictors import TFLitePredictor

    fixed = export_lib.write_tflite_saved_model(model, SIZE, os.path.join(tmp, f"{name}_fixed"))
    for mode in args.modes:
        representative = None
        if mode == "int8":
            if args.calibration_pattern:
                def representative():
                    return export_lib.representative_images(args.calibration_pattern, SIZE,
                                                            args.calibration)
            else:
                def representative():
                    for _ in range(args.calibration):
                        yield [rng.uniform(0, 255, (1, *SIZE, 3)).astype(np.float32)]
        start = time.time()
        content = export_lib.convert_saved_model(fixed, mode, representative)
        print(f"{name}: tflite {mode} converted in {time.time() - start:.0f} s", flush=True)
        path = os.path.join(tmp, f"{name}_{mode}.tflite")
        with open(path, "wb") as f:
            f.write(content)
        predictor = TFLitePredictor(path, num_threads=args.threads)
        calls[f"tflite_{mode}"] = lambda p=predictor: p.run(images)
        sizes[f"tflite_{mode}"] = len(content)
    latencies = timed(calls, args.warmup, args.runs)
    return config, {v: (*latencies[v], sizes[v]) for v in calls}


_SUFFIX = {"bfloat16": "_bf16"}


def _ratio_line(rows, precisions):
    """`bf16 / float32: keras 0.52 (min 0.50), saved_model 0.51 (min 0.49)` per precision."""
    lines = []
    for precision in precisions:
        if precision == "float32":
            continue
        suffix = _SUFFIX[precision]
        parts = [f"{base} {rows[base + suffix][0] / rows[base][0]:.2f} "
                 f"(min {rows[base + suffix][1] / rows[base][1]:.2f})"
                 for base in ("keras", "saved_model") if base + suffix in rows]
        lines.append(f"{suffix.strip('_')} / float32 latency: {', '.join(parts)}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny,r101")
    parser.add_argument("--output-stride", type=int, default=8)
    parser.add_argument("--modes", default=",".join(export_lib.TFLITE_MODES))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=4,
                        help="int8 calibration images (random unless --calibration-pattern)")
    parser.add_argument("--calibration-pattern", help="TFRecords glob for int8 calibration")
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help="Keras and SavedModel precisions, timed in turn in the same run "
                             "(default: float32,bfloat16; float32 is always timed)")
    args = parser.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    args.precisions = [p for p in args.precisions.split(",") if p]
    unknown = sorted(set(args.precisions) - set(PRECISIONS))
    if unknown:
        parser.error(f"--precisions: unknown {unknown}; known: {list(PRECISIONS)}")

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m for m in args.models.split(",") if m]:
            config, rows = bench(name, args, tmp)
            results[name] = rows
            keras_ms, _, keras_bytes = rows["keras"]
            print(f"\n{name}: {config.name}, depth {config.backbone.depth}, output stride "
                  f"{args.output_stride}, 513x513, batch 1, CPU "
                  f"({os.cpu_count()} cores; TFLite {args.threads} threads)\n")
            print("| variant | median | min | latency / keras | size | size / keras |")
            print("|---|---|---|---|---|---|")
            for variant, (median, best, size) in rows.items():
                print(f"| {variant} | {median * 1e3:.0f} ms | {best * 1e3:.0f} ms | "
                      f"{median / keras_ms:.2f} | {size / 2**20:.1f} MiB | "
                      f"{size / keras_bytes:.2f} |")
            print()
            for line in _ratio_line(rows, args.precisions):
                print(line)
            print(flush=True)
    print(json.dumps({name: {v: {"median_ms": round(r[0] * 1e3, 1), "min_ms": round(r[1] * 1e3, 1),
                                  "bytes": r[2]} for v, r in rows.items()}
                      for name, rows in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
