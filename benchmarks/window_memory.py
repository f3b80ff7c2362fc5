"""Sliding-window memory: peak RSS of whole-image and windowed inference as the image grows, and,
on a trained model, how far windowed predictions agree with whole-image ones.

Memory. For each `--sizes` entry and each mode (whole image; windows of `--window` every
`--window-stride` pixels, `inference.sliding_window_logits`), a separate child process builds
the model (`--model`: the demo's tiny net or DeepLabV3-R101, random weights: memory does not
depend on them) at `--output-stride`, runs `evaluate`'s predictor (`evaluate.make_predictor`,
with `--scales` and `--flip`) on one random image of that size (twice: the first call traces),
and reports its peak resident memory (`ru_maxrss`), the resident memory after the model was
built (before any image), and the seconds per image. Separate processes, so that each peak is
that mode's and size's alone; the malloc arenas are capped at two, as the `evaluate` command
line caps them. A child that fails (out of memory, `--child-timeout`) is reported as such and
the others go on. Windowed, the network's memory is that of one window, so the peak should
grow only by the image, the logit sum and the probabilities (a few hundred bytes per pixel);
whole-image, it grows with every activation of the network.

Agreement (`--model-dir DIR`): the latest checkpoint of DIR (its `config.yaml`, or
`--config`) on the val shards (`--eval-pattern`, default `eval_data.file_pattern`), every
image through both predictors: the share of scored pixels (label not 255) where the two
predictions agree, the share of all pixels, and the mIoU of each.

    .venv/bin/python benchmarks/window_memory.py                  # tiny, 3 sizes, ~2 min
    .venv/bin/python benchmarks/window_memory.py --model r101 --output-stride 8 \\
        --sizes 512x1024,1024x2048,2048x4096 --window 513 --window-stride 342
    .venv/bin/python benchmarks/window_memory.py --sizes none --model-dir demo_output/model \\
        --window 257 --window-stride 171

On a shared machine the seconds are noisy; the RSS figures are not.
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, ROOT)
from _child import peak_rss_mib, rss_mib  # noqa: E402 (after the path)


def _pair(text):
    values = [int(v) for v in text.lower().replace("x", ",").split(",")]
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected H,W or HxW or one int. Received: {text!r}")
    return tuple(values)


def _sizes(text):
    """`256x512,512x1024` (or one int per square size); none: no sizes."""
    if text.strip().lower() == "none":
        return []
    return [_pair(s.strip()) for s in text.split(",") if s.strip()]


def _window(args):
    from deeplab_family.config import WindowConfig

    return WindowConfig(size=args.window, stride=args.window_stride)


def child(args):
    """One mode at one size in this process; prints one JSON line."""
    from deeplab_family.malloc import limit_arenas

    limit_arenas(2)  # as the evaluate command line does (deeplab_family/malloc.py)
    import numpy as np  # after the cap: TensorFlow's threads then use the capped arenas
    import tensorflow as tf
    from export import model_config  # benchmarks/export.py: the same tiny and R101 configs

    from deeplab_family.evaluate import make_predictor
    from deeplab_family.inference import build_inference_model

    model = build_inference_model(model_config(args.model), args.output_stride)
    window = _window(args) if args.mode == "window" else None
    predict = make_predictor(model, args.scales, flip=args.flip, window=window)
    built = rss_mib()
    h, w = args.size
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, h, w, 3)), tf.float32)
    predict(image).numpy()  # traces
    start = time.monotonic()
    predict(image).numpy()
    print(json.dumps({"mode": args.mode, "size": [h, w], "built_mib": round(built),
                      "peak_mib": round(peak_rss_mib()),
                      "seconds": round(time.monotonic() - start, 2)}), flush=True)


def run_child(args, mode, size):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--mode", mode,
           "--size", f"{size[0]}x{size[1]}", "--model", args.model,
           "--output-stride", str(args.output_stride),
           "--scales", ",".join(f"{s:g}" for s in args.scales),
           "--window", f"{args.window[0]}x{args.window[1]}"]
    if args.window_stride:
        cmd += ["--window-stride", f"{args.window_stride[0]}x{args.window_stride[1]}"]
    if args.flip:
        cmd.append("--flip")
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=args.child_timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"mode": mode, "size": list(size), "error": f"over {args.child_timeout} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        why = "killed (out of memory?)" if proc.returncode in (-9, 137) else \
            f"exit {proc.returncode}"
        tail = proc.stdout.strip().splitlines()[-1:] or [""]
        return {"mode": mode, "size": list(size), "error": f"{why}: {tail[0][:200]}"}
    return json.loads(lines[-1])


def memory_table(args):
    window = _window(args)
    print(f"{args.model}: output stride {args.output_stride}, scales {list(args.scales)}, flip "
          f"{args.flip}; window {list(window.size)} stride {list(window.stride)}; one child "
          f"process per row, {os.cpu_count()} CPUs", flush=True)
    print(f"{'image':>11} {'mode':>7} {'peak RSS':>10} {'after build':>12} {'s/image':>8}")
    rows = []
    for size in args.sizes:
        for mode in ("whole", "window"):
            row = run_child(args, mode, size)
            rows.append(row)
            label = f"{size[0]}x{size[1]}"
            if "error" in row:
                print(f"{label:>11} {mode:>7} {row['error']}", flush=True)
            else:
                print(f"{label:>11} {mode:>7} {row['peak_mib']:>7,} MiB {row['built_mib']:>8,} MiB "
                      f"{row['seconds']:>8.2f}", flush=True)
    for mode in ("whole", "window"):
        done = [r for r in rows if r["mode"] == mode and "error" not in r]
        if len(done) > 1:
            first, last = done[0], done[-1]
            pixels = last["size"][0] * last["size"][1] - first["size"][0] * first["size"][1]
            grow = last["peak_mib"] - first["peak_mib"]
            print(f"{mode}: peak +{grow:,} MiB from {first['size'][0]}x{first['size'][1]} to "
                  f"{last['size'][0]}x{last['size'][1]} ({grow * 2**20 / pixels:,.0f} B per "
                  "added pixel)")
    return rows


def agreement(args):
    """Windowed vs whole-image predictions of a trained model dir on its val shards."""
    from deeplab_family.malloc import limit_arenas

    limit_arenas(2)
    import dataclasses

    from deeplab_family import cli
    from deeplab_family.data.pipeline import make_dataset
    from deeplab_family.evaluate import make_predictor
    from deeplab_family.inference import load_inference_model
    from deeplab_family.training.metrics import StreamingConfusionMatrix

    config = cli.load_experiment_config(args.config, args.model_dir)
    pattern = args.eval_pattern or config.eval_data.file_pattern
    input_config = dataclasses.replace(config.eval_data, file_pattern=pattern, batch_size=1)
    model, prefix = load_inference_model(config.model, args.model_dir, args.output_stride)
    window = _window(args)
    whole = make_predictor(model, args.scales, args.flip)
    windowed = make_predictor(model, args.scales, args.flip, window=window)
    num_classes = config.model.num_classes
    matrices = {name: StreamingConfusionMatrix(num_classes, input_config.ignore_label)
                for name in ("whole", "window")}
    same = scored_same = pixels = scored = images = 0
    sizes = set()
    start = time.monotonic()
    for image, label in make_dataset(input_config, training=False):
        a, b = whole(image), windowed(image)
        matrices["whole"].update(label, a)
        matrices["window"].update(label, b)
        a, b, label = a.numpy(), b.numpy(), label.numpy()
        valid = label != input_config.ignore_label
        same += int((a == b).sum())
        pixels += a.size
        scored_same += int((a == b)[valid].sum())
        scored += int(valid.sum())
        images += 1
        sizes.add(tuple(image.shape[1:3]))
        if args.max_images and images >= args.max_images:
            break
    heights, widths = zip(*sizes)
    print(f"agreement on {images} images of {pattern} ({min(heights)}-{max(heights)} x "
          f"{min(widths)}-{max(widths)} px), {prefix} at output stride {args.output_stride}, "
          f"scales {list(args.scales)}, flip {args.flip}, window {list(window.size)} stride "
          f"{list(window.stride)} ({time.monotonic() - start:.0f} s)")
    result = {
        "pixel_agreement_scored": scored_same / max(scored, 1),
        "pixel_agreement_all": same / max(pixels, 1),
        "miou_whole": matrices["whole"].miou(),
        "miou_window": matrices["window"].miou(),
    }
    print(f"  pixels that agree: {100 * result['pixel_agreement_scored']:.3f}% of the scored, "
          f"{100 * result['pixel_agreement_all']:.3f}% of all")
    print(f"  mIoU whole image {result['miou_whole']:.4f}, windowed {result['miou_window']:.4f} "
          f"({100 * (result['miou_window'] - result['miou_whole']):+.2f} points)")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", choices=["tiny", "r101"])
    parser.add_argument("--output-stride", type=int, default=8, choices=[4, 8, 16, 32])
    parser.add_argument("--sizes", type=_sizes, default=_sizes("256x512,512x1024,1024x2048"),
                        help="image sizes HxW, comma-separated (none: skip the memory table)")
    parser.add_argument("--window", type=_pair, default=(257, 257), help="window H,W or HxW")
    parser.add_argument("--window-stride", type=_pair, default=None,
                        help="default: two thirds of the window")
    parser.add_argument("--scales", type=lambda t: [float(s) for s in t.split(",")],
                        default=[1.0])
    parser.add_argument("--flip", action="store_true")
    parser.add_argument("--child-timeout", type=int, default=900)
    parser.add_argument("--model-dir", help="a trained model dir: also report the agreement")
    parser.add_argument("--config", help="its experiment YAML (default: <model-dir>/config.yaml)")
    parser.add_argument("--eval-pattern", help="val shards (default: eval_data.file_pattern)")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["whole", "window"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=_pair, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    results = {"memory": memory_table(args) if args.sizes else []}
    if args.model_dir:
        results["agreement"] = agreement(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
