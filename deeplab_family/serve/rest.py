"""TF Serving's REST predict API as JSON in and out: the request decoded to NumPy inputs, the
outputs encoded as TF Serving encodes them. Neither TensorFlow nor a web framework: the model
(`model.ServedModel`) and the app (`app.py`) are on either side.

The formats are those of TF Serving's `api_rest.md` ("Predict API", "Encoding binary values"):

- `{"signature_name": ..., "instances": [...]}`, the row form: one entry per batch element.
  With a single input, an entry is that input's value, or an object `{input_name: value}`;
  with several inputs, it must be such an object.
- `{"signature_name": ..., "inputs": ...}`, the columnar form: the single input's whole batch,
  or an object `{input_name: batch}`.
- A binary string is `{"b64": <base64>}` (a plain JSON string is taken as its UTF-8 bytes);
  numbers are nested lists.

A request has one of `instances` and `inputs`, not both; `signature_name` defaults to
`serving_default`. The answer to the row form is `{"predictions": [...]}`: per instance, the
object of its outputs (or the bare value when the signature has one output). The columnar
form gets `{"outputs": {name: batch}}` (or the bare batch). String outputs whose names end in
`_bytes` go back as `{"b64": ...}`, as TF Serving sends them.

Every malformed request raises `RequestError`, whose message names the part of the body at
fault, and which the app answers with `{"error": message}`, as TF Serving does:

>>> import numpy as np
>>> inputs = {"serving_default": {"image_bytes": STRING}}
>>> name, batch, form = parse_predict_request(b'{"instances": [{"b64": "aGk="}]}', inputs)
>>> name, batch["image_bytes"], form
('serving_default', [b'hi'], 'row')
>>> parse_predict_request(b'{"instances": []}', inputs)
Traceback (most recent call last):
...
deeplab_family.serve.rest.RequestError: "instances" is empty: send at least one instance
>>> format_predict_response({"image_sizes": np.array([[2, 3]], np.int32)}, "columnar")
{'outputs': [[2, 3]]}
"""

import base64
import binascii
import json

import numpy as np

DEFAULT_SIGNATURE = "serving_default"
# The dtype of a string input in the `{input: dtype}` descriptions below.
STRING = np.dtype(object)


class RequestError(ValueError):
    """A request that cannot be answered; `status` is the HTTP status (400 unless said)."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def _kind(value):
    return "null" if value is None else {
        dict: "an object", list: "a list", str: "a string", bool: "a boolean",
    }.get(type(value), "a number")


def _is_b64(value):
    return isinstance(value, dict) and set(value) == {"b64"}


def _bytes(value, where):
    """A string input's element: `{"b64": ...}` decoded, or a plain string's UTF-8 bytes."""
    if _is_b64(value):
        text = value["b64"]
        if not isinstance(text, str):
            raise RequestError(f"{where}: \"b64\" must be a string of base64, not {_kind(text)}")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            try:  # TF Serving takes the URL-safe alphabet too
                return base64.b64decode(text, altchars=b"-_", validate=True)
            except (binascii.Error, ValueError) as e:
                raise RequestError(f"{where}: \"b64\" is not valid base64 ({e})") from None
    if isinstance(value, str):
        return value.encode("utf-8")
    raise RequestError(
        f"{where} is {_kind(value)}: a string input takes {{\"b64\": <base64 of the bytes>}} "
        "(for an image, the JPEG or PNG file as it is)"
    )


def _tensor(values, dtype, where):
    """A numeric input's batch as an array of `dtype`, or a `RequestError` saying why not."""
    try:
        array = np.asarray(values)
    except ValueError:  # ragged nesting
        raise RequestError(
            f"{where} is not a rectangular nested list: every element of a batch must have the "
            "same shape (send images of different sizes as image_bytes to serving_default)"
        ) from None
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise RequestError(f"{where} must hold numbers only")
    if np.issubdtype(dtype, np.integer):
        if array.dtype.kind == "f" and not np.all(np.isfinite(array) & (array == np.round(array))):
            raise RequestError(f"{where} must hold integers ({np.dtype(dtype).name})")
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise RequestError(
                f"{where} holds values outside {info.min}..{info.max}, the range of "
                f"{np.dtype(dtype).name} (received {array.min()}..{array.max()})"
            )
    return array.astype(dtype)


def _batch(values, dtype, where):
    if dtype == STRING:
        if not isinstance(values, list):
            raise RequestError(f"{where} must be a list (the batch), not {_kind(values)}")
        return [_bytes(v, f"{where}[{i}]") for i, v in enumerate(values)]
    return _tensor(values, dtype, where)


def _named(value, names, where):
    """`value` as `{input: value}`: an object keyed by input names, or a single input's bare
    value."""
    if isinstance(value, dict) and not _is_b64(value):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise RequestError(
                f"{where} names input {', '.join(map(repr, unknown))}, which the signature does "
                f"not have (its inputs: {', '.join(names)})"
            )
        missing = [n for n in names if n not in value]
        if missing:
            raise RequestError(f"{where} lacks input {', '.join(map(repr, missing))}")
        return value
    if len(names) > 1:
        raise RequestError(
            f"{where} must be an object keyed by the signature's inputs ({', '.join(names)})"
        )
    return {names[0]: value}


def parse_predict_request(body, signatures):
    """Decodes a `:predict` body.

    Args:
        body: bytes, the request body.
        signatures: `{signature name: {input name: numpy dtype}}`, `STRING` for tf.string.

    Returns:
        `(signature_name, {input: batch}, form)`: a batch is a list of bytes for a string
        input, else an array; form is "row" or "columnar".

    Raises:
        RequestError: the body is not JSON, names no known signature or input, or holds a
            value the input cannot take.
    """
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"the request body is not valid JSON: {e}") from None
    if not isinstance(request, dict):
        raise RequestError(f"the request body must be a JSON object, not {_kind(request)}")
    # TF Serving takes a missing or empty name as the default signature.
    name = request.get("signature_name") or DEFAULT_SIGNATURE
    if not isinstance(name, str) or name not in signatures:
        raise RequestError(
            f"Serving signature name: {json.dumps(name)} not found in signature def "
            f"(signatures: {', '.join(sorted(signatures))})"
        )
    inputs = signatures[name]
    names = list(inputs)
    if ("instances" in request) == ("inputs" in request):
        raise RequestError(
            "the request must have one of \"instances\" (row format) and \"inputs\" (columnar "
            "format)" + (", not both" if "instances" in request else "")
        )
    if "instances" in request:
        rows = request["instances"]
        if not isinstance(rows, list):
            raise RequestError(f"\"instances\" must be a list, not {_kind(rows)}")
        if not rows:
            raise RequestError("\"instances\" is empty: send at least one instance")
        named = [_named(row, names, f"instances[{i}]") for i, row in enumerate(rows)]
        batch = {}
        for n in names:
            values = [row[n] for row in named]
            if inputs[n] == STRING:
                batch[n] = [_bytes(v, f"instances[{i}]") for i, v in enumerate(values)]
            else:
                batch[n] = _tensor(values, inputs[n], f"instances ({n})")
        return name, batch, "row"
    columns = _named(request["inputs"], names, "\"inputs\"")
    batch = {n: _batch(columns[n], inputs[n], f"inputs.{n}") for n in names}
    for n, values in batch.items():
        if len(values) == 0:
            raise RequestError(f"inputs.{n} is empty: send at least one value")
    return name, batch, "columnar"


def _json(name, array):
    """A NumPy output as JSON values: `{"b64"}` for `*_bytes` strings, UTF-8 text otherwise."""
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind == "S":
        if name.endswith("_bytes"):
            encode = lambda b: {"b64": base64.b64encode(b).decode("ascii")}  # noqa: E731
        else:
            encode = lambda b: b.decode("utf-8", "replace")  # noqa: E731
        return np.vectorize(encode, otypes=[object])(array).tolist() if array.size else []
    return array.tolist()


def format_predict_response(outputs, form):
    """The response dict of a predict call.

    Args:
        outputs: `{output name: array}`, every array with the batch as first dimension.
        form: "row" or "columnar", as the request was.
    """
    names = sorted(outputs)
    if form == "columnar":
        if len(names) == 1:
            return {"outputs": _json(names[0], outputs[names[0]])}
        return {"outputs": {n: _json(n, outputs[n]) for n in names}}
    sizes = {n: len(outputs[n]) for n in names}
    if len(set(sizes.values())) > 1:
        raise RequestError(
            f"the outputs have different batch sizes ({sizes}): use the columnar format "
            "(\"inputs\")", status=500)
    if len(names) == 1:
        return {"predictions": _json(names[0], outputs[names[0]])}
    columns = {n: _json(n, outputs[n]) for n in names}
    count = sizes[names[0]] if names else 0
    return {"predictions": [{n: columns[n][i] for n in names} for i in range(count)]}


def status_response(version):
    """`GET /v1/models/NAME`: TF Serving's `GetModelStatusResponse` for one loaded version."""
    return {"model_version_status": [{
        "version": str(version),
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }]}
