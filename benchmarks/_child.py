"""What the benchmarks that drive the command-line tools share: running one in a child."""

import subprocess
import sys
import time


def run(args, env):
    """Runs `args`; returns (its output, seconds). On failure prints the output's tail and
    exits, naming the command."""
    start = time.monotonic()
    proc = subprocess.run(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)
    if proc.returncode:
        sys.stdout.write(proc.stdout[-4000:])
        raise SystemExit(f"failed (exit {proc.returncode}): {' '.join(args)}")
    return proc.stdout, time.monotonic() - start
