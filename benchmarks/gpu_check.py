"""The prepared GPU check: one command, a few minutes, every number written to a folder.

    OUT=/some/folder python3 benchmarks/gpu_check.py [--device cuda] [--quick]

Runs from the source checkout (no install needed; it puts the checkout on sys.path), with any
Python that has torch, torchvision, numpy, scipy, pyyaml and tqdm (W&B and submitit are not
needed). Writes into $OUT (default ./gpu-check):

- bench.json / bench.txt: `ste-ablate bench` single-run mode (the article's loop against ours,
  alternating in one process; images/s, ratio, share of the measured fp32 ceiling);
- grid.json / grid.txt: grid mode, N cells x E epochs, ours stacked (grouped) against the
  article's loop once per cell (extrapolated from measured steps past the budget, and it says so);
- stack_check.json: a grouped stack of 3 cells (three estimators) trained for real on the device
  against the same cells one at a time: final test MSE of each and the largest relative
  difference of their first-step losses;
- environment.json: device name, torch/CUDA versions, memory.

Each part is guarded: a failure is written to errors.txt and the next part still runs. Data:
full MNIST when present (`$STE_DATA_ROOT`, or the user cache), else the bundled mnist-mini.
`--quick` shrinks everything to the bundled mnist-mini, without the loaded row or the
diagnostics (a smoke test that also runs on a CPU: `--device cpu --quick`).

torch and the project's modules are imported inside each part: `main` puts the checkout on
sys.path first and pins the CPU kernels of the default determinism (`runners.determinism`, plain
Python) before torch loads, and a part that cannot import is recorded as that part's failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    """Run every part; returns 0 when all parts ran, 1 when some failed."""
    parser = argparse.ArgumentParser(description="The GPU check, every result to $OUT.")
    parser.add_argument("--device", default="cuda", help="device to check (default cuda)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu-check", help="folder")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    # Before any part loads torch: the runs train in portable mode, as `ste-ablate` pins it.
    from runners import determinism

    determinism.pin(determinism.DEFAULT_MODE)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []

    def part(name: str, function) -> None:  # noqa: ANN001
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            function()
            print(f"== {name}: done in {time.perf_counter() - started:.1f} s", flush=True)
        except Exception:
            text = traceback.format_exc()
            failures.append(f"{name}:\n{text}")
            print(f"== {name}: FAILED\n{text}", flush=True)

    quick = args.quick
    part("environment", lambda: _environment(out, args.device))
    part("bench", lambda: _bench(out, args.device, quick, grid=False))
    part("grid", lambda: _bench(out, args.device, quick, grid=True))
    part("stack_check", lambda: _stack_check(out, args.device, quick))
    if failures:
        (out / "errors.txt").write_text("\n".join(failures))
    return 1 if failures else 0


def _write(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _environment(out: Path, device: str) -> None:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(name=props.name, memory_gib=props.total_memory / 2**30,
                    multiprocessors=props.multi_processor_count)  # fmt: skip
    _write(out / "environment.json", info)
    print(info, flush=True)


# --quick checks that every part runs, not how fast: the bundled images, no loaded row (a
# second training process; the CPU-only row has its own test), no diagnostics.
_QUICK = dict(dataset="mnist-mini", loaded=False, diagnostics=False)
# run_bench keywords per part: (full size, --quick size).
_BENCH = {
    "bench": (
        dict(steps=50, rounds=3),
        dict(steps=3, rounds=1, warmup=1, ceiling_s=0.2, **_QUICK),
    ),
    "grid": (
        dict(steps=30, rounds=2, grid=(80, 5), stack=32, budget_s=240.0),
        dict(
            steps=2,
            rounds=1,
            warmup=1,
            ceiling_s=0.2,
            grid=(4, 1),
            stack=4,
            budget_s=20.0,
            subsets=(256, 128),
            **_QUICK,
        ),  # fmt: skip
    ),
}


def _bench(out: Path, device: str, quick: bool, *, grid: bool) -> None:
    from runners.bench.main import run_bench
    from runners.bench.report import format_report

    name = "grid" if grid else "bench"
    result = run_bench(device=device, **_BENCH[name][quick])
    _write(out / f"{name}.json", result)
    text = format_report(result)
    (out / f"{name}.txt").write_text(text + "\n")
    print(text, flush=True)


def _stack_check(out: Path, device: str, quick: bool) -> None:
    from runners.config import RunConfig
    from runners.engine.train import train_run, train_runs
    from runners.store.format import read_jsonl, run_dir

    base = {"dataset": "mnist-mini", "device": device, "epochs": 1 if quick else 2,
            "train_subset": 256 if quick else None, "test_subset": 128 if quick else None,
            "diagnostics": "off" if quick else "epoch"}  # fmt: skip
    configs = [
        RunConfig.from_dict({**base, "estimator": e, "seed": s})
        for e, s in (("hardtanh", 0), ("sigmoid(beta=4)", 1), ("identity", 2))
    ]
    with tempfile.TemporaryDirectory() as folder:
        alone, stacked = Path(folder) / "alone", Path(folder) / "stacked"
        started = time.perf_counter()
        singles = [train_run(c, alone, progress=False) for c in configs]
        alone_s = time.perf_counter() - started
        started = time.perf_counter()
        grouped = train_runs(configs, stacked, progress=False, mode="grouped")
        stacked_s = time.perf_counter() - started
        first = []
        for config in configs:
            a, b = (read_jsonl(run_dir(s, config.run_id) / "steps.jsonl")[0]["train_loss"]
                    for s in (alone, stacked))  # fmt: skip
            first.append(abs(a - b) / abs(a))
    result = {
        "cells": [c.estimator for c in configs],
        "status_alone": [s["status"] for s in singles],
        "status_stacked": [s["status"] for s in grouped],
        "test_mse_alone": [s["test_mse"] for s in singles],
        "test_mse_stacked": [s["test_mse"] for s in grouped],
        "first_step_loss_max_rel_diff": max(first),
        "seconds_alone": alone_s,
        "seconds_stacked": stacked_s,
    }
    _write(out / "stack_check.json", result)
    print(result, flush=True)


if __name__ == "__main__":
    sys.exit(main())
