"""`make demo`: from nothing to numbers on the synthetic VOC+SBD layout, printing each step.

    make demo                      # creates .venv if needed, then: python -m deeplab_family.demo

1. the virtual environment (`make` creates `.venv` from requirements.lock first);
2. a synthetic dataset in the PASCAL VOC 2012 + SBD layout (`tfrecords_tools.synthetic`);
3. train_aug and val TFRecord shards with the real VOC builder (`tfrecords_tools.voc`);
4. a small DeepLabv3 trained under MirroredStrategy with 2 CPU replicas (`deeplab_family.train`,
   `train_configs/tiny_deeplabv3_os16_synthetic.yaml`);
5. evaluation at output stride 8 with flip (`deeplab_family.evaluate`);
6. the mIoU.

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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deeplab_family.demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=OUTPUT)
    parser.add_argument("--num-train", type=int, default=300)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps (default: the tiny config's)")
    args = parser.parse_args(argv)

    start = time.monotonic()
    out = args.output_dir
    py = sys.executable
    total = 6
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

    # ---- Export steps (the Export issue) go here: SavedModel + TFLite from `model_dir`, then
    # ---- `python -m deeplab_family.predict` on a val image. Renumber `total` when adding them.

    print(f"\n[6/{total}] result")
    print(f"val mIoU {report['miou']:.4f} (pixel accuracy {report['pixel_accuracy']:.4f}) on "
          f"{report['num_images']} images at output stride {report['output_stride']} with flip; "
          f"details in {report['results_file']}")
    print(f"demo finished in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
