"""What the benchmarks that drive the command-line tools share: running one in a child, and
reading the process's memory."""

import os
import resource
import subprocess
import sys
import time


def rss_mib():
    """This process's resident memory now, MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib():
    """This process's peak resident memory, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


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
