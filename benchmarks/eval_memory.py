"""Evaluation memory: resident memory image after image, multi-scale + flip, varied sizes.

`deeplab_family.evaluate` runs one image at a time through one traced function with dynamic
height and width (`evaluate.make_predictor`), so memory should level off after the first
images and stay flat however many images follow, at any scale. This script measures it: it
feeds `--images` random images of VOC-like sizes (500x375, 375x500, 500x333, 333x500, 500x281,
486x500, ... cycling, so every image size differs from the previous) through the predictor at
`--output-stride` with `--scales` and flip (`--sizes random`: a new random size for every
image instead), and prints the process's resident memory
(/proc/self/statm) after chosen images, the peak (ru_maxrss), and the growth between the
`--settle`-th image and the last. Random weights: memory does not depend on them.

    .venv/bin/python benchmarks/eval_memory.py                       # tiny model, 60 images
    .venv/bin/python benchmarks/eval_memory.py --images 120 --settle 40 --malloc-arenas 0
    .venv/bin/python benchmarks/eval_memory.py --model r101 --images 8 --output-stride 16

The evaluate command caps glibc's malloc arenas at two (`deeplab_family.malloc`); with
`--malloc-arenas 0` (glibc's default, up to 8 arenas per core) the resident memory creeps up by
several MiB per image although nothing leaks. A retrace per size would also show here, as a
trace count above 1.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from _child import peak_rss_mib, rss_mib  # noqa: E402 (after the path)

SIZES = [(375, 500), (500, 375), (333, 500), (500, 333), (281, 500), (500, 486), (366, 500),
         (500, 400), (354, 480), (442, 500)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", choices=["tiny", "r101"])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--output-stride", type=int, default=8, choices=[8, 16, 32])
    parser.add_argument("--scales", default="0.5,0.75,1.0,1.25,1.5,1.75")
    parser.add_argument("--no-flip", action="store_true")
    parser.add_argument("--sizes", default="cycle", choices=["cycle", "random"],
                        help="cycle through 10 VOC sizes, or draw every size at random in "
                             "250..500 x 250..500 (every image a new shape, as in VOC val)")
    parser.add_argument("--malloc-arenas", type=int, default=2,
                        help="cap glibc's malloc arenas, as `evaluate` does (0: glibc's default)")
    parser.add_argument("--settle", type=int, default=10,
                        help="growth is measured from this image to the last")
    args = parser.parse_args(argv)
    if args.images <= args.settle:
        parser.error("--images must be larger than --settle")
    from deeplab_family.malloc import limit_arenas

    capped = bool(args.malloc_arenas) and limit_arenas(args.malloc_arenas)
    import numpy as np  # after the cap: TensorFlow's threads then use the capped arenas
    import tensorflow as tf
    from export import model_config  # benchmarks/export.py: the same tiny and R101 configs

    from deeplab_family.evaluate import make_predictor
    from deeplab_family.inference import build_inference_model

    scales = [float(s) for s in args.scales.split(",")]
    model = build_inference_model(model_config(args.model), args.output_stride)
    predict = make_predictor(model, scales, flip=not args.no_flip)
    print(f"{args.model}: output stride {args.output_stride}, scales {scales}, flip "
          f"{not args.no_flip}, {args.images} images ({args.sizes} sizes), malloc arenas "
          f"{args.malloc_arenas if capped else 'glibc default'}, TF {tf.__version__}, "
          f"{os.cpu_count()} CPUs")
    print(f"RSS before the first image: {rss_mib():,.0f} MiB")
    rng = np.random.default_rng(0)
    marks = {1, 2, 5, args.settle, args.images} | set(range(20, args.images, 20))
    rss, start = {}, time.monotonic()
    for i in range(1, args.images + 1):
        if args.sizes == "cycle":
            h, w = SIZES[(i - 1) % len(SIZES)]
        else:
            h, w = (int(v) for v in rng.integers(250, 501, 2))
        image = tf.constant(rng.uniform(0, 255, (1, h, w, 3)).astype("float32"))
        predict(image).numpy()
        rss[i] = rss_mib()
        if i in marks:
            print(f"  after image {i:4d} ({h}x{w}): RSS {rss[i]:,.0f} MiB "
                  f"({(time.monotonic() - start) / i:.2f} s/image)", flush=True)
    growth = rss[args.images] - rss[args.settle]
    per_image = growth / (args.images - args.settle)
    print(f"traces of the predictor: {predict.experimental_get_tracing_count()}")
    print(f"growth from image {args.settle} to {args.images}: {growth:+.1f} MiB "
          f"({per_image:+.2f} MiB/image); peak RSS {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
