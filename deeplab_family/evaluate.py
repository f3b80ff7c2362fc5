"""Evaluates a trained model: `python -m deeplab_family.evaluate [--config YAML] --model-dir DIR`.

    python -m deeplab_family.evaluate \\
        --config train_configs/deeplabv3_r101_os16_voc_trainaug.yaml \\
        --model-dir runs/deeplabv3_stage1 --output-stride 8 \\
        --scales 0.5,0.75,1.0,1.25,1.5,1.75 --flip

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
- Memory stays bounded: one image at a time through one traced function (dynamic height and
  width, so no retracing per size), and the confusion matrix is the only state. The command
  line caps glibc's malloc arenas at two (`deeplab_family.malloc`), which keeps the resident
  memory flat from image to image (`benchmarks/eval_memory.py`).

Reports mIoU, per-class IoU (named by the dataset spec: that of the shards' manifests, else the
model dir's `dataset_spec.yaml`, else `evaluation.dataset`; `data/spec.py`) and pixel accuracy
in `<model_dir>/eval_os{N}_scales{...}[_flip].json` and as the final JSON line on stdout.
Exit status (`deeplab_family.cli`): 0 done, 1 a config that does not load, no checkpoint or one
that does not fit, 2 a bad command line or no config for the model dir.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

from deeplab_family import cli, defaults


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
    cli.add_experiment_arguments(parser, "the training model dir (checkpoints/, config.yaml)")
    parser.add_argument("--output-stride", type=int, choices=defaults.OUTPUT_STRIDES, default=None,
                        help="output stride of the evaluated model (evaluation.output_stride); "
                             "4 is DeepLabv3's Cityscapes test-set setting (Appendix C)")
    parser.add_argument("--scales", type=_scales, default=None,
                        help="comma-separated input scales (evaluation.scales)")
    parser.add_argument("--flip", action="store_true", default=None,
                        help="also average the left-right flipped inputs (evaluation.flip)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="stop after this many images (a quick look; not a full score)")
    return parser.parse_args(argv)


def class_names(spec, num_classes):
    """The class names for the report: the spec's, or `class_<i>` without one."""
    if spec is not None:
        return list(spec.classes)
    return [f"class_{i}" for i in range(num_classes)]


def make_predictor(model, scales=(1.0,), flip=False, resize="logits"):
    """A traced `predict(image) -> int32 (1, H, W)` class map with multi-scale + flip averaging.

    `image`: float32 `(1, H, W, 3)`, any H and W (one trace for every size). For each scale the
    image is bilinearly resized to `round(scale * size)`, the model's logits are resized back
    to (H, W) and turned into softmax probabilities, which are added up (and those of the
    left-right flipped image, flipped back, with `flip`); the result is the argmax of their
    mean (`inference.multi_scale_probabilities`, which the exported SavedModel uses too;
    `resize="probabilities"` resizes after the softmax instead). With
    the single view "scale 1.0, no flip", the argmax of the logits: the same class map as
    the argmax of the softmax, without the float ties that softmax could create
    (`inference.class_scores`).
    """
    import tensorflow as tf

    from deeplab_family.inference import class_scores

    scales = tuple(float(s) for s in scales)

    def logits(x):
        return model(x, training=False)["logits"]

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)],
                 reduce_retracing=True)
    def predict(image):
        scores = class_scores(logits, image, scales, flip, resize=resize)
        return tf.argmax(scores, axis=-1, output_type=tf.int32)

    return predict


def expected_count(file_pattern):
    """The number of examples in the shards `file_pattern` matches, from their manifests.

    The TFRecord builders write `<split>-manifest.json` beside the shards with each shard's
    count. None when a matched file is in no manifest (shards from another tool): the progress
    display then shows a count without a total.
    """
    from deeplab_family.data.spec import count_examples

    return count_examples(file_pattern)


class EvalProgress:
    """`evaluate 120/1449 [==>     ] mIoU 0.7312 4.1 img/s ETA 5:24` on stderr.

    Redrawn in place on a terminal (at most 5 times a second); in logs, one line every `every`
    images and at the end (`progress.StatusLine`). The running mIoU is over the images
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

    from deeplab_family._files import write_json
    from deeplab_family.data.pipeline import make_dataset
    from deeplab_family.data.spec import check_num_classes, experiment_spec
    from deeplab_family.inference import load_inference_model
    from deeplab_family.training.metrics import StreamingConfusionMatrix

    stream = stream or sys.stderr
    evaluation = config.evaluation
    output_stride = output_stride or evaluation.output_stride
    scales = tuple(float(s) for s in (scales or evaluation.scales))
    flip = evaluation.flip if flip is None else flip
    if config.eval_data is None or not config.eval_data.file_pattern:
        raise ValueError("eval_data.file_pattern is empty: say which TFRecord shards to score")
    spec = experiment_spec(config, model_dir, prefer="eval")
    check_num_classes(config.model.num_classes, spec)

    prefix = None
    if model is None:
        model, prefix = load_inference_model(config.model, model_dir, output_stride)
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
    names = class_names(spec, config.model.num_classes)
    scores = matrix.result(names)
    report = {
        "dataset": spec.name if spec is not None else None,
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
    path = write_json(os.path.join(model_dir, result_filename(output_stride, scales, flip)),
                      report)
    report["results_file"] = path
    return report


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from deeplab_family.malloc import limit_arenas

    limit_arenas(2)  # flat memory over thousands of images (deeplab_family/malloc.py)
    try:
        config = cli.load_experiment_config(args.config, args.model_dir, args.overrides)
        report = evaluate(config, args.model_dir, output_stride=args.output_stride,
                          scales=args.scales, flip=args.flip, max_images=args.max_images)
    except cli.TOOL_ERRORS as e:
        return cli.error(e)
    miou = "n/a" if report["miou"] is None else f"{report['miou']:.4f}"
    print(f"mIoU {miou}, pixel accuracy {report['pixel_accuracy']:.4f} on "
          f"{report['num_images']} images (output stride {report['output_stride']}, scales "
          f"{report['scales']}, flip {report['flip']}) -> {report['results_file']}",
          file=sys.stderr)
    summary = {k: report[k] for k in ("miou", "pixel_accuracy", "per_class_iou", "num_images",
                                      "output_stride", "scales", "flip", "step",
                                      "results_file")}
    print(json.dumps(summary))
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
