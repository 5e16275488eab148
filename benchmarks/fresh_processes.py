"""The article's loop and ours, each in its own fresh process, as a user runs them.

`ste-ablate bench` alternates both loops inside ONE process (so that machine
load hits both alike). A real run is a fresh process that trains one model, so this script
measures that situation too: every round starts one Python process per loop, which builds its
loop, warms up for a few steps and times N training steps; the order of the loops alternates
from round to round. The article's process runs with glibc's defaults, as the article's script
does; ours applies what `ste-ablate train` applies (the fast path, malloc tuning included).

    python benchmarks/fresh_processes.py [--steps 300] [--rounds 3] [--threads 2] [--device cpu]

Data: full MNIST under --data-root / $STE_DATA_ROOT, else the bundled mnist-mini (both loops
read the same IDX files). Prints one line per process and a table of medians; --json for one
JSON object. Not part of the installed package (it needs benchmarks/article_loop.py).
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

# One process's work: build the loop, warm up, time the steps, print one JSON line.
_CHILD = """
import json, sys, time, torch
kind, device, root, dataset, steps, warmup, threads = sys.argv[1:8]
steps, warmup, threads = int(steps), int(warmup), int(threads)
if threads:
    torch.set_num_threads(threads)
sys.path.insert(0, {root!r})
if kind == "article":
    from runners.bench.main import article_module
    module, where = article_module()
    loop = module.ArticleLoop(device, root)
else:
    from runners.bench.ours import OursLoop
    from runners.config import RunConfig
    from runners.training.data import prepare_data
    from runners.training.device import resolve_device
    dev = resolve_device(device)
    config = RunConfig(dataset=dataset, device=str(dev),
                       data_root=root if dataset == "mnist" else None)
    data = prepare_data(dataset, None, None, dev, config.data_root)
    loop = OursLoop(config, data, dev)
if warmup:
    loop.steps(warmup)
seconds = loop.steps(steps)
print(json.dumps({{"loop": kind, "images_per_s": steps * 64 / seconds, "seconds": seconds,
                  "threads": torch.get_num_threads()}}))
"""


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the table; returns the exit code."""
    parser = argparse.ArgumentParser(
        description="Time the article's loop and ours, each in a fresh process, alternating.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=300, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=3, help="processes per loop")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--data-root", default=None, help="folder holding MNIST/raw/")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if min(args.steps, args.rounds) < 1 or args.warmup < 0:
        parser.error("--steps and --rounds must be >= 1, --warmup >= 0")

    sys.path.insert(0, str(ROOT))  # the checkout's runners, installed or not: imported after this
    from runners.bench.main import bench_data

    child = _CHILD.format(root=str(ROOT))
    rows: list[dict] = []
    with bench_data(args.data_root) as (dataset, root):
        for round_ in range(args.rounds):
            order = ("article", "ours") if round_ % 2 == 0 else ("ours", "article")
            for kind in order:
                argv_child = [kind, args.device, root, dataset, str(args.steps),
                              str(args.warmup), str(args.threads)]  # fmt: skip
                done = subprocess.run(
                    [sys.executable, "-c", child, *argv_child],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode != 0:
                    tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
                    print(f"error: the {kind} process failed: {tail[0]}", file=sys.stderr)
                    return 1
                row = json.loads(done.stdout.strip().splitlines()[-1])
                row.update(round=round_ + 1, dataset=dataset)
                rows.append(row)
                if not args.json:
                    print(f"round {round_ + 1} {kind:<8} {row['images_per_s']:7.1f} images/s",
                          flush=True)  # fmt: skip
    medians = {
        kind: statistics.median(r["images_per_s"] for r in rows if r["loop"] == kind)
        for kind in ("article", "ours")
    }
    result = {
        "device": args.device,
        "dataset": rows[0]["dataset"],
        "steps": args.steps,
        "threads": rows[0]["threads"],
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "rows": rows,
        "median_images_per_s": medians,
        "ratio": medians["ours"] / medians["article"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"median images/s over {args.rounds} fresh processes each ({result['dataset']}, "
            f"{args.steps} steps, {result['threads']} threads): article "
            f"{medians['article']:.1f}, ours {medians['ours']:.1f}, ours/article "
            f"{result['ratio']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
