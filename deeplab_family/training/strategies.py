"""The `tf.distribute` strategy a run trains under, built from `config.RuntimeConfig`.

- "mirrored": every local GPU; on a machine without GPUs, `runtime.cpu_replicas` logical CPUs
  (`split_cpu`), so that the multi-replica code paths (sync BN, the global-batch loss) run on
  a laptop too.
- "multi_worker": MultiWorkerMirroredStrategy, the cluster from `TF_CONFIG` (`worker_role`
  tells the chief, which writes, from the other workers).
- "tpu": TPUStrategy.
- "one_device": the first GPU, else the CPU.

Order matters: splitting the CPU and configuring MultiWorkerMirroredStrategy's collectives are
only possible before TensorFlow's runtime starts, so `make_strategy` comes first in `train`.

Every MirroredStrategy comes from `mirrored_strategy`, which isolates the one workaround in
this module (see there).
"""

import os

import tensorflow as tf

from deeplab_family._validation import one_of
from deeplab_family.config import STRATEGIES

# How far `mirrored_strategy` moves the collective key base, on each side of a new strategy.
# TensorFlow's own tests use the same step (`strategy_combinations.py`); a strategy uses a few
# keys per collective op, far fewer than this.
COLLECTIVE_KEY_STEP = 100_000


def split_cpu(num_replicas):
    """Splits the first CPU into `num_replicas` logical devices (before TensorFlow starts).

    Returns the logical CPU names. If TensorFlow has already started with a split (the tests
    split into two), that split is used when it has enough devices; otherwise a RuntimeError
    says to set the split before anything else runs.
    """
    cpus = tf.config.list_physical_devices("CPU")
    if num_replicas > 1:
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_replicas
            )
        except RuntimeError:
            pass  # already initialised: check what we have below
    names = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(names) < num_replicas:
        raise RuntimeError(
            f"runtime.cpu_replicas={num_replicas} but TensorFlow already started with "
            f"{len(names)} logical CPU(s). Split the CPU before TensorFlow runs anything "
            "(python -m deeplab_family.train --cpu-replicas N does)."
        )
    return names[:max(1, num_replicas)]


def mirrored_strategy(devices=None):
    """A MirroredStrategy whose collective keys no other strategy in this process uses.

    The workaround: every MirroredStrategy numbers its collective groups and instances from the
    class attribute `_collective_key_base` (0 unless someone moves it), and the collective
    runtime remembers, for the life of the process, the shape it first saw under each key. A
    second strategy in the same process (the tests, a notebook, training twice in one script)
    whose graphs differ then fails with "Shape mismatch in the collective instance 100 ...
    Restart your program to reset" (and knock-on kernel errors), as in
    tensorflow/tensorflow#62790 (closed as stale, no fix; still so in TF 2.20, which
    `tests/training/test_strategies.py` checks). TensorFlow's own tests move the base
    by `COLLECTIVE_KEY_STEP` before each strategy (`tensorflow/python/distribute/
    strategy_combinations.py`, "to avoid key collision across subtests"); so do we, before the
    new strategy (away from any made earlier) and after it (so that a plain MirroredStrategy
    made later does not reuse its keys). One strategy per process is unaffected.

    This is the one piece of TensorFlow global state the training code touches besides the
    seeds, and the only use of the private attribute: keep it here.
    """
    tf.distribute.MirroredStrategy._collective_key_base += COLLECTIVE_KEY_STEP
    strategy = tf.distribute.MirroredStrategy(devices)
    tf.distribute.MirroredStrategy._collective_key_base += COLLECTIVE_KEY_STEP
    return strategy


def make_strategy(runtime):
    """The `tf.distribute` strategy of a `config.RuntimeConfig` (see the module docstring).

    Call it before TensorFlow runs anything else: with "mirrored" on a CPU, splitting the CPU
    must come first.
    """
    name = one_of("runtime.strategy", runtime.strategy, STRATEGIES)
    # Physical, not logical: listing logical devices starts the runtime, after which neither
    # the CPU split nor MultiWorkerMirroredStrategy's collectives can be configured.
    gpus = tf.config.list_physical_devices("GPU")
    if name == "mirrored":
        if gpus:
            return mirrored_strategy()
        return mirrored_strategy(split_cpu(runtime.cpu_replicas))
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise RuntimeError(
                "runtime.strategy=multi_worker needs TF_CONFIG, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}} on the first machine'
            )
        # One replica per worker on CPUs (MultiWorkerMirroredStrategy uses one local CPU
        # device): runtime.cpu_replicas applies to "mirrored" only.
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=runtime.tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")  # "one_device"


def is_multi_worker(strategy):
    """Whether `strategy` spans several processes (MultiWorkerMirroredStrategy)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def worker_role(strategy):
    """(is_chief, "worker-1"-style name) of this process in a multi-worker cluster.

    The chief is the "chief" task, or worker 0 of a cluster without one; outside a cluster
    this process is the chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if not is_multi_worker(strategy) or resolver is None:
        return True, "chief"
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:
        return True, "chief"
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return is_chief, f"{task_type}-{task_id}"


def describe(strategy):
    """One line for the log: "MirroredStrategy with 2 replica(s) (device:CPU:0, ... on this
    worker)"."""
    devices = list(strategy.extended.worker_devices)
    name = "MultiWorkerMirroredStrategy" if is_multi_worker(strategy) else type(strategy).__name__
    return (
        f"{name} with {strategy.num_replicas_in_sync} replica(s) "
        f"({', '.join(d.split('/')[-1] if '/' in d else d for d in devices)} on this worker)"
    )
