"""Grid mode of `ste-ablate bench`: N cells x E epochs, ours (stacked) against the article's loop.

The article's loop trains one cell after another, so its grid time is N·E epochs at the images/s
measured in the same process (training only: the article evaluates nothing per epoch). Ours is
the real thing, `runners.engine.train.train_runs` into a temporary store (evaluation, code
statistics, probe, checkpoints and figures included), when its estimate fits the budget; else it
is extrapolated from measured stacked steps plus one measured evaluation, and marked so.
"""

from __future__ import annotations

import math
import tempfile
import time
from typing import Any

import torch

from runners.bench.ours import OursLoop
from runners.config import RunConfig
from runners.engine.loop import step_mode
from runners.engine.train import train_run, train_runs
from runners.speed.stack_size import decide_stack
from runners.tasks.lookup import get_task
from runners.training.data import batch_bounds
from runners.training.evaluate import evaluate
from runners.training.metrics import code_stats

GRID_ESTIMATORS = ("hardtanh", "identity", "saturated", "sigmoid")  # the four required names
MEASURED_STEPS = 5


def grid_configs(config: RunConfig, cells: int, epochs: int, stack: int) -> list[RunConfig]:
    """The bench grid: the four required estimators, then the next seed, and so on."""
    return [
        config.replace(
            estimator=GRID_ESTIMATORS[i % len(GRID_ESTIMATORS)],
            seed=i // len(GRID_ESTIMATORS),
            epochs=epochs,
            stack=stack,
        )
        for i in range(cells)
    ]


def run_grid(
    grid: tuple[int, int],
    stack: int | None,
    config: RunConfig,
    data: Any,
    device: torch.device,
    loops: dict[str, Any],
    budget_s: float,
    log: Any,
) -> dict[str, Any]:
    """Time the grid; returns a JSON-ready dict (see `runners.bench.report.format_grid`)."""
    cells, epochs = grid
    k = max(1, min(decide_stack(stack or None, None, device.type, cells).size, cells))
    configs = grid_configs(config, cells, epochs, k)
    n_train = len(data.train)
    steps_per_epoch = len(batch_bounds(n_train, config.batch_size))
    mode = step_mode(None, device, k > 1, get_task(config.task))  # as train_runs steps them
    out: dict[str, Any] = {"cells": cells, "epochs": epochs, "stack": k, "mode": mode}
    article = loops.get("article")
    if article is not None:
        out["article_s"] = cells * epochs * n_train / article["images_per_s"]
        out["article_how"] = "extrapolated from the measured images/s (one cell after another)"
    log(f"grid: measuring {MEASURED_STEPS} stacked steps of {k} members ({mode})")
    step_s, eval_s = _measure(configs[:k], data, device, mode)
    stacks = math.ceil(cells / k)
    estimate = stacks * epochs * steps_per_epoch * step_s + cells * epochs * eval_s
    out.update(stacked_step_s=step_s, eval_s=eval_s, ours_estimate_s=estimate)
    if estimate <= budget_s:
        log(f"grid: training {cells} cells x {epochs} epochs for real (estimate {estimate:.0f} s)")
        out["ours_s"] = _real_grid(configs, k)
        out["ours_how"] = "measured (train_runs, evaluation and store writes included)"
    else:
        out["ours_s"] = estimate
        out["ours_how"] = (
            f"extrapolated ({estimate:.0f} s > budget {budget_s:.0f} s) from {MEASURED_STEPS} "
            "measured stacked steps and one measured evaluation"
        )
    if article is not None:
        out["speedup"] = out["article_s"] / out["ours_s"]
    out["ours_images_per_s"] = cells * epochs * n_train / out["ours_s"]
    return out


def _measure(
    configs: list[RunConfig], data: Any, device: torch.device, mode: str
) -> tuple[float, float]:
    """(seconds per stacked step, seconds per evaluation of one member): the stack's steps
    through the engine's batch loop (`OursLoop`), read back after each."""
    loop = OursLoop(configs, data, device, mode=mode)
    loop.steps(2)  # warm-up
    times = [loop.steps(1) for _ in range(MEASURED_STEPS)]
    model = loop.unload()[0].eval()
    started = time.perf_counter()
    result = evaluate(model, data.test.images, configs[0].precision)
    code_stats(result.codes, None)
    eval_s = time.perf_counter() - started
    return sorted(times)[len(times) // 2], eval_s


def _real_grid(configs: list[RunConfig], k: int) -> float:
    with tempfile.TemporaryDirectory(prefix="ste-bench-store-") as store:
        started = time.perf_counter()
        for first in range(0, len(configs), k):
            group = configs[first : first + k]
            if len(group) == 1:
                train_run(group[0], store, progress=False)
            else:
                train_runs(group, store, progress=False)
        return time.perf_counter() - started
