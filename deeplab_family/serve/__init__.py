"""A model server for an exported SavedModel: TF Serving's REST API and a page to try it.

    python -m deeplab_family.serve --model EXPORT_BASE [--port 8501] [--host 127.0.0.1]

The same client works against this server and against TF Serving (`docs/serving.md`):

    curl http://127.0.0.1:8501/v1/models/deeplab                  # status
    curl http://127.0.0.1:8501/v1/models/deeplab/metadata         # both signatures
    curl -d @request.json http://127.0.0.1:8501/v1/models/deeplab:predict

and `http://127.0.0.1:8501/` is a page where a person drops an image and sees its mask over
it, with a legend of the classes (the export's dataset spec) and each one's share of the image.

The web framework is Starlette on uvicorn: both kept and released often, small (two packages
beyond what the lock had: anyio, h11 and click were there already), asyncio-native, so that
the model runs in worker threads while the event loop keeps answering, and uvicorn takes an
already bound socket, which gives a race-free `--port 0` for tests. aiohttp would do as well
but brings six packages of its own; Flask's WSGI would block a worker thread per waiting
request.

One module per job; this package imports none of them, so `--help` stays fast:

- `rest`: TF Serving's predict request and response formats (JSON <-> NumPy; no TensorFlow);
- `model`: `ServedModel`, the loaded SavedModel with its signatures and errors;
- `page`: the page (`static/index.html`) and its `/segment` call;
- `app`: the Starlette app: routes, body limit, concurrency limit, one log line per request;
- `cli`: the command line (`__main__`). No library module imports it.
"""
