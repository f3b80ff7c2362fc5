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


def _model_variable_keys(prefix):
    """The checkpoint keys of the model's own variables (not optimizer slots, not the step)."""
    return [
        key for key, _ in tf.train.list_variables(prefix)
        if key.startswith("model/") and key.endswith("/.ATTRIBUTES/VARIABLE_VALUE")
        and "/.OPTIMIZER_SLOT/" not in key
    ]


def restore_model(model, model_dir_or_prefix):
    """Restores the model weights of the latest checkpoint into `model`; returns the prefix.

    Raises a FileNotFoundError naming the directory when there is no checkpoint, and a
    ValueError when the checkpoint does not fit the model: a model variable the checkpoint
    lacks (named), or a checkpoint with more model variables than the model has. The second
    would otherwise pass silently, leaving weights unused: for example a checkpoint of a
    cascaded DeepLabv3 written when blocks 5-7 still had projection shortcuts.
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
    stored = len(_model_variable_keys(prefix))
    expected = len({id(v) for v in model.variables})
    if stored > expected:
        raise ValueError(
            f"checkpoint {prefix} holds {stored} model variables, the model {model.name!r} "
            f"{expected}: it was written by a different architecture, and {stored - expected} "
            "of its weights would go unused. Check that the config's model section is the one "
            "it was trained with."
        )
    return prefix
