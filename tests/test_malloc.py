"""`deeplab_family.malloc.limit_arenas`: applied on glibc, the user's MALLOC_ARENA_MAX wins."""

import os
import subprocess
import sys

import pytest

from deeplab_family import malloc

CHILD = "from deeplab_family.malloc import limit_arenas; print(limit_arenas(2))"


def _child(env):
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                         text=True, check=True, timeout=60)
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_applied_on_glibc_and_the_environment_wins():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _child(env) == "True"
    assert _child({**env, "MALLOC_ARENA_MAX": "4"}) == "False"


def test_without_a_c_library_it_is_a_no_op(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setattr(malloc.ctypes.util, "find_library", lambda name: None)
    assert malloc.limit_arenas(2) is False
