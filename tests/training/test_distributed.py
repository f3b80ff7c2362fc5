"""Distributed correctness: 2 replicas + sync BN == one device with the same global batch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_family.data.pipeline import make_dataset
from deeplab_family.training import loop
from deeplab_family.training.loop import Trainer
from deeplab_family.training.strategies import mirrored_strategy
from tests.training.helpers import tiny_config


@pytest.fixture(scope="module")
def global_batch(shards):
    # The pipeline's shuffle also reads TensorFlow's global seed, which the test that ran
    # before this module's first one left set: the same batch whatever ran before.
    keras.utils.set_random_seed(0)
    config = tiny_config(shards, "train_data.seed=1")
    images, labels = next(iter(make_dataset(config.train_data, training=True)))
    assert images.shape[0] == 4 and (labels.numpy() == 255).any()
    return images.numpy(), labels.numpy()


def _strategy(replicas):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if replicas == 1:
        return tf.distribute.OneDeviceStrategy(devices[0])
    return mirrored_strategy(devices[:replicas])


def _step(trainer, batch, steps=1):
    dataset = tf.data.Dataset.from_tensors(batch)
    images, labels = next(iter(trainer.strategy.experimental_distribute_dataset(dataset)))
    return [trainer.train_step(images, labels) for _ in range(steps)]


def _copy_weights(source, target):
    for a, b in zip(source.model.weights, target.model.weights):
        assert a.path == b.path
        b.assign(a)


def _state(trainer):
    out = {f"model/{w.path}": np.asarray(w) for w in trainer.model.weights}
    momentums = [v for v in trainer.optimizer.variables if "momentum" in v.path]
    out.update({f"opt/{i}": np.asarray(v) for i, v in enumerate(momentums)})
    return out


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def test_mirrored_sync_bn_step_equals_one_device_step(shards, global_batch):
    config = tiny_config(shards, "training.learning_rate=0.05")
    one = Trainer(config, _strategy(1))
    two = Trainer(config, _strategy(2))
    assert one.num_replicas == 1 and not one.sync_bn
    assert two.num_replicas == 2 and two.sync_bn  # on by default with > 1 replica
    _copy_weights(one, two)
    before = _state(one)

    [one_terms] = _step(one, global_batch)
    [two_terms] = _step(two, global_batch)

    # The global loss does not depend on the replica count.
    for name in ("loss", "cross_entropy", "weight_decay"):
        np.testing.assert_allclose(two_terms[name], one_terms[name], rtol=1e-6, err_msg=name)
    assert two_terms["valid_pixels"] == one_terms["valid_pixels"]
    after_one, after_two = _state(one), _state(two)
    assert _max_diff(before, after_one) > 1e-3  # the step moved the weights
    diff = _max_diff(after_one, after_two)
    print(f"max |w_2replicas - w_1device| after one step: {diff:.3g}")
    assert diff <= 1e-5

    # Without synchronised BN the replicas normalise 2 images each: visibly different.
    unsync = Trainer(tiny_config(shards, "training.learning_rate=0.05",
                                 "training.sync_bn=false"), _strategy(2))
    for w in unsync.model.weights:
        w.assign(before[f"model/{w.path}"])
    [unsync_terms] = _step(unsync, global_batch)
    unsync_diff = _max_diff(after_one, _state(unsync))
    print(f"without sync BN: {unsync_diff:.3g}; loss {unsync_terms['loss']:.6f} vs "
          f"{one_terms['loss']:.6f}")
    assert unsync_diff > 100 * max(diff, 1e-7)


def test_frozen_bn_keeps_statistics_and_affine_parameters(shards, global_batch):
    config = tiny_config(shards, "training.freeze_bn=true", "training.learning_rate=0.05")
    trainer = Trainer(config, _strategy(1))
    assert trainer.frozen_bn_layers > 0
    bn = {w.path: np.asarray(w) for w in trainer.model.weights if "/bn/" in w.path}
    assert not any("/bn/" in w.path for w in trainer.model.trainable_weights)
    _step(trainer, global_batch)
    for w in trainer.model.weights:
        if w.path in bn:
            np.testing.assert_array_equal(np.asarray(w), bn[w.path], err_msg=w.path)


def test_mixed_bfloat16_step(shards, global_batch):
    """bfloat16 compute, float32 weights and logits, no loss scaling (bfloat16 has float32's
    range). mixed_float16 is checked against float32 below."""
    trainer = Trainer(tiny_config(shards, "training.mixed_precision=mixed_bfloat16"),
                      _strategy(2))
    assert not trainer.loss_scaling
    outputs = trainer.model(global_batch[0][:1], training=False)
    assert outputs["logits"].dtype == "float32"
    terms = _step(trainer, global_batch, steps=2)
    assert all(np.isfinite(t["loss"]) for t in terms) and "loss_scale" not in terms[-1]
    assert all(w.dtype == "float32" for w in trainer.model.weights)
    assert int(trainer.step.numpy()) == 2


# TensorFlow's CPU kernels have no float16 gradient for dilated convs (GPUs do): the float16
# tests run an undilated net (output stride 32, 1x1-rate ASPP).
UNDILATED = ["model.backbone.output_stride=32", "model.head.aspp_rates=[1]"]
FLOAT16 = "training.mixed_precision=mixed_float16"


def _trainable(trainer):
    """Every replica's copy of every trainable weight: {path: [array per replica]}."""
    local = trainer.strategy.experimental_local_results
    return {w.path: [np.asarray(v) for v in local(w.value)]
            for w in trainer.model.trainable_weights}


def test_mixed_float16_step_matches_the_float32_step(shards, global_batch):
    """One SGD step from the same weights on the same batch: the update under mixed_float16
    (float16 compute, loss scaled by 2**15, gradients unscaled before the update) is the
    float32 update to within float16 rounding (relative L2 error, of all weights and of each).

    float16 keeps 11 significant bits (unit roundoff 2**-11 = 4.9e-4) and every layer the
    gradient flows back through adds its rounding: the error is largest in the first layers,
    whose updates are the smallest. Measured on three batches: all weights 0.006-0.013, the
    worst tensor 0.13-0.37 (the stem, res2, res3). Bounds: 0.1 and 0.7. What a wrong step
    gives is at least 1 for all weights and for each: a loss that is not scaled but unscaled
    1 - 2**-15, a skipped step 1, a gradient that is not unscaled 2**15 - 1."""
    overrides = ["training.learning_rate=0.05", *UNDILATED]
    f32 = Trainer(tiny_config(shards, *overrides), _strategy(1))
    f16 = Trainer(tiny_config(shards, *overrides, FLOAT16), _strategy(1))
    assert f16.loss_scaling and not f32.loss_scaling
    _copy_weights(f32, f16)
    before = {w.path: np.asarray(w) for w in f32.model.trainable_weights}
    [t32], [t16] = _step(f32, global_batch), _step(f16, global_batch)
    assert t16["loss_scale"] == 2.0 ** 15  # applied, not skipped (a skip halves it)
    np.testing.assert_allclose(t16["loss"], t32["loss"], rtol=1e-2)
    errors, d16_all, d32_all = {}, [], []
    for w16, w32 in zip(f16.model.trainable_weights, f32.model.trainable_weights):
        d16, d32 = np.asarray(w16) - before[w16.path], np.asarray(w32) - before[w32.path]
        assert np.linalg.norm(d32) > 0, w32.path
        errors[w32.path] = float(np.linalg.norm(d16 - d32) / np.linalg.norm(d32))
        d16_all.append(d16.ravel())
        d32_all.append(d32.ravel())
    d16_all, d32_all = np.concatenate(d16_all), np.concatenate(d32_all)
    total = float(np.linalg.norm(d16_all - d32_all) / np.linalg.norm(d32_all))
    worst = max(errors, key=errors.get)
    print(f"mixed_float16 vs float32 update, relative error: all weights {total:.3g}, "
          f"worst tensor {errors[worst]:.3g} ({worst})")
    assert total < 0.1 and errors[worst] < 0.7


def test_a_non_finite_gradient_on_one_replica_skips_the_step_on_every_replica(
    shards, global_batch, monkeypatch
):
    """mixed_float16 on 2 replicas; the second replica's gradients are made infinite (the
    forward pass is untouched). Under MirroredStrategy Keras' LossScaleOptimizer decides on
    the first replica's gradients alone: without the loop's all-replica agreement the step
    would be applied, with the second replica's inf in the summed gradients, and the loss
    scale kept. Here no replica's weights move, the loss scale halves, and the step counter
    still counts the step."""
    poison_on = tf.Variable(1.0, trainable=False)

    @tf.custom_gradient
    def poison_second_replica(x):
        def grad(dy):
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            bad = tf.logical_and(tf.equal(replica, 1), poison_on > 0)
            return dy + tf.where(bad, tf.constant(np.inf, dy.dtype), tf.zeros((), dy.dtype))
        return tf.identity(x), grad

    real = loop.replica_losses

    def losses(outputs, labels, **kwargs):
        return real({k: poison_second_replica(v) for k, v in outputs.items()}, labels, **kwargs)

    monkeypatch.setattr(loop, "replica_losses", losses)
    # Synchronised BN would carry the inf into the first replica's gradients as well.
    trainer = Trainer(tiny_config(shards, "training.learning_rate=0.05", "training.sync_bn=false",
                                  *UNDILATED, FLOAT16), _strategy(2))
    assert trainer.strategy.num_replicas_in_sync == 2
    assert trainer.model(global_batch[0][:1], training=False)["logits"].dtype == "float32"
    assert all(w.dtype == "float32" for w in trainer.model.weights)
    before = _trainable(trainer)
    scale = float(trainer.optimizer.dynamic_scale.numpy())
    assert scale == 2.0 ** 15

    [terms] = _step(trainer, global_batch)
    assert np.isfinite(terms["loss"])  # only the gradient was poisoned
    assert terms["loss_scale"] == scale / 2
    assert int(trainer.step.numpy()) == 1 and int(trainer.optimizer.iterations.numpy()) == 0
    after = _trainable(trainer)
    for path, replicas in before.items():
        for replica, (want, got) in enumerate(zip(replicas, after[path])):
            np.testing.assert_array_equal(got, want, err_msg=f"{path} on replica {replica}")

    # The same step without the poison moves the weights, identically on both replicas.
    poison_on.assign(0.0)
    [terms] = _step(trainer, global_batch)
    assert terms["loss_scale"] == scale / 2 and int(trainer.optimizer.iterations.numpy()) == 1
    moved = _trainable(trainer)
    assert max(float(np.max(np.abs(moved[p][0] - before[p][0]))) for p in before) > 1e-4
    for path, (first, second) in moved.items():
        assert np.isfinite(first).all(), path
        np.testing.assert_array_equal(second, first, err_msg=path)
