"""predict: VOC palette masks and overlays from a SavedModel or a fixed-size TFLite model, images
fitted around the TFLite size and mapped back (`inference.fit_to_size`, tested in
test_inference.py), and bad files named and skipped."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_family import inference, predict
from deeplab_family.data.palette import VOC_COLORMAP
from tests import export_fixtures as ef

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return ef.exported(str(tmp_path_factory.getbasetemp() / "export_fixture"))


@pytest.fixture(scope="module")
def images(fx, tmp_path_factory):
    """A val JPEG wider than the 65x65 TFLite input (shrunk) and a small PNG (padded)."""
    folder = tmp_path_factory.mktemp("predict_images")
    jpeg = fx["records"]["val_images"][0]
    pixels = predict.read_image(jpeg)[1]
    assert pixels.shape[1] > ef.TFLITE_SIZE[1]
    small = folder / "small.png"
    small.write_bytes(ef.encode(pixels[:40, :50], "PNG"))
    return [jpeg, str(small)]


def _read_mask(path):
    image = Image.open(path)
    assert image.mode == "P"
    palette = np.array(image.getpalette(), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(palette[:256], VOC_COLORMAP)
    return np.array(image)


@pytest.mark.parametrize("kind", ["saved_model", "float16", "int8"])
def test_predict_writes_voc_palette_masks_and_overlays(fx, images, tmp_path, kind):
    model = fx["export_dir"] if kind == "saved_model" else fx["tflite"][kind]
    out = tmp_path / "out"
    assert predict.main(["--model", model, *images, "--output-dir", str(out)]) == 0
    loaded = predict.load_predictor(model)
    for path in images:
        data, pixels = predict.read_image(path)
        stem = os.path.splitext(os.path.basename(path))[0]
        mask = _read_mask(out / f"{stem}_mask.png")
        assert mask.shape == pixels.shape[:2]
        np.testing.assert_array_equal(mask, loaded.predict(data, pixels))
        assert set(np.unique(mask)) <= {0, *ef.CLASSES}
        overlay = np.array(Image.open(out / f"{stem}_overlay.png"))
        # The image, then the legend of the classes present under it.
        h = pixels.shape[0]
        assert overlay.shape[0] > h and overlay.shape[1:] == pixels.shape[1:]
        assert overlay.dtype == np.uint8
        background = mask == 0
        np.testing.assert_array_equal(overlay[:h][background], pixels[background])
        legend = overlay[h:]
        for c in np.unique(mask):
            assert (legend == VOC_COLORMAP[c]).all(-1).sum() >= 100, c  # a 14x14 swatch
    if kind == "saved_model":
        # An export dir resolves to its highest version (the fixture's only one: no other test
        # writes into it); the mask is the signature's output.
        assert loaded.path == predict.resolve_saved_model(fx["export_dir"]) == fx["saved_model"]
        assert sorted(os.listdir(fx["export_dir"])) == ["1"]
        serve = tf.saved_model.load(fx["saved_model"]).signatures["serving_default"]
        want = serve(image_bytes=tf.constant([predict.read_image(images[0])[0]]))
        stem = os.path.splitext(os.path.basename(images[0]))[0]
        np.testing.assert_array_equal(_read_mask(out / f"{stem}_mask.png"),
                                      want["semantic_predictions"][0].numpy())


def test_tflite_masks_map_back_to_the_original_size(fx, images):
    """Padding: the TFLite mask equals the model run on the padded input, cropped. Shrinking:
    the mask of the shrunk image, resized back."""
    predictor = predict.TFLitePredictor(fx["tflite"]["float32"])
    for path in images:
        _, pixels = predict.read_image(path)
        fitted, size = inference.fit_to_size(pixels, predictor.size)
        full = predictor.run(fitted[None])[0]
        mask = predictor.predict(image=pixels)
        assert mask.shape == pixels.shape[:2]
        if size == pixels.shape[:2]:  # padded
            np.testing.assert_array_equal(mask, full[: size[0], : size[1]])
        else:  # shrunk: nearest-neighbour upsampling of the cropped mask
            assert size[1] == predictor.size[1] and size[0] < predictor.size[0]
            up = tf.image.resize(full[: size[0], : size[1], None], pixels.shape[:2],
                                 method="nearest").numpy()[..., 0]
            np.testing.assert_array_equal(mask, up)


def test_missing_and_corrupt_files_are_named_and_skipped(fx, images, tmp_path):
    missing = tmp_path / "missing.jpg"
    truncated = tmp_path / "truncated.jpg"
    good = predict.read_image(images[0])[0]
    truncated.write_bytes(good[: len(good) // 3])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO,
           "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(
        [sys.executable, "-m", "deeplab_family.predict", "--model", fx["tflite"]["float32"],
         str(missing), str(truncated), str(text), images[1], "--output-dir", str(out)],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == 1, run.stderr[-3000:]
    err = run.stderr
    assert f"predict: skipping {missing}: no such file" in err
    assert f"predict: skipping {truncated} cannot be decoded" in err
    assert f"predict: skipping {text} is not a JPEG or PNG file" in err
    assert "1 of 4 images written" in err
    # The good image after the bad ones was still done.
    assert (out / "small_mask.png").exists() and (out / "small_overlay.png").exists()
    assert sorted(os.listdir(out)) == ["small_mask.png", "small_overlay.png"]


def test_saved_model_rejection_is_reported_per_file(fx, images, tmp_path, capsys):
    """An image the SavedModel itself refuses is named and skipped, like a decoding failure."""

    class Refusing(predict.SavedModelPredictor):
        def predict(self, image_bytes, image=None):
            raise tf.errors.InvalidArgumentError(None, None, "image_bytes[0] is bad")

    predictor = Refusing(fx["saved_model"])
    written, failed = predict.predict_files(predictor, images, str(tmp_path))
    assert written == [] and [p for p, _ in failed] == images
    assert f"predict: skipping {images[0]}: the model rejected it: image_bytes[0] is bad" in (
        capsys.readouterr().err)


def test_unloadable_model_is_an_error(tmp_path, capsys):
    assert predict.main(["--model", str(tmp_path), "x.jpg", "--output-dir", str(tmp_path)]) == 2
    assert "neither a SavedModel directory" in capsys.readouterr().err


def test_overlay_colours_and_legend_follow_the_dataset_spec(fx, images, tmp_path):
    """`--spec` names the colours and names; `--no-legend` keeps the image size. (An export that
    records its spec: tests/tfrecords_tools/test_custom_dataset.py.)"""
    # The fixture's shards have no manifest, so its export has no spec: VOC's colours (above).
    info = json.loads(open(os.path.join(fx["saved_model"], "export_info.json")).read())
    assert info["dataset_spec"] is None and predict.export_spec(fx["export_dir"]) is None
    names = [f"thing{i}" for i in range(21)]
    colours = [[(40 * i) % 256, (90 + 7 * i) % 256, 200 - 5 * i] for i in range(21)]
    spec_path = tmp_path / "mine.yaml"
    spec_path.write_text(json.dumps({"name": "mine", "classes": names, "palette": colours}))
    out = tmp_path / "out"
    assert predict.main(["--model", fx["export_dir"], images[0], "--output-dir", str(out),
                         "--spec", str(spec_path), "--no-legend"]) == 0
    stem = os.path.splitext(os.path.basename(images[0]))[0]
    mask_image = Image.open(out / f"{stem}_mask.png")
    np.testing.assert_array_equal(
        np.array(mask_image.getpalette(), np.uint8).reshape(-1, 3)[:21], colours)
    mask = np.array(mask_image)
    _, pixels = predict.read_image(images[0])
    overlay = np.array(Image.open(out / f"{stem}_overlay.png"))
    assert overlay.shape == pixels.shape  # no legend
    # No class is named "background": every pixel is blended with its class colour.
    want = np.round(0.5 * pixels.astype(np.float32) + 0.5 * np.float32(colours)[mask])
    np.testing.assert_array_equal(overlay, want.astype(np.uint8))


def test_a_folder_is_walked_recursively_and_its_broken_file_named(fx, images, tmp_path, capsys):
    """Nested folders, mixed-case extensions, a truncated PNG, a text file and a hidden file:
    every good image done at its relative path (so `a/x` and `b/x` do not collide), the broken
    one named with its reason, the text file ignored, and the exit status 1."""
    _, pixels = predict.read_image(images[0])
    root = tmp_path / "in"
    for relative, fmt in [("a/x.png", "PNG"), ("b/x.PNG", "PNG"), ("b/c/y.jpeg", "JPEG"),
                          ("z.JPG", "JPEG")]:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(ef.encode(np.roll(pixels, len(relative), axis=1), fmt))
    good = ef.encode(pixels, "PNG")
    (root / "b" / "broken.png").write_bytes(good[: len(good) // 2])
    (root / "notes.txt").write_text("not an image")
    (root / "a" / "._x.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS resource fork
    out = root / "out"  # inside the input: its files are never taken as inputs
    for run in range(2):
        status = predict.main(["--model", fx["export_dir"], str(root), "--output-dir", str(out)])
        err = capsys.readouterr().err
        assert status == 1, err
        broken = os.path.join(str(root), "b", "broken.png")
        assert f"predict: skipping {broken} cannot be decoded" in err
        assert "ignoring 1 file(s) that are not .jpg/.jpeg/.png (notes.txt)" in err
        assert "4 of 5 images written" in err and "5/5 images" in err
        assert f"predict: 1 failed: {broken}" in err
    written = sorted(os.path.relpath(os.path.join(d, f), out)
                     for d, _, files in os.walk(out) for f in files)
    assert written == sorted(f"{k}_{kind}.png" for k in ("a/x", "b/x", "b/c/y", "z")
                             for kind in ("mask", "overlay"))
    predictor = predict.load_predictor(fx["export_dir"])
    for relative, key in [("a/x.png", "a/x"), ("b/x.PNG", "b/x"), ("b/c/y.jpeg", "b/c/y"),
                          ("z.JPG", "z")]:
        data, image = predict.read_image(root / relative)
        np.testing.assert_array_equal(_read_mask(out / f"{key}_mask.png"),
                                      predictor.predict(data, image))


def test_output_dir_the_input_folder_takes_no_outputs_as_inputs(fx, images, tmp_path, capsys):
    """`--output-dir` the input folder itself: a second run segments the same two images, not
    the masks and overlays of the first; `--num-threads 0` is refused by argparse."""
    _, pixels = predict.read_image(images[0])
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("p.png", "q.jpg"):
        (root / name).write_bytes(ef.encode(pixels, "PNG" if name.endswith("png") else "JPEG"))
    for _ in range(2):
        assert predict.main(["--model", fx["export_dir"], str(root),
                             "--output-dir", str(root)]) == 0
        assert "2 of 2 images written" in capsys.readouterr().err
    assert sorted(os.listdir(root)) == ["p.png", "p_mask.png", "p_overlay.png", "q.jpg",
                                        "q_mask.png", "q_overlay.png"]
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--model", fx["export_dir"], str(root), "--output-dir", str(root),
                      "--num-threads", "0"])
    assert exit_info.value.code == 2
    assert "argument --num-threads: must be an int >= 1" in capsys.readouterr().err


def test_an_output_that_cannot_be_written_is_named_as_such(fx, images, tmp_path, capsys,
                                                           monkeypatch):
    """A full disk while writing is reported as a write failure (not "cannot be read"), no
    half of the outputs is left, and the other images are still done."""
    real = predict.save_mask_png
    calls = []

    def full_disk(mask, path, spec=None):
        calls.append(path)
        if len(calls) == 1:
            with open(path, "wb") as f:
                f.write(b"\x89PNG half")
            raise OSError(28, "No space left on device")
        return real(mask, path, spec)

    monkeypatch.setattr(predict, "save_mask_png", full_disk)
    out = tmp_path / "out"
    status = predict.main(["--model", fx["export_dir"], images[0], images[1],
                           "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert status == 1, err
    assert (f"predict: skipping {images[0]}: its outputs cannot be written to {out}: "
            "No space left on device") in err
    first, second = (os.path.splitext(os.path.basename(p))[0] for p in images[:2])
    assert sorted(os.listdir(out)) == [f"{second}_mask.png", f"{second}_overlay.png"]


def test_a_folder_without_images_is_a_failure(fx, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images here")
    status = predict.main(["--model", fx["tflite"]["float32"], str(empty),
                           "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 1
    assert f"predict: skipping {empty}: a directory without .jpg/.jpeg/.png files" in err


def test_progress_bar_lines(monkeypatch):
    """In a log, a line about every tenth and at the end, with the count, rate and ETA."""
    import io

    stream = io.StringIO()
    progress = predict.Progress(20, "images", stream=stream)
    for done in range(1, 21):
        progress.update(done, final=done == 20)
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == [f"{k}/20" for k in range(2, 21, 2)]
    assert lines[-1].startswith("predict: 20/20 images [========================]")
    assert lines[-1].endswith("ETA 0:00")
    unknown = predict.Progress(None, "frames", label="clip.mp4", stream=io.StringIO())
    assert unknown.line(7).startswith("predict: clip.mp4 7 frames [")
