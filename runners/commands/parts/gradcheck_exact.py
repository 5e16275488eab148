"""`ste-ablate gradcheck RUN_DIR --exact`: stochastic estimators against the exact gradient.

On the run's weights and a fixed probe batch, the true gradient of the expected objective with
respect to the encoder (enumeration of every code when the latents are few, else the unbiased
local-expectation reference with its own error) is compared with many independent estimates of
each estimator: bias, variance, relative RMSE and cosine of the M-sample mean, per encoder layer
and in total, with bootstrap intervals (docs/gradients.md). Runs of a task with stochastic latents
(the Bernoulli VAE) take this path by default; the article's autoencoder takes it with --exact
(its code read as Bernoulli(σ(x)) latents). The JSON goes to RUN_DIR/gradcheck_exact.json (or
--out), the figure (error against M, log-log) beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from analysis.render.plots_gradients import gradient_error
from analysis.render.style import save
from runners.commands.parts.grid import at_least_one
from runners.config import RunConfig
from runners.errors import UserError
from runners.gradients.during import probe_batch
from runners.gradients.exact import MAX_ENUMERATED_BITS as MAX_BITS
from runners.gradients.exact import reference_generator, reference_gradient
from runners.gradients.measure import compare
from runners.gradients.problems import problem_for
from runners.store import format as st
from runners.store.checkpoint import load_checkpoint
from runners.store.format import atomic_write_json
from runners.tasks.lookup import get_task
from runners.training.device import resolve_device
from runners.training.diagnostics import eval_mode
from ste_variants import describe, get_estimator, list_estimators

STOCHASTIC_TASKS = frozenset({"bernoulli_vae"})  # tasks whose latents are sampled
SHOWN_MS = (1, 16, 256)
# Objective evaluations the reference may cost (the 12-latent VAE at 64 probe images: 262,144;
# the article's 512-bit code at 4 images and 1,024 draws: 2.1 million decodes of its decoder).
MAX_REFERENCE_EVALUATIONS = 20_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The exact path's options (on `ste-ablate gradcheck`)."""
    group = parser.add_argument_group("stochastic estimators against the exact gradient")
    group.add_argument(
        "--exact",
        action="store_true",
        help="measure bias and variance against the exact expected gradient (default for "
        "tasks with stochastic latents)",
    )
    group.add_argument(
        "--estimates",
        type=at_least_one("--estimates", "a number of estimates"),
        default=1024,
        metavar="R",
        help="independent estimates per estimator (default 1024)",
    )
    group.add_argument(
        "--max-bits",
        type=at_least_one("--max-bits", "a number of latent bits"),
        default=16,
        metavar="N",
        help="enumerate all codes up to N latents (default 16), else the local-expectation "
        "reference",
    )
    group.add_argument(
        "--reference-draws",
        type=at_least_one("--reference-draws", "a number of draws"),
        default=1024,
        metavar="S",
        help="draws of the local-expectation reference (default 1024)",
    )
    group.add_argument("--seed", type=int, default=0, help="noise and bootstrap seed (default 0)")
    group.add_argument(
        "--layer", default="total", help="layer shown in the table (default total; JSON: all)"
    )


def wanted(args: argparse.Namespace, folder: Path) -> bool:
    """Whether this run folder and these arguments take the exact path."""
    if args.exact:
        return True
    doc = st.read_config(folder)
    config = doc.get("config") if isinstance(doc, dict) else None
    return isinstance(config, dict) and config.get("task") in STOCHASTIC_TASKS


def run(args: argparse.Namespace) -> int:
    """Measure, write the JSON and the figure, print the table (or the JSON)."""
    folder = Path(args.run_dir)
    specs = split_specs(args.estimators) if args.estimators else None
    result = check_exact(
        folder,
        specs,
        probe=args.probe,
        estimates=args.estimates,
        max_bits=args.max_bits,
        reference_draws=args.reference_draws,
        seed=args.seed,
        device=args.device,
        data_root=args.data_root,
    )
    out = Path(args.out) if args.out else folder / st.GRADCHECK_EXACT
    atomic_write_json(out, result)
    figure = out.with_suffix(".png")
    write_figure(result, figure)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result, args.layer))
        print(f"\nwritten: {out}\nfigure:  {figure}")
    return 0


def check_exact(
    folder: Path,
    specs: list[str] | None,
    *,
    probe: int = 64,
    estimates: int = 1024,
    max_bits: int = 16,
    reference_draws: int = 1024,
    seed: int = 0,
    device: str = "cpu",
    data_root: str | None = None,
) -> dict[str, Any]:
    """Each estimator's bias, variance and error against the reference (a JSON-ready dict).

    Raises:
        UserError: no run, config or checkpoint there; a bad or unsuitable estimator.
    """
    if max_bits > MAX_BITS:
        raise UserError(f"--max-bits must be at most {MAX_BITS}, got {max_bits}")
    doc = st.read_config(folder)
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise UserError(f"{folder} holds no run (no readable {st.CONFIG})")
    config = RunConfig.from_dict(doc["config"])
    model, x, epoch = _load(folder, config, probe, device, data_root)
    if specs is None:
        specs = [s for s in list_estimators() if describe(s)["samples_from"] == "bernoulli"]
    estimators = [get_estimator(spec) for spec in specs]
    for estimator in estimators:
        estimator.set_progress(min(1.0, epoch / config.epochs))
    started = time.perf_counter()
    with eval_mode(model):
        problem = problem_for(model, x)
        count, bits = problem.logits.shape
        cost = count * (2**bits if bits <= max_bits else reference_draws * (bits + 1))
        if cost > MAX_REFERENCE_EVALUATIONS:
            raise UserError(
                f"the reference would evaluate the objective {cost:,} times ({bits} latents, "
                f"{count} probe examples): lower --probe or --reference-draws (at most "
                f"{MAX_REFERENCE_EVALUATIONS:,})"
            )
        ref = reference_gradient(
            problem.logits,
            problem.objective,
            max_bits=max_bits,
            draws=reference_draws,
            generator=reference_generator(seed),
        )
        reference_seconds = time.perf_counter() - started
        rows = compare(problem, ref, estimators, draws=estimates, seed=seed)
    return {
        "run_id": config.run_id,
        "run_estimator": config.estimator,
        "task": config.task,
        "seed": config.seed,
        "epoch": epoch,
        "probe": int(problem.logits.shape[0]),
        "latents": int(problem.logits.shape[1]),
        "reference": {
            "method": ref.method,
            "evaluations": ref.evaluations,
            "rel_stderr": 0.0 if ref.exact else ref.rel_stderr,
            "seconds": reference_seconds,
            "objective": float(ref.value.mean()),
        },
        "estimates": estimates,
        "noise_seed": seed,
        "seconds": time.perf_counter() - started,
        "estimators": rows,
    }


def _load(folder: Path, config: RunConfig, probe: int, device: str, data_root: str | None):
    """The run's model on its checkpoint, the probe batch and the checkpoint's epoch."""
    ckpt = load_checkpoint(folder, config.run_id)
    if ckpt is None:
        raise UserError(f"{folder} has no usable {st.CHECKPOINT}")
    resolved = resolve_device(device)
    if data_root:
        config = dataclasses.replace(config, data_root=data_root)
    task = get_task(config.task)
    data = task.prepare_data(config, resolved)
    model = task.build_model(config, resolved)
    x = probe_batch(model, data.test.images, probe)
    model.load_state_dict(ckpt["model"])
    return model, x, int(ckpt["epoch"])


def format_table(result: dict[str, Any], layer: str = "total") -> str:
    """One row per estimator for `layer`: bias, its p-value, variance, error and cosine at M."""
    ref = result["reference"]
    how = (
        "exact (enumeration)"
        if ref["method"] == "enumeration"
        else f"local expectation, own rel. error {ref['rel_stderr']:.3g}"
    )
    lines = [
        f"run {result['run_id']} (estimator {result['run_estimator']}, epoch {result['epoch']}): "
        f"{result['probe']} probe examples, {result['latents']} latents, reference {how}; "
        f"{result['estimates']} estimates per estimator, {result['seconds']:.1f} s",
        f"layer {layer}; bias and variance relative to ‖exact‖ (95% bootstrap intervals); "
        "rmse and cos of the mean of M estimates; evals per estimate",
        "",
    ]
    width = max([len(row["estimator"]) for row in result["estimators"]] + [9]) + 2
    head = f"{'estimator':<{width}}{'evals':>6}{'bias':>8}{'[95% CI]':>17}{'p(0)':>8}{'var':>10}"
    head += "".join(f"{f'rmse@{m}':>10}" for m in SHOWN_MS)
    head += "".join(f"{f'cos@{m}':>8}" for m in SHOWN_MS)
    lines.append(head)
    for row in result["estimators"]:
        s = row["layers"].get(layer)
        if s is None or s.get("bias") is None:
            lines.append(f"{row['estimator']:<{width}}  (no gradient in layer {layer})")
            continue
        by_m = {r["m"]: r for r in s["by_m"]}
        ci = f"[{s['bias_ci'][0]:.3f}, {s['bias_ci'][1]:.3f}]"
        cells = f"{row['evaluations']:>6}{s['bias']:>8.3f}{ci:>17}{s['bias_p']:>8.3f}"
        cells += f"{s['variance']:>10.3g}"
        cells += "".join(_num(by_m.get(float(m), {}).get("rel_rmse"), 10, ".3g") for m in SHOWN_MS)
        cells += "".join(_num(by_m.get(float(m), {}).get("cosine"), 8, ".3f") for m in SHOWN_MS)
        own = "*" if row["estimator"] == result["run_estimator"] else ""
        lines.append(f"{row['estimator'] + own:<{width}}{cells}")
    return "\n".join(lines)


def _num(value: float | None, width: int, fmt: str) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"


def write_figure(result: dict[str, Any], path: Path) -> None:
    """The error against M (log-log), one line per estimator, as a PNG (atomically)."""
    save(gradient_error(result), path.with_suffix(""), formats=("png",))


def split_specs(text: str) -> list[str]:
    """Split on commas outside parentheses ("gumbel(tau=0.5),disarm")."""
    specs, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            specs.append(current.strip())
            current = ""
        else:
            current += char
    specs.append(current.strip())
    specs = [s for s in specs if s]
    if not specs:
        raise UserError("--estimators lists no estimator")
    return specs
