"""A trained tiny model dir, small TFRecords and one export, shared by the export tests.

`exported(base_dir)` builds everything once per test session (cached in this process):

1. small colour-coded images (each class its colour) in `train_aug` and `val` shards, written
   with the project's TFRecord writer, and the val JPEGs as files;
2. a tiny DeepLabV3 trained for 150 steps at output stride 16 (plain TF loop, through the
   real input pipeline), saved as training does: `tf.train.CheckpointManager` in
   `<model_dir>/checkpoints/` and the resolved config in `<model_dir>/config.yaml`;
3. `deeplab_family.export` (in this process) to `<export_dir>/1/` at output stride 8, with
   probabilities and every TFLite mode at a small fixed size.

The model normalises its input as the demo's does ("tf": x / 127.5 - 1), so that its TFLite
files have the op list the README states. Consumers only read the fixture: `<export_dir>` holds
version 1 alone, for every test in every order; a test that writes an export writes it to its
own directory (or a copy).
"""

import functools
import glob
import os

import keras
import numpy as np
import tensorflow as tf

from deeplab_family import config as config_lib
from deeplab_family import export as export_lib
from deeplab_family.data.pipeline import InputConfig, make_dataset
from deeplab_family.models import ModelConfig, build_model

# The checkpoint tests' tiny configs: every registered model at a few thousand weights.
from tests.tiny import FLAT_BACKBONE as TINY_BACKBONE
from tests.tiny import FLAT_HEADS as TINY_HEADS

NUM_CLASSES = 21
CLASSES = (3, 7, 12, 15, 20)  # the object classes of the colour-coded images
TFLITE_SIZE = (65, 65)
TRAIN_STEPS = 150


def tiny_model_config(name="deeplabv3", num_classes=NUM_CLASSES):
    return ModelConfig.from_dict({"name": name, "num_classes": num_classes,
                                  "backbone": dict(TINY_BACKBONE), "head": dict(TINY_HEADS[name])})


def _colour_coded_sample(rng):
    """An image whose pixel colours say their classes (plus noise), and its label."""
    from tests.data import helpers

    h, w = int(rng.integers(40, 72)), int(rng.integers(48, 84))
    label = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(2, 5))):
        c = rng.choice(CLASSES)
        y, x = rng.integers(0, h - 10), rng.integers(0, w - 10)
        label[y : y + rng.integers(10, h // 2 + 10), x : x + rng.integers(10, w // 2 + 10)] = c
    image = helpers.CLASS_COLORS[label].astype(np.int16) + rng.integers(-20, 21, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def colour_coded_records(folder, num_train=12, num_val=4, seed=0):
    """`{"train": glob, "val": glob, "val_images": [jpeg paths]}`: a task a tiny net learns fast.

    Objects of a few classes as rectangles, each class its own colour: a few hundred training
    steps give a model with several classes in its predictions and clear margins, so that
    parity figures are not those of an all-background model. Sizes differ between images.
    """
    from tests.data import helpers

    rng = np.random.default_rng(seed)
    examples, val_images = [], []
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    for i in range(num_train + num_val):
        image, label = _colour_coded_sample(rng)
        jpeg = encode(image, "JPEG")
        examples.append((f"cc_{i:04d}", jpeg, label))
        if i >= num_train:
            val_images.append(os.path.join(folder, "images", f"cc_{i:04d}.jpg"))
            with open(val_images[-1], "wb") as f:
                f.write(jpeg)
    records = os.path.join(folder, "records")
    return {
        "train": helpers.write_shards(records, "train_aug", examples[:num_train]),
        "val": helpers.write_shards(records, "val", examples[num_train:]),
        "val_images": val_images,
    }


def train_briefly(model, train_pattern, steps=TRAIN_STEPS, crop=64, batch_size=4):
    """A short plain-TF training, so that the predictions are not the near-ties of a random
    init (or all background)."""
    # A fixed element order: the same model on every run, so the parity floors below hold or
    # fail for good, never by the draw (with the free order, int8 agreement ranged 0.76-0.94).
    ds = make_dataset(InputConfig(file_pattern=train_pattern, crop_size=crop,
                                  batch_size=batch_size, seed=0, min_scale=0.75, max_scale=1.25,
                                  deterministic=True),
                      training=True)
    # Plain SGD: Adam at a rate that learns this fast leaves weights whose activations
    # quantize badly (int8 agreement 0.6-0.85 over seeds, against ~0.94 with SGD).
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True)["logits"])
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                      model.trainable_variables))
        return loss

    for images, labels in ds.take(steps):
        step(images, labels)


def make_model_dir(model_dir, records, name="deeplabv3", train=True):
    """A model dir as training leaves it: checkpoints/ and config.yaml."""
    config = config_lib.ExperimentConfig.from_dict({
        # A fast BN moving average, so that a short training gives usable inference statistics.
        # The demo's normalisation (train_configs/tiny_deeplabv3_os16_synthetic.yaml).
        "model": {"name": name, "num_classes": NUM_CLASSES,
                  "backbone": {**TINY_BACKBONE, "norm_momentum": 0.8, "preprocessing": "tf"},
                  "head": dict(TINY_HEADS[name])},
        "train_data": {"file_pattern": records["train"], "crop_size": 64},
        "eval_data": {"file_pattern": records["val"], "batch_size": 1},
        "export": {"probabilities": True, "tflite_size": list(TFLITE_SIZE),
                   "representative_samples": 6},
    })
    model = build_model(config.model)
    if train:
        train_briefly(model, records["train"])
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model), os.path.join(model_dir, "checkpoints"), 1)
    manager.save()
    config_lib.save_config(config, model_dir)
    return config


@functools.cache
def exported(base_dir):
    """Builds (once) and returns the shared fixture dict."""
    # Module-scoped fixtures run before the per-test seeding in conftest: seed here, so that
    # the model is the same whichever test builds it.
    keras.utils.set_random_seed(0)
    records = colour_coded_records(os.path.join(base_dir, "data"))
    model_dir = os.path.join(base_dir, "model")
    config = make_model_dir(model_dir, records)
    export_dir = os.path.join(base_dir, "export")
    info = export_lib.export(config, model_dir, export_dir, export_lib.TFLITE_MODES,
                             log=lambda m: None)
    return {
        "records": records,
        "model_dir": model_dir,
        "config": config,
        "export_dir": export_dir,
        "saved_model": info["path"],
        "info": info,
        "tflite": {m: os.path.join(info["path"], t["file"]) for m, t in info["tflite"].items()},
    }


def keras_export_model(fixture):
    """The Keras model as export builds it (output stride 8, latest checkpoint)."""
    model, _ = export_lib.build_export_model(fixture["config"], fixture["model_dir"])
    return model


def val_examples(fixture):
    """`[(uint8 image, uint8 label)]` of the val shards, decoded as the pipeline does."""
    from deeplab_family.data.pipeline import decode_example

    out = []
    for path in sorted(glob.glob(fixture["records"]["val"])):
        for record in tf.data.TFRecordDataset(path):
            example = decode_example(record)
            out.append((example["image"].numpy(), example["label"].numpy()))
    return out


def encode(image, fmt):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format=fmt)
    return buf.getvalue()
