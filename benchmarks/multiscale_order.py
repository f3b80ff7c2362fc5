"""Multi-scale + flip evaluation of a trained model with both orders of resize and softmax.

research/deeplab resizes each scale's logits to the image, then takes the softmax, then averages
(our default, `inference.multi_scale_probabilities(resize="logits")`); the other order takes the
softmax first and resizes the probabilities. This scores one model both ways on the same
images, and reports the mIoU of each and the share of pixels whose class differs.

    python benchmarks/multiscale_order.py --model-dir demo_output/model \\
        --val-pattern 'demo_output/tfrecords/val-*.tfrecord'
"""

import argparse
import dataclasses
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--config", default=None, help="default: <model-dir>/config.yaml")
    parser.add_argument("--val-pattern", required=True)
    parser.add_argument("--output-stride", type=int, default=8)
    parser.add_argument("--scales", default="0.5,0.75,1.0,1.25,1.5,1.75")
    parser.add_argument("--no-flip", action="store_true")
    args = parser.parse_args(argv)

    import numpy as np

    from deeplab_family import evaluate
    from deeplab_family.cli import load_experiment_config
    from deeplab_family.data.pipeline import make_dataset
    from deeplab_family.inference import load_inference_model
    from deeplab_family.training.metrics import StreamingConfusionMatrix

    config = load_experiment_config(args.config, args.model_dir,
                                    [f"eval_data.file_pattern={args.val_pattern}"])
    model, prefix = load_inference_model(config.model, args.model_dir, args.output_stride)
    scales = [float(s) for s in args.scales.split(",")]
    flip = not args.no_flip
    orders = ("logits", "probabilities")
    predictors = {o: evaluate.make_predictor(model, scales, flip, resize=o) for o in orders}
    n = config.model.num_classes
    matrices = {o: StreamingConfusionMatrix(n, config.eval_data.ignore_label) for o in orders}
    changed = total = images = 0
    data = make_dataset(dataclasses.replace(config.eval_data, batch_size=1), training=False)
    for image, label in data:
        preds = {o: predictors[o](image) for o in orders}
        for o in orders:
            matrices[o].update(label, preds[o])
        a, b = (np.asarray(preds[o]) for o in orders)
        changed += int((a != b).sum())
        total += a.size
        images += 1
    print(f"{prefix}: {images} images, OS{args.output_stride}, scales {scales}, flip {flip}")
    for o in orders:
        print(f"  resize {o:13s} then average: mIoU {matrices[o].miou():.4f}")
    print(f"  difference: {matrices['logits'].miou() - matrices['probabilities'].miou():+.6f} "
          f"mIoU; {changed} of {total} pixels ({100 * changed / total:.3f}%) change class")


if __name__ == "__main__":
    main()
