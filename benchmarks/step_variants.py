"""Images/s of our training step under each speed option, interleaved.

    python benchmarks/step_variants.py [THREADS] [ROUNDS] [STEPS]

Each variant is one run trained through the engine's batch loop (`runners.bench.ours.OursLoop`:
the run's seeded batch order over device-resident mnist-mini, the step and its per-step
bookkeeping, as `train_run` trains), its model or optimiser changed before the step is built:
plain (nn layers, torch's default Adam), channels_last, fused Adam, the point-layer matmuls of
runners.training.kernels, both (the fast path `train_run` uses), both + channels_last, and bf16
autocast. glibc malloc is tuned for all of them (`train_run` tunes it, and the tuning is
process-wide). Prints the median and best round of each; the best round is the robust number on
a shared machine (interference only ever slows a round down).
"""

from __future__ import annotations

import os
import statistics
import sys

import torch

from runners.bench.ours import OursLoop
from runners.config import RunConfig
from runners.training.kernels import adam, use_point_matmuls

VARIANTS = {
    "plain": {},
    "channels_last": {"cl": True},
    "fused Adam": {"fused": True},
    "point layers": {"point": True},
    "fused + point (train_run's)": {"fast": True},
    "fused + point + channels_last": {"fast": True, "cl": True},
    "bf16 plain": {"bf16": True},
    "bf16 fused + point": {"fast": True, "bf16": True},
}


def make(config, fused=False, point=False, cl=False, fast=False, bf16=False):
    """The variant's loop: `fast` is the fast path as built; the others change a plain run."""

    def adjust(state):
        if point:
            use_point_matmuls(state.model)
        if cl:
            state.model.to(memory_format=torch.channels_last)
        if fused:
            betas = (config.beta1, config.beta2)
            state.optimizer = adam(state.model.parameters(), config.lr, betas, "cpu")

    config = config.replace(precision="bf16" if bf16 else "fp32")
    return OursLoop(config, None, torch.device("cpu"), not fast, adjust=adjust)


def main() -> None:
    threads, rounds, n = (int(a) for a in (sys.argv[1:] + ["2", "6", "5"][len(sys.argv) - 1 :]))
    config = RunConfig(dataset="mnist-mini", device="cpu", num_threads=threads)
    loops = {name: make(config, **kw) for name, kw in VARIANTS.items()}
    for loop in loops.values():
        loop.steps(2)
    rates = {name: [] for name in loops}
    for _ in range(rounds):
        for name, loop in loops.items():
            before = loop.images
            seconds = loop.steps(n)
            rates[name].append((loop.images - before) / seconds)
    plain = max(rates["plain"])
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{threads} threads, {rounds} rounds x {n} steps, torch {torch.__version__}, load {load}")
    for name, r in rates.items():
        print(
            f"{name:32s} median {statistics.median(r):6.0f}  best {max(r):6.0f}  "
            f"best vs plain {max(r) / plain:4.2f}x"
        )


if __name__ == "__main__":
    main()
