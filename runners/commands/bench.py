"""`ste-ablate bench`: images/s of the article's training loop against ours (`runners.bench`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from runners.bench.datasets import BENCH_DATASETS
from runners.bench.main import run_bench
from runners.bench.report import format_report
from runners.bench.vae import format_vae_report, run_vae_bench
from runners.errors import UserError

_EPILOG = """\
examples:
  ste-ablate bench                          the default: ~1 minute on a 2-core CPU
  ste-ablate bench --device cuda --json     machine-readable, on the GPU
  ste-ablate bench --grid 8 1 --stack 8     8 cells x 1 epoch: ours stacked vs the article per cell
  ste-ablate bench --precision bf16         ours under bf16 autocast (opt-in; results change)
  ste-ablate bench --task bernoulli_vae --stack 4   the VAE: the reference's loop vs ours (steps/s)

In one process the loops run in turn, round after round, on the same device and data: full
MNIST when it is under --data-root / $STE_DATA_ROOT, else the bundled mnist-mini. The article's
loop is benchmarks/article_loop.py of the source checkout (a faithful copy: torchvision
datasets.MNIST, ToTensor + Normalize, DataLoader(batch_size=64, shuffle=True)); an installed
package without the checkout benches ours only and says so. The fp32 ceiling is a large matmul
measured in the same run; the share of it uses 0.184 GFLOP per image (forward + backward,
computed from the model's convolutions). Report the load average with the numbers: other
processes on the machine slow every loop. On the CPU the "ours, loaded" row trains ours again
beside a second training process with as many threads and prints the share of the quiet
throughput it keeps (ste-ablate sets OMP_WAIT_POLICY=PASSIVE unless it is set; export
OMP_WAIT_POLICY=ACTIVE to see OpenMP's default).

With --task bernoulli_vae the loops are the DisARM protocol's (runners/bench/vae.py): the
reference's step written in plain PyTorch as google-research's disarm launcher writes it (per-
image binarising dataset, DataLoader, three ELBO calls per step, three optimisers), against ours
through the engine (one run, and a stack of --stack runs, default 4), in steps/s per run summed
over the stack; --steps defaults to 200 there.
"""


def register(subparsers: Any) -> None:
    """Add the ``bench`` command."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmark the article's training loop against ours",
        description="Alternate the reference article's training loop and ours on the same "
        "device and data; print images/s, their ratio and the share of the device's fp32 "
        "ceiling. --grid times N cells x E epochs (ours stacked).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--task",
        default="autoencoder",
        help="autoencoder (default: the article's loop vs ours) or bernoulli_vae (the DisARM "
        "protocol: the reference's loop vs ours)",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--steps", default=None, metavar="N", help="steps per round (default 30; VAE 200)"
    )
    parser.add_argument("--rounds", default="3", metavar="N", help="rounds per loop (default 3)")
    parser.add_argument(
        "--grid",
        nargs=2,
        metavar=("N_CELLS", "E_EPOCHS"),
        help="also time a grid of N cells x E epochs (ours stacked vs the article per cell)",
    )
    parser.add_argument(
        "--stack",
        metavar="K",
        help="cells per stack in --grid (default: 1 on CPU, min(N_CELLS, 32) on GPU)",
    )
    parser.add_argument("--precision", default="fp32", help="fp32 (default) or bf16 for ours")
    parser.add_argument("--threads", metavar="N", help="torch CPU threads (default: torch's)")
    parser.add_argument("--data-root", metavar="DIR", help="folder holding MNIST/raw/")
    parser.add_argument(
        "--dataset",
        default="auto",
        choices=BENCH_DATASETS,
        help="auto (default: full MNIST when present, else the bundled mnist-mini), mnist "
        "(full; an error when absent) or mnist-mini",
    )
    parser.add_argument(
        "--budget", default="90", metavar="S", help="longest real grid run in seconds (default 90)"
    )
    parser.add_argument(
        "--no-loaded",
        dest="loaded",
        action="store_false",
        help="skip the loaded row (CPU: ours beside a second training process)",
    )
    parser.add_argument(
        "--no-diagnostics",
        dest="diagnostics",
        action="store_false",
        help="skip timing the gradient diagnostics; --grid cells train without them",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Parse, bench, print."""
    if args.task not in ("autoencoder", "bernoulli_vae"):
        raise UserError(f"--task must be autoencoder or bernoulli_vae, got {args.task!r}")
    if args.task == "bernoulli_vae":
        return _run_vae(args)
    if args.precision not in ("fp32", "bf16"):
        raise UserError(f"--precision must be fp32 or bf16, got {args.precision!r}")
    if args.stack and not args.grid:
        raise UserError("--stack applies to --grid only (and to --task bernoulli_vae)")
    grid = None
    if args.grid:
        grid = (_int(args.grid[0], "--grid N_CELLS", 1), _int(args.grid[1], "--grid E_EPOCHS", 1))
    result = run_bench(
        device=args.device,
        steps=_int(args.steps or "30", "--steps", 1),
        rounds=_int(args.rounds, "--rounds", 1),
        precision=args.precision,
        data_root=args.data_root,
        dataset=args.dataset,
        threads=_int(args.threads, "--threads", 1) if args.threads else None,
        grid=grid,
        stack=_int(args.stack, "--stack", 1) if args.stack else None,
        budget_s=_float(args.budget, "--budget"),
        loaded=args.loaded,
        diagnostics=args.diagnostics,
    )
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(format_report(result))
    return 0


def _run_vae(args: argparse.Namespace) -> int:
    if args.grid:
        raise UserError("--grid applies to the autoencoder task only")
    result = run_vae_bench(
        device=args.device,
        steps=_int(args.steps or "200", "--steps", 1),
        rounds=_int(args.rounds, "--rounds", 1),
        stack=_int(args.stack or "4", "--stack", 1),
        data_root=args.data_root,
        dataset=args.dataset,
        threads=_int(args.threads, "--threads", 1) if args.threads else None,
    )
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else format_vae_report(result))
    return 0


def _int(text: str, flag: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"{flag} must be an integer, got {text!r}") from None
    if value < low:
        raise UserError(f"{flag} must be >= {low}, got {value}")
    return value


def _float(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{flag} must be a number, got {text!r}") from None
    if value < 0:
        raise UserError(f"{flag} must be >= 0, got {value}")
    return value
