"""predict on videos: a video written by OpenCV here in, an overlay video out with every frame
at the input's fps and size (read back with OpenCV), the frames segmented through the
SavedModel's pixel signature or the TFLite fit, `--every N`, the codec fallback, the legend drawn
into the frame, and a video that cannot be opened named while the other inputs are done."""

import os

import cv2
import numpy as np
import pytest
from PIL import Image

from deeplab_family import predict
from deeplab_family.data.palette import VOC_COLORMAP
from tests import export_fixtures as ef

FRAMES, WIDTH, HEIGHT, FPS = 12, 64, 48, 10.0


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return ef.exported(str(tmp_path_factory.getbasetemp() / "export_fixture"))


def _write_video(path, frames, fps=FPS, fourcc="mp4v"):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def _read_video(path):
    """`(RGB frames, fps, (width, height))` as OpenCV decodes them."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    fps = capture.get(cv2.CAP_PROP_FPS)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames, fps, size


@pytest.fixture(scope="module")
def video(fx, tmp_path_factory):
    """12 frames 64x48 of a colour-coded val image (objects the model finds), moving right."""
    pixels = predict.read_image(fx["records"]["val_images"][0])[1]
    base = np.asarray(Image.fromarray(pixels).resize((WIDTH, HEIGHT)))
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    _write_video(path, [np.roll(base, 3 * i, axis=1) for i in range(FRAMES)])
    return path


@pytest.mark.parametrize("kind", ["saved_model", "tflite"])
def test_overlay_video_keeps_frames_fps_and_size(fx, video, tmp_path, kind, capsys):
    model = fx["export_dir"] if kind == "saved_model" else fx["tflite"]["float32"]
    out = tmp_path / "out"
    assert predict.main(["--model", model, str(video), "--output-dir", str(out)]) == 0
    err = capsys.readouterr().err
    assert "1 of 1 videos written" in err and f"{FRAMES}/{FRAMES} frames" in err
    assert sorted(os.listdir(out)) == ["clip_overlay.mp4"]
    got, fps, size = _read_video(out / "clip_overlay.mp4")
    inputs, in_fps, in_size = _read_video(video)
    assert len(got) == len(inputs) == FRAMES
    assert fps == in_fps == FPS and size == in_size == (WIDTH, HEIGHT)
    # Each frame is the overlay of the model's mask of that input frame, up to the codec's loss:
    # much closer to it than to the frame unblended (the objects are recoloured).
    predictor = predict.load_predictor(model)
    near, far = [], []
    for frame, written in zip(inputs, got):
        mask = predictor.predict_pixels(frame)
        assert (mask != 0).mean() > 0.1  # objects, not all background
        want = predict.frame_overlay(frame, mask).astype(np.float32)
        near.append(np.abs(written - want).mean())
        far.append(np.abs(frame.astype(np.float32) - want).mean())
    assert np.mean(near) < 0.5 * np.mean(far), (np.mean(near), np.mean(far))


def test_saved_model_pixels_signature_gives_the_bytes_masks(fx, video):
    """Video frames go through `serve_image_tensor`: the mask of the same pixels as a PNG."""
    predictor = predict.SavedModelPredictor(fx["export_dir"])
    for frame in _read_video(video)[0][:3]:
        np.testing.assert_array_equal(predictor.predict_pixels(frame),
                                      predictor.predict(ef.encode(frame, "PNG")))


class Counting:
    def __init__(self, predictor):
        self.predictor, self.frames = predictor, []

    def predict_pixels(self, image):
        self.frames.append(image.copy())
        return self.predictor.predict_pixels(image)


def test_every_n_segments_one_frame_in_n_and_writes_all(fx, video, tmp_path):
    predictor = Counting(predict.load_predictor(fx["tflite"]["float32"]))
    path, frames = predict.predict_video(predictor, str(video), str(tmp_path), every=5)
    assert frames == FRAMES and len(_read_video(path)[0]) == FRAMES
    inputs = _read_video(video)[0]
    assert len(predictor.frames) == 3  # frames 0, 5, 10
    for got, k in zip(predictor.frames, (0, 5, 10)):
        np.testing.assert_array_equal(got, inputs[k])
    with pytest.raises(ValueError, match="every must be >= 1"):
        predict.predict_video(predictor, str(video), str(tmp_path), every=0)


def test_codec_fallback_writes_an_avi(fx, video, tmp_path, monkeypatch):
    """Where mp4v cannot be written, Motion JPEG in an .avi, still every frame."""
    monkeypatch.setattr(predict, "VIDEO_CODECS", (("XXXX", ".mp4"), ("MJPG", ".avi")))
    path, frames = predict.predict_video(predict.load_predictor(fx["tflite"]["float32"]),
                                         str(video), str(tmp_path))
    assert path == str(tmp_path / "clip_overlay.avi") and sorted(os.listdir(tmp_path)) == [
        "clip_overlay.avi"]
    got, fps, size = _read_video(path)
    assert len(got) == frames == FRAMES and fps == FPS and size == (WIDTH, HEIGHT)


def test_frame_legend_is_drawn_into_the_frame():
    """The legend replaces the frame's bottom rows (at most a third), largest class first;
    the rest of the frame is the overlay; a frame too small for one row has none."""
    from deeplab_family.legend import PAD, ROW

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 200, 3), np.uint8)
    mask = np.zeros((120, 200), np.uint8)
    mask[:, :120] = 15  # person: 60%
    mask[:30, 150:] = 7  # car: 12.5%
    got = predict.frame_overlay(image, mask)
    want = predict.overlay(image, mask)
    assert got.shape == image.shape
    rows = (120 // 3 - PAD) // ROW
    top = 120 - (PAD + rows * ROW)
    np.testing.assert_array_equal(got[:top], want[:top])
    legend = got[top:]
    assert (legend == 255).all(-1).mean() > 0.5  # the strip's white
    assert (legend == VOC_COLORMAP[15]).all(-1).sum() >= 100  # a 14x14 swatch
    np.testing.assert_array_equal(predict.frame_overlay(image, mask, legend=False), want)
    small = image[:70]
    np.testing.assert_array_equal(predict.frame_overlay(small, mask[:70]),
                                  predict.overlay(small, mask[:70]))


def test_unopenable_video_is_named_and_the_rest_done(fx, video, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    missing = tmp_path / "missing.avi"
    image = fx["records"]["val_images"][0]
    out = tmp_path / "out"
    status = predict.main(["--model", fx["tflite"]["float32"], str(broken), str(missing),
                           str(video), image, "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert status == 1, err
    assert f"predict: skipping {broken}: OpenCV cannot open it as a video" in err
    assert f"predict: skipping {missing}: no such file" in err
    assert "1 of 1 images written" in err and "1 of 3 videos written" in err
    assert f"predict: 2 failed: {broken}, {missing}" in err
    stem = os.path.splitext(os.path.basename(image))[0]
    assert sorted(os.listdir(out)) == sorted(
        ["clip_overlay.mp4", f"{stem}_mask.png", f"{stem}_overlay.png"])
    assert len(_read_video(out / "clip_overlay.mp4")[0]) == FRAMES


def test_a_video_shorter_than_its_container_says_is_written_with_a_warning(tmp_path,
                                                                           monkeypatch):
    """A cut or damaged file whose header states more frames than decode: the frames that do
    decode are written, and a warning names both counts."""

    class CutCapture:
        def __init__(self, path):
            self.frames = [np.full((HEIGHT, WIDTH, 3), 10 * i, np.uint8) for i in range(5)]

        def isOpened(self):
            return True

        def get(self, prop):
            return {cv2.CAP_PROP_FPS: FPS, cv2.CAP_PROP_FRAME_COUNT: 12}.get(prop, 0)

        def read(self):
            return (True, self.frames.pop(0)) if self.frames else (False, None)

        def release(self):
            pass

    class Zeros:
        def predict_pixels(self, image):
            return np.zeros(image.shape[:2], np.uint8)

    path = tmp_path / "cut.mp4"
    path.write_bytes(b"stands in for a cut video")
    monkeypatch.setattr(cv2, "VideoCapture", CutCapture)
    warnings = []
    out_path, frames = predict.predict_video(Zeros(), str(path), str(tmp_path / "out"),
                                             err=warnings.append)
    assert frames == 5
    assert [w for w in warnings if "decoded 5 of the 12 frames" in w], warnings
