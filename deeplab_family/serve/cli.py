"""`python -m deeplab_family.serve`: serve an exported model over TF Serving's REST API.

    python -m deeplab_family.serve --model EXPORT_BASE [--port 8501] [--host 127.0.0.1]
        [--model-name NAME] [--max-request-bytes 33554432] [--max-pixels 16777216]
        [--max-concurrency 2]
        [--max-connections 64] [--alpha 0.5]

`--model` is what `predict --model` takes: a TF Serving model base path (its highest version
is served) or a SavedModel dir. The model is loaded once and warmed up with one small call of
each signature; then one line on stdout says where it serves:

    serve: deeplab version 1 on http://127.0.0.1:8501 (loaded in 2.1 s; page at /)

`--port 0` takes a free port (the line says which). Every request is logged on stderr as one
line (`app.py`). Ctrl-C or SIGTERM stops the server after the requests in progress, and
`serve: stopped (SIGTERM)` is its last line; the exit status is 0 then, 2 when `--model` is no
exported model and 1 when the port cannot be bound (`deeplab_family.cli`).

The limits: a body over `--max-request-bytes` gets a 413, an image of more than `--max-pixels`
(read from its header, before decoding) a 400; at most `--max-concurrency` model
calls run at once, and later requests wait; beyond `--max-connections` open connections,
uvicorn answers 503 at once rather than queue without bound.
"""

import argparse
import logging
import os
import signal
import socket
import sys

from deeplab_family import _validation, cli

DEFAULT_PORT = 8501  # TF Serving's REST port


# The house argparse types (`_validation.argparse_type`): "must be an int >= 1. Received: 0".
_positive = _validation.argparse_type(_validation.positive_int)
_port = _validation.argparse_type(_validation.int_in_range, low=0, high=65535)


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m deeplab_family.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True,
                        help="TF Serving export dir (highest version) or SavedModel dir")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help=f"port ({DEFAULT_PORT}, TF Serving's REST port; 0: a free one)")
    parser.add_argument("--model-name", default=None,
                        help="NAME in /v1/models/NAME (default: the export dir's name)")
    parser.add_argument("--max-request-bytes", type=_positive, default=32 * 1024 * 1024,
                        help="largest request body; larger ones get a 413 (32 MiB)")
    parser.add_argument("--max-pixels", type=_positive, default=4096 * 4096,
                        help="largest image (height x width) in a request; larger ones get a "
                             "400 before they are decoded (4096 x 4096)")
    parser.add_argument("--max-concurrency", type=_positive, default=2,
                        help="model calls at once; later requests wait (2)")
    parser.add_argument("--max-connections", type=_positive, default=64,
                        help="open connections; beyond, a 503 (64)")
    parser.add_argument("--alpha", type=float, default=0.5, help="the page's overlay opacity")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        return cli.error(f"--alpha must be in [0, 1]. Received: {args.alpha}", cli.EXIT_USAGE)
    # The entry point owns the logging setup: the library only writes to its logger.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    # TensorFlow's C++ INFO lines (one per rejected request) would break the one line per
    # request of the log; its errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import uvicorn

    from deeplab_family.serve.app import create_app
    from deeplab_family.serve.model import ServedModel

    try:
        model = ServedModel(args.model, name=args.model_name, max_pixels=args.max_pixels)
    except (OSError, ValueError) as e:
        return cli.error(f"cannot serve --model {args.model}: {e}", cli.EXIT_USAGE)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:
        sock = socket.create_server((args.host, args.port), family=family)
    except OSError as e:
        return cli.error(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host

    def ready():
        print(f"serve: {model.name} version {model.version} on http://{host}:{port} "
              f"(loaded in {model.load_seconds:.1f} s; page at /)", flush=True)

    app = create_app(model, args.max_request_bytes, args.max_concurrency, args.alpha,
                     on_ready=ready)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            limit_concurrency=args.max_connections)
    # uvicorn stops on SIGINT/SIGTERM after the requests in progress, then raises the signal
    # again under the handlers it found; these take it, so that a stop is a clean exit 0
    # rather than a KeyboardInterrupt traceback or a death by the signal.
    received = []
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda number, frame: received.append(number))
                for s in handled}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    names = ", ".join(signal.Signals(n).name for n in received) or "no signal"
    print(f"serve: stopped ({names})", flush=True)
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
