"""`make demo`: from nothing to numbers on the synthetic VOC+SBD layout, printing each step.

    make demo                      # creates .venv if needed, then: python -m deeplab_family.demo

1. the virtual environment (`make` creates `.venv` from requirements.lock first);
2. a synthetic dataset in the PASCAL VOC 2012 + SBD layout (`tfrecords_tools.synthetic`);
3. train_aug and val TFRecord shards with the real VOC builder (`tfrecords_tools.voc`);
4. a small DeepLabv3 trained under MirroredStrategy with 2 CPU replicas (`deeplab_family.train`,
   `train_configs/tiny_deeplabv3_os16_synthetic.yaml`);
5. evaluation at output stride 8 with flip (`deeplab_family.evaluate`);
6. export: a SavedModel in the TF Serving layout, with the flip of step 5 baked in, plus float16
   and int8 TFLite models (`deeplab_family.export`, int8 calibrated on training images);
7. the check that the SavedModel scores what `evaluate` scored: the same confusion matrix on
   the val shards (`deeplab_family.export.verify`);
8-10. prediction on two validation images with each exported model (`deeplab_family.predict`),
   which writes VOC palette masks and overlays;
11. the mIoU and where the overlays are.

Every step is the command a user would type, run in a child process and printed first.
Everything goes under `demo_output/` (removed at the start, so each run starts from nothing).
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

CONFIG = os.path.join("train_configs", "tiny_deeplabv3_os16_synthetic.yaml")
OUTPUT = "demo_output"


def _run(step, total, title, args, capture=False):
    print(f"\n[{step}/{total}] {title}", flush=True)
    print("$ " + " ".join(shlex.quote(a) for a in args), flush=True)
    start = time.monotonic()
    # Level 3: no "failed call to cuInit" noise from CUDA libraries on a machine without a GPU.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
               PYTHONUNBUFFERED="1")
    if capture:
        proc = subprocess.run(args, env=env, stdout=subprocess.PIPE, text=True, check=False)
        sys.stdout.write(proc.stdout)
    else:
        proc = subprocess.run(args, env=env, check=False)
    if proc.returncode:
        print(f"step {step} failed (exit status {proc.returncode})", file=sys.stderr)
        sys.exit(proc.returncode)
    print(f"      ({time.monotonic() - start:.0f} s)", flush=True)
    return proc.stdout if capture else None


def _val_images(synthetic, count):
    """The first `count` JPEGs listed in the synthetic layout's VOC val.txt."""
    voc = os.path.join(synthetic, "VOCdevkit", "VOC2012")
    with open(os.path.join(voc, "ImageSets", "Segmentation", "val.txt")) as f:
        ids = [line.strip() for line in f if line.strip()][:count]
    return [os.path.join(voc, "JPEGImages", f"{i}.jpg") for i in ids]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deeplab_family.demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=OUTPUT)
    parser.add_argument("--num-train", type=int, default=300)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps (default: the tiny config's)")
    parser.add_argument("--calibration-images", type=int, default=32,
                        help="training images for the int8 calibration")
    args = parser.parse_args(argv)

    start = time.monotonic()
    out = args.output_dir
    py = sys.executable
    total = 11
    print(f"[1/{total}] virtual environment: {os.path.dirname(os.path.dirname(py))} "
          f"(Python {sys.version.split()[0]}; `make` builds it from requirements.lock)")
    if os.path.exists(out):
        print(f"      removing the previous {out}/")
        shutil.rmtree(out)
    synthetic = os.path.join(out, "synthetic")
    shards = os.path.join(out, "tfrecords")
    model_dir = os.path.join(out, "model")

    _run(2, total, "synthetic dataset in the VOC 2012 + SBD layout",
         [py, "-m", "tfrecords_tools.synthetic", "--output-dir", synthetic,
          "--num-train", str(args.num_train), "--num-val", str(args.num_val), "--seed", "0",
          "--no-progress"])
    _run(3, total, "train_aug and val TFRecords with the VOC builder",
         [py, "-m", "tfrecords_tools.voc",
          "--voc-root", os.path.join(synthetic, "VOCdevkit", "VOC2012"),
          "--sbd-root", os.path.join(synthetic, "benchmark_RELEASE", "dataset"),
          "--splits", "train_aug,val", "--output-dir", shards, "--no-progress"])
    data = ["--set", f"train_data.file_pattern={os.path.join(shards, 'train_aug-*.tfrecord')}",
            "--set", f"eval_data.file_pattern={os.path.join(shards, 'val-*.tfrecord')}"]
    steps = ["--set", f"training.steps={args.steps}"] if args.steps else []
    _run(4, total, "train a small DeepLabv3 (OS16) under MirroredStrategy, 2 CPU replicas",
         [py, "-m", "deeplab_family.train", "--config", CONFIG, "--model-dir", model_dir,
          "--cpu-replicas", "2", *data, *steps])
    report_line = _run(5, total, "evaluate at output stride 8 with left-right flip",
                       [py, "-m", "deeplab_family.evaluate", "--config", CONFIG,
                        "--model-dir", model_dir, "--output-stride", "8", "--flip", *data],
                       capture=True)
    report = json.loads(report_line.strip().splitlines()[-1])

    export_line = _run(6, total, "export: SavedModel (TF Serving layout, output stride 8, flip) "
                       "+ float16 and int8 TFLite",
                       [py, "-m", "deeplab_family.export", "--config", CONFIG,
                        "--model-dir", model_dir, "--export-dir", os.path.join(out, "export"),
                        "--tflite", "float16,int8", "--set", "export.flip=true",
                        "--set", f"export.representative_samples={args.calibration_images}",
                        *data],
                       capture=True)
    exported = json.loads(export_line.strip().splitlines()[-1])
    verify_line = _run(7, total, "verify: the SavedModel gives evaluate's confusion matrix",
                       [py, "-m", "deeplab_family.export.verify",
                        "--export", exported["saved_model"]], capture=True)
    verified = json.loads(verify_line.strip().splitlines()[-1])
    images = _val_images(synthetic, 2)
    overlays = {}
    variants = [("saved_model", exported["saved_model"]),
                ("tflite_float16", exported["tflite"]["float16"]),
                ("tflite_int8", exported["tflite"]["int8"])]
    for step, (name, path) in enumerate(variants, start=8):
        target = os.path.join(out, "predict", name)
        _run(step, total, f"predict on {len(images)} val images with the {name} export",
             [py, "-m", "deeplab_family.predict", "--model", path, *images,
              "--output-dir", target])
        overlays[name] = sorted(os.path.join(target, f) for f in os.listdir(target)
                                if f.endswith("_overlay.png"))

    print(f"\n[11/{total}] result")
    print(f"val mIoU {report['miou']:.4f} (pixel accuracy {report['pixel_accuracy']:.4f}) on "
          f"{report['num_images']} images at output stride {report['output_stride']} with flip; "
          f"details in {report['results_file']}")
    print(f"the SavedModel gives the same confusion matrix on the {verified['num_images']} val "
          f"images (mIoU {verified['export_miou']:.4f})")
    print(f"exports in {os.path.dirname(exported['saved_model'])}/ "
          f"(TF Serving: docs/serving.md); overlays:")
    for name, paths in overlays.items():
        for path in paths:
            print(f"  {name:15s} {path}")
    print(f"demo finished in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
