"""Evaluation, the library half of `python -m deeplab_family.evaluate` (whose docstring says
what is measured and how): `evaluate()` scores the latest checkpoint of a model dir (or a given
model) on `eval_data`, `make_predictor` is its traced multi-scale / flip / sliding-window class
map, `result_filename` names its JSON report. `deeplab_family.export.verify` runs the same
`evaluate()` against an exported SavedModel.
"""

import dataclasses
import os
import sys
import time


def class_names(spec, num_classes):
    """The class names for the report: the spec's, or `class_<i>` without one."""
    if spec is not None:
        return list(spec.classes)
    return [f"class_{i}" for i in range(num_classes)]


def make_predictor(model, scales=(1.0,), flip=False, resize="logits", window=None):
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

    `window` (a `config.WindowConfig`): every scale and flip runs window by window
    (`inference.sliding_window_logits`), the windows' logits averaged where they overlap.
    """
    import tensorflow as tf

    from deeplab_family.inference import class_scores, sliding_window_logits

    scales = tuple(float(s) for s in scales)

    def logits(x):
        return model(x, training=False)["logits"]

    if window is not None:
        logits = sliding_window_logits(logits, window)

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


def result_filename(output_stride, scales, flip, window=None, precision="float32"):
    """The report's name: what was evaluated, so that runs of one model dir do not overwrite
    each other.

    >>> from deeplab_family.config import WindowConfig
    >>> result_filename(8, [0.75, 1.0], True, WindowConfig(513, 342), "bfloat16")
    'eval_os8_scales0.75-1_flip_win513x513s342x342_bf16.json'
    >>> result_filename(16, [1.0], False)
    'eval_os16_scales1.json'
    """
    joined = "-".join(f"{s:g}" for s in scales)
    name = f"eval_os{output_stride}_scales{joined}{'_flip' if flip else ''}"
    if window is not None:
        (h, w), (sh, sw) = window.size, window.stride
        name += f"_win{h}x{w}s{sh}x{sw}"
    if precision == "bfloat16":
        name += "_bf16"
    return name + ".json"


_DEFAULT = object()  # `evaluate(window=...)` not given: the config's window


def evaluate(config, model_dir, *, output_stride=None, scales=None, flip=None, max_images=None,
             stream=None, model=None, window=_DEFAULT, precision=None):
    """Evaluates the latest checkpoint of `model_dir` on `config.eval_data`.

    Args:
        config: `config.ExperimentConfig`.
        model_dir: str. Where the checkpoints are, and where the JSON report goes.
        output_stride, scales, flip: override `config.evaluation`.
        window: a `config.WindowConfig`, or None for whole-image inference; not given:
            `config.inference.window`.
        precision: "float32" or "bfloat16"; None: `config.evaluation.precision`.
        max_images: int or None. Stop early (for a quick look).
        stream: progress output (stderr).
        model: an already restored float32 model to use instead (tests); `precision` applies
            to it too.

    Returns:
        The report dict (also written to the JSON file, whose path is in "results_file").
    """
    import numpy as np
    import tensorflow as tf

    from deeplab_family import _validation
    from deeplab_family._files import write_json
    from deeplab_family.config import INFERENCE_PRECISIONS
    from deeplab_family.data.pipeline import make_dataset
    from deeplab_family.data.spec import check_num_classes, experiment_spec
    from deeplab_family.inference import load_inference_model, window_report
    from deeplab_family.training.metrics import StreamingConfusionMatrix

    stream = stream or sys.stderr
    evaluation = config.evaluation
    output_stride = output_stride or evaluation.output_stride
    scales = tuple(float(s) for s in (scales or evaluation.scales))
    flip = evaluation.flip if flip is None else flip
    window = config.inference.window if window is _DEFAULT else window
    precision = _validation.one_of("precision", precision or evaluation.precision,
                                   INFERENCE_PRECISIONS)
    if config.eval_data is None or not config.eval_data.file_pattern:
        raise ValueError("eval_data.file_pattern is empty: say which TFRecord shards to score")
    spec = experiment_spec(config, model_dir, prefer="eval")
    check_num_classes(config.model.num_classes, spec)

    prefix = None
    if model is None:
        model, prefix = load_inference_model(config.model, model_dir, output_stride)
        print(f"restored {prefix} into a model at output stride {output_stride}", file=stream)
    if precision == "bfloat16":
        # Imported here only: float32 evaluation needs nothing of it.
        from deeplab_family.precision import for_inference

        model = for_inference(model, "bfloat16")
    step = None
    if prefix is not None:
        try:
            step = int(tf.train.load_variable(prefix, "step/.ATTRIBUTES/VARIABLE_VALUE"))
        except (tf.errors.NotFoundError, ValueError):  # no step (written by another tool)
            step = None
    # One image at a time: bounded memory at any scale, no padding between images.
    input_config = dataclasses.replace(config.eval_data, batch_size=1)
    dataset = make_dataset(input_config, training=False)
    predict = make_predictor(model, scales, flip, window=window)
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
        "window": window_report(window),
        "precision": precision,
        "checkpoint": prefix,
        "step": step,
        "seconds": round(time.monotonic() - start, 2),
        "confusion_matrix": scores["confusion_matrix"],
    }
    if not np.isfinite(report["miou"]):
        report["miou"] = None
    name = result_filename(output_stride, scales, flip, window, precision)
    path = write_json(os.path.join(model_dir, name), report)
    report["results_file"] = path
    return report
