"""Real processes: SIGKILL mid-run then resume, and a 2-worker MultiWorkerMirroredStrategy run.

Every child process is bounded by a timeout and killed at the end, whatever happens.
"""

import json
import signal
import sys

import numpy as np
import pytest
import tensorflow as tf

from deeplab_family.training import checkpoints
from tests.training.helpers import (
    TEST_OVERRIDES,
    TINY_CONFIG,
    Child,
    data_overrides,
    start_cluster,
    subprocess_env,
)

pytestmark = pytest.mark.slow
TIMEOUT = 240  # seconds, per child process


@pytest.fixture
def children():
    started = []
    yield started
    for child in started:
        child.kill()


def _train_args(shards, model_dir, *overrides):
    sets = [*TEST_OVERRIDES, *data_overrides(shards), *overrides]
    return [sys.executable, "-m", "deeplab_family.train", "--config", TINY_CONFIG,
            "--model-dir", model_dir, *[a for s in sets for a in ("--set", s)]]


def _ckpt_step(prefix):
    return int(tf.train.load_variable(prefix, "step/.ATTRIBUTES/VARIABLE_VALUE"))


def test_sigkill_mid_run_then_restart_resumes_and_stops_at_max_steps(shards, tmp_path, children):
    model_dir = str(tmp_path / "model")
    args = _train_args(shards, model_dir, "runtime.strategy=one_device", "training.steps=30",
                       "training.checkpoint_every=5", "training.keep_checkpoints=3")
    env = subprocess_env()
    first = Child(args, env, str(tmp_path))
    children.append(first)
    # Kill it a few steps after its second checkpoint, in the middle of training.
    first.wait_for(lambda line: "checkpoints/ckpt-10" in line, TIMEOUT)
    first.wait_for(lambda line: line.startswith("step 12/"), TIMEOUT)
    first.kill()
    assert first.proc.returncode == -signal.SIGKILL
    killed_at = _ckpt_step(checkpoints.latest_checkpoint(model_dir))
    assert 10 <= killed_at < 30

    second = Child(args, env, str(tmp_path))
    children.append(second)
    assert second.wait(TIMEOUT) == 0, second.output()
    out = second.output()
    assert f"at step {killed_at}" in out and "resumed from" in out
    assert f"done: step 30 ({30 - killed_at} run" in out
    latest = checkpoints.latest_checkpoint(model_dir)
    assert latest.endswith("ckpt-30") and _ckpt_step(latest) == 30
    # The optimizer state came back too: SGD counted every step exactly once.
    assert int(tf.train.load_variable(
        latest, "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")) == 30
    assert "step 31" not in out


WORKER = """
import json, sys
import numpy as np
from deeplab_family.config import load_config
from deeplab_family.training import loop

config = load_config(sys.argv[1], json.loads(sys.argv[2]))
result = loop.train(config, sys.argv[3])
np.savez(sys.argv[4], *[np.asarray(w) for w in result["trainer"].model.weights])
print("WORKER DONE", result["step"], flush=True)
"""


def test_two_worker_multi_worker_mirrored_run(shards, tmp_path, children):
    steps = 3
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    model_dir = str(tmp_path / "model")
    overrides = [*TEST_OVERRIDES, *data_overrides(shards), "runtime.strategy=multi_worker",
                 f"training.steps={steps}", "training.checkpoint_every=2"]

    def worker(cluster, index):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        child = Child(
            [sys.executable, str(script), TINY_CONFIG, json.dumps(overrides), model_dir,
             str(tmp_path / f"weights_{index}.npz")],
            subprocess_env(TF_CONFIG=tf_config), str(tmp_path),
        )
        children.append(child)
        return child

    # The ports are picked free but released before the workers bind them: start_cluster
    # starts the cluster again on new ports if another process took one meanwhile.
    workers = start_cluster(worker, 2, TIMEOUT)
    for child in workers:
        assert child.proc.returncode == 0, child.output()
        assert f"WORKER DONE {steps}" in child.output()
    assert "2 replica(s)" in workers[0].output()
    a, b = (np.load(tmp_path / f"weights_{i}.npz") for i in range(2))
    assert len(a.files) == len(b.files) > 0
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    latest = checkpoints.latest_checkpoint(model_dir)
    assert latest.endswith(f"ckpt-{steps}") and _ckpt_step(latest) == steps
    assert int(tf.train.load_variable(
        latest, "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")) == steps
