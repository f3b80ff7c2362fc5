"""Evaluates a trained model: `python -m deeplab_family.evaluate [--config YAML] --model-dir DIR`.

    python -m deeplab_family.evaluate \\
        --config train_configs/deeplabv3_r101_os16_voc_trainaug.yaml \\
        --model-dir runs/deeplabv3_stage1 --output-stride 8 \\
        --scales 0.5,0.75,1.0,1.25,1.5,1.75 --flip
    python -m deeplab_family.evaluate --model-dir runs/cityscapes --output-stride 8 \\
        --window 769 --window-stride 513 --precision bfloat16

- Without `--config`, the resolved `<model-dir>/config.yaml` that training wrote is used.
- The latest checkpoint of the model dir is restored into a model built at the requested output
  stride (`--output-stride`, else `evaluation.output_stride`) with plain BN
  (`inference.load_inference_model`, the model `export` writes too): the weights do not depend
  on the stride, so a model trained at OS16 is evaluated at OS8 (DeepLabv3 Sec 4.1, Table 10).
- One pass over `eval_data`, one image at a time at its native size (or padded to
  `eval_data.eval_crop_size`). A confusion matrix is accumulated; pixels labelled 255 (void
  border, padding) are never scored.
- Multi-scale and flip (DeepLabv3 Sec 4.3, Tables 4 and 6): for every scale, and its left-right
  flipped copy with `--flip`, the softmax probabilities are resized back to the input size and
  averaged; the prediction is their argmax. One scale 1.0 without flip is plain single-scale
  inference (the argmax of the logits).
- Sliding windows (`inference.window`, or `--window H,W` and `--window-stride H,W`; `--window
  none` turns a config's window off): the network runs on windows of that size, their logits
  averaged where they overlap (`inference.sliding_window_logits`, mmseg's `slide` mode), at
  every scale and flip. The network's memory is then bounded by the window, not the image (for
  1024x2048 Cityscapes images at output stride 8 and six scales, DeepLabv3 Appendix C); an
  image that one window covers is scored exactly as without windows.
- Precision (`evaluation.precision`, `--precision bfloat16`): the restored model in bfloat16
  (`precision.for_inference`: weights cast once, BN folded), float32 logits out.
- Memory stays bounded: one image at a time through one traced function (dynamic height and
  width, so no retracing per size), and the confusion matrix is the only state. The command
  line caps glibc's malloc arenas at two (`deeplab_family.malloc`), which keeps the resident
  memory flat from image to image (`benchmarks/eval_memory.py`).

Reports mIoU, per-class IoU (named by the dataset spec: that of the shards' manifests, else the
model dir's `dataset_spec.yaml`, else `evaluation.dataset`; `data/spec.py`) and pixel accuracy
in `<model_dir>/eval_os{N}_scales{...}[_flip][_win{H}x{W}s{H}x{W}][_bf16].json` (the window's
size and stride, then the precision, where they are not the defaults; `result_filename`) and as
the final JSON line on stdout.
Exit status (`deeplab_family.cli`): 0 done, 1 a config that does not load, no checkpoint or one
that does not fit, 2 a bad command line or no config for the model dir.
"""

import argparse
import json
import os
import sys

from deeplab_family import cli, defaults
from deeplab_family.evaluation import (  # noqa: F401 (the library half, re-exported)
    EvalProgress,
    class_names,
    evaluate,
    expected_count,
    make_predictor,
    result_filename,
)


def _scales(text):
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        scales = []
    if not scales or any(s <= 0 for s in scales):
        raise argparse.ArgumentTypeError(
            f"--scales takes positive numbers separated by commas, e.g. 0.5,0.75,1.0. "
            f"Received: {text!r}"
        )
    return scales


def _window_pair(flag):
    """The argparse type of `--window` / `--window-stride`: `H,W` or one int for both."""

    def parse(text):
        if flag == "--window" and text.strip().lower() == "none":
            return "none"
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) == 1:
            values = values * 2
        if len(values) != 2 or min(values) < 1:
            raise argparse.ArgumentTypeError(
                f"{flag} takes HEIGHT,WIDTH or one size for both, positive ints, e.g. 513 or "
                f"769,769{' (or none: no window)' if flag == '--window' else ''}. "
                f"Received: {text!r}"
            )
        return tuple(values)

    return parse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m deeplab_family.evaluate", description=__doc__.split("\n\n")[0]
    )
    cli.add_experiment_arguments(parser, "the training model dir (checkpoints/, config.yaml)")
    parser.add_argument("--output-stride", type=int, choices=defaults.OUTPUT_STRIDES, default=None,
                        help="output stride of the evaluated model (evaluation.output_stride); "
                             "4 is DeepLabv3's Cityscapes test-set setting (Appendix C)")
    parser.add_argument("--scales", type=_scales, default=None,
                        help="comma-separated input scales (evaluation.scales)")
    parser.add_argument("--flip", action="store_true", default=None,
                        help="also average the left-right flipped inputs (evaluation.flip)")
    parser.add_argument("--window", type=_window_pair("--window"), default=None,
                        metavar="H,W",
                        help="sliding-window inference with windows of this size "
                             "(inference.window.size); none: the whole image at once")
    parser.add_argument("--window-stride", type=_window_pair("--window-stride"), default=None,
                        metavar="H,W",
                        help="pixels between window origins, at most the size "
                             "(inference.window.stride; default: two thirds of the size)")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default=None,
                        help="inference precision (evaluation.precision); bfloat16: weights "
                             "cast once, BN folded, float32 logits")
    parser.add_argument("--max-images", type=int, default=None,
                        help="stop after this many images (a quick look; not a full score)")
    return parser.parse_args(argv)


def resolve_window(config_window, size=None, stride=None):
    """The window of a run: the config's (`inference.window`), changed by the command line.

    Args:
        config_window: `WindowConfig` or None.
        size: `--window`: None (keep the config's), "none" (no window) or (H, W); a new size
            without a stride gets the default stride (two thirds of it).
        stride: `--window-stride`: None or (H, W).

    Returns:
        `WindowConfig` or None. Raises `cli.UsageError` for a stride without a window or a
        stride larger than the size.
    """
    from deeplab_family.config import WindowConfig

    if size == "none":
        if stride is not None:
            raise cli.UsageError("--window-stride was given with --window none: drop one")
        return None
    if size is None and stride is None:
        return config_window
    if size is None and config_window is None:
        raise cli.UsageError(
            "--window-stride needs a window: give --window H,W too (or set inference.window)"
        )
    size = tuple(size) if size is not None else config_window.size
    try:
        return WindowConfig(size=size, stride=tuple(stride) if stride is not None else None)
    except ValueError as e:
        raise cli.UsageError(f"--window / --window-stride: {e}") from None


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from deeplab_family.malloc import limit_arenas

    limit_arenas(2)  # flat memory over thousands of images (deeplab_family/malloc.py)
    try:
        config = cli.load_experiment_config(args.config, args.model_dir, args.overrides)
        window = resolve_window(config.inference.window, args.window, args.window_stride)
        report = evaluate(config, args.model_dir, output_stride=args.output_stride,
                          scales=args.scales, flip=args.flip, max_images=args.max_images,
                          window=window, precision=args.precision)
    except cli.TOOL_ERRORS as e:
        return cli.error(e)
    miou = "n/a" if report["miou"] is None else f"{report['miou']:.4f}"
    print(f"mIoU {miou}, pixel accuracy {report['pixel_accuracy']:.4f} on "
          f"{report['num_images']} images (output stride {report['output_stride']}, scales "
          f"{report['scales']}, flip {report['flip']}, window {report['window']}, precision "
          f"{report['precision']}) -> {report['results_file']}",
          file=sys.stderr)
    summary = {k: report[k] for k in ("miou", "pixel_accuracy", "per_class_iou", "num_images",
                                      "output_stride", "scales", "flip", "window",
                                      "precision", "step",
                                      "results_file")}
    print(json.dumps(summary))
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
