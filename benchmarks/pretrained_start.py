"""A demo-size run that starts from a converted PyTorch-format file, against one from random.

1. trains the tiny DeepLabv3 config (`train_configs/tiny_...synthetic.yaml`) with PyTorch's
   conventions (inputs "torch", stride on the 3x3) for `--source-steps` steps on the synthetic
   VOC layout: the "pretrained" backbone;
2. writes that backbone as a torchvision-style state dict in `.safetensors` (OIHW kernels,
   `layer{k}.{j}.conv{c}`, `bn{c}.running_mean`, `downsample.0/1`, and an `fc` classifier);
3. `python -m deeplab_family.weights inspect` and `convert` it, and checks that the converted
   backbone equals the trained one exactly;
4. trains two fresh runs of `--steps` steps, one with `model.backbone_weights: <converted>`,
   one with `model.random_init: true`, same seed and data, and evaluates both (OS16, single
   scale).

The backbone was trained on the same synthetic set, so the gap measures the weights travelling
through the torch format and the importer into a run, not ImageNet transfer. Every step is the
command a user would type, in a child process; the figures are printed, not asserted.

    python benchmarks/pretrained_start.py --work-dir /tmp/pretrained_start
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np
from _child import run  # benchmarks/_child.py, beside this script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
CONFIG = os.path.join(REPO, "train_configs", "tiny_deeplabv3_os16_synthetic.yaml")
TORCH_CONVENTIONS = ["model.backbone.preprocessing=torch", "model.backbone.stride_in_1x1=false"]
STAGES = ("res2", "res3", "res4", "res5")


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def torchvision_state_dict(backbone):
    """`backbone`'s weights in torchvision's ResNet names and layouts (standard stem)."""
    state = {}

    def put(layer_name, conv, bn):
        layer = backbone.get_layer(layer_name)
        kernel = np.asarray(layer.conv.kernel)
        state[f"{conv}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
        norm = layer.norm
        for key, variable in (("weight", norm.gamma), ("bias", norm.beta),
                              ("running_mean", norm.moving_mean),
                              ("running_var", norm.moving_variance)):
            state[f"{bn}.{key}"] = np.asarray(variable).astype("float32")
        state[f"{bn}.num_batches_tracked"] = np.array(0, "int64")

    put("stem_conv1", "conv1", "bn1")
    names = {layer.name for layer in backbone.layers}
    for k, stage in enumerate(STAGES, start=1):
        j = 1
        while f"{stage}_unit{j}_conv1" in names:
            prefix = f"layer{k}.{j - 1}"
            for c in (1, 2, 3):
                put(f"{stage}_unit{j}_conv{c}", f"{prefix}.conv{c}", f"{prefix}.bn{c}")
            shortcut = backbone.get_layer(f"{stage}_unit{j}_shortcut") \
                if f"{stage}_unit{j}_shortcut" in names else None
            if shortcut is not None and hasattr(shortcut, "conv"):
                put(f"{stage}_unit{j}_shortcut", f"{prefix}.downsample.0",
                    f"{prefix}.downsample.1")
            j += 1
    channels = int(np.asarray(backbone.get_layer("res5_unit1_conv3").conv.kernel).shape[-1])
    state["fc.weight"] = np.zeros((1000, channels), "float32")
    state["fc.bias"] = np.zeros(1000, "float32")
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source-steps", type=int, default=800)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--work-dir", default="/tmp/pretrained_start")
    parser.add_argument("--num-train", type=int, default=300)
    parser.add_argument("--num-val", type=int, default=50)
    args = parser.parse_args(argv)

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    py = sys.executable
    work = args.work_dir
    data, shards = os.path.join(work, "data"), os.path.join(work, "tfrecords")
    if not os.path.isdir(shards):
        run([py, "-m", "tfrecords_tools.synthetic", "--output-dir", data, "--num-train",
              str(args.num_train), "--num-val", str(args.num_val), "--seed", "0"], env)
        run([py, "-m", "tfrecords_tools.voc", "--voc-root",
              os.path.join(data, "VOCdevkit", "VOC2012"), "--sbd-root",
              os.path.join(data, "benchmark_RELEASE", "dataset"), "--splits", "train_aug,val",
              "--output-dir", shards], env)
    common = [f"train_data.file_pattern={shards}/train_aug-*.tfrecord",
              f"eval_data.file_pattern={shards}/val-*.tfrecord",
              "training.image_summary_every=0", *TORCH_CONVENTIONS]

    def train(model_dir, steps, *overrides):
        shutil.rmtree(model_dir, ignore_errors=True)
        out, seconds = run([py, "-m", "deeplab_family.train", "--config", CONFIG,
                             "--model-dir", model_dir,
                             *_sets([*common, f"training.steps={steps}",
                                     f"training.checkpoint_every={steps}", *overrides])], env)
        return out, seconds

    def evaluate(model_dir):
        out, _ = run([py, "-m", "deeplab_family.evaluate", "--model-dir", model_dir,
                       "--output-stride", "16", "--scales", "1.0",
                       "--set", "evaluation.flip=false"], env)
        return json.loads(out.strip().splitlines()[-1])["miou"]

    source_dir = os.path.join(work, "source")
    _, seconds = train(source_dir, args.source_steps)
    source_miou = evaluate(source_dir)
    print(f"source: {args.source_steps} steps from random ({seconds:.0f} s), val mIoU "
          f"{source_miou:.4f}", flush=True)

    from safetensors.numpy import save_file

    from deeplab_family.config import load_config
    from deeplab_family.models import build_model
    from deeplab_family.training import checkpoints

    config = load_config(os.path.join(source_dir, "config.yaml"))
    model = build_model(config.model)
    checkpoints.restore_model(model, source_dir)
    trained = model.get_layer("backbone")
    torch_file = os.path.join(work, "tiny_resnet.safetensors")
    save_file(torchvision_state_dict(trained), torch_file)
    out, _ = run([py, "-m", "deeplab_family.weights", "inspect", torch_file], env)
    print(out.strip(), flush=True)
    converted = os.path.join(work, "tiny_resnet.weights.h5")
    run([py, "-m", "deeplab_family.weights", "convert", torch_file, "--config", CONFIG,
          "--output", converted, *_sets(common)], env)

    from deeplab_family.backbones import build_backbone, import_weights

    check = build_backbone(config.model.backbone)
    import_weights(check, converted)
    worst = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for a, b in zip(trained.weights, check.weights))
    print(f"converted backbone vs trained: max |difference| {worst:.3g} over "
          f"{len(check.weights)} variables", flush=True)
    if worst != 0.0:
        raise SystemExit("the converted backbone differs from the trained one")

    results = {"source_miou": source_miou, "max_weight_difference": worst}
    runs = {"from_converted_file": [f"model.backbone_weights={converted}"],
            "from_random": ["model.random_init=true"]}
    for name, overrides in runs.items():
        model_dir = os.path.join(work, name)
        out, seconds = train(model_dir, args.steps, *overrides)
        miou = evaluate(model_dir)
        started = [line for line in out.splitlines() if "initialised the backbone" in line]
        results[name] = miou
        print(f"{name}: {args.steps} steps ({seconds:.0f} s), val mIoU {miou:.4f}"
              + (f"\n  {started[0].strip()}" if started else ""), flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
