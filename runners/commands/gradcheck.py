"""`ste-ablate gradcheck RUN_DIR`: many estimators' gradients on one trained model's weights.

Every estimator is evaluated on the same weights and the same probe batch, so the differences
isolate the estimator (definitions: docs/diagnostics.md). The result is printed as a table (or
JSON) and written to RUN_DIR/gradcheck.json (or --out), where `ste-ablate analyze` and
`ste-ablate snapshot` find it for the `gradcheck` figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from runners.commands.parts import gradcheck_exact
from runners.commands.parts.grid import at_least_one
from runners.config import RunConfig
from runners.errors import UserError
from runners.store import format as st
from runners.store.checkpoint import load_checkpoint
from runners.store.format import atomic_write_json
from runners.store.records import DRAWS, TAUS, smoothed_cosine
from runners.training.data import normalize, prepare_data
from runners.training.device import resolve_device
from runners.training.diagnostics import diagnose, probe_indices
from runners.training.recipe import build_model
from ste_variants import describe, get_estimator, list_estimators

_EPILOG = """\
examples:
  ste-ablate gradcheck ste-store/runs/hardtanh-s0-1a2b3c4d5e
  ste-ablate gradcheck RUN_DIR --estimators identity,hardtanh,'sigmoid(beta=4)' --probe 32
  ste-ablate gradcheck RUN_DIR --json > gradcheck.json
  ste-ablate gradcheck VAE_RUN_DIR --estimators disarm,bernoulli,gumbel --estimates 512
  ste-ablate gradcheck RUN_DIR --exact --estimators bernoulli,reinmax   # article model, code as
                                                                        # Bernoulli(σ(x)) latents

Columns: flip_corr (Spearman of exact and first-order flip effects: the model's, the same for
every estimator), agree (|D|-weighted descent agreement), cover (|D|-weighted share of non-zero
gradients), cos τ (cosine with the smoothed-loss gradient R_τ), rel_id (distance to the identity
STE's gradient), snr (stochastic estimators: gradient signal-to-noise over the noise draws).

Runs with stochastic latents (task bernoulli_vae), or --exact: each estimator that samples
Bernoulli(σ(logits)) against the exact gradient of the expected objective (docs/gradients.md):
bias (relative norm, 95% bootstrap interval, p-value of zero bias), variance (trace, relative),
relative RMSE and cosine of the mean of M estimates; written to RUN_DIR/gradcheck_exact.json
(or --out) with a figure beside it.
"""
_COLUMNS = (
    ("descent_agreement", "agree"),
    ("coverage", "cover"),
    *((smoothed_cosine(t), f"cos τ={t:g}") for t in TAUS),
    ("rel_to_identity", "rel_id"),
    ("grad_snr", "snr"),
)


def register(subparsers: Any) -> None:
    """Add the ``gradcheck`` command."""
    parser = subparsers.add_parser(
        "gradcheck",
        help="compare estimators' gradients on a trained run's weights",
        description="Load a run's checkpoint and config, compute the exact bit-flip effects of "
        "a fixed probe batch of test images, and measure how faithful each estimator's gradient "
        "is to them (docs/diagnostics.md). The result is printed and written to "
        "RUN_DIR/gradcheck.json (or --out), where analyze and snapshot find it.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (STORE/runs/<run id>)")
    parser.add_argument(
        "--estimators",
        metavar="SPEC,...",
        help="comma-separated estimator specs (default: every registered estimator)",
    )
    parser.add_argument(
        "--probe",
        type=at_least_one("--probe", "a number of images"),
        default=64,
        metavar="P",
        help="probe images (default 64)",
    )
    parser.add_argument(
        "--draws",
        type=at_least_one("--draws", "a number of draws"),
        default=DRAWS,
        metavar="S",
        help=f"noise draws (default {DRAWS})",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, auto")
    parser.add_argument("--data-root", metavar="DIR", help="folder holding MNIST/raw/")
    parser.add_argument("--out", metavar="FILE", help="JSON file (default RUN_DIR/gradcheck.json)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    gradcheck_exact.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Parse, check, print, write."""
    folder = Path(args.run_dir)
    if gradcheck_exact.wanted(args, folder):
        return gradcheck_exact.run(args)
    # Every threshold estimator: the unbiased family has no backward through a threshold.
    every = [name for name in list_estimators() if describe(name)["family"] == "threshold"]
    specs = gradcheck_exact.split_specs(args.estimators) if args.estimators else every
    result = check_run(
        folder,
        specs,
        probe=args.probe,
        draws=args.draws,
        device=args.device,
        data_root=args.data_root,
    )
    out = Path(args.out) if args.out else folder / st.GRADCHECK
    atomic_write_json(out, result)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    # On stderr: with --json, stdout is the JSON alone.
    print(f"gradcheck: wrote {out}", file=sys.stderr)
    return 0


def check_run(
    folder: Path,
    specs: list[str],
    *,
    probe: int = 64,
    draws: int = DRAWS,
    device: str = "cpu",
    data_root: str | None = None,
) -> dict[str, Any]:
    """The diagnostics of each estimator in `specs` on the run's weights (a JSON-ready dict).

    Raises:
        UserError: no run folder, config or checkpoint there, or a bad estimator spec.
    """
    doc = st.read_config(folder)
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise UserError(f"{folder} holds no run (no readable {st.CONFIG})")
    _check_integrity(folder, doc)
    config = RunConfig.from_dict(doc["config"])
    if config.task != "autoencoder":
        raise UserError(
            f"{folder} is a {config.task} run: gradcheck diagnoses the article's autoencoder"
        )
    digest = st.sha256_file(folder / st.CHECKPOINT) if (folder / st.CHECKPOINT).is_file() else None
    with warnings.catch_warnings(record=True) as caught:  # the reason goes into the error
        warnings.simplefilter("always")
        ckpt = load_checkpoint(folder, config.run_id, epochs=config.epochs)
    if ckpt is None:
        reason = next((str(w.message) for w in caught), "")
        why = reason[reason.find("(") : reason.rfind(")") + 1] if "(" in reason else ""
        raise UserError(f"{folder} has no usable {st.CHECKPOINT} {why}".strip())
    estimators = [get_estimator(spec) for spec in specs]
    progress = min(1.0, ckpt["epoch"] / config.epochs)
    for estimator in estimators:
        estimator.set_progress(progress)  # annealed estimators as they stood when it was saved
    resolved = resolve_device(device)
    root = data_root or config.data_root
    data = prepare_data(config.dataset, 2, config.test_subset, resolved, root)
    model = build_model(config, resolved)
    model.load_state_dict(ckpt["model"])
    test = data.test.images
    images = normalize(test[probe_indices(len(test), probe).to(test.device)])
    started = time.perf_counter()
    rows = diagnose(model, images, estimators, draws=draws)
    seconds = time.perf_counter() - started
    return {
        "run_id": config.run_id,
        "run_estimator": config.estimator,
        "seed": config.seed,
        "epoch": ckpt["epoch"],
        "checkpoint_sha256": digest,  # the weights these rows are of (readers check it)
        "probe": int(images.shape[0]),
        "draws": draws,
        "seconds": seconds,
        "flip_corr": rows[0]["flip_corr"] if rows else None,
        "estimators": [
            {"estimator": est.spec, **{k: v for k, v in row.items() if k != "flip_corr"}}
            for est, row in zip(estimators, rows, strict=True)
        ],
    }


def _check_integrity(folder: Path, doc: dict[str, Any]) -> None:
    """The folder's files must be the run's own: a config.json of this run, and where a
    summary.json exists, a valid one that vouches for checkpoint.pt (the rule every reader of
    the store follows: a corrupt cell's files are used for nothing).

    Raises:
        UserError: the folder is corrupt or its checkpoint is not the summarised one.
    """
    problem = st.config_problem(doc, folder.name)
    if problem is None and (folder / st.SUMMARY).exists():
        summary, problem = st.verify_summary(folder)
        unlisted = st.CHECKPOINT not in (summary or {}).get("files", {})
        if summary is not None and unlisted and (folder / st.CHECKPOINT).is_file():
            problem = f"summary.json does not list {st.CHECKPOINT}"
    if problem is not None:
        raise UserError(
            f"{folder} is corrupt ({problem}); `ste-ablate run` redoes the cell, gradcheck "
            "uses none of its files"
        )


def format_table(result: dict[str, Any]) -> str:
    """The result as a text table, one row per estimator (the run's own marked with *)."""
    flip = result["flip_corr"]
    lines = [
        f"run {result['run_id']} (estimator {result['run_estimator']}, epoch {result['epoch']}), "
        f"probe {result['probe']} test images, {result['draws']} noise draws, "
        f"{result['seconds']:.1f} s",
        f"flip_corr (Spearman of exact and first-order flip effects): "
        f"{'n/a' if flip is None else f'{flip:.3f}'}",
        "",
    ]
    width = max([len(row["estimator"]) for row in result["estimators"]] + [9]) + 2
    lines.append(f"{'estimator':<{width}}" + "".join(f"{h:>10}" for _, h in _COLUMNS))
    for row in result["estimators"]:
        own = "*" if row["estimator"] == result["run_estimator"] else " "
        cells = "".join(_cell(row.get(key)) for key, _ in _COLUMNS)
        lines.append(f"{row['estimator'] + own:<{width}}{cells}")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return f"{'-':>10}" if value is None else f"{value:>10.3f}"
