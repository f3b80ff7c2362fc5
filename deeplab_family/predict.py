"""Segment images with an exported model: a SavedModel or a `.tflite` file.

    python -m deeplab_family.predict --model PATH IMAGE... --output-dir DIR [--alpha 0.5]

PATH is a SavedModel directory (`<export-dir>/<version>`, or `<export-dir>` itself: its highest
version) or a `.tflite` file written by `deeplab_family.export`. For each IMAGE (JPEG or PNG)
it writes to DIR:

- `<stem>_mask.png`: the classes as a palette PNG in the dataset's colours, the format of VOC's
  `SegmentationClass` (mode "P": the pixel values are the class indices; PIL's
  `np.array(Image.open(...))` gives them back);
- `<stem>_overlay.png`: the image with the classes blended in their colours (a class named
  "background" is left unblended), and under it a legend of the classes present with their
  names and shares of the image (`--no-legend`: the image size, without it).

The names and colours are the dataset spec's (`data/spec.py`) that the export recorded in its
`export_info.json` (`--spec` names another: a built-in name or a YAML file); VOC's when the
export has none.

A SavedModel gets the file's bytes, as a TF Serving client sends them (`serving_default`), and
answers at the image's size. A TFLite model has a fixed input size: the image is padded at the
bottom and right with the ImageNet mean pixel (the training padding), or first shrunk to fit
if it is larger, keeping its aspect ratio; the mask is cropped back and, if the image was
shrunk, resized to the original size (nearest neighbour).

A missing, unreadable or undecodable image is reported with its name on stderr and skipped;
the exit status is 1 when any image failed, 0 otherwise, and 2 when `--model` is no exported
model (`deeplab_family.cli`).
"""

import argparse
import os
import sys

import numpy as np
import tensorflow as tf
from PIL import Image

from deeplab_family import cli
from deeplab_family.data.palette import VOC_COLORMAP, pil_palette
from deeplab_family.data.spec import DatasetSpec, load_spec
from deeplab_family.export.export_dir import versions
from deeplab_family.inference import JPEG_MAGIC, PNG_MAGIC, fit_to_size, restore_size


class ImageError(ValueError):
    """An input image that cannot be used; the message names the file."""


def read_image(path):
    """The file's bytes and its pixels, uint8 `(H, W, 3)` RGB, decoded as the SavedModel does."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith((JPEG_MAGIC, PNG_MAGIC)):
        raise ImageError(f"{path} is not a JPEG or PNG file ({len(data)} bytes)")
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except tf.errors.OpError as e:
        raise ImageError(f"{path} cannot be decoded: {e.message}") from None
    return data, image


def resolve_saved_model(path):
    """A SavedModel dir, or the highest `<version>` of a TF Serving base path."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    found = [v for v in versions(path)
             if os.path.exists(os.path.join(path, str(v), "saved_model.pb"))]
    if found:
        return os.path.join(path, str(found[-1]))
    raise FileNotFoundError(
        f"{path} is neither a SavedModel directory (with saved_model.pb) nor an export dir "
        "with numbered versions, nor a .tflite file"
    )


class SavedModelPredictor:
    """Runs the `serving_default` signature on encoded image files.

    Args:
        path: SavedModel dir or TF Serving base path (highest version).
    """

    def __init__(self, path):
        self.path = resolve_saved_model(path)
        self._loaded = tf.saved_model.load(self.path)
        self._serve = self._loaded.signatures["serving_default"]

    def predict(self, image_bytes, image=None):
        """uint8 `(H, W)` classes of one encoded image."""
        out = self._serve(image_bytes=tf.constant([image_bytes]))
        return out["semantic_predictions"][0].numpy()


class TFLitePredictor:
    """Runs a fixed-size TFLite model from `export` on images of any size.

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads (None: LiteRT's default).
    """

    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        if not os.path.isfile(path):
            raise FileNotFoundError(f"no TFLite file {path}")
        self.path = path
        self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
        self._runner = self.interpreter.get_signature_runner("serving_default")
        details = self._runner.get_input_details()["images"]
        self.size = tuple(int(v) for v in details["shape"][1:3])
        self.input_dtype = details["dtype"]
        self.input_quantization = details["quantization"]  # (scale, zero_point)

    def run(self, images):
        """float32 pixels `(1, H, W, 3)` at the model size -> uint8 classes `(1, H, W)`."""
        images = np.asarray(images, np.float32)
        if self.input_dtype != np.float32:
            scale, zero_point = self.input_quantization
            info = np.iinfo(self.input_dtype)
            images = np.clip(np.round(images / scale + zero_point), info.min, info.max)
            images = images.astype(self.input_dtype)
        return self._runner(images=images)["semantic_predictions"]

    def predict(self, image_bytes=None, image=None):
        """uint8 `(h, w)` classes of one image `(h, w, 3)`, fitted around the model size."""
        fitted, fitted_size = fit_to_size(image, self.size)
        mask = self.run(fitted[None])[0]
        return restore_size(mask, fitted_size, image.shape[:2])


def export_spec(model_path):
    """The dataset spec in the `export_info.json` of an exported model, or None.

    Looked for beside the SavedModel (`<version>/export_info.json`) and, for a `.tflite` file,
    in the version dir above it (`<version>/tflite/<name>.tflite`).
    """
    import json

    if model_path.endswith(".tflite"):
        folder = os.path.dirname(os.path.abspath(model_path))
        candidates = [folder, os.path.dirname(folder)]
    else:
        try:
            candidates = [resolve_saved_model(model_path)]
        except FileNotFoundError:
            return None
    for folder in candidates:
        path = os.path.join(folder, "export_info.json")
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    values = json.load(f).get("dataset_spec")
            except (OSError, ValueError, AttributeError):
                return None
            return DatasetSpec.from_dict(values, source=path) if values else None
    return None


def load_predictor(path, num_threads=None):
    """A `TFLitePredictor` for a `.tflite` file, else a `SavedModelPredictor`."""
    if path.endswith(".tflite"):
        return TFLitePredictor(path, num_threads=num_threads)
    return SavedModelPredictor(path)


def save_mask_png(mask, path, spec=None):
    """Writes classes `(H, W)` as a VOC-style palette PNG (mode "P", indices preserved), in the
    spec's colours (VOC's without one)."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    image.putpalette(pil_palette(_colormap(spec)))
    image.save(path)


def _spec(spec):
    return spec if spec is not None else load_spec("voc")


def _colormap(spec):
    """The spec's colours by class id; VOC's whole 256-entry devkit map without a spec."""
    return spec.colormap() if spec is not None else VOC_COLORMAP


def unblended_classes(spec):
    """The ids of the classes an overlay leaves as they are: those named "background"."""
    return [i for i, name in enumerate(_spec(spec).classes) if name.lower() == "background"]


def overlay(image, mask, alpha=0.5, spec=None):
    """The image with every pixel of a class other than "background" blended with its colour."""
    image = np.asarray(image, np.float32)
    mask = np.asarray(mask, np.int64)
    colours = _colormap(spec)[mask].astype(np.float32)
    blended = (1.0 - alpha) * image + alpha * colours
    keep = np.isin(mask, unblended_classes(spec))
    out = np.where(keep[..., None], image, blended)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def class_shares(mask, num_classes):
    """`[(class_id, share of the pixels)]` of the classes in the mask, largest first."""
    counts = np.bincount(np.asarray(mask, np.int64).ravel(), minlength=num_classes)
    total = max(int(counts.sum()), 1)
    present = [(int(c), counts[c] / total) for c in np.flatnonzero(counts)]
    return sorted(present, key=lambda item: (-item[1], item[0]))


def overlay_with_legend(image, mask, alpha=0.5, spec=None):
    """`overlay` with, under it, the legend of the classes present and their shares."""
    from deeplab_family.legend import legend_strip

    spec = _spec(spec)
    blended = overlay(image, mask, alpha, spec)
    strip = legend_strip(spec, class_shares(mask, spec.num_classes), blended.shape[1])
    return np.concatenate([blended, strip], axis=0)


def _output_stem(path, used):
    stem = os.path.splitext(os.path.basename(path))[0] or "image"
    candidate, k = stem, 2
    while candidate in used:
        candidate, k = f"{stem}-{k}", k + 1
    used.add(candidate)
    return candidate


def predict_files(predictor, paths, output_dir, alpha=0.5, log=print, err=None, spec=None,
                  legend=True):
    """Writes the mask and overlay of every image; returns `(written, failed)`.

    `spec`: the dataset spec of the names and colours (VOC's when None); `legend`: the legend
    under each overlay.

    `written` is a list of `(image, mask_png, overlay_png)`, `failed` of `(image, reason)`.
    A failed image is reported (by name) and skipped.
    """
    err = err or (lambda m: print(m, file=sys.stderr, flush=True))
    os.makedirs(output_dir, exist_ok=True)
    used, written, failed = set(), [], []
    for path in paths:
        try:
            data, image = read_image(path)
            mask = predictor.predict(data, image)
            if mask.shape != image.shape[:2]:
                raise ImageError(f"{path}: the model returned a {mask.shape} mask for a "
                                 f"{image.shape[:2]} image")
            stem = _output_stem(path, used)
            mask_path = os.path.join(output_dir, f"{stem}_mask.png")
            overlay_path = os.path.join(output_dir, f"{stem}_overlay.png")
            save_mask_png(mask, mask_path, spec)
            drawn = (overlay_with_legend if legend else overlay)(image, mask, alpha, spec)
            Image.fromarray(drawn).save(overlay_path)
        except FileNotFoundError:
            reason = f"{path}: no such file"
        except IsADirectoryError:
            reason = f"{path}: is a directory, not an image"
        except OSError as e:
            reason = f"{path}: cannot be read: {e.strerror or e}"
        except ImageError as e:
            reason = str(e)
        except tf.errors.OpError as e:  # the SavedModel's own check, e.g. a corrupt JPEG body
            reason = f"{path}: the model rejected it: {e.message}"
        else:
            written.append((path, mask_path, overlay_path))
            log(f"{path} -> {mask_path} {overlay_path}")
            continue
        failed.append((path, reason))
        err(f"predict: skipping {reason}")
    return written, failed


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m deeplab_family.predict", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", required=True,
                        help="SavedModel dir, TF Serving export dir, or .tflite file")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG or PNG files")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (0.5)")
    parser.add_argument("--num-threads", type=int, default=None, help="TFLite threads")
    parser.add_argument("--spec", default=None,
                        help="dataset spec of the names and colours (a built-in name or a YAML "
                             "file; default: the export's, else VOC's)")
    parser.add_argument("--no-legend", action="store_true",
                        help="overlays at the image size, without the legend of classes")
    args = parser.parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must be in [0, 1]. Received: {args.alpha}")
    try:
        predictor = load_predictor(args.model, num_threads=args.num_threads)
    except (OSError, ValueError) as e:
        return cli.error(f"cannot load --model {args.model}: {e}", cli.EXIT_USAGE)
    try:
        spec = load_spec(args.spec) if args.spec else export_spec(args.model)
    except ValueError as e:
        return cli.error(f"cannot use the dataset spec: {e}", cli.EXIT_USAGE)
    written, failed = predict_files(predictor, args.images, args.output_dir, args.alpha,
                                    spec=spec, legend=not args.no_legend)
    print(f"predict: {len(written)} of {len(args.images)} images written to {args.output_dir}",
          file=sys.stderr)
    if failed:
        print(f"predict: {len(failed)} failed: {', '.join(p for p, _ in failed)}",
              file=sys.stderr)
        return cli.EXIT_FAILURE
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
