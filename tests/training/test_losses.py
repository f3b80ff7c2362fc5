"""The loss: NumPy reference, 255 ignored, global-batch normalisation, aux weights, decay."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_family.layers import ConvNormAct
from deeplab_family.training.losses import (
    check_aux_weights,
    conv_kernels,
    cross_entropy_sum,
    replica_losses,
    weight_decay_loss,
)
from deeplab_family.training.schedules import PolyWithWarmup
from deeplab_family.training.strategies import mirrored_strategy


def _np_cross_entropy(logits, labels, ignore=255):
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    valid = labels != ignore
    picked = np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    return -(picked * valid).sum(), valid.sum()


def _batch(seed=0, batch=4, size=(9, 11), classes=5, ignore_fraction=0.3):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((batch, *size, classes)).astype("float32") * 3
    labels = rng.integers(0, classes, (batch, *size)).astype("int32")
    labels[rng.random(labels.shape) < ignore_fraction] = 255
    return logits, labels


def test_cross_entropy_matches_numpy_and_ignores_255():
    logits, labels = _batch()
    total, count = cross_entropy_sum(logits, labels)
    want_total, want_count = _np_cross_entropy(logits, labels)
    np.testing.assert_allclose(float(total), want_total, rtol=1e-5)
    assert float(count) == want_count
    # Whatever the logits at 255 pixels, nothing changes.
    noisy = logits.copy()
    noisy[labels == 255] = 1e4
    np.testing.assert_allclose(float(cross_entropy_sum(noisy, labels)[0]), want_total, rtol=1e-5)


def test_an_all_ignored_batch_gives_zero_not_nan():
    logits, labels = _batch()
    labels[:] = 255
    terms = replica_losses({"logits": logits}, labels, aux_loss_weights={})
    assert float(terms["loss"]) == 0.0


def test_logits_must_be_at_label_resolution():
    logits, labels = _batch()
    with pytest.raises(tf.errors.InvalidArgumentError, match="upsample its logits"):
        cross_entropy_sum(logits[:, ::2, ::2], labels)


def test_loss_is_normalised_by_the_global_batch_at_any_replica_count():
    """Replicas with different numbers of valid pixels: the summed replica losses equal the
    one-device loss of the whole batch (a mean of per-replica means would not)."""
    logits, labels = _batch(batch=4)
    labels[:2][np.random.default_rng(1).random(labels[:2].shape) < 0.8] = 255  # replica 0: few
    one = replica_losses({"logits": logits}, labels, aux_loss_weights={})
    want_total, want_count = _np_cross_entropy(logits, labels)
    np.testing.assert_allclose(float(one["loss"]), want_total / want_count, rtol=1e-5)

    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    strategy = mirrored_strategy(devices)
    assert strategy.num_replicas_in_sync == 2  # two replicas really split the batch
    dataset = tf.data.Dataset.from_tensors((logits, labels))
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def step(x, y):
        terms = strategy.run(
            lambda a, b: replica_losses({"logits": a}, b, aux_loss_weights={}), args=(x, y)
        )
        return strategy.reduce("SUM", terms["loss"], axis=None)

    np.testing.assert_allclose(float(step(*batch)), float(one["loss"]), rtol=1e-6)
    per_replica_means = [
        _np_cross_entropy(logits[i:i + 2], labels[i:i + 2]) for i in (0, 2)
    ]
    naive = np.mean([t / c for t, c in per_replica_means])
    assert abs(naive - float(one["loss"])) > 1e-3  # the test would see the classic mistake


def test_aux_losses_are_weighted():
    logits, labels = _batch()
    aux, _ = _batch(seed=3)
    outputs = {"logits": logits, "aux_ecre": aux}
    terms = replica_losses(outputs, labels, aux_loss_weights={"aux_ecre": 0.5})
    main_total, count = _np_cross_entropy(logits, labels)
    aux_total, _ = _np_cross_entropy(aux, labels)
    np.testing.assert_allclose(float(terms["aux_ecre"]), aux_total / count, rtol=1e-5)
    np.testing.assert_allclose(float(terms["loss"]), (main_total + 0.5 * aux_total) / count,
                               rtol=1e-5)


def test_aux_outputs_and_weights_must_match():
    with pytest.raises(ValueError, match=r"aux_ecre.*without a loss weight.*aux_loss_weights"):
        check_aux_weights(["logits", "aux_ecre"], {})
    with pytest.raises(ValueError, match=r"names \['aux_typo'\], which the model does not output"):
        check_aux_weights(["logits", "aux_ecre"], {"aux_ecre": 1.0, "aux_typo": 1.0})
    with pytest.raises(ValueError, match="numbers >= 0"):
        check_aux_weights(["logits", "aux_ecre"], {"aux_ecre": -1})
    assert check_aux_weights(["logits", "aux_ecre"], {"aux_ecre": 1}) == {"aux_ecre": 1.0}
    assert check_aux_weights(["logits"], None) == {}


def test_weight_decay_is_half_l2_on_conv_kernels_only():
    inputs = keras.Input((8, 8, 3))
    x = ConvNormAct(4, 3, name="with_bn")(inputs)  # kernel + BN gamma/beta
    x = ConvNormAct(4, 1, use_norm=False, name="with_bias")(x)  # kernel + bias
    x = keras.layers.Conv2DTranspose(2, 2, strides=2, name="deconv")(x)  # kernel + bias
    model = keras.Model(inputs, x)
    kernels = conv_kernels(model)
    assert sorted(k.path for k in kernels) == sorted(
        ["with_bn/conv/kernel", "with_bias/conv/kernel", "deconv/kernel"]
    )
    want = 1e-4 * 0.5 * sum(float(np.sum(np.square(k.numpy()))) for k in kernels)
    np.testing.assert_allclose(float(weight_decay_loss(kernels, 1e-4)), want, rtol=1e-6)
    # Split across replicas so that it is added once per global batch.
    logits, labels = _batch()
    terms = replica_losses({"logits": logits}, labels, aux_loss_weights={}, weight_decay=1e-4,
                           kernels=kernels, num_replicas=4)
    np.testing.assert_allclose(float(terms["weight_decay"]), want / 4, rtol=1e-6)


def test_poly_schedule_and_warmup():
    poly = PolyWithWarmup(0.007, 30000)
    np.testing.assert_allclose(float(poly(0)), 0.007)
    np.testing.assert_allclose(float(poly(15000)), 0.007 * 0.5 ** 0.9, rtol=1e-6)
    assert float(poly(30000)) == 0.0 and float(poly(40000)) == 0.0
    warm = PolyWithWarmup(0.01, 100, end_learning_rate=0.001, warmup_steps=10)
    at_10 = (0.01 - 0.001) * (1 - 0.1) ** 0.9 + 0.001
    np.testing.assert_allclose(float(warm(0)), 0.0)
    np.testing.assert_allclose(float(warm(5)), at_10 / 2, rtol=1e-6)
    np.testing.assert_allclose(float(warm(10)), at_10, rtol=1e-6)
    np.testing.assert_allclose(float(warm(100)), 0.001, rtol=1e-6)
    assert PolyWithWarmup.from_config(warm.get_config()).get_config() == warm.get_config()
    with pytest.raises(ValueError, match="warmup_steps must be in"):
        PolyWithWarmup(0.01, 10, warmup_steps=10)


# -- training.label_downsampling (DeepLabv3 Table 8 without "UL")


@pytest.mark.parametrize("size", [(17, 17), (20, 14)])  # s * (h - 1) + 1, and even sizes
def test_label_downsampling_loss_and_gradient_are_those_of_the_low_resolution_logits(size):
    """The upsampled logits scored at image pixels (s*i, s*j) = the raw logits, not upsampled."""
    from deeplab_family.layers import ResizeLike

    stride = 4
    low_hw = (-(-size[0] // stride), -(-size[1] // stride))  # the backbone's ceil(H / s)
    low_np, _ = _batch(seed=3, batch=2, size=low_hw, classes=5)
    _, labels = _batch(seed=4, batch=2, size=size, classes=5)
    low = tf.Variable(low_np)
    with tf.GradientTape() as tape:
        full = ResizeLike(align_corners=True, stride=stride)([low, tf.zeros((2, *size, 1))])
        terms = replica_losses({"logits": full}, labels, aux_loss_weights={},
                               label_strides={"logits": stride})
    grad = tape.gradient(terms["cross_entropy"], low).numpy()

    sub = labels[:, ::stride, ::stride]  # the label under each low-resolution logit
    assert sub.shape == low_np.shape[:3]
    ce, count = _np_cross_entropy(low_np, sub)
    np.testing.assert_allclose(float(terms["cross_entropy"]), ce / count, rtol=1e-6)
    assert float(terms["valid_pixels"]) == count
    # d CE / d logits = (softmax - one-hot) / valid pixels, on the low-resolution grid only.
    probs = np.exp(low_np - low_np.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    valid = sub != 255
    want = (probs - np.eye(5)[np.where(valid, sub, 0)]) * valid[..., None] / count
    np.testing.assert_allclose(grad, want, atol=1e-7)
    # Without it, every pixel of the full-resolution labels counts.
    full_terms = replica_losses({"logits": full}, labels, aux_loss_weights={})
    assert float(full_terms["valid_pixels"]) == (labels != 255).sum()


def test_label_downsampling_in_the_training_step_of_a_deeplabv3():
    """`Trainer` with the option scores the model's stride-16 `logits_conv` against labels[::16]."""
    from deeplab_family.config import load_config
    from deeplab_family.training.loop import Trainer
    from tests.training.helpers import TEST_OVERRIDES, TINY_CONFIG

    config = load_config(TINY_CONFIG, [*TEST_OVERRIDES, "training.label_downsampling=true",
                                       "training.weight_decay=0"])
    trainer = Trainer(config, tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert trainer.label_strides == {"logits": 16}
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 49, 49, 3)).astype("float32")
    labels = rng.integers(0, 21, (2, 49, 49)).astype("int32")
    labels[rng.random(labels.shape) < 0.2] = 255
    raw = keras.Model(trainer.model.input, trainer.model.get_layer("logits_conv").output)
    low = raw(images, training=True).numpy()  # BN in training mode, as in the step
    assert low.shape == (2, 4, 4, 21)
    ce, count = _np_cross_entropy(low, labels[:, ::16, ::16])

    dataset = tf.data.Dataset.from_tensors((images, labels))
    terms = trainer.train_step(*next(iter(trainer.strategy.experimental_distribute_dataset(
        dataset))))
    np.testing.assert_allclose(terms["cross_entropy"], ce / count, rtol=1e-5)
    assert terms["valid_pixels"] == count


def test_output_strides_and_the_table8_config():
    import dataclasses
    import os

    from deeplab_family.config import TrainingConfig, load_config
    from deeplab_family.models import ModelConfig, build_model
    from deeplab_family.training.losses import output_strides
    from tests.tiny import FLAT_BACKBONE as TINY_BACKBONE
    from tests.tiny import FLAT_HEADS as TINY_HEADS
    from tests.training.helpers import REPO

    pan = build_model(ModelConfig("pan", 3, backbone=dict(TINY_BACKBONE), head=TINY_HEADS["pan"]))
    assert output_strides(pan) == {"logits": 4}  # PAN's last GAU is at res2's stride
    inputs = keras.Input((8, 8, 3))
    no_resize = keras.Model(inputs, {"logits": keras.layers.Conv2D(3, 1, name="logits")(inputs)})
    with pytest.raises(ValueError, match="has none"):
        output_strides(no_resize)
    with pytest.raises(ValueError, match="label_downsampling must be true or false"):
        TrainingConfig(label_downsampling="yes")

    configs = os.path.join(REPO, "train_configs")
    base = load_config(os.path.join(configs, "deeplabv3_r101_os16_voc_trainaug.yaml"))
    row = load_config(os.path.join(configs, "deeplabv3_r101_os16_voc_trainaug_no_upsampling.yaml"))
    assert row.training == dataclasses.replace(base.training, label_downsampling=True)
    assert (row.model, row.train_data, row.eval_data) == (
        base.model, base.train_data, base.eval_data)
    assert (row.evaluation.output_stride, row.evaluation.scales, row.evaluation.flip) == (
        16, (1.0,), False)
