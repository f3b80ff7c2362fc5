"""The model server (`python -m deeplab_family.serve`): started for real on 127.0.0.1 and talked
to over HTTP with the standard library's client, as a TF Serving client would.

Every answer is checked against the SavedModel called directly (`tf.saved_model.load(...)
.signatures[...]`) on the same inputs: single images, a batch of mixed sizes, both JSON forms,
the uint8 tensor signature, and the page's `/segment`. Each bad request gets its status and an
error that names the problem, and a good request right after it is answered. The server logs
one line per request and stops cleanly on SIGTERM.

The limit on concurrent model calls, and that the event loop answers while the model runs, are
checked on the app in this process with a model that only sleeps (no TensorFlow).
"""

import base64
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_family import export as export_lib
from deeplab_family.data.palette import VOC_COLORMAP
from deeplab_family.data.spec import load_spec
from deeplab_family.predict import overlay
from deeplab_family.serve import app as app_lib
from deeplab_family.serve import cli as serve_cli
from deeplab_family.serve import rest
from tests import export_fixtures as ef

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_PIXELS = 10000  # the fixture's images have at most 72 x 84 = 6048
MAX_REQUEST_BYTES = 200_000
START_TIMEOUT = 240  # s: importing TensorFlow on a busy 2-core machine
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d ([A-Z]+) (\S+) (\d{3}) in=\d+B out=\d+B [\d.]+ms "
                      r"images=(\S+)")


def _b64(data):
    return base64.b64encode(data).decode("ascii")


class Server:
    """`python -m deeplab_family.serve` in a subprocess on a free port; `call` sends a request
    and records it, so that the log can be checked against every request sent."""

    def __init__(self, model, folder, *args):
        self.out_path, self.err_path = folder / "stdout.txt", folder / "stderr.txt"
        self.sent = []
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "deeplab_family.serve", "--model", model, "--port", "0",
                 *args],
                cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, stdout=out, stderr=err,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = re.search(r"on (http://127\.0\.0\.1:\d+)", self.out_path.read_text())
            if found:
                self.url = found.group(1)
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not start:\n{self.err_path.read_text()[-3000:]}")

    def call(self, path, body=None, method=None, headers=None):
        """`(status, headers, body bytes)`; an HTTP error status is returned, not raised."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                answer = response.status, response.headers, response.read()
        except urllib.error.HTTPError as e:
            answer = e.code, e.headers, e.read()
        self.sent.append((request.get_method(), path, answer[0]))
        return answer

    def json(self, path, body=None, method=None):
        status, headers, content = self.call(path, body, method)
        assert headers["Content-Type"].startswith("application/json"), headers
        return status, json.loads(content)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A tiny untrained DeepLabV3 exported with probabilities (no TFLite), and its images: four
    JPEGs of different sizes and one of them as a PNG."""
    base = tmp_path_factory.mktemp("serve")
    keras.utils.set_random_seed(0)
    records = ef.colour_coded_records(str(base / "data"), num_train=1, num_val=4, seed=3)
    model_dir = str(base / "model")
    config = ef.make_model_dir(model_dir, records, train=False)
    export_dir = str(base / "tiny")
    info = export_lib.export(config, model_dir, export_dir, (), log=lambda m: None)
    files = [open(p, "rb").read() for p in records["val_images"]]
    pixels = [tf.io.decode_image(d, channels=3).numpy() for d in files]
    files.append(ef.encode(pixels[0], "PNG"))
    pixels.append(pixels[0])
    assert len({p.shape for p in pixels}) >= 3, [p.shape for p in pixels]
    return {"base": export_dir, "path": info["path"], "files": files, "pixels": pixels,
            "loaded": tf.saved_model.load(info["path"]), "folder": base}


@pytest.fixture(scope="module")
def server(export):
    server = Server(export["base"], export["folder"],
                    "--max-request-bytes", str(MAX_REQUEST_BYTES), "--max-concurrency", "2",
                    "--max-pixels", str(MAX_PIXELS))
    yield server
    server.stop()


def _direct(export, signature, **inputs):
    outputs = export["loaded"].signatures[signature](**inputs)
    return {k: v.numpy() for k, v in outputs.items()}


def _rows(response):
    """The per-instance outputs of a row-form or columnar answer."""
    if "predictions" in response:
        return response["predictions"]
    columns = response["outputs"]
    return [{k: columns[k][i] for k in columns} for i in range(len(columns["image_sizes"]))]


def _assert_rows_equal(rows, reference):
    count = len(next(iter(reference.values())))
    assert len(rows) == count
    for i, row in enumerate(rows):
        assert sorted(row) == sorted(reference), (sorted(row), sorted(reference))
        for name, value in reference.items():
            # A float32 goes through JSON exactly (repr of its double), so equality is exact.
            np.testing.assert_array_equal(np.asarray(row[name], value.dtype), value[i],
                                          err_msg=f"instance {i}, output {name}")


def _good_request(server, export):
    """One image through `:predict`, equal to the direct call: the server still serves."""
    status, answer = server.json("/v1/models/tiny:predict",
                                 {"instances": [{"b64": _b64(export["files"][1])}]})
    assert status == 200, answer
    reference = _direct(export, "serving_default",
                        image_bytes=tf.constant([export["files"][1]]))
    _assert_rows_equal(answer["predictions"], reference)


def test_status_and_metadata_are_tf_servings(server, export):
    expected = {"model_version_status": [{
        "version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""},
    }]}
    assert server.json("/v1/models/tiny") == (200, expected)
    assert server.json("/v1/models/tiny/versions/1") == (200, expected)
    status, answer = server.json("/v1/models/tiny/metadata")
    assert status == 200
    assert answer["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    defs = answer["metadata"]["signature_def"]["signature_def"]
    signatures = export["loaded"].signatures
    assert sorted(defs) == sorted(signatures)
    for name, signature in signatures.items():
        inputs = signature.structured_input_signature[1]
        assert sorted(defs[name]["inputs"]) == sorted(inputs)
        assert sorted(defs[name]["outputs"]) == sorted(signature.structured_outputs)
        for key, spec in inputs.items():
            assert defs[name]["inputs"][key]["dtype"] == f"DT_{spec.dtype.name.upper()}"
    assert server.json("/v1/models/other") == (
        404, {"error": "Servable not found for request: Latest(other)"})
    assert server.json("/v1/models/tiny/versions/2:predict", {"instances": []}) == (
        404, {"error": "Servable not found for request: Specific(tiny, 2)"})


def test_predictions_equal_the_saved_model_in_both_json_forms(server, export):
    files = export["files"]
    b64 = [_b64(d) for d in files]
    reference = _direct(export, "serving_default", image_bytes=tf.constant(files))
    # A mixed-size batch: padded with 255 beyond each image, and more than one class inside.
    assert (reference["semantic_predictions"] == 255).any()
    assert len(set(np.unique(reference["semantic_predictions"])) - {255}) >= 2
    bodies = [
        {"signature_name": "serving_default", "instances": [{"b64": s} for s in b64]},
        {"instances": [{"image_bytes": {"b64": s}} for s in b64]},
        {"inputs": {"image_bytes": [{"b64": s} for s in b64]}},
        {"signature_name": "serving_default", "inputs": [{"b64": s} for s in b64]},
    ]
    for body in bodies:
        status, answer = server.json("/v1/models/tiny:predict", body)
        assert status == 200, answer
        # TF Serving answers the row form with "predictions", the columnar with "outputs".
        assert list(answer) == ["predictions" if "instances" in body else "outputs"]
        _assert_rows_equal(_rows(answer), reference)
    # One image alone, through the version's own URL.
    status, answer = server.json("/v1/models/tiny/versions/1:predict",
                                 {"instances": [{"b64": b64[2]}]})
    assert status == 200, answer
    _assert_rows_equal(answer["predictions"],
                       _direct(export, "serving_default", image_bytes=tf.constant([files[2]])))


def test_the_tensor_signature_takes_nested_lists(server, export):
    image = export["pixels"][0]
    images = np.stack([image, image[::-1, ::-1]])
    reference = _direct(export, "serve_image_tensor", images=tf.constant(images))
    for body in [
        {"signature_name": "serve_image_tensor", "instances": images.tolist()},
        {"signature_name": "serve_image_tensor", "instances": [{"images": i} for i in
                                                                images.tolist()]},
        {"signature_name": "serve_image_tensor", "inputs": {"images": images.tolist()}},
    ]:
        status, answer = server.json("/v1/models/tiny:predict", body)
        assert status == 200, answer
        _assert_rows_equal(_rows(answer), reference)


def _bad_requests(export):
    """`(what, path, body, status, words the error must contain)`."""
    jpeg = export["files"][0]
    image = np.zeros((4, 5, 3), int)
    big = np.zeros((100, 110, 3), np.uint8)
    return [
        ("not JSON", ":predict", b"{instances: oops", 400, ["not valid JSON"]),
        ("a JSON list", ":predict", b"[1, 2]", 400, ["must be a JSON object"]),
        ("unknown signature", ":predict",
         {"signature_name": "nope", "instances": [{"b64": _b64(jpeg)}]}, 400,
         ['"nope" not found', "serving_default"]),
        ("both forms", ":predict",
         {"instances": [{"b64": _b64(jpeg)}], "inputs": [{"b64": _b64(jpeg)}]}, 400,
         ["not both"]),
        ("neither form", ":predict", {"signature_name": "serving_default"}, 400,
         ['"instances"', '"inputs"']),
        ("empty instances", ":predict", {"instances": []}, 400, ["empty"]),
        ("wrong input name", ":predict", {"instances": [{"images": {"b64": _b64(jpeg)}}]}, 400,
         ["'images'", "image_bytes"]),
        ("not an image", ":predict", {"instances": [{"b64": _b64(b"hello, world")}]}, 400,
         ["image_bytes[0]", "neither a JPEG nor a PNG"]),
        ("bad base64", ":predict", {"instances": [{"b64": "%%% not base64"}]}, 400,
         ["instances[0]", "base64"]),
        ("a cut JPEG", ":predict", {"instances": [{"b64": _b64(jpeg[:300])}]}, 400, ["JPEG"]),
        ("a number for bytes", ":predict", {"instances": [{"b64": _b64(jpeg)}, 7]}, 400,
         ["instances[1]", "b64"]),
        ("4 channels", ":predict",
         {"signature_name": "serve_image_tensor", "instances": np.zeros((1, 4, 5, 4),
                                                                        int).tolist()}, 400,
         ["input images must be a tensor of shape [any, any, any, 3]",
          "received shape [1, 4, 5, 4]"]),
        ("values over 255", ":predict",
         {"signature_name": "serve_image_tensor", "instances": [(image + 300).tolist()]}, 400,
         ["outside 0..255"]),
        ("ragged instances", ":predict",
         {"signature_name": "serve_image_tensor",
          "instances": [image.tolist(), image[:3].tolist()]}, 400, ["same shape"]),
        ("wrong rank", ":predict",
         {"signature_name": "serve_image_tensor", "inputs": {"images": [[1, 2, 3]]}}, 400,
         ["input images must be a tensor of shape", "received shape [1, 3]"]),
        ("too large", ":predict",
         {"instances": [{"b64": "A" * MAX_REQUEST_BYTES}]}, 413,
         [f"limit of {MAX_REQUEST_BYTES} bytes", "--max-request-bytes"]),
        ("classify", ":classify", {"examples": []}, 400, ["classify is not served"]),
        # A few kB of PNG or JPEG can hold an image far over the limit: refused from its
        # header, before it is decoded.
        ("too many pixels (PNG)", ":predict",
         {"instances": [{"b64": _b64(jpeg)}, {"b64": _b64(ef.encode(big, "PNG"))}]}, 400,
         ["image_bytes[1] is a 110x100 image (11000 pixels)", f"limit of {MAX_PIXELS} pixels",
          "--max-pixels"]),
        ("too many pixels (JPEG)", ":predict",
         {"instances": [{"b64": _b64(ef.encode(big, "JPEG"))}]}, 400,
         ["image_bytes[0] is a 110x100 image"]),
        ("too many pixels (tensor)", ":predict",
         {"signature_name": "serve_image_tensor", "instances": [big.tolist()]}, 400,
         ["images is a 110x100 image"]),
    ]


def test_bad_requests_are_answered_and_the_server_goes_on(server, export):
    for what, verb, body, expected, words in _bad_requests(export):
        status, answer = server.json(f"/v1/models/tiny{verb}", body, method="POST")
        assert status == expected, (what, status, answer)
        assert list(answer) == ["error"], (what, answer)
        for word in words:
            assert word in answer["error"], (what, word, answer["error"])
        # The model's own messages come without the graph's node names and op ids.
        assert not re.search(r"Graph execution|\{\{node|\[Op:", answer["error"]), answer
        _good_request(server, export)


def test_unknown_paths_and_methods_get_json_errors(server, export):
    for method, path, expected, word in (("GET", "/favicon.ico", 404, "no such endpoint"),
                                         ("GET", "/segment", 405, "GET is not allowed"),
                                         ("DELETE", "/", 405, "DELETE is not allowed")):
        status, answer = server.json(path, None, method=method)
        assert status == expected, (path, status, answer)
        assert list(answer) == ["error"] and word in answer["error"], answer
    # TF Serving takes an empty signature name as the default signature.
    status, answer = server.json("/v1/models/tiny:predict",
                                 {"signature_name": "", "instances": [{"b64": _b64(
                                     export["files"][1])}]})
    assert status == 200, answer
    _good_request(server, export)


def _raw_post(server, path, send, headers):
    """A POST written by hand (`send(connection)` writes the body): `(status, error)`."""
    host, port = server.url.split("//")[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.putrequest("POST", path)
        for key, value in headers.items():
            connection.putheader(key, value)
        connection.endheaders()
        send(connection)
        response = connection.getresponse()
        answer = response.status, json.loads(response.read())["error"]
    finally:
        connection.close()
    server.sent.append(("POST", path, answer[0]))
    return answer


def test_a_body_over_the_limit_is_refused_however_it_comes(server, export):
    path = "/v1/models/tiny:predict"
    # Chunked, without a length: refused once it streams past the limit.
    chunk = b"A" * 50_000

    def chunked(connection):
        for _ in range(2 * MAX_REQUEST_BYTES // len(chunk)):
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        connection.send(b"0\r\n\r\n")

    status, error = _raw_post(server, path, chunked, {"Transfer-Encoding": "chunked"})
    assert status == 413 and f"limit of {MAX_REQUEST_BYTES} bytes" in error, error
    _good_request(server, export)
    # A length of 1 GB, and only a few bytes sent: refused on the length, before any wait for
    # the body (reading it would wait for the rest until the timeout).
    status, error = _raw_post(server, path, lambda c: c.send(b'{"inst'),
                              {"Content-Length": str(10**9)})
    assert status == 413 and "1000000000 bytes" in error, error
    _good_request(server, export)


def test_the_page_and_its_segment_call(server, export):
    status, headers, page = server.call("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = page.decode("utf-8")
    assert "tiny" in page and 'fetch("/segment"' in page
    assert "://" not in page  # self-contained: nothing from elsewhere
    data, image = export["files"][1], export["pixels"][1]
    status, answer = server.json("/segment", data, method="POST")
    assert status == 200, answer
    mask = _direct(export, "serving_default", image_bytes=tf.constant([data]))[
        "semantic_predictions"][0]
    assert (answer["height"], answer["width"]) == mask.shape == image.shape[:2]
    drawn = np.array(Image.open(io.BytesIO(base64.b64decode(answer["overlay"]))))
    np.testing.assert_array_equal(drawn, overlay(image, mask, 0.5, load_spec("voc")))
    # The legend: the classes present, largest share first, with VOC's names and colours (the
    # fixture's shards have no manifest, so the export has no spec of its own).
    counts = np.bincount(mask.ravel(), minlength=256)
    present = sorted(np.flatnonzero(counts), key=lambda c: (-counts[c], c))
    assert [c["id"] for c in answer["classes"]] == [int(c) for c in present]
    voc = load_spec("voc").classes
    for entry in answer["classes"]:
        assert entry["name"] == voc[entry["id"]]
        assert entry["color"] == VOC_COLORMAP[entry["id"]].tolist()
        assert entry["share"] == pytest.approx(counts[entry["id"]] / mask.size)
    for body, words in [(b"", "empty"), (b"GIF89a...", "neither a JPEG nor a PNG")]:
        status, answer = server.json("/segment", body, method="POST")
        assert status == 400 and words in answer["error"], answer
        _good_request(server, export)


def test_the_server_logs_each_request_and_stops_cleanly(server, export):
    assert server.stop() == 0
    assert server.out_path.read_text().splitlines()[-1] == "serve: stopped (SIGTERM)"
    logged = [LOG_LINE.match(line) for line in server.err_path.read_text().splitlines()]
    logged = [(m[1], m[2], int(m[3])) for m in logged if m]
    assert len(server.sent) > 30
    assert logged == server.sent
    # A predict line counts its images.
    images = [m[4] for m in map(LOG_LINE.match, server.err_path.read_text().splitlines())
              if m and m[2] == "/v1/models/tiny:predict" and m[3] == "200"]
    assert str(len(export["files"])) in images and "1" in images


def test_no_model_or_a_bad_option_is_a_usage_error(tmp_path, capsys):
    assert serve_cli.main(["--model", str(tmp_path / "nothing")]) == 2
    assert "cannot serve --model" in capsys.readouterr().err
    assert serve_cli.main(["--model", str(tmp_path), "--alpha", "2"]) == 2
    for flag, value in (("--port", "70000"), ("--port", "-1"), ("--max-pixels", "0")):
        with pytest.raises(SystemExit) as exit_info:
            serve_cli.main(["--model", str(tmp_path), flag, value])
        assert exit_info.value.code == 2
        assert f"argument {flag}" in capsys.readouterr().err


class SlowModel:
    """A stand-in for `ServedModel` whose calls sleep, and which counts how many run at once
    (`running`, `peak`) and how many were running whenever its version was read (the status
    answer reads it: `running_at_version`)."""

    name = "slow"
    inputs = {"serving_default": {"image_bytes": rest.STRING}}
    spec = load_spec("voc")

    def __init__(self, seconds):
        self.running_at_version = []
        self.seconds = seconds
        self.lock = threading.Lock()
        self.running = self.peak = 0

    def predict(self, signature, batch):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return {"semantic_predictions": np.zeros((len(batch["image_bytes"]), 2, 2), np.uint8)}

    @property
    def version(self):
        self.running_at_version.append(self.running)
        return 3

    def metadata(self):
        return {}


def test_model_calls_are_bounded_and_the_event_loop_stays_free():
    import uvicorn

    model = SlowModel(seconds=1.0)
    app = app_lib.create_app(model, max_concurrency=2)
    sock = socket.create_server(("127.0.0.1", 0))
    url = "http://127.0.0.1:%d" % sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        body = json.dumps({"instances": [{"b64": _b64(b"x")}]}).encode()
        answers = []

        def post():
            request = urllib.request.Request(url + "/v1/models/slow:predict", data=body)
            with urllib.request.urlopen(request, timeout=60) as response:
                answers.append((response.status, json.loads(response.read())))

        clients = [threading.Thread(target=post) for _ in range(6)]
        start = time.monotonic()
        for client in clients:
            client.start()
        time.sleep(0.3)  # the first two calls are running, four wait
        with urllib.request.urlopen(url + "/v1/models/slow", timeout=60) as response:
            assert json.loads(response.read())["model_version_status"][0]["version"] == "3"
        for client in clients:
            client.join()
        elapsed = time.monotonic() - start
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert answers == [(200, {"predictions": [[[0, 0], [0, 0]]]})] * 6
    assert model.peak == 2
    assert elapsed >= 3 * model.seconds  # six calls, two at a time
    # The status was answered while model calls ran (in worker threads): with a call on the
    # event loop, the loop could only answer it between calls, with none running. Counted, not
    # timed, so that a loaded machine cannot make it pass or fail.
    assert model.running_at_version[-1] > 0, model.running_at_version


def test_rest_formats_follow_tf_serving():
    """api_rest.md: with one output the name is left out, in both forms; `_bytes` strings go
    back as b64."""
    one = {"scores": np.array([[1.5], [2.5]], np.float32)}
    assert rest.format_predict_response(one, "row") == {"predictions": [[1.5], [2.5]]}
    assert rest.format_predict_response(one, "columnar") == {"outputs": [[1.5], [2.5]]}
    two = {"a": np.array([1, 2]), "b_bytes": np.array([b"\x00", b"hi"], object)}
    assert rest.format_predict_response(two, "row") == {"predictions": [
        {"a": 1, "b_bytes": {"b64": "AA=="}}, {"a": 2, "b_bytes": {"b64": "aGk="}}]}
    assert rest.format_predict_response(two, "columnar") == {
        "outputs": {"a": [1, 2], "b_bytes": [{"b64": "AA=="}, {"b64": "aGk="}]}}
    inputs = {"serving_default": {"x": np.dtype(np.float32), "tag": rest.STRING}}
    name, batch, form = rest.parse_predict_request(
        json.dumps({"instances": [{"x": [1, 2], "tag": "a"}, {"x": [3, 4], "tag": "b"}]}),
        inputs)
    assert (name, form, batch["tag"]) == ("serving_default", "row", [b"a", b"b"])
    np.testing.assert_array_equal(batch["x"], np.array([[1, 2], [3, 4]], np.float32))
    with pytest.raises(rest.RequestError, match="must be an object keyed"):
        rest.parse_predict_request(json.dumps({"instances": [[1, 2]]}), inputs)
