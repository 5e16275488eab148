"""`ste-ablate train`: train one run of the article's autoencoder into the run store."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from runners.commands.grid_table import check_store
from runners.config import RunConfig, apply_overrides
from runners.errors import UserError
from runners.store.format import run_dir

# The engine imports torch (about 2 s): `run` imports it, so that `--help` starts at once.

_EPILOG = """\
examples:
  ste-ablate train --estimator hardtanh --seed 0                 the article's run (full MNIST)
  ste-ablate train --estimator 'sigmoid(beta=4)' --seed 3 --dataset mnist-mini --epochs 2
  ste-ablate train --dataset mnist-mini --train-subset 512 --test-subset 256 --device cpu

Every flag left out keeps the article's recipe (Adam lr 1e-3, betas (0.5, 0.999), batch 64,
5 epochs, MSE, the hardtanh STE). The run lands in STORE/runs/<run id>/ (config.json,
metrics.jsonl, steps.jsonl, summary.json, reconstruction.png, checkpoint.pt). Training the same
config again resumes an unfinished run and returns a finished one without retraining.
Full MNIST is read from --data-root, else $STE_DATA_ROOT, else ~/.cache/ste-ablations/data
(downloaded there by torchvision when online; offline, put the four IDX files in ROOT/MNIST/raw/).
Exit codes: 0 completed, 1 diverged or failed, 2 bad input, 130/143 interrupted (resumable).
"""

# (flag, config field, kind, help); numbers are parsed here so bad input is one line, not usage.
_OPTIONS: tuple[tuple[str, str, str, str], ...] = (
    (
        "--estimator",
        "estimator",
        "str",
        "estimator spec, e.g. 'sigmoid(beta=4)' (default: hardtanh)",
    ),
    ("--seed", "seed", "int", "run seed: weights, data order, estimator noise (default: 0)"),
    ("--epochs", "epochs", "int", "training epochs (default: 5)"),
    ("--dataset", "dataset", "str", "mnist (default) or mnist-mini (bundled, no download)"),
    ("--train-subset", "train_subset", "int", "train on the first N of the fixed selection"),
    ("--test-subset", "test_subset", "int", "test on the first N of the fixed selection"),
    ("--batch-size", "batch_size", "int", "batch size (default: 64)"),
    ("--lr", "lr", "float", "Adam learning rate (default: 1e-3)"),
    ("--code-channels", "code_channels", "int", "binary code width (default: 512)"),
    ("--precision", "precision", "str", "fp32 (default) or bf16 (autocast)"),
    ("--probe", "probe", "str", "digit probe on the codes: linear (default) or knn"),
    ("--device", "device", "str", "auto (default: CUDA when present), cpu, cuda, cuda:N"),
    (
        "--data-root",
        "data_root",
        "str",
        "folder holding MNIST/raw/ (default: $STE_DATA_ROOT or ~/.cache/ste-ablations/data)",
    ),
    ("--num-threads", "num_threads", "int", "torch CPU threads (default: torch's choice)"),
    (
        "--determinism",
        "determinism",
        "str",
        "CPU kernels: portable (default; pinned to AVX2, the same bits on any x86-64 CPU) or "
        "machine (what this CPU does fastest; bit-identical on this kind of CPU only)",
    ),
    (
        "--diagnostics",
        "diagnostics",
        "str",
        "gradient diagnostics at each epoch's end: epoch (default) or off (docs/diagnostics.md)",
    ),
    ("--diagnostics-probe", "diagnostics_probe", "int", "test images the diagnostics probe (16)"),
)


# Speed switches (execution fields: they do not change the run id).
_SWITCHES: tuple[tuple[str, str, str], ...] = (
    (
        "--compile",
        "compile",
        "torch.compile the forward (GPU extra; eager fallback with a warning)",
    ),
    (
        "--cuda-graph",
        "cuda_graph",
        "capture the whole step in a CUDA graph (CUDA, deterministic non-annealed estimators; "
        "eager fallback with a warning)",
    ),
)


def register(subparsers: Any) -> None:
    """Add the ``train`` command."""
    parser = subparsers.add_parser(
        "train",
        help="train one run into the run store",
        description="Train one run of the reference article's MNIST binary autoencoder with a "
        "chosen straight-through estimator and seed, and record it in the run store.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag, _field, kind, text in _OPTIONS:
        metavar = {"int": "N", "float": "X"}.get(kind, flag.lstrip("-").split("-")[-1].upper())
        parser.add_argument(flag, default=None, metavar=metavar, help=text)
    parser.add_argument(
        "--no-pre-threshold-relu",
        dest="pre_threshold_relu",
        action="store_const",
        const=False,
        default=None,
        help="drop the ReLU before the threshold (same forward, different gradient)",
    )
    for flag, field, text in _SWITCHES:
        parser.add_argument(
            flag, dest=field, action="store_const", const=True, default=None, help=text
        )
    parser.add_argument(
        "--out",
        "--store",
        dest="store",
        metavar="DIR",
        default=None,
        help="run store root (default: $STE_STORE, else ./ste-store)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig that the flags describe (flags left out keep the defaults)."""
    overrides: dict[str, Any] = {"pre_threshold_relu": args.pre_threshold_relu}
    for _flag, field, _text in _SWITCHES:
        overrides[field] = getattr(args, field, None)
    for flag, field, kind, _text in _OPTIONS:
        overrides[field] = _convert(flag, getattr(args, field), kind)
    return apply_overrides(None, overrides)


def store_root(value: str | None) -> Path:
    """--out, else $STE_STORE, else ./ste-store; an existing non-folder is an error."""
    root = Path(value or os.environ.get("STE_STORE") or "ste-store").expanduser()
    check_store(root)
    return root


def run(args: argparse.Namespace) -> int:
    """Validate everything, train (or resume) the run, print where it is and its final metrics."""
    from runners.engine.train import exit_code, train_run  # torch: see the note on imports

    config = config_from_args(args)
    store = store_root(args.store)
    summary = train_run(config, store, progress=False if args.quiet else None)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(_report(summary, run_dir(store, config.run_id)))
    return exit_code(summary)


def _convert(flag: str, value: str | None, kind: str) -> Any:
    if value is None or kind == "str":
        return value
    try:
        return int(value) if kind == "int" else float(value)
    except ValueError:
        noun = "an integer" if kind == "int" else "a number"
        raise UserError(f"{flag} must be {noun}, got {value!r}") from None


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _report(summary: dict[str, Any], folder: Path) -> str:
    lines = [
        f"run:            {folder}",
        f"status:         {summary['status']} ({summary['epochs_done']} epoch(s))",
        f"test_mse:       {_fmt(summary['test_mse'], '.6f')}",
        f"test_psnr:      {_fmt(summary['test_psnr'], '.2f')} dB",
        f"bit_entropy:    {_fmt(summary['bit_entropy'], '.4f')} bits",
        f"dead_bits:      {_fmt(summary['dead_bits'], 'd')}",
        f"probe_accuracy: {_fmt(summary['probe_accuracy'], '.4f')}",
        f"images/s:       {_fmt(summary['images_per_s'], '.1f')}",
        f"wall time:      {_fmt(summary['wall_time_s'], '.1f')} s",
    ]
    if summary.get("error"):
        lines.append(f"error:          {summary['error']}")
    return "\n".join(lines)
