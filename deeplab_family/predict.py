"""Segment images, folders and videos with an exported model: a SavedModel or a `.tflite` file.

    python -m deeplab_family.predict --model PATH INPUT... --output-dir DIR [--alpha 0.5]
                                     [--every N] [--no-legend] [--spec NAME]

PATH is a SavedModel directory (`<export-dir>/<version>`, or `<export-dir>` itself: its highest
version) or a `.tflite` file written by `deeplab_family.export`. Each INPUT is:

- an image file (JPEG or PNG, whatever its name), which writes to DIR:
  - `<stem>_mask.png`: the classes as a palette PNG in the dataset's colours, the format of
    VOC's `SegmentationClass` (mode "P": the pixel values are the class indices; PIL's
    `np.array(Image.open(...))` gives them back);
  - `<stem>_overlay.png`: the image with the classes blended in their colours (a class named
    "background" is left unblended), and under it a legend of the classes present with their
    names and shares of the image (`--no-legend`: the image size, without it);
- a directory: every `.jpg`, `.jpeg` and `.png` file under it (any case; recursively; sorted by
  relative path; names starting with "." skipped, as are the files under DIR itself), written
  as above at the same relative path under DIR, so `a/x.png` and `b/x.png` give
  `DIR/a/x_mask.png` and `DIR/b/x_mask.png`. Other files are no failure: their count is
  reported in one line. A directory without images is a failure;
- a video (`VIDEO_EXTENSIONS`, by extension; decoded by OpenCV), segmented frame by frame into
  `<stem>_overlay.mp4` (MPEG-4 Part 2, "mp4v": this OpenCV build has no H.264 encoder; an
  `.avi` in Motion JPEG where mp4v cannot be written) with every frame of the input, at its
  fps and size. The legend of each frame's classes is drawn into the frame's bottom (at most
  a third of its height, the largest classes first; none on frames under 78 px tall), so
  that the video keeps the input's size. `--every N` segments one frame in N and overlays
  its mask on the N-1 that follow (a preview N times faster, every frame still written).

Images are done first, then videos, each in the order given. A bar on stderr shows the
progress over the images (when there are several) and over each video's frames.

The names and colours are the dataset spec's (`data/spec.py`) that the export recorded in its
`export_info.json` (`--spec` names another: a built-in name or a YAML file); VOC's when the
export has none.

A SavedModel gets an image file's bytes, as a TF Serving client sends them (`serving_default`),
and a video's decoded frames as pixels (`serve_image_tensor`: no re-encoding, which would cost
time and, in JPEG, change the pixels); it answers at the input's size. A TFLite model has a
fixed input size: the image is padded at the bottom and right with the ImageNet mean pixel
(the training padding), or first shrunk to fit if it is larger, keeping its aspect ratio; the
mask is cropped back and, if the image was shrunk, resized to the original size (nearest
neighbour). A TFLite file that ends at `logits` or `probabilities` (`export.tflite_output`,
for the GPU and NNAPI delegates, which do not run ARG_MAX) has its argmax taken here, in NumPy,
before the crop.

A missing, unreadable or undecodable image, and a video that cannot be opened or read, is
reported with its name on stderr and skipped, every other input still done; the exit status is
1 when any input failed (a last line names them all), 0 otherwise, and 2 when `--model` is no
exported model (`deeplab_family.cli`).
"""

import argparse
import math
import os
import sys
import time

import tensorflow as tf
from PIL import Image

from deeplab_family import _validation, cli
from deeplab_family.data.spec import load_spec
from deeplab_family.masks import (  # noqa: F401 (the drawing functions, re-exported)
    class_shares,
    frame_overlay,
    overlay,
    overlay_with_legend,
    save_mask_png,
    unblended_classes,
)
from deeplab_family.predictors import (  # noqa: F401 (the predictors, re-exported)
    ImageError,
    SavedModelPredictor,
    TFLitePredictor,
    export_spec,
    load_predictor,
    read_image,
    resolve_saved_model,
)
from deeplab_family.progress import StatusLine, bar, format_duration

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")
# The overlay video's codecs, in order of preference: (fourcc, extension).
VIDEO_CODECS = (("mp4v", ".mp4"), ("MJPG", ".avi"))
DEFAULT_FPS = 25.0  # for a video whose container states no frame rate


def _unique(key, used):
    """`key`, or `key-2`, `key-3`, ... : the first not in `used` (which it is added to)."""
    candidate, k = key, 2
    while candidate in used:
        candidate, k = f"{key}-{k}", k + 1
    used.add(candidate)
    return candidate


def _output_stem(path, used):
    return _unique(os.path.splitext(os.path.basename(path))[0] or "image", used)


class Progress:
    """`predict: 12/40 images [=====>   ] 3.2/s ETA 0:08` on stderr, over `total` items.

    On a terminal the line is redrawn in place, and `clear` (or a function from `wrap`) clears
    it before a line of its own (the bar comes back at the next update); in logs and pipes a
    line is printed about every tenth of the total, and at the end (`progress.StatusLine`).

    Args:
        total: the number of items, or None when unknown (a video that states no frame count).
        unit: what is counted ("images", "frames").
        label: what the line is about (a video's name), or "".
        stream: where the bar goes (stderr).
    """

    def __init__(self, total, unit, label="", stream=None, width=24):
        self.total = total if total and total > 0 else None
        self.unit = unit
        self.label = f"{label} " if label else ""
        self.width = width
        self.status = StatusLine(stream or sys.stderr,
                                 every=max(1, self.total // 10) if self.total else 100)
        self._start = time.monotonic()

    def line(self, done):
        elapsed = time.monotonic() - self._start
        rate = done / elapsed if elapsed > 0 and done else None
        eta = (self.total - done) / rate if rate and self.total else None
        count = f"{done}/{self.total}" if self.total else str(done)
        speed = f"{rate:.1f}/s" if rate else "-/s"
        return (f"predict: {self.label}{count} {self.unit} "
                f"[{bar(done, self.total or 0, self.width):<{self.width}}] {speed} "
                f"ETA {format_duration(eta)}")

    def update(self, done, final=False):
        self.status.show(done, lambda: self.line(done), final)

    def clear(self):
        """Clears the bar on a terminal, before a line of its own."""
        if self.status.interactive:
            self.status.stream.write("\r\033[K")
            self.status.stream.flush()

    def wrap(self, write):
        """`write` (a `log` or `err` function) that clears the bar first."""
        def cleared(message):
            self.clear()
            write(message)

        return cleared


def _default_err(message):
    print(message, file=sys.stderr, flush=True)


def _write_outputs(path, mask, mask_path, drawn, overlay_path, spec):
    """Writes the mask and the overlay of `path`; a failure (a full disk, a read-only output
    dir) is an `ImageError` that says so, and leaves neither file half there."""
    try:
        os.makedirs(os.path.dirname(mask_path), exist_ok=True)
        save_mask_png(mask, mask_path, spec)
        Image.fromarray(drawn).save(overlay_path)
    except OSError as e:
        for written in (mask_path, overlay_path):
            if os.path.exists(written):
                os.remove(written)
        raise ImageError(f"{path}: its outputs cannot be written to "
                         f"{os.path.dirname(mask_path) or '.'}: {e.strerror or e}") from None


def predict_files(predictor, paths, output_dir, alpha=0.5, log=print, err=None, spec=None,
                  legend=True, keys=None, progress=False):
    """Writes the mask and overlay of every image; returns `(written, failed)`.

    `spec`: the dataset spec of the names and colours (VOC's when None); `legend`: the legend
    under each overlay. `keys`: each image's output path under `output_dir`, without the
    suffix (`"a/x"` writes `a/x_mask.png`, subfolders made as needed); None: each file's
    stem. Keys that repeat get `-2`, `-3`, ... `progress`: a `Progress` bar on stderr.

    `written` is a list of `(image, mask_png, overlay_png)`, `failed` of `(image, reason)`.
    A failed image is reported (by name) and skipped.
    """
    err = err or _default_err
    bar_ = Progress(len(paths), "images") if progress else None
    if bar_ is not None:
        log, err = bar_.wrap(log), bar_.wrap(err)
    os.makedirs(output_dir, exist_ok=True)
    used, written, failed = set(), [], []
    for i, path in enumerate(paths):
        try:
            data, image = read_image(path)
            mask = predictor.predict(data, image)
            if mask.shape != image.shape[:2]:
                raise ImageError(f"{path}: the model returned a {mask.shape} mask for a "
                                 f"{image.shape[:2]} image")
            stem = _unique(keys[i], used) if keys is not None else _output_stem(path, used)
            mask_path = os.path.join(output_dir, f"{stem}_mask.png")
            overlay_path = os.path.join(output_dir, f"{stem}_overlay.png")
            drawn = (overlay_with_legend if legend else overlay)(image, mask, alpha, spec)
            _write_outputs(path, mask, mask_path, drawn, overlay_path, spec)
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
            if bar_ is not None:
                bar_.update(i + 1, final=i + 1 == len(paths))
            continue
        failed.append((path, reason))
        err(f"predict: skipping {reason}")
        if bar_ is not None:
            bar_.update(i + 1, final=i + 1 == len(paths))
    return written, failed


def _is_video(path):
    return path.lower().endswith(VIDEO_EXTENSIONS)


def _is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def walk_images(folder, skip=()):
    """The JPEG/PNG files under `folder` (by extension, any case), recursively.

    Returns:
        `(images, ignored)`: `images` a list of `(path, key)` sorted by relative path, `key`
        the relative path without its extension (the output's path under `--output-dir`);
        `ignored` the relative paths of the other files. Names starting with "." (hidden
        files, macOS `._x.jpg` resource forks) and the folders in `skip` (the output dir) are
        not looked at; in a folder that is itself in `skip` (`--output-dir` the input
        folder), neither are the `*_mask.png` and `*_overlay.png` files that predict writes.
    """
    skip = {os.path.realpath(p) for p in skip}
    images, ignored = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")
                   and os.path.realpath(os.path.join(root, d)) not in skip]
        outputs_here = os.path.realpath(root) in skip
        for name in files:
            if name.startswith("."):
                continue
            if outputs_here and name.endswith(("_mask.png", "_overlay.png")):
                continue
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder)
            if _is_image_name(name):
                images.append((path, os.path.splitext(relative)[0]))
            else:
                ignored.append(relative)
    images.sort(key=lambda item: item[1].split(os.sep))
    return images, sorted(ignored)


def collect_inputs(inputs, output_dir, err=None):
    """Sorts the command line's INPUTs into images and videos; returns
    `(images, videos, failed)`: `images` a list of `(path, key)` (see `predict_files`),
    `videos` of paths, `failed` of `(input, reason)` (a directory without images)."""
    err = err or _default_err
    images, videos, failed = [], [], []
    for path in inputs:
        if os.path.isdir(path):
            found, ignored = walk_images(path, skip=[output_dir])
            if ignored:
                shown = ", ".join(ignored[:3]) + (", ..." if len(ignored) > 3 else "")
                err(f"predict: {path}: ignoring {len(ignored)} file(s) that are not "
                    f"{'/'.join(IMAGE_EXTENSIONS)} ({shown})")
            if not found:
                reason = f"{path}: a directory without {'/'.join(IMAGE_EXTENSIONS)} files"
                failed.append((path, reason))
                err(f"predict: skipping {reason}")
            images.extend(found)
        elif _is_video(path):
            videos.append(path)
        else:
            images.append((path, os.path.splitext(os.path.basename(path))[0] or "image"))
    return images, videos, failed


def _video_writer(stem_path, fps, size):
    """An opened `cv2.VideoWriter` for `<stem_path>_overlay<ext>` and its path, in the first of
    `VIDEO_CODECS` that this OpenCV build can write."""
    import cv2

    for fourcc, extension in VIDEO_CODECS:
        path = f"{stem_path}_overlay{extension}"
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer, path
        writer.release()
        if os.path.exists(path):
            os.remove(path)
    raise ImageError(f"OpenCV {cv2.__version__} can write none of the codecs "
                     f"{[c for c, _ in VIDEO_CODECS]} at {size[0]}x{size[1]}")


def predict_video(predictor, path, output_dir, alpha=0.5, spec=None, legend=True, every=1,
                  stem=None, err=None):
    """Segments a video frame by frame into `<output_dir>/<stem>_overlay.mp4`.

    Every frame of the input is written, at its fps (`DEFAULT_FPS` when the file states
    none) and size, blended by `frame_overlay`; the mask is that of the frame itself, or with
    `every` N, that of the last of every N-th frame. The progress bar counts frames (of
    `CAP_PROP_FRAME_COUNT`, when the container states it).

    Returns:
        `(overlay_path, frames written)`. An `ImageError` names the file when it cannot be
        opened, has no frame, or fails at a frame (the partial output is removed). A video
        that ends before the frame count its container states is written up to there, with
        a warning through `err` naming both counts.
    """
    import cv2

    if every < 1:
        raise ValueError(f"every must be >= 1. Received: every={every}")
    if not os.path.isfile(path):
        raise ImageError(f"{path}: no such file" if not os.path.exists(path)
                         else f"{path}: is not a video file")
    stem = stem or os.path.splitext(os.path.basename(path))[0] or "video"
    capture = cv2.VideoCapture(path)
    writer = out_path = None
    frames = 0
    try:
        if not capture.isOpened():
            raise ImageError(f"{path}: OpenCV cannot open it as a video")
        fps = capture.get(cv2.CAP_PROP_FPS)
        if not (math.isfinite(fps) and fps > 0):
            err = err or _default_err
            err(f"predict: {path} states no frame rate; writing {DEFAULT_FPS:g} fps")
            fps = DEFAULT_FPS
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        ok, frame = capture.read()
        if not ok:
            raise ImageError(f"{path}: OpenCV decodes no frame of it")
        size = frame.shape[:2]
        os.makedirs(output_dir, exist_ok=True)
        writer, out_path = _video_writer(os.path.join(output_dir, stem), fps,
                                         (size[1], size[0]))
        progress = Progress(total, "frames", label=path)
        mask = None
        while ok:
            if frame.shape[:2] != size:
                raise ImageError(f"{path}: frame {frames} is {frame.shape[1]}x{frame.shape[0]}, "
                                 f"the first was {size[1]}x{size[0]}")
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            if frames % every == 0:
                mask = predictor.predict_pixels(rgb)
                if mask.shape != size:
                    raise ImageError(f"{path}: the model returned a {mask.shape} mask for "
                                     f"frame {frames} of {size}")
            drawn = frame_overlay(rgb, mask, alpha, spec, legend)
            writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            frames += 1
            ok, frame = capture.read()
            progress.update(frames, final=not ok)
        if 0 < frames < total:
            (err or _default_err)(
                f"predict: {path}: decoded {frames} of the {total} frames its container "
                f"states (a cut or damaged file?); the overlay has those {frames}")
    except BaseException:
        if writer is not None:
            writer.release()
            writer = None
            if os.path.exists(out_path):
                os.remove(out_path)
        raise
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    return out_path, frames


def predict_videos(predictor, paths, output_dir, alpha=0.5, log=print, err=None, spec=None,
                   legend=True, every=1, used=None):
    """`predict_video` on every path; returns `(written, failed)`: lists of
    `(video, overlay_path, frames)` and `(video, reason)`. A failed video is reported (by
    name) and skipped. `used`: output stems already taken (repeats get `-2`, ...)."""
    err = err or _default_err
    used = set() if used is None else used
    written, failed = [], []
    for path in paths:
        stem = _output_stem(path, used)
        try:
            out_path, frames = predict_video(predictor, path, output_dir, alpha, spec, legend,
                                             every, stem, err)
        except ImageError as e:
            reason = str(e)
        except OSError as e:
            reason = f"{path}: cannot be written: {e.strerror or e}"
        except tf.errors.OpError as e:
            reason = f"{path}: the model rejected a frame: {e.message}"
        else:
            written.append((path, out_path, frames))
            log(f"{path} -> {out_path} ({frames} frames)")
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
    parser.add_argument("images", nargs="+", metavar="INPUT",
                        help="JPEG or PNG files, directories of them (recursively), or videos "
                             f"({' '.join(VIDEO_EXTENSIONS)})")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (0.5)")
    parser.add_argument("--num-threads", type=_validation.argparse_type(_validation.positive_int),
                        default=None, help="TFLite threads (LiteRT's default)")
    parser.add_argument("--spec", default=None,
                        help="dataset spec of the names and colours (a built-in name or a YAML "
                             "file; default: the export's, else VOC's)")
    parser.add_argument("--no-legend", action="store_true",
                        help="overlays at the image size, without the legend of classes")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="videos: segment one frame in N, its mask overlaid on the next "
                             "N-1 (1: every frame)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must be in [0, 1]. Received: {args.alpha}")
    if args.every < 1:
        parser.error(f"--every must be >= 1. Received: {args.every}")
    try:
        predictor = load_predictor(args.model, num_threads=args.num_threads)
    except (OSError, ValueError) as e:
        return cli.error(f"cannot load --model {args.model}: {e}", cli.EXIT_USAGE)
    try:
        spec = load_spec(args.spec) if args.spec else export_spec(args.model)
    except ValueError as e:
        return cli.error(f"cannot use the dataset spec: {e}", cli.EXIT_USAGE)
    images, videos, failed = collect_inputs(args.images, args.output_dir)
    written, image_failures = predict_files(
        predictor, [p for p, _ in images], args.output_dir, args.alpha, spec=spec,
        legend=not args.no_legend, keys=[k for _, k in images], progress=len(images) > 1)
    videos_written, video_failures = predict_videos(
        predictor, videos, args.output_dir, args.alpha, spec=spec, legend=not args.no_legend,
        every=args.every)
    failed += image_failures + video_failures
    if images or not videos:
        print(f"predict: {len(written)} of {len(images)} images written to {args.output_dir}",
              file=sys.stderr)
    if videos:
        print(f"predict: {len(videos_written)} of {len(videos)} videos written to "
              f"{args.output_dir}", file=sys.stderr)
    if failed:
        print(f"predict: {len(failed)} failed: {', '.join(p for p, _ in failed)}",
              file=sys.stderr)
        return cli.EXIT_FAILURE
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
