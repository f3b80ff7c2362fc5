"""Distributed correctness: 2 replicas + sync BN == one device with the same global batch."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_family.data.pipeline import make_dataset
from deeplab_family.training.loop import Trainer, mirrored_strategy
from tests.training.helpers import tiny_config


@pytest.fixture(scope="module")
def global_batch(shards):
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


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_step(shards, global_batch, policy):
    overrides = [f"training.mixed_precision={policy}"]
    if policy == "mixed_float16":
        # TensorFlow's CPU kernels have no float16 gradient for dilated convs (GPUs do): test
        # the loss scaling on an undilated net (output stride 32, 1x1-rate ASPP).
        overrides += ["model.backbone.output_stride=32", "model.head.aspp_rates=[1]"]
    config = tiny_config(shards, *overrides)
    trainer = Trainer(config, _strategy(2))
    assert trainer.loss_scaling == (policy == "mixed_float16")
    outputs = trainer.model(global_batch[0][:1], training=False)
    assert outputs["logits"].dtype == "float32"
    terms = _step(trainer, global_batch, steps=2)
    assert all(np.isfinite(t["loss"]) for t in terms)
    assert all(w.dtype == "float32" for w in trainer.model.weights)
    if policy == "mixed_float16":
        assert terms[-1]["loss_scale"] > 1
    assert int(trainer.step.numpy()) == 2
