"""Helpers shared by the training, CLI and evaluation tests."""

import os
import queue
import signal
import socket
import subprocess
import threading
import time

from tfrecords_tools import synthetic, voc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(REPO, "train_configs", "tiny_deeplabv3_os16_synthetic.yaml")

# Smaller than the demo's tiny model, for steps that take a fraction of a second.
TEST_OVERRIDES = [
    "model.backbone.stage_widths=[8, 8, 16, 16]",
    "model.backbone.stage_channels=[16, 16, 32, 32]",
    "model.backbone.stem_width=8",
    "model.head.aspp_filters=8",
    "train_data.crop_size=49",
    "train_data.batch_size=4",
    "train_data.shuffle_buffer=16",
    "training.log_every=1",
    "training.image_summary_every=0",
]


def build_synthetic_shards(folder, num_train=16, num_val=6, image_size=(72, 96), seed=0):
    """Synthetic VOC+SBD layout -> train_aug and val shards with the real VOC builder."""
    out = synthetic.generate(folder, num_train=num_train, num_val=num_val, seed=seed,
                             image_size=image_size)
    shard_dir = os.path.join(folder, "tfrecords")
    voc.build(out["voc_root"], ["train_aug", "val"], shard_dir, sbd_root=out["sbd_root"],
              num_workers=1, progress=False)
    return {
        "train": os.path.join(shard_dir, "train_aug-*.tfrecord"),
        "val": os.path.join(shard_dir, "val-*.tfrecord"),
    }


def data_overrides(shards):
    return [f"train_data.file_pattern={shards['train']}", f"eval_data.file_pattern={shards['val']}"]


def tiny_config(shards, *overrides, small=True):
    """The tiny YAML with the test shards (and the test model size unless `small=False`)."""
    from deeplab_family.config import load_config

    base = TEST_OVERRIDES if small else []
    return load_config(TINY_CONFIG, [*base, *data_overrides(shards), *overrides])


def free_port():
    """A TCP port that was free a moment ago (the kernel's pick; released on return).

    Another process can take it before the caller binds it (pytest-xdist runs several test
    files at once): callers that start servers on it must retry on a bind failure, as
    `start_cluster` does. Bound on every interface, as TensorFlow's gRPC server binds.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class Child:
    """A child process whose output lines are read in the background."""

    def __init__(self, args, env, cwd):
        self.proc = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        self.lines = []
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, predicate, timeout):
        """Waits for an output line satisfying `predicate`; returns it (None at exit)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                return None
            if predicate(line):
                return line
        raise TimeoutError(f"no matching line within {timeout}s; output:\n" + self.output())

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"the child ran over {timeout}s; output:\n" + self.output())

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._thread.join(timeout=10)

    def output(self):
        return "\n".join(self.lines)


# What a TensorFlow worker prints when its gRPC server cannot bind its port.
BIND_FAILURE = "Could not start gRPC server"


def start_cluster(make_child, num_workers, timeout, attempts=3):
    """Starts `num_workers` processes of one TF_CONFIG cluster on fresh local ports and waits
    for them all to exit; returns the children (their exit codes are the caller's to check).

    `make_child(cluster, index)` starts worker `index` (a `Child`) given the cluster dict. The
    ports come from `free_port`, so another process may bind one first: a worker whose server
    fails to bind exits at once with `BIND_FAILURE`, and then every worker is killed and the
    cluster starts again on new ports (up to `attempts` times). No delay when nothing collides.
    """
    for attempt in range(attempts):
        cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(num_workers)]}
        children = [make_child(cluster, index) for index in range(num_workers)]
        deadline = time.monotonic() + timeout
        collided = False
        try:
            while any(c.proc.poll() is None for c in children):
                if any(c.proc.poll() not in (None, 0) and BIND_FAILURE in c.output()
                       for c in children):
                    collided = True
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the cluster ran over {timeout}s; outputs:\n"
                                       + "\n---\n".join(c.output() for c in children))
                time.sleep(0.2)
            if not collided:
                for child in children:
                    child._thread.join(timeout=10)  # all output read
                collided = any(c.proc.returncode != 0 and BIND_FAILURE in c.output()
                               for c in children)
        finally:
            if collided or any(c.proc.poll() is None for c in children):
                for child in children:
                    child.kill()
        if not collided:
            return children
    raise RuntimeError(f"a worker's port was taken {attempts} times in a row ({BIND_FAILURE})")


def subprocess_env(**extra):
    """Environment for child Python processes: quiet TF, no GPU probing, the repo importable."""
    env = dict(os.environ)
    env.update(
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env
