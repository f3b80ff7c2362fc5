"""Evaluates a trained model: `python -m deeplab_family.evaluate --config YAML --model-dir DIR`.

    python -m deeplab_family.evaluate \\
        --config train_configs/deeplabv3_r101_os16_voc_trainaug.yaml \\
        --model-dir runs/deeplabv3_stage1 --output-stride 8 \\
        --scales 0.5,0.75,1.0,1.25,1.5,1.75 --flip

- The latest checkpoint of the model dir is restored into a model built at the requested output
  stride (`--output-stride`, else `evaluation.output_stride`): the weights do not depend on it,
  so a model trained at OS16 is evaluated at OS8 (DeepLabv3 Sec 4.1 and Table 10).
- One pass over `eval_data`, one image at a time at its native size (or padded to
  `eval_data.eval_crop_size`). A confusion matrix is accumulated; pixels labelled 255 (void
  border, padding) are never scored.
- Multi-scale and flip (DeepLabv3 Sec 4.3, Tables 4 and 6): for every scale, and its left-right
  flipped copy with `--flip`, the softmax probabilities are resized back to the input size and
  averaged; the prediction is their argmax. One scale 1.0 without flip is plain single-scale
  inference (the argmax of the logits).
- Memory stays bounded: one image at a time through one traced function (dynamic height and
  width, so no retracing per size), and the confusion matrix is the only state. The command
  line caps glibc's malloc arenas at two (`deeplab_family.malloc`), which keeps the resident
  memory flat from image to image (`benchmarks/eval_memory.py`).

Reports mIoU, per-class IoU (with the VOC or Cityscapes class names: `evaluation.dataset`) and
pixel accuracy in `<model_dir>/eval_os{N}_scales{...}[_flip].json` and as the final JSON line on
stdout.
"""

import argparse
import dataclasses
import json
import os
import sys
import time


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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m deeplab_family.evaluate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", required=True, help="experiment YAML")
    parser.add_argument("--model-dir", required=True, help="the training model dir")
    parser.add_argument("--output-stride", type=int, choices=(4, 8, 16, 32), default=None,
                        help="output stride of the evaluated model (evaluation.output_stride); "
                             "4 is DeepLabv3's Cityscapes test-set setting (Appendix C)")
    parser.add_argument("--scales", type=_scales, default=None,
                        help="comma-separated input scales (evaluation.scales)")
    parser.add_argument("--flip", action="store_true", default=None,
                        help="also average the left-right flipped inputs (evaluation.flip)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override a config value; repeatable")
    parser.add_argument("--max-images", type=int, default=None,
                        help="stop after this many images (a quick look; not a full score)")
    return parser.parse_args(argv)


def class_names(dataset, num_classes):
    """The class names for the report: VOC or Cityscapes when the count matches."""
    from deeplab_family.data import classes

    table = {"voc": classes.VOC_CLASSES, "cityscapes": classes.CITYSCAPES_CLASSES}[dataset]
    if len(table) == num_classes:
        return list(table)
    return [f"class_{i}" for i in range(num_classes)]


def build_eval_model(model_config, output_stride):
    """The model at `output_stride`, with plain (unsynchronised) BN: inference only."""
    from deeplab_family.models import build_model

    config = model_config.with_output_stride(output_stride)
    config = dataclasses.replace(
        config, backbone=dataclasses.replace(config.backbone, synchronized_bn=False)
    )
    return build_model(config)


def make_predictor(model, scales=(1.0,), flip=False, resize="logits"):
    """A traced `predict(image) -> int32 (1, H, W)` class map with multi-scale + flip averaging.

    `image`: float32 `(1, H, W, 3)`, any H and W (one trace for every size). For each scale the
    image is bilinearly resized to `round(scale * size)`, the model's logits are resized back
    to (H, W) and turned into softmax probabilities, which are added up (and those of the
    left-right flipped image, flipped back, with `flip`); the result is the argmax of their
    mean (`inference.multi_scale_probabilities`, which the exported SavedModel uses too;
    `resize="probabilities"` resizes after the softmax instead). With
    the single view "scale 1.0, no flip", the argmax of the logits: the same class map as
    the argmax of the softmax, without the float ties that softmax could create.
    """
    import tensorflow as tf

    from deeplab_family.inference import multi_scale_probabilities

    scales = tuple(float(s) for s in scales)
    single = scales == (1.0,) and not flip

    def logits(x):
        return model(x, training=False)["logits"]

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)],
                 reduce_retracing=True)
    def predict(image):
        if single:
            return tf.argmax(logits(image), axis=-1, output_type=tf.int32)
        probs = multi_scale_probabilities(logits, image, scales, flip, resize=resize)
        return tf.argmax(probs, axis=-1, output_type=tf.int32)

    return predict


def expected_count(file_pattern):
    """The number of examples in the shards `file_pattern` matches, from their manifests.

    The TFRecord builders write `<split>-manifest.json` beside the shards with each shard's
    count. None when a matched file is in no manifest (shards from another tool): the progress
    display then shows a count without a total.
    """
    import glob

    files = sorted(glob.glob(file_pattern))
    if not files:
        return None
    counts = {}
    for directory in {os.path.dirname(f) for f in files}:
        for manifest in glob.glob(os.path.join(directory, "*-manifest.json")):
            try:
                with open(manifest) as f:
                    shards = json.load(f).get("shards", [])
                for shard in shards:
                    counts[os.path.join(directory, shard["file"])] = int(shard["count"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # unreadable or foreign JSON: no total, never an error
    if not all(f in counts for f in files):
        return None
    return sum(counts[f] for f in files)


class EvalProgress:
    """`evaluate 120/1449 [==>     ] mIoU 0.7312 4.1 img/s ETA 5:24` on stderr.

    Redrawn in place on a terminal (at most 5 times a second); in logs, one line every `every`
    images and at the end (`training.progress.StatusLine`). The running mIoU is over the images
    seen so far.
    """

    def __init__(self, total, stream, every=50, width=24):
        from deeplab_family.progress import StatusLine

        self.total = total
        self.width = width
        self.status = StatusLine(stream, every, min_interval=0.2)
        self.stream = self.status.stream
        self.start = time.monotonic()

    def line(self, count, miou, final):
        from deeplab_family.progress import bar, format_duration

        rate = count / max(time.monotonic() - self.start, 1e-9)
        if not self.total:
            return f"evaluate {count} mIoU {miou:.4f} {rate:.1f} img/s"
        eta = "" if final else f" ETA {format_duration((self.total - count) / rate)}"
        drawn = bar(count, self.total, self.width)
        return (f"evaluate {count}/{self.total} [{drawn:<{self.width}}] mIoU {miou:.4f} "
                f"{rate:.1f} img/s{eta}")

    def update(self, count, miou, final=False):
        if not final and self.total and count >= self.total and not self.status.interactive:
            return  # in logs the last image is the final line's
        self.status.show(count, lambda: self.line(count, miou, final), final)


def result_filename(output_stride, scales, flip):
    joined = "-".join(f"{s:g}" for s in scales)
    return f"eval_os{output_stride}_scales{joined}{'_flip' if flip else ''}.json"


def evaluate(config, model_dir, *, output_stride=None, scales=None, flip=None, max_images=None,
             stream=None, model=None):
    """Evaluates the latest checkpoint of `model_dir` on `config.eval_data`.

    Args:
        config: `config.ExperimentConfig`.
        model_dir: str. Where the checkpoints are, and where the JSON report goes.
        output_stride, scales, flip: override `config.evaluation`.
        max_images: int or None. Stop early (for a quick look).
        stream: progress output (stderr).
        model: an already restored model to use instead (tests).

    Returns:
        The report dict (also written to the JSON file, whose path is in "results_file").
    """
    import numpy as np
    import tensorflow as tf

    from deeplab_family.data.pipeline import make_dataset
    from deeplab_family.training import checkpoints
    from deeplab_family.training.metrics import StreamingConfusionMatrix

    stream = stream or sys.stderr
    evaluation = config.evaluation
    output_stride = output_stride or evaluation.output_stride
    scales = tuple(float(s) for s in (scales or evaluation.scales))
    flip = evaluation.flip if flip is None else flip
    if config.eval_data is None or not config.eval_data.file_pattern:
        raise ValueError("eval_data.file_pattern is empty: say which TFRecord shards to score")

    prefix = None
    if model is None:
        model = build_eval_model(config.model, output_stride)
        prefix = checkpoints.restore_model(model, model_dir)
        print(f"restored {prefix} into a model at output stride {output_stride}", file=stream)
    step = None
    if prefix is not None:
        try:
            step = int(tf.train.load_variable(prefix, "step/.ATTRIBUTES/VARIABLE_VALUE"))
        except (tf.errors.NotFoundError, ValueError):  # no step (written by another tool)
            step = None
    # One image at a time: bounded memory at any scale, no padding between images.
    input_config = dataclasses.replace(config.eval_data, batch_size=1)
    dataset = make_dataset(input_config, training=False)
    predict = make_predictor(model, scales, flip)
    matrix = StreamingConfusionMatrix(config.model.num_classes, input_config.ignore_label)
    total = expected_count(input_config.file_pattern)
    if max_images:
        total = min(total, max_images) if total else max_images
    progress = EvalProgress(total, stream)
    start = time.monotonic()
    count = 0
    for images, labels in dataset:
        matrix.update(labels, predict(images))
        count += 1
        progress.update(count, matrix.miou())
        if max_images and count >= max_images:
            break
    progress.update(count, matrix.miou() if count else float("nan"), final=True)
    names = class_names(evaluation.dataset, config.model.num_classes)
    scores = matrix.result(names)
    report = {
        "miou": scores["miou"],
        "pixel_accuracy": scores["pixel_accuracy"],
        "per_class_iou": scores["per_class_iou"],
        "num_images": count,
        "num_pixels": scores["num_pixels"],
        "output_stride": output_stride,
        "scales": list(scales),
        "flip": bool(flip),
        "checkpoint": prefix,
        "step": step,
        "seconds": round(time.monotonic() - start, 2),
        "confusion_matrix": scores["confusion_matrix"],
    }
    if not np.isfinite(report["miou"]):
        report["miou"] = None
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, result_filename(output_stride, scales, flip))
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1)
    os.replace(tmp, path)
    report["results_file"] = path
    return report


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from deeplab_family.malloc import limit_arenas

    limit_arenas(2)  # flat memory over thousands of images (deeplab_family/malloc.py)
    from deeplab_family.config import load_config

    try:
        config = load_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        report = evaluate(config, args.model_dir, output_stride=args.output_stride,
                          scales=args.scales, flip=args.flip, max_images=args.max_images)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    miou = "n/a" if report["miou"] is None else f"{report['miou']:.4f}"
    print(f"mIoU {miou}, pixel accuracy {report['pixel_accuracy']:.4f} on "
          f"{report['num_images']} images (output stride {report['output_stride']}, scales "
          f"{report['scales']}, flip {report['flip']}) -> {report['results_file']}",
          file=sys.stderr)
    summary = {k: report[k] for k in ("miou", "pixel_accuracy", "per_class_iou", "num_images",
                                      "output_stride", "scales", "flip", "step",
                                      "results_file")}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
