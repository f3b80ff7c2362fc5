"""Test session setup: two logical CPUs (so MirroredStrategy runs two real replicas) and seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
except RuntimeError:  # already initialised by an earlier import in this process
    # Usable only if that split was into two as well: the tests that check two replicas
    # against one device would otherwise run on one replica and prove nothing.
    _started = len(tf.config.list_logical_devices("CPU"))
    if _started < 2:
        raise RuntimeError(
            f"the tests need 2 logical CPUs, but TensorFlow started with {_started} before "
            "tests/conftest.py could split the CPU (a plugin or an import ran it first)"
        ) from None


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(0)
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)
