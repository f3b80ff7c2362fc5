"""Checks that an export scores what `evaluate` scores: the same confusion matrix on the val set.

    python -m deeplab_family.export.verify --export EXPORT_DIR [--max-images N] [--set k=v ...]

A model that scores lower once exported is a known trap of segmentation exports (a different
resize, a missing flip, another output stride, another checkpoint). This check takes one
exported version (`<export-dir>/<version>`, or the highest version of `<export-dir>`) and:

1. `evaluate`: the checkpoint recorded in its `export_info.json` (not the newest one of the
   model dir, which training may have moved on from), restored into the model `evaluate`
   builds, scored by `evaluate.evaluate` with the export's output stride, scales, flip,
   sliding window and precision, on `eval_data` of the config the export recorded (override it
   with `--set eval_data.file_pattern=GLOB`);
2. the SavedModel: the `serving_default` signature, given each val image's encoded bytes as
   stored in the TFRecords (what a TF Serving client sends), its `semantic_predictions`
   accumulated into a second confusion matrix against the same labels;
3. the two matrices compared entry by entry.

Images are scored at their native size on both sides: `eval_data.eval_crop_size` (padding to a
fixed size) is turned off here, since the SavedModel is given the image as it is.

Exit status (`deeplab_family.cli`): 0 the matrices are equal; 1 they differ (the report says
by how many pixels and which classes) or the export or data cannot be read; 2 a bad command
line. The last line on stdout is the JSON report.
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile

from deeplab_family import _validation, cli


def _load_info(version_dir):
    from deeplab_family.export.export_dir import INFO_FILENAME

    path = os.path.join(version_dir, INFO_FILENAME)
    try:
        with open(path) as f:
            info = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{version_dir} has no {INFO_FILENAME}: verify needs an export written by "
            "`python -m deeplab_family.export`"
        ) from None
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    for key in ("config", "checkpoint", "output_stride", "scales", "flip"):
        if key not in info:
            raise ValueError(f"{path} has no {key!r}: it was not written by this package's "
                             "export")
    return info


def export_evaluation_config(info, overrides=()):
    """The experiment config that `evaluate` must run to score what the export computes:
    the recorded config, with the export's output stride, scales, flip, window and precision
    as the evaluation settings, and native-size evaluation images."""
    from deeplab_family.config import (
        ExperimentConfig,
        InferenceConfig,
        apply_overrides,
    )

    values = apply_overrides(info["config"], list(overrides))
    config = ExperimentConfig.from_dict(values)
    if config.eval_data is None or not config.eval_data.file_pattern:
        raise ValueError("the export's config has no eval_data.file_pattern: pass "
                         "--set eval_data.file_pattern=GLOB")
    window = info.get("window")
    return dataclasses.replace(
        config,
        eval_data=dataclasses.replace(config.eval_data, eval_crop_size=None, batch_size=1),
        evaluation=dataclasses.replace(
            config.evaluation,
            output_stride=int(info["output_stride"]),
            scales=tuple(float(s) for s in info["scales"]),
            flip=bool(info["flip"]),
            precision=info.get("precision", "float32"),
        ),
        inference=InferenceConfig(window=window),
    )


def saved_model_confusion(version_dir, input_config, num_classes, max_images=None):
    """The confusion matrix of the SavedModel's `serving_default` on the encoded images of
    `input_config.file_pattern`, read in `evaluate`'s order (`pipeline.eval_records`);
    returns `(matrix, images)`."""
    import tensorflow as tf

    from deeplab_family.data import augment, schema
    from deeplab_family.data.pipeline import eval_records, parse_example
    from deeplab_family.training.metrics import StreamingConfusionMatrix

    serve = tf.saved_model.load(version_dir).signatures["serving_default"]
    matrix = StreamingConfusionMatrix(num_classes, input_config.ignore_label)
    count = 0
    for serialized in eval_records(input_config):
        if max_images and count >= max_images:
            break
        features = parse_example(serialized)
        label = augment.decode_label(features[schema.LABEL_ENCODED])
        out = serve(image_bytes=tf.reshape(features[schema.IMAGE_ENCODED], [1]))
        matrix.update(label[None], out["semantic_predictions"])
        count += 1
    return matrix, count


def verify_export(export_path, overrides=(), max_images=None, stream=None):
    """Scores the export and `evaluate` on the same val images; returns the report dict.

    `report["equal"]` says whether the two confusion matrices are identical;
    `report["differing_pixels"]` is half the sum of their absolute differences (the pixels
    scored differently, when the images are the same).
    """
    import numpy as np

    from deeplab_family.evaluation import evaluate
    from deeplab_family.inference import build_inference_model
    from deeplab_family.predictors import resolve_saved_model
    from deeplab_family.training.checkpoints import restore_model

    stream = stream or sys.stderr
    version_dir = resolve_saved_model(export_path)
    info = _load_info(version_dir)
    config = export_evaluation_config(info, overrides)
    precision = info.get("precision", "float32")

    model = build_inference_model(config.model, config.evaluation.output_stride)
    prefix = restore_model(model, info["checkpoint"])  # evaluate casts it to `precision`
    print(f"verify: {version_dir} against evaluate of {prefix} (output stride "
          f"{config.evaluation.output_stride}, scales {list(config.evaluation.scales)}, flip "
          f"{config.evaluation.flip}, window {info.get('window')}, {precision})", file=stream)
    with tempfile.TemporaryDirectory() as scratch:  # evaluate's JSON report, not the user's
        evaluated = evaluate(config, scratch, max_images=max_images, stream=stream, model=model)
    expected = np.asarray(evaluated["confusion_matrix"], np.int64)

    print("verify: the SavedModel on the same images", file=stream)
    served, count = saved_model_confusion(version_dir, config.eval_data,
                                          config.model.num_classes, max_images=max_images)
    diff = np.abs(served.matrix - expected)
    scores = served.result()
    changed = sorted({int(c) for c in np.flatnonzero(diff.sum(0) + diff.sum(1))})
    report = {
        "export": version_dir,
        "checkpoint": prefix,
        "num_images": count,
        "num_pixels": int(expected.sum()),
        "equal": bool(count == evaluated["num_images"] and not diff.any()),
        "differing_pixels": int(diff.sum() // 2),
        "classes_differing": changed,
        "evaluate_miou": evaluated["miou"],
        "export_miou": scores["miou"],
        "output_stride": config.evaluation.output_stride,
        "scales": list(config.evaluation.scales),
        "flip": config.evaluation.flip,
        "window": info.get("window"),
        "precision": precision,
    }
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m deeplab_family.export.verify", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--export", required=True,
                        help="an export version dir, or the export dir (its highest version)")
    parser.add_argument("--max-images", type=_validation.argparse_type(_validation.positive_int),
                        default=None,
                        help="only the first N val images (a quick check)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override the export's recorded config, e.g. "
                             "eval_data.file_pattern=GLOB")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        report = verify_export(args.export, args.overrides, args.max_images)
    except cli.TOOL_ERRORS as e:
        return cli.error(e)
    def miou(value):
        return "n/a" if value is None else f"{value:.4f}"

    verdict = ("the same confusion matrix" if report["equal"] else
               f"DIFFERENT confusion matrices: {report['differing_pixels']} pixels, classes "
               f"{report['classes_differing']}")
    print(f"verify: {verdict} on {report['num_images']} images ({report['num_pixels']} "
          f"pixels); mIoU evaluate {miou(report['evaluate_miou'])}, export "
          f"{miou(report['export_miou'])}", file=sys.stderr)
    print(json.dumps(report))
    return cli.EXIT_OK if report["equal"] else cli.EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
