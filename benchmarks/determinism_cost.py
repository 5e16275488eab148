"""What portable determinism costs: training steps on AVX2-pinned kernels against the machine's.

The kernels are chosen when torch loads, so each measurement is its own fresh process: it pins
(or not) through `runners.determinism.pin`, then times N training steps of `OursLoop`
(runners/bench/ours.py: the run as `ste-ablate train` builds it, fast path included, trained
through the engine's batch loop with its per-step bookkeeping) after a warm-up, on the same
batches. The order of the two modes alternates from round to round,
so machine load hits both alike.

    python benchmarks/determinism_cost.py [--steps 200] [--rounds 3] [--threads 1] [--json]

Data: full MNIST where the children's runs find it ($STE_DATA_ROOT, else the per-user cache
folder: `runners.training.data.mnist_available`), else the bundled mnist-mini. Prints one line
per process and the medians; the ratio portable / machine is the share of speed portable mode
keeps.
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
import json, sys
sys.path.insert(0, {root!r})
from runners import determinism
mode, dataset, steps, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
determinism.pin(mode)
import torch
from runners.bench.ours import OursLoop
from runners.config import RunConfig
from runners.training.data import prepare_data
config = RunConfig(dataset=dataset, device="cpu", determinism=mode, num_threads=threads)
device = torch.device("cpu")
loop = OursLoop(config, prepare_data(config.dataset, None, None, device, None), device)
loop.steps(10)  # warm-up
seconds = loop.steps(steps)
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
    sys.path.insert(0, str(ROOT))  # the checkout's runners, as in the child processes
    # After the line above; torch loads here too, which the children's kernels never see.
    from runners.training.data import mnist_available

    dataset = "mnist" if mnist_available() else "mnist-mini"
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
