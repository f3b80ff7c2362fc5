"""The test helpers that other tests rely on to fail only for real reasons."""

import sys

from tests.training.helpers import BIND_FAILURE, Child, start_cluster


def test_start_cluster_restarts_every_worker_on_new_ports_when_a_port_is_taken(tmp_path):
    """A worker that cannot bind exits with TensorFlow's message; the others would wait for it
    forever. All are killed and the cluster starts again on other ports."""
    started = []

    def make_child(cluster, index):
        attempt = len(started) // 2
        if attempt == 0 and index == 0:
            code = f"print({BIND_FAILURE!r}); raise SystemExit(1)"
        elif attempt == 0:
            code = "import time; time.sleep(60)"  # waits for the cluster
        else:
            code = "print('trained')"
        child = Child([sys.executable, "-c", code], None, str(tmp_path))
        started.append((cluster, child))
        return child

    children = start_cluster(make_child, 2, timeout=30)
    assert len(started) == 4 and children == [c for _, c in started[2:]]
    assert all(c.proc.returncode == 0 and c.output() == "trained" for c in children)
    assert started[1][1].proc.returncode < 0  # the waiting worker of the first try was killed
    first, second = started[0][0]["worker"], started[2][0]["worker"]
    assert len(set(first)) == len(set(second)) == 2 and first != second
