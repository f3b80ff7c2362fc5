"""Strategies: the CPU split, the config's strategy names, and the collective-key workaround."""

import subprocess
import sys
import types

import pytest

from deeplab_family.config import RuntimeConfig
from deeplab_family.training import strategies
from tests.training.helpers import REPO, subprocess_env


def test_split_cpu_refuses_a_count_the_running_runtime_cannot_give():
    """TensorFlow already runs (with the test session's two logical CPUs): asking for more
    logical CPUs is an error, never a silent run on fewer replicas."""
    assert len(strategies.split_cpu(2)) == 2
    with pytest.raises(RuntimeError, match="cpu_replicas=3 but TensorFlow already started with "
                                           "2 logical CPU"):
        strategies.split_cpu(3)


def test_make_strategy_names_the_allowed_strategies_and_what_multi_worker_needs(monkeypatch):
    # RuntimeConfig refuses the name itself; a bare object reaches make_strategy's own check.
    bogus = types.SimpleNamespace(strategy="mirored", cpu_replicas=0, tpu="")
    with pytest.raises(ValueError, match=r"runtime.strategy must be one of \['mirrored', "
                                         r"'multi_worker', 'tpu', 'one_device'\]. Received: "
                                         r"runtime.strategy='mirored'"):
        strategies.make_strategy(bogus)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(RuntimeError, match="multi_worker needs TF_CONFIG"):
        strategies.make_strategy(RuntimeConfig(strategy="multi_worker"))
    one = strategies.make_strategy(RuntimeConfig(strategy="one_device"))
    assert strategies.worker_role(one) == (True, "chief")
    assert strategies.describe(one) == (
        "OneDeviceStrategy with 1 replica(s) (device:CPU:0 on this worker)"
    )


# Each strategy all-reduces a shape of its own: the collective runtime would take a reused key
# for the same collective and refuse the new shape. The last two lines show that plain
# MirroredStrategies still collide (the reason for the workaround).
COLLECTIVES = """
import tensorflow as tf
from deeplab_family.training.strategies import mirrored_strategy, split_cpu

devices = split_cpu(2)


def all_reduce(strategy, size):
    def replica():
        return tf.distribute.get_replica_context().all_reduce("sum", tf.ones([size]))

    results = strategy.experimental_local_results(tf.function(lambda: strategy.run(replica))())
    return [float(r.numpy().sum()) for r in results]


plain = tf.distribute.MirroredStrategy
print("plain before", all_reduce(plain(devices), 3), flush=True)
print("ours", all_reduce(mirrored_strategy(devices), 5), flush=True)
print("plain after", all_reduce(plain(devices), 7), flush=True)
try:
    all_reduce(plain(devices), 9)
    print("two plain: no collision", flush=True)
except tf.errors.OpError as e:
    print("two plain:", "Shape mismatch in the collective" in e.message, flush=True)
"""


def test_mirrored_strategy_keys_collide_with_no_other_strategy_in_the_process():
    """`mirrored_strategy` moves the collective key base before and after its strategy, so a
    plain MirroredStrategy made before it or after it in the same process (here each with a
    different shape) still all-reduces. A fresh process: a collision poisons the one it is in."""
    proc = subprocess.run([sys.executable, "-c", COLLECTIVES], env=subprocess_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "plain before [6.0, 6.0]" in out, out
    assert "ours [10.0, 10.0]" in out, out
    assert "plain after [14.0, 14.0]" in out, out
    # If this fails, TensorFlow no longer reuses keys across strategies: the workaround in
    # `strategies.mirrored_strategy` can go.
    assert "two plain: True" in out, out
