"""The checkpoint contract between `train`, `evaluate` and `export`.

Training writes `tf.train.Checkpoint(model=..., optimizer=..., step=...)` through a
`tf.train.CheckpointManager` in `<model_dir>/checkpoints/`. Readers only need the model: they
build it (at whatever output stride they evaluate or export at; the variables do not depend on
it) and call `restore_model`.
"""

import os

import tensorflow as tf

CHECKPOINT_SUBDIR = "checkpoints"


def checkpoint_dir(model_dir):
    return os.path.join(model_dir, CHECKPOINT_SUBDIR)


def latest_checkpoint(model_dir_or_prefix):
    """The newest checkpoint prefix under a model dir (or the prefix itself), or None."""
    path = model_dir_or_prefix
    if tf.io.gfile.exists(path + ".index"):
        return path
    for directory in (checkpoint_dir(path), path):
        latest = tf.train.latest_checkpoint(directory)
        if latest:
            return latest
    return None


def restore_model(model, model_dir_or_prefix):
    """Restores the model weights of the latest checkpoint into `model`; returns the prefix.

    Raises a FileNotFoundError naming the directory when there is no checkpoint, and a
    ValueError naming the variables when the checkpoint does not fit the model.
    """
    prefix = latest_checkpoint(model_dir_or_prefix)
    if prefix is None:
        raise FileNotFoundError(
            f"no checkpoint in {model_dir_or_prefix} (looked in "
            f"{checkpoint_dir(model_dir_or_prefix)}): train first, or pass the right --model-dir"
        )
    status = tf.train.Checkpoint(model=model).restore(prefix)
    try:
        status.expect_partial().assert_existing_objects_matched()
    except AssertionError as e:
        raise ValueError(f"checkpoint {prefix} does not match the model: {e}") from None
    return prefix
