"""The checkpoint contract: what training writes, evaluate/export restore, at any output stride."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_family.models import ModelConfig, build_model, registered_models
from deeplab_family.training.checkpoints import latest_checkpoint, restore_model
from tests.tiny import FLAT_BACKBONE as TINY_BACKBONE
from tests.tiny import FLAT_HEADS as TINY_HEADS


@pytest.mark.parametrize("name", registered_models())
def test_checkpoint_holds_every_variable_and_restores_at_os8(name, tmp_path):
    assert name in TINY_HEADS, f"add a tiny config for {name!r} to tests/tiny.py (FLAT_HEADS)"
    config = ModelConfig(name=name, num_classes=3, backbone=dict(TINY_BACKBONE),
                         head=TINY_HEADS[name])
    model = build_model(config)
    rng = np.random.default_rng(0)
    for w in model.weights:  # make every variable distinguishable from a fresh init
        if "variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        else:
            w.assign(rng.standard_normal(w.shape).astype("float32") * 0.1)
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, step=tf.Variable(7, dtype=tf.int64)),
        str(tmp_path / "checkpoints"),
        max_to_keep=2,
    )
    manager.save(checkpoint_number=7)
    saved = [n for n, _ in tf.train.list_variables(manager.latest_checkpoint)
             if n.startswith("model/")]
    assert len(saved) == len(model.weights)

    os8 = build_model(config.with_output_stride(8))
    assert restore_model(os8, str(tmp_path)) == latest_checkpoint(str(tmp_path))
    want = {w.path: np.asarray(w) for w in model.weights}
    got = {w.path: np.asarray(w) for w in os8.weights}
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    out = os8(np.zeros((1, 65, 65, 3), "float32"))["logits"]
    assert out.shape == (1, 65, 65, 3)


def test_restore_without_checkpoint_names_the_directory(tmp_path):
    config = ModelConfig(name="deeplabv3", num_classes=3, backbone=dict(TINY_BACKBONE),
                         head=TINY_HEADS["deeplabv3"])
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        restore_model(build_model(config), str(tmp_path))


def test_restore_into_a_different_model_is_an_error(tmp_path):
    small = ModelConfig(name="deeplabv3", num_classes=3, backbone=dict(TINY_BACKBONE),
                        head=TINY_HEADS["deeplabv3"])
    tf.train.Checkpoint(model=build_model(small)).save(str(tmp_path / "checkpoints" / "ckpt"))
    other = dataclasses.replace(small, num_classes=5)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        restore_model(build_model(other), str(tmp_path))


def test_restore_refuses_a_checkpoint_with_weights_the_model_would_not_use(tmp_path):
    # As a cascaded DeepLabv3 written when blocks 5-7 still had projection shortcuts: every
    # variable of the new model is in the checkpoint, and some of the checkpoint's are not in
    # the model. The restore alone would pass and leave them unused.
    config = ModelConfig(name="deeplabv3", num_classes=3, backbone=dict(TINY_BACKBONE),
                         head=TINY_HEADS["deeplabv3"])
    writer = build_model(config)
    extra = keras.layers.Conv2D(4, 1, name="legacy_projection")
    extra.build((None, None, None, 4))
    writer.legacy_projection = extra
    tf.train.Checkpoint(model=writer).save(str(tmp_path / "checkpoints" / "ckpt"))
    reader = build_model(config)
    with pytest.raises(ValueError, match=r"holds \d+ model variables, the model 'deeplabv3' "
                                         r"\d+: .* 2 of its weights would go unused"):
        restore_model(reader, str(tmp_path))
    # The same model without the extra layer restores.
    tf.train.Checkpoint(model=build_model(config)).save(str(tmp_path / "plain" / "ckpt"))
    assert restore_model(reader, str(tmp_path / "plain"))
