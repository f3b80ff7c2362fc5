"""Prints parameters and FLOPs of the backbones at 512x512 and 513x513 (not run by the tests).

    .venv/bin/python benchmarks/backbone_params.py [--fast]

FLOPs are 2 x MACs, counted on the traced graph of the built model (`deeplab_family.flops`),
no head, output stride 32 unless the row says otherwise. Our nets are also checked against
the analytic `plan_macs`; `--fast` uses only the analytic count for ours (no tracing).
keras.applications rows are built with weights=None (nothing is downloaded).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from deeplab_family.backbones import (
    backbone_preset,
    build_backbone,
    layer_rearranged_widths,
    plan_macs,
    plan_params,
)
from deeplab_family.flops import count_macs
from deeplab_family.weights.keras_applications import keras_applications_resnet

SIZES = ((512, 512), (513, 513))
OURS = [
    ("resnet50", {}),
    ("resnet101", {}),
    ("resnet152", {}),
    ("resnet101_deep", {}),
    ("resnext101_32x4d", {}),
    ("resnext101_32x4d_lr", {}),
    ("resnext131_se", {}),
    ("resnet101", {"output_stride": 16, "multi_grid": (1, 2, 4)}),
    ("resnet101", {"output_stride": 8, "multi_grid": (1, 2, 4)}),
]


def _row(name, params, macs):
    cells = "".join(f"{2 * m / 1e9:>14.2f}" for m in macs)
    return f"{name:<36}{params:>14,}{cells}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="analytic MACs only for our nets")
    args = parser.parse_args()

    header = f"{'backbone':<36}{'params':>14}" + "".join(f"{f'GFLOPs@{h}':>14}" for h, _ in SIZES)
    print(header)
    print("-" * len(header))
    for preset, overrides in OURS:
        t = time.time()
        config = backbone_preset(preset, **overrides)
        macs = [plan_macs(config, size) for size in SIZES]
        params = plan_params(config)
        if not args.fast:
            model = build_backbone(config)
            assert model.count_params() == params
            graph = [count_macs(model, (*size, 3)) for size in SIZES]
            assert graph == macs, (preset, graph, macs)
        label = preset + "".join(f" os{v}" for k, v in overrides.items() if k == "output_stride")
        print(_row(label, params, macs) + f"   ({time.time() - t:.0f}s)")
    for depth in (50, 101):
        model = keras_applications_resnet(depth)
        macs = [count_macs(model, (*size, 3)) for size in SIZES]
        print(_row(f"keras.applications ResNet{depth} notop", model.count_params(), macs))

    widths, ratio = layer_rearranged_widths()
    print(
        f"\nLayer Rearrangement {{8, 8, 9, 8}}: widths {widths}, MACs / ResNeXt-101 32x4d "
        f"at 512x512 = {ratio:.4f}"
    )
    p_widths, p_ratio = layer_rearranged_widths(criterion="params")
    print(f"(matching parameters instead would need widths {p_widths}: params ratio {p_ratio:.4f})")
    print("keras.applications counts include one bias per conv channel; ours fold them into BN.")


if __name__ == "__main__":
    main()
