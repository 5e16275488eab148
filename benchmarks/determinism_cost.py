"""What portable determinism costs: training steps on AVX2-pinned kernels against the machine's.

The kernels are chosen when torch loads, so each measurement is its own fresh process: it pins
(or not) through `runners.determinism.pin`, builds the article's model as `ste-ablate train`
does (fast path included), warms up and times N training steps on the same batches. The order of
the two modes alternates from round to round, so machine load hits both alike.

    python benchmarks/determinism_cost.py [--steps 200] [--rounds 3] [--threads 1] [--json]

Data: full MNIST under $STE_DATA_ROOT, else the bundled mnist-mini. Prints one line per process
and the medians; the ratio portable / machine is the share of speed portable mode keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from runners import determinism
mode, dataset, steps, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
determinism.pin(mode)
import torch
torch.set_num_threads(threads)
from runners.config import RunConfig
from runners.training.data import batch_bounds, epoch_permutation, get_batch, prepare_data
from runners.training.recipe import EagerStep
from runners.training.session import torch_settings
from runners.training.state import RunState
config = RunConfig(dataset=dataset, device="cpu", determinism=mode, num_threads=threads)
device = torch.device("cpu")
data = prepare_data(config.dataset, None, None, device, None)
state = RunState(config, device)
step = EagerStep(state.model, state.optimizer, device=device, precision=config.precision)
bounds = batch_bounds(len(data.train), config.batch_size)
order = epoch_permutation(len(data.train), state.data_gen)
with torch_settings(config, device):
    for n in range(10):
        b, e = bounds[n]
        step(get_batch(data.train.images, order[b:e]))[0].item()
    start = time.perf_counter()
    for n in range(10, 10 + steps):
        b, e = bounds[n % len(bounds)]
        loss = step(get_batch(data.train.images, order[b:e]))[0]
    loss.item()
    seconds = time.perf_counter() - start
print(json.dumps({{"mode": mode, "capability": torch.backends.cpu.get_cpu_capability(),
                   "images_per_s": steps * config.batch_size / seconds}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = os.environ.get("STE_DATA_ROOT")
    dataset = "mnist" if root and (Path(root) / "MNIST" / "raw").is_dir() else "mnist-mini"
    env = {k: v for k, v in os.environ.items() if k != "STE_DETERMINISM"}
    results: dict[str, list[float]] = {"machine": [], "portable": []}
    capability = {}
    for round_ in range(args.rounds):
        order = ("machine", "portable") if round_ % 2 == 0 else ("portable", "machine")
        for mode in order:
            cmd = [sys.executable, "-c", _CHILD.format(root=str(ROOT)), mode, dataset,
                   str(args.steps), str(args.threads)]  # fmt: skip
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            line = json.loads(done.stdout.strip().splitlines()[-1])
            results[mode].append(line["images_per_s"])
            capability[mode] = line["capability"]
            if not args.json:
                print(f"round {round_ + 1} {mode:8s} ({line['capability']}): "
                      f"{line['images_per_s']:.1f} images/s", flush=True)  # fmt: skip
    medians = {mode: statistics.median(v) for mode, v in results.items()}
    summary = {
        "dataset": dataset, "threads": args.threads, "steps": args.steps, "rounds": args.rounds,
        "capability": capability, "images_per_s": results, "median": medians,
        "portable_over_machine": medians["portable"] / medians["machine"],
    }  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"median images/s: machine {medians['machine']:.1f}, portable {medians['portable']:.1f}"
            f" -> portable keeps {100 * summary['portable_over_machine']:.1f}%"
        )


if __name__ == "__main__":
    main()
