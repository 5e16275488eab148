"""Shared by the SLURM tests (test_slurm.py, test_slurm_cluster.py): is the cluster usable, and
waiting for a condition with a deadline."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A command's completed process (output captured as text; never raises on failure)."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def cluster_problem() -> str | None:
    """Why the cluster cannot be used, or None when it answers and has a usable node."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "the SLURM client tools are not installed (run scripts/slurm-local.sh start as root)"
    ping = run("scontrol", "ping", timeout=20)
    if ping.returncode != 0:
        return "slurmctld does not answer (run scripts/slurm-local.sh start as root)"
    states = run("sinfo", "-h", "-N", "-o", "%T", timeout=20).stdout.split()
    if not any(s.rstrip("*~#") in {"idle", "mixed", "allocated"} for s in states):
        return f"no usable node (sinfo states: {states}); see scripts/slurm-local.sh logs"
    return None


def wait_until(
    predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.2
) -> Any:
    """The first truthy value of `predicate()`, polled every `poll` s; AssertionError after
    `timeout` s naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
