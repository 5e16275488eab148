"""The "loaded" row of `ste-ablate bench`: our loop while a second training process shares the
cores, as the share of the quiet throughput it keeps.

The competitor is this module run as a script (`python -m runners.bench.loaded THREADS`): our
training loop on mnist-mini with THREADS torch threads, until it is stopped. It inherits this
process's environment, so it runs under the same OpenMP wait policy (`runners.openmp`): under
OpenMP's default active wait, two processes spinning on the same cores take them from each other.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

from runners.bench.ours import OursLoop
from runners.config import RunConfig
from runners.training.data import prepare_data

READY = "competitor training"


def measure_loaded(
    loop: Any, steps: int, rounds: int, threads: int, *, start_timeout_s: float = 300.0
) -> dict[str, Any]:
    """images/s of `loop` quiet, then beside a competitor with `threads` threads.

    Args:
        loop: an object with `steps(n) -> seconds` and an `images` counter (`OursLoop`).
        steps, rounds: steps per timed round, rounds per condition (the median is reported).
        threads: the competitor's torch threads.
        start_timeout_s: how long the competitor may take to start training.

    Returns:
        {"quiet_images_per_s", "images_per_s", "kept" (loaded / quiet), "competitor_threads",
        "wait_policy", "rounds" (loaded images/s per round)}.
    """
    quiet = _rates(loop, steps, rounds)
    command = [sys.executable, "-m", "runners.bench.loaded", str(threads)]
    competitor = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        _wait_ready(competitor, start_timeout_s)
        loaded = _rates(loop, steps, rounds)
    finally:
        competitor.terminate()
        competitor.wait(timeout=30)
    quiet_ips, loaded_ips = statistics.median(quiet), statistics.median(loaded)
    return {
        "quiet_images_per_s": quiet_ips,
        "images_per_s": loaded_ips,
        "kept": loaded_ips / quiet_ips,
        "competitor_threads": threads,
        "wait_policy": os.environ.get("OMP_WAIT_POLICY", "OpenMP default (active)"),
        "rounds": loaded,
    }


def _rates(loop: Any, steps: int, rounds: int) -> list[float]:
    rates = []
    for _ in range(rounds):
        before = loop.images
        seconds = loop.steps(steps)
        rates.append((loop.images - before) / seconds)
    return rates


def _wait_ready(process: subprocess.Popen, timeout_s: float) -> None:
    """Block until the competitor prints READY (it has trained its first steps)."""
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the competing training process exited ({process.wait()})")
        if line.startswith(READY):
            return
    raise RuntimeError(f"the competing training process did not start in {timeout_s:.0f} s")


def compete(threads: int) -> None:
    """Train our loop on mnist-mini with `threads` threads until terminated."""
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    config = RunConfig(dataset="mnist-mini", device="cpu")
    loop = OursLoop(config, prepare_data("mnist-mini", None, None, device, None), device)
    loop.steps(2)
    print(f"{READY} with {threads} threads", flush=True)
    while True:
        loop.steps(10)


if __name__ == "__main__":  # pragma: no cover - the competitor process
    compete(int(sys.argv[1]))
