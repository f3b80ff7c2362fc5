"""TFLite parity: every conversion mode against the Keras model, on validation images.

    .venv/bin/python benchmarks/tflite_parity.py --model-dir DIR --val-pattern GLOB \\
        [--num-images 20] [--modes float32,float16,dynamic,int8] [--config YAML] [--set k=v]

The model dir is a training dir (checkpoints/ + config.yaml), restored at
`export.output_stride` as `deeplab_family.export` restores it, and converted at
`export.tflite_size` exactly as `export --tflite` converts it (int8 calibrated on
`export.representative_samples` images of the training TFRecords, or
`--representative-pattern`). Every val image is fitted to the fixed input as `predict` fits it
(padded with the mean pixel, or shrunk to fit), and the Keras model gets the same fitted input,
so that the comparison is of the conversions alone. Reported for each variant:

- agreement: the fraction of pixels (of the original images) whose class equals the Keras
  model's;
- mIoU against the labels (255 ignored), beside the Keras model's on the same inputs; also the
  Keras model at the native image size, to show what the fixed input costs;
- file size and op list.

Targets (the Export issue): float32 agreement >= 99.9%, float16 >= 99.5%, int8 mIoU within one
point of the float model.
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from deeplab_family import export as export_lib
from deeplab_family.cli import load_experiment_config
from deeplab_family.data.pipeline import decode_example, list_files
from deeplab_family.data.schema import IGNORE_LABEL
from deeplab_family.inference import fit_to_size, restore_size
from deeplab_family.predictors import TFLitePredictor

TARGETS = {"float32": 0.999, "float16": 0.995}


def val_examples(pattern, count):
    out = []
    for record in tf.data.TFRecordDataset(list_files(pattern)).take(count):
        example = decode_example(record)
        out.append((example["image"].numpy(), example["label"].numpy()))
    return out


def confusion(pred, label, num_classes, ignore=IGNORE_LABEL):
    keep = label != ignore
    index = label[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def miou(matrix):
    """Mean IoU over the classes present in the labels or the predictions."""
    inter = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - inter
    present = union > 0
    return float(np.mean(inter[present] / union[present]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--config", help="default: <model-dir>/config.yaml")
    parser.add_argument("--val-pattern", required=True, help="val TFRecords glob")
    parser.add_argument("--num-images", type=int, default=20)
    parser.add_argument("--modes", default=",".join(export_lib.TFLITE_MODES))
    parser.add_argument("--representative-pattern",
                        help="calibration TFRecords (default: the config's train_data)")
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--keep-dir", help="also write the .tflite files here")
    args = parser.parse_args(argv)

    modes = [m for m in args.modes.split(",") if m]
    overrides = list(args.set)
    if args.representative_pattern:
        overrides.append(f"export.representative_pattern={args.representative_pattern}")
    config = load_experiment_config(args.config, args.model_dir, overrides)
    model, checkpoint = export_lib.build_export_model(config, args.model_dir)
    size = config.export.tflite_size
    num_classes = config.model.num_classes
    print(f"checkpoint {checkpoint}; {config.model.name} at output stride "
          f"{config.export.output_stride}, TFLite input {size[0]}x{size[1]}", flush=True)

    examples = val_examples(args.val_pattern, args.num_images)
    fitted = [fit_to_size(image, size) for image, _ in examples]
    keras_masks, native_masks = [], []
    for (image, _), (x, fsize) in zip(examples, fitted):
        logits = model(x[None], training=False)["logits"].numpy()[0]
        keras_masks.append(restore_size(logits.argmax(-1).astype(np.uint8), fsize,
                                        image.shape[:2]))
        native = model(image[None].astype(np.float32), training=False)["logits"].numpy()[0]
        native_masks.append(native.argmax(-1))

    def score(masks):
        matrix = sum(confusion(m, label, num_classes) for m, (_, label) in zip(masks, examples))
        return miou(matrix)

    rows = {"keras (native size)": {"miou": score(native_masks)},
            "keras (fitted input)": {"miou": score(keras_masks), "agreement": 1.0}}
    with tempfile.TemporaryDirectory() as tmp:
        saved = export_lib.write_tflite_saved_model(model, size, os.path.join(tmp, "sm"))
        for mode in modes:
            representative = export_lib.calibration_images(config) if mode == "int8" else None
            start = time.time()
            content = export_lib.convert_saved_model(saved, mode, representative,
                                                     config.export.tflite_int8_io)
            seconds = time.time() - start
            path = os.path.join(args.keep_dir or tmp, export_lib.tflite_filename(
                config.model.name, config.export.output_stride, size, mode))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(content)
            predictor = TFLitePredictor(path, num_threads=args.num_threads)
            masks, agree, total = [], 0, 0
            for (image, _), (x, fsize), want in zip(examples, fitted, keras_masks):
                got = restore_size(predictor.run(x[None])[0], fsize, image.shape[:2])
                masks.append(got)
                agree += int(np.sum(got == want))
                total += got.size
            rows[f"tflite {mode}"] = {
                "agreement": agree / total,
                "miou": score(masks),
                "bytes": len(content),
                "convert_s": round(seconds, 1),
                "ops": export_lib.tflite_ops(content),
            }
            print(f"  {mode}: converted in {seconds:.0f} s", flush=True)

    float_miou = rows["keras (fitted input)"]["miou"]
    print(f"\n{len(examples)} val images from {args.val_pattern}\n")
    print("| variant | argmax agreement with Keras | mIoU | size | target |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        mode = name.split()[-1]
        target = ""
        if mode in TARGETS:
            ok = row["agreement"] >= TARGETS[mode]
            target = f"agreement >= {TARGETS[mode]:.1%}: {'met' if ok else 'MISSED'}"
        elif mode == "int8":
            ok = float_miou - row["miou"] <= 0.01
            target = (f"mIoU within 1 point of float ({row['miou'] - float_miou:+.2%}): "
                      f"{'met' if ok else 'MISSED'}")
        agreement = f"{row['agreement']:.3%}" if "agreement" in row else ""
        size_text = f"{row['bytes'] / 2**20:.2f} MiB" if "bytes" in row else ""
        print(f"| {name} | {agreement} | {row['miou']:.2%} | {size_text} | {target} |")
    print()
    for name, row in rows.items():
        if "ops" in row:
            print(f"{name} ops: {', '.join(row['ops'])}")
    print(json.dumps({"checkpoint": checkpoint, "num_images": len(examples), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
