"""A bounded load test of the model server: N requests from C concurrent clients, every answer
checked, latency percentiles and throughput.

    .venv/bin/python benchmarks/serve_load.py                          # tiny model, 200 x 8
    .venv/bin/python benchmarks/serve_load.py --model demo_output/export \\
        --images demo_output/synthetic/VOCdevkit/VOC2012/JPEGImages --requests 400 --clients 16

Without `--model`, the demo's tiny DeepLabV3 (`train_configs/tiny_deeplabv3_os16_synthetic.yaml`,
random weights: latency does not depend on them) is written as a SavedModel at output stride 8
(`export.write_saved_model`, as `deeplab_family.export` writes it) into a temporary base path.
Without `--images`, `--num-images` random JPEGs of a few sizes are the requests.

The server (`python -m deeplab_family.serve --port 0`, `--max-concurrency` model calls) runs as
a child process. Each client is a thread with one keep-alive HTTP connection, sending
`serving_default` row-form requests of one image (`{"instances": [{"b64": ...}]}`), the images
taken in turn. Before the load, each image's answer is computed by calling the SavedModel
directly in this process; every answer of the server must equal it (status 200, the same
`semantic_predictions` and `image_sizes`). "lost" counts requests that got no answer at all
(a connection error or a timeout), "wrong" those answered otherwise; both must be 0 and the
server's log must have one `200` line per request, or the exit status is 1.

Latency is the client's: from sending the request to the last byte of the answer, so a request
that waits for a model slot counts its wait. The machine may be shared: the figures of one run
compare with each other, not with another machine's.
"""

import argparse
import base64
import glob
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = ((96, 128), (120, 160), (128, 128))
START_TIMEOUT = 300


def tiny_export(base):
    """The demo's tiny model, random weights, as `<base>/tiny/1`; returns `<base>/tiny`."""
    from deeplab_family import export as export_lib
    from deeplab_family.config import ExportConfig, load_config
    from deeplab_family.inference import build_inference_model

    config = load_config(os.path.join(REPO, "train_configs",
                                      "tiny_deeplabv3_os16_synthetic.yaml"))
    model = build_inference_model(config.model, output_stride=8)
    export_lib.use_dense_atrous_convs(model)
    export_dir = os.path.join(base, "tiny")
    export_lib.write_saved_model(model, os.path.join(export_dir, "1"),
                                 ExportConfig(output_stride=8))
    return export_dir


def image_files(args):
    if args.images:
        paths = sorted(glob.glob(os.path.join(args.images, "**", "*.jp*g"), recursive=True)
                       + glob.glob(os.path.join(args.images, "**", "*.png"), recursive=True))
        if not paths:
            raise SystemExit(f"--images {args.images}: no JPEG or PNG files")
        files = []
        for path in paths[: args.num_images]:
            with open(path, "rb") as f:
                files.append(f.read())
        return files
    rng = np.random.default_rng(0)
    files = []
    for i in range(args.num_images):
        h, w = SIZES[i % len(SIZES)]
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        files.append(tf.io.encode_jpeg(pixels, quality=90).numpy())
    return files


def start_server(model, args, log_path):
    out_path = log_path + ".stdout"
    begin = time.monotonic()
    with open(out_path, "w") as out, open(log_path, "w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "deeplab_family.serve", "--model", model, "--port", "0",
             "--max-concurrency", str(args.max_concurrency)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, stdout=out, stderr=err)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with open(out_path) as f:
            text = f.read()
        found = re.search(r"serve: (\S+) version \d+ on http://127\.0\.0\.1:(\d+) "
                          r"\(loaded in ([\d.]+) s", text)
        if found:
            return process, found[1], int(found[2]), float(found[3]), time.monotonic() - begin
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    with open(log_path) as f:
        raise SystemExit(f"the server did not start:\n{f.read()[-3000:]}")


def client(port, path, bodies, order, results, timeout):
    """Sends `bodies[k]` for each k of `order` on one keep-alive connection."""
    connection = None
    for k in order:
        start = time.perf_counter()
        try:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            connection.request("POST", path, body=bodies[k],
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            content = response.read()
            results.append((k, response.status, content, time.perf_counter() - start))
        except (OSError, http.client.HTTPException) as e:
            results.append((k, None, repr(e).encode(), time.perf_counter() - start))
            connection = None


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="export base path (default: the tiny model, random "
                                        "weights, in a temporary directory)")
    parser.add_argument("--images", help="a folder of JPEG/PNG files (default: random JPEGs)")
    parser.add_argument("--num-images", type=int, default=6, help="distinct images (6)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-concurrency", type=int, default=2,
                        help="the server's --max-concurrency (2)")
    parser.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tiny_export(tmp)
        files = image_files(args)
        from deeplab_family.predictors import resolve_saved_model

        serve = tf.saved_model.load(resolve_saved_model(model)).signatures["serving_default"]
        expected = []
        for data in files:
            out = serve(image_bytes=tf.constant([data]))
            expected.append({"semantic_predictions": out["semantic_predictions"][0].numpy(),
                             "image_sizes": out["image_sizes"][0].numpy()})
        bodies = [json.dumps({"instances": [{"b64": base64.b64encode(d).decode()}]}).encode()
                  for d in files]

        log_path = os.path.join(tmp, "server.log")
        process, name, port, load_seconds, start_seconds = start_server(model, args, log_path)
        path = f"/v1/models/{name}:predict"
        results = []
        orders = [[k % len(files) for k in range(c, args.requests, args.clients)]
                  for c in range(args.clients)]
        threads = [threading.Thread(target=client,
                                    args=(port, path, bodies, order, results, args.timeout))
                   for order in orders]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=60)
        with open(log_path) as f:
            logged = [line for line in f if f" POST {path} 200 " in line]

    lost = [r for r in results if r[1] is None]
    wrong = []
    for k, code, content, _ in results:
        if code is None:
            continue
        row = json.loads(content)["predictions"][0] if code == 200 else None
        if row is None or not all(
            np.array_equal(np.asarray(row[key], value.dtype), value)
            for key, value in expected[k].items()
        ):
            wrong.append((k, code, content[:200]))
    latencies = [r[3] for r in results if r[1] == 200]
    report = {
        "model": name,
        "start_seconds": round(start_seconds, 2),
        "load_seconds": load_seconds,
        "requests": args.requests,
        "clients": args.clients,
        "max_concurrency": args.max_concurrency,
        "answered": len(results) - len(lost),
        "correct": len(results) - len(lost) - len(wrong),
        "lost": args.requests - len(results) + len(lost),
        "wrong": len(wrong),
        "server_log_200_lines": len(logged),
        "server_exit_status": status,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 2),
        "latency_ms": {q: round(1000 * percentile(latencies, int(q[1:])), 1)
                       for q in ("p50", "p90", "p99")},
        "latency_ms_max": round(1000 * max(latencies), 1) if latencies else None,
        "latency_ms_mean": round(1000 * statistics.mean(latencies), 1) if latencies else None,
    }
    print(f"{report['requests']} requests from {report['clients']} clients "
          f"(server --max-concurrency {report['max_concurrency']}, model {name}, "
          f"{len(files)} images; started in {start_seconds:.1f} s, of which loading and "
          f"warming up the model {load_seconds:.1f} s):")
    print(f"  answered {report['answered']}, correct {report['correct']}, lost "
          f"{report['lost']}, wrong {report['wrong']}; server logged {len(logged)} x 200")
    print(f"  {wall:.2f} s, {report['requests_per_s']} requests/s; latency p50 "
          f"{report['latency_ms']['p50']} ms, p90 {report['latency_ms']['p90']} ms, p99 "
          f"{report['latency_ms']['p99']} ms, max {report['latency_ms_max']} ms")
    for k, code, content in wrong[:3]:
        print(f"  wrong: image {k}: status {code}: {content!r}")
    print(json.dumps(report))
    ok = (not lost and not wrong and len(results) == args.requests
          and len(logged) == args.requests and status == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
