"""The page at `/`: a person drops an image and sees its mask over it, with a legend.

The page (`static/index.html`, plain HTML, CSS and JavaScript, nothing fetched from elsewhere)
posts the file's bytes unchanged to `POST /segment`, which runs the export's `serving_default`
on them, exactly as a REST client's `{"b64": ...}` is run, and answers:

    {"width": W, "height": H, "overlay": "<base64 PNG>", "milliseconds": ...,
     "classes": [{"id": 15, "name": "person", "color": [192, 128, 128], "share": 0.42}, ...]}

`overlay` is `predict.overlay` of the image and its mask (the classes other than "background"
blended in their colours), `classes` the classes present, largest share first
(`predict.class_shares`), named and coloured by the export's dataset spec (VOC's without one).
"""

import base64
import html
import io
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from deeplab_family.inference import JPEG_MAGIC, PNG_MAGIC
from deeplab_family.masks import class_shares, overlay
from deeplab_family.serve.rest import STRING, RequestError

PAGE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "index.html")
SIGNATURE = "serving_default"


def page_html(model):
    """The page, with the model's name and version filled in."""
    with open(PAGE_FILE, encoding="utf-8") as f:
        text = f.read()
    return (text.replace("{{MODEL_NAME}}", html.escape(model.name))
                .replace("{{MODEL_VERSION}}", str(model.version)))


def check_page_signature(model):
    """The page needs `serving_default` with one string input; a `RequestError` otherwise."""
    inputs = model.inputs.get(SIGNATURE, {})
    if len(inputs) != 1 or next(iter(inputs.values())) != STRING:
        raise RequestError(
            f"the page needs a {SIGNATURE} signature with one string input (image bytes); this "
            f"model's signatures: {sorted(model.inputs)}", status=404)
    return next(iter(inputs))


def segment(model, data, alpha=0.5):
    """The `/segment` answer (see the module docstring) for one image file's bytes."""
    input_name = check_page_signature(model)
    if not data:
        raise RequestError("the request body is empty: send the image file's bytes")
    if not data.startswith((JPEG_MAGIC, PNG_MAGIC)):
        raise RequestError(f"the file ({len(data)} bytes) is neither a JPEG nor a PNG image")
    outputs = model.predict(SIGNATURE, {input_name: [data]})
    height, width = (int(v) for v in outputs["image_sizes"][0])
    mask = outputs["semantic_predictions"][0, :height, :width]
    image = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    drawn = overlay(image, mask, alpha, model.spec)
    buffer = io.BytesIO()
    Image.fromarray(drawn).save(buffer, format="PNG")
    colours = model.spec.colormap()
    classes = []
    for class_id, share in class_shares(mask, model.spec.num_classes):
        name = model.spec.classes[class_id] if class_id < model.spec.num_classes else "ignore"
        classes.append({"id": class_id, "name": name, "share": float(share),
                        "color": [int(c) for c in np.asarray(colours[class_id])]})
    return {
        "width": width,
        "height": height,
        "overlay": base64.b64encode(buffer.getvalue()).decode("ascii"),
        "classes": classes,
    }
