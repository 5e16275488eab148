"""How far each speed option drifts from the plain fp32 step: same weights, same batches.

    python benchmarks/drift.py [STEPS]

Trains one run (the article's recipe, seed 0) STEPS steps (default 30) in each variant through
the engine's batch loop (`runners.bench.ours.OursLoop`: the run's own seeded batch order over the
first STEPS x 64 images of the fixed training selection; full MNIST where runs find it, else
mnist-mini: `runners.training.data.mnist_available`) and prints the relative difference of the
training loss to the plain one-thread run at steps 1, 10 and STEPS, and of the test MSE (1000
test images) and binary codes after training. Rounding differences of ~1e-7 grow in this training (code bits flip, Adam scales up
pure-rounding gradients): compare a variant with the "plain, 2 threads" row, which is the same
code summed in another order.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from runners.bench.ours import OursLoop
from runners.config import RunConfig
from runners.training.data import mnist_available
from runners.training.evaluate import evaluate

VARIANTS = {
    "plain, same again": {},
    "plain, 2 threads": {"threads": 2},
    "fast path (point layers + fused Adam, as train_run)": {"fast": True},
    "grouped stack of 1 (plain layers, the engine's grouped step)": {"mode": "grouped"},
}


def run(config, steps, threads=1, fast=False, mode=None):
    """(losses, test MSE, test codes) of `steps` steps of the variant."""
    device = torch.device("cpu")
    loop = OursLoop(config.replace(num_threads=threads), None, device, not fast, mode=mode)
    loop.steps(steps)
    model = loop.unload()[0].eval()
    losses = np.array([s["train_loss"] for s in loop.runs[0].state.steps])
    result = evaluate(model, loop.data.test.images, config.precision)
    return losses, result.mse, result.codes


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    root = mnist_available()
    config = RunConfig(
        dataset="mnist" if root else "mnist-mini",
        train_subset=steps * 64,
        test_subset=1000,
        device="cpu",
        data_root=str(root) if root else None,
    )
    ref = run(config, steps)
    print(
        f"{'full MNIST' if root else 'mnist-mini'}, {steps} steps; plain 1-thread loss "
        f"{ref[0][0]:.5f} -> {ref[0][-1]:.5f}, test MSE {ref[1]:.5f}"
    )
    print(f"| variant | step 1 | step 10 | step {steps} | max | test MSE | code bits differing |")
    for name, kwargs in VARIANTS.items():
        losses, test_mse, codes = run(config, steps, **kwargs)
        rel = np.abs(losses - ref[0]) / ref[0]
        print(
            f"| {name} | {rel[0]:.1e} | {rel[min(9, steps - 1)]:.1e} | {rel[-1]:.1e} | "
            f"{rel.max():.1e} | {abs(test_mse - ref[1]) / ref[1]:.1e} | "
            f"{(codes != ref[2]).float().mean():.1%} |"
        )


if __name__ == "__main__":
    main()
