"""`ste-ablate train`: train one run (the article's autoencoder, or the Bernoulli VAE) into the
run store."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from runners.commands.parts.grid import check_store
from runners.config import RunConfig, apply_overrides
from runners.engine.train import exit_code, train_run
from runners.errors import UserError
from runners.store.format import run_dir

_EPILOG = """\
examples:
  ste-ablate train --estimator hardtanh --seed 0                 the article's run (full MNIST)
  ste-ablate train --estimator 'sigmoid(beta=4)' --seed 3 --dataset mnist-mini --epochs 2
  ste-ablate train --dataset mnist-mini --train-subset 512 --test-subset 256 --device cpu
  ste-ablate train --task bernoulli_vae --estimator disarm --seed 0 --dataset mnist-mini
  ste-ablate train --task bernoulli_vae --estimator reinmax --vae-arch nonlinear --epochs 100

Every flag left out keeps the article's recipe (Adam lr 1e-3, betas (0.5, 0.999), batch 64,
5 epochs, MSE, the hardtanh STE). With --task bernoulli_vae (the DisARM benchmark, docs/tasks.md)
the defaults are that protocol's: 200 Bernoulli latents, linear, batch 50, Adam 1e-4 on encoder
and decoder, SGD 1e-2 on the prior, the disarm estimator; an epoch of full MNIST is 1000 steps,
scored by -ELBO on a fixed training subset and the 100-sample bound on the test set. Estimators
that do not sample Bernoulli(sigmoid(x)) are refused there; unbiased ones (reinforce_loo, arm,
disarm) are refused for the autoencoder. The run lands in STORE/runs/<run id>/ (config.json,
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
        "estimator spec, e.g. 'sigmoid(beta=4)' (default: hardtanh; disarm for the VAE)",
    ),
    (
        "--task",
        "task",
        "str",
        "what to train: autoencoder (default; the article's) or bernoulli_vae (the DisARM "
        "benchmark: a VAE with binary latents on dynamically binarised MNIST)",
    ),
    ("--seed", "seed", "int", "run seed: weights, data order, estimator noise (default: 0)"),
    ("--epochs", "epochs", "int", "training epochs (default: 5)"),
    ("--dataset", "dataset", "str", "mnist (default) or mnist-mini (bundled, no download)"),
    ("--train-subset", "train_subset", "int", "train on the first N of the fixed selection"),
    ("--test-subset", "test_subset", "int", "test on the first N of the fixed selection"),
    ("--batch-size", "batch_size", "int", "batch size (default: 64; VAE 50)"),
    ("--lr", "lr", "float", "Adam learning rate (default: 1e-3; VAE 1e-4)"),
    ("--code-channels", "code_channels", "int", "binary code width (default: 512)"),
    ("--precision", "precision", "str", "fp32 (default) or bf16 (autocast)"),
    ("--probe", "probe", "str", "digit probe on the codes: linear (default) or knn"),
    ("--vae-arch", "vae_arch", "str", "VAE: linear (default; 784-n / n-784) or nonlinear"),
    ("--vae-latents", "vae_latents", "int", "VAE: binary latents n (default: 200)"),
    (
        "--vae-eval-samples",
        "vae_eval_samples",
        "int",
        "VAE: K of the K-sample bound on the test set (default: 100)",
    ),
    ("--vae-prior-lr", "vae_prior_lr", "float", "VAE: SGD rate of the prior's logits (1e-2)"),
    (
        "--vae-train-eval",
        "vae_train_eval",
        "int",
        "VAE: training images of the fixed -ELBO subset (default: 10000)",
    ),
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
    (
        "--gradient-error",
        "gradient_error",
        "str",
        "off (default) or checkpoints: the estimator against the exact gradient near 0, 10, 50 "
        "and 100%% of training (docs/gradients.md)",
    ),
    (
        "--gradient-error-probe",
        "gradient_error_probe",
        "int",
        "examples in that measurement's probe batch (16)",
    ),
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
        description="Train one run of the reference article's MNIST binary autoencoder (or, "
        "with --task bernoulli_vae, of the DisARM benchmark's Bernoulli VAE) with a chosen "
        "estimator and seed, and record it in the run store.",
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
        *(_vae_lines(summary) if "test_iwae_bound" in summary else _article_lines(summary)),
        f"images/s:       {_fmt(summary['images_per_s'], '.1f')}",
        f"wall time:      {_fmt(summary['wall_time_s'], '.1f')} s",
    ]
    if summary.get("error"):
        lines.append(f"error:          {summary['error']}")
    return "\n".join(lines)


def _article_lines(summary: dict[str, Any]) -> list[str]:
    return [
        f"test_mse:       {_fmt(summary['test_mse'], '.6f')}",
        f"test_psnr:      {_fmt(summary['test_psnr'], '.2f')} dB",
        f"bit_entropy:    {_fmt(summary['bit_entropy'], '.4f')} bits",
        f"dead_bits:      {_fmt(summary['dead_bits'], 'd')}",
        f"probe_accuracy: {_fmt(summary['probe_accuracy'], '.4f')}",
    ]


def _vae_lines(summary: dict[str, Any]) -> list[str]:
    return [
        f"-ELBO (train):  {_fmt(summary['train_neg_elbo'], '.3f')} nats",
        f"test bound:     {_fmt(summary['test_iwae_bound'], '.3f')} nats (K-sample IWAE)",
        f"grad variance:  {_fmt(summary['grad_var'], '.4g')} (encoder, running)",
        f"evaluations:    {_fmt(summary['evaluations'], 'd')} per example and step",
    ]
