"""Val mIoU of tiny PAN, GCN and ExFuse models trained briefly on the synthetic VOC layout.

Each model is the tiny DeepLabv3 config's backbone (`train_configs/tiny_...synthetic.yaml`,
output stride 16, so the decoders meet both equal-stride and stride-2 steps) with that model's
head at a small width, trained for `--steps` steps with the same seed, data and input order,
then evaluated single-scale at output stride 16. Every step is the command a user would type
(`deeplab_family.train`, `deeplab_family.evaluate`), run in a child process.

Used to compare two trees on the same protocol (e.g. before and after a decoder change): run it
from each tree's root with the same arguments; the figures are printed, not asserted.

    python benchmarks/decoder_miou.py --steps 300 --work-dir /tmp/decoder_miou
"""

import argparse
import json
import os
import shutil
import sys

from _child import run  # benchmarks/_child.py, beside this script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "train_configs", "tiny_deeplabv3_os16_synthetic.yaml")

HEADS = {
    "pan": ["model.head={filters: 32}"],
    # No BatchNorm in the GCN decoder: the tiny config's learning rate 0.1 diverges there.
    "gcn": ["model.head={kernel_size: 7}", "training.learning_rate=0.01"],
    "exfuse": [
        # DAP off: at full resolution with 9x the classes it costs more than the rest.
        "model.head={kernel_size: 7, ss_filters: 32, lr_stage_depths: [1, 1, 1, 1], dap: false}",
        "training.aux_loss_weights={aux_ecre: 1.0}",
        "training.learning_rate=0.01",
    ],
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--models", default="pan,gcn,exfuse")
    parser.add_argument("--work-dir", default="/tmp/decoder_miou")
    parser.add_argument("--num-train", type=int, default=200)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        metavar="SECTION.KEY=VALUE", help="extra config override; repeatable")
    args = parser.parse_args(argv)

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    py = sys.executable
    data = os.path.join(args.work_dir, "data")
    shards = os.path.join(args.work_dir, "tfrecords")
    if not os.path.isdir(shards):
        run([py, "-m", "tfrecords_tools.synthetic", "--output-dir", data,
              "--num-train", str(args.num_train), "--num-val", str(args.num_val), "--seed", "0"],
             env)
        run([py, "-m", "tfrecords_tools.voc", "--voc-root", os.path.join(data, "VOCdevkit",
              "VOC2012"), "--sbd-root", os.path.join(data, "benchmark_RELEASE", "dataset"),
              "--splits", "train_aug,val", "--output-dir", shards], env)
    results = {}
    for name in args.models.split(","):
        model_dir = os.path.join(args.work_dir, f"model_{name}")
        shutil.rmtree(model_dir, ignore_errors=True)
        common = [
            "--set", f"model.name={name}",
            *[a for o in HEADS[name] for a in ("--set", o)],
            "--set", f"train_data.file_pattern={shards}/train_aug-*.tfrecord",
            "--set", f"eval_data.file_pattern={shards}/val-*.tfrecord",
            *[a for o in args.overrides for a in ("--set", o)],
        ]
        _, train_s = run([py, "-m", "deeplab_family.train", "--config", CONFIG, "--model-dir",
                           model_dir, "--set", f"training.steps={args.steps}",
                           "--set", f"training.checkpoint_every={args.steps}",
                           "--set", "training.image_summary_every=0", *common], env)
        out, _ = run([py, "-m", "deeplab_family.evaluate", "--config", CONFIG, "--model-dir",
                       model_dir, "--output-stride", "16", "--scales", "1.0",
                       "--set", "evaluation.flip=false", *common], env)
        result = json.loads(out.strip().splitlines()[-1])
        results[name] = result["miou"]
        print(f"{name}: val mIoU {result['miou']:.4f} after {args.steps} steps "
              f"(training {train_s:.0f} s)", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
