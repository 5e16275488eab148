"""`ste-ablate bench`: the article's training loop against ours, same process, device and data.

Single-run mode alternates rounds of (a) the faithful copy of the article's loop in
benchmarks/article_loop.py (torchvision MNIST, per-image transforms, DataLoader, batch 64),
(b) ours as `train_run` trains (`runners.training.recipe`: `build_model`/`build_optimizer`/`EagerStep`
on device-resident uint8 data, with the fast path of `runners.training.kernels`: point-layer matmuls,
fused Adam) and (c) ours with plain nn layers and torch's default Adam, to show what the fast
path adds. Each reports training images/s, the ratio to the article and the share of the
device's fp32 ceiling, measured in the same run with a large matmul and converted at
`runners.bench.measure.flops_per_image()` FLOP per image (forward + backward).

Grid mode (`runners.bench.grid`) times N cells x E epochs: ours (stacked) against the article's
loop run once per cell. `runners.bench.report` formats the result.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from runners.bench.datasets import pick_dataset
from runners.bench.grid import run_grid
from runners.bench.loaded import measure_loaded
from runners.bench.measure import (
    device_name,
    flops_per_image,
    load_average,
    measure_ceiling,
    page_faults,
)
from runners.bench.ours import OursLoop
from runners.config import RunConfig
from runners.errors import UserError
from runners.training import kernels
from runners.training.data import load_arrays, normalize, prepare_data
from runners.training.device import resolve_device
from runners.training.diagnostics import epoch_diagnostics, probe_indices
from runners.training.process import torch_settings

# --------------------------------------------------------------------------- data, article loop


def article_module(path: str | os.PathLike[str] | None = None) -> tuple[ModuleType | None, str]:
    """Import benchmarks/article_loop.py from the source checkout; (module or None, where/why)."""
    if path is None:
        path = Path(__file__).resolve().parents[2] / "benchmarks" / "article_loop.py"
    path = Path(path)
    if not path.is_file():
        return None, (
            f"unavailable: {path} not found (the article's loop ships with the source "
            "checkout, not with the installed package)"
        )
    spec = importlib.util.spec_from_file_location("ste_bench_article_loop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module, str(path)


@contextlib.contextmanager
def bench_data(data_root: str | None, dataset: str = "auto") -> Iterator[tuple[str, str]]:
    """(dataset, torchvision root) for both loops; `dataset` as `pick_dataset` reads it.

    mnist-mini is written to a temporary folder as the four IDX files torchvision reads, so the
    article's loop reads it through its own unchanged `datasets.MNIST`.
    """
    name, root = pick_dataset(data_root, dataset)
    if root is not None:
        yield name, str(root)
        return
    train, test = load_arrays("mnist-mini")
    with tempfile.TemporaryDirectory(prefix="ste-bench-") as tmp:
        raw = Path(tmp) / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for split, prefix in ((train, "train"), (test, "t10k")):
            _write_idx(raw / f"{prefix}-images-idx3-ubyte", split.images.numpy(), 3)
            _write_idx(raw / f"{prefix}-labels-idx1-ubyte", split.labels.numpy(), 1)
        yield "mnist-mini", tmp


def _write_idx(path: Path, array: Any, dims: int) -> None:
    header = bytes([0, 0, 8, dims]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


# --------------------------------------------------------------------------- the benchmark


def run_bench(
    *,
    device: str = "auto",
    steps: int = 30,
    rounds: int = 3,
    warmup: int = 3,
    precision: str = "fp32",
    data_root: str | None = None,
    dataset: str = "auto",
    threads: int | None = None,
    article_path: str | None = None,
    grid: tuple[int, int] | None = None,
    stack: int | None = None,
    budget_s: float = 90.0,
    loaded: bool = True,
    diagnostics: bool = True,
    ceiling_s: float = 1.0,
    subsets: tuple[int | None, int | None] = (None, None),
    log: Any = None,
) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-ready result (see `runners.bench.report`).

    `dataset` picks the images (`bench_data`). `subsets` (train, test) shrinks the grid's cells
    (tests); the loops always see all images.
    `loaded` (CPU only) adds the "loaded" row: ours beside a second training process with as
    many threads (`runners.bench.loaded`). `diagnostics` False skips timing the gradient
    diagnostics and trains the grid's cells without them.
    """
    if steps < 1 or rounds < 1 or warmup < 0:
        raise UserError("--steps and --rounds must be >= 1")
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    resolved = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    article, where = article_module(article_path)
    result: dict[str, Any] = {
        "device": str(resolved),
        "device_name": device_name(resolved),
        "threads": torch.get_num_threads(),
        "load_average": load_average(),
        "torch": torch.__version__,
        "steps_per_round": steps,
        "rounds": rounds,
        "precision": precision,
        "article_loop": where,
    }
    log(f"bench on {result['device_name']}: measuring the fp32 matmul ceiling")
    ceiling = measure_ceiling(resolved, ceiling_s)
    gflop = flops_per_image() / 1e9
    result.update(
        ceiling_gflops=ceiling, gflop_per_image=gflop, ceiling_images_per_s=ceiling / gflop
    )
    with bench_data(data_root, dataset) as (dataset, root):
        config = RunConfig(dataset=dataset, device=str(resolved), precision=precision,
                           data_root=root if dataset == "mnist" else None)  # fmt: skip
        data = prepare_data(dataset, None, None, resolved, config.data_root)
        result.update(dataset=dataset, train_images=len(data.train))
        result["malloc_tuned_before"] = kernels.malloc_tuned()  # e.g. an earlier run here
        with kernels.defer_malloc_tuning():  # first as the article's script runs: glibc defaults
            loops: dict[str, Any] = {}
            if article is not None:
                loops["article"] = article.ArticleLoop(str(resolved), root)
            loops["ours, plain layers"] = OursLoop(config, data, resolved, plain=True)
            loops["ours"] = OursLoop(config, data, resolved)
            log(f"alternating {', '.join(loops)}: {rounds} rounds of {steps} steps on {dataset}")
            table = _loop_table(_alternate(loops, steps, rounds, warmup), ceiling / gflop)
        if resolved.type == "cpu" and kernels.tune_cpu_malloc():
            # Process-wide and irreversible, so measured after the rest, interleaved again.
            tuned = {
                f"{name}, malloc tuned": loops[name]
                for name in ("article", "ours")
                if name in loops
            }
            log(
                "tuned glibc malloc (runners.training.kernels.tune_cpu_malloc); "
                f"alternating {', '.join(tuned)}"
            )
            base = table.get("article", {}).get("images_per_s")
            second = _loop_table(_alternate(tuned, steps, rounds, 1), ceiling / gflop, base)
            if "article, malloc tuned" in second:
                same = second["article, malloc tuned"]["images_per_s"]
                for row in second.values():
                    row["vs_article_same_malloc"] = row["images_per_s"] / same
            table.update(second)
        result["loops"] = table
        if diagnostics and "ours" in loops:
            log("timing the gradient diagnostics at the default probe size")
            # Against our latest row (malloc tuned on the CPU), as train_run trains.
            ours = table.get("ours, malloc tuned") or table["ours"]
            result["diagnostics"] = diagnostics_cost(loops["ours"], ours["images_per_s"])
        if loaded and resolved.type == "cpu":
            threads = torch.get_num_threads()
            log(f"ours quiet, then beside a second training process with {threads} threads")
            result["loaded"] = measure_loaded(loops["ours"], steps, rounds, threads)
        if grid is not None:
            cells = config.replace(train_subset=subsets[0], test_subset=subsets[1])
            if not diagnostics:
                cells = cells.replace(diagnostics="off")
            if subsets != (None, None):
                data = prepare_data(dataset, *subsets, resolved, config.data_root)
            result["grid"] = run_grid(
                grid, stack, cells, data, resolved, result["loops"], budget_s, log
            )
    return result


def diagnostics_cost(loop: OursLoop, images_per_s: float, repeats: int = 2) -> dict[str, Any]:
    """Seconds of one epoch's gradient diagnostics (the config's probe size, best of `repeats`)
    on the loop's model, against one epoch of training at `images_per_s` in this process."""
    test = loop.data.test.images
    size = loop.config.diagnostics_probe
    probe = normalize(test[probe_indices(len(test), size).to(test.device)])
    times = []
    with torch_settings(loop.config, loop.device):
        for _ in range(repeats):
            start = time.perf_counter()
            epoch_diagnostics(loop.model, probe)
            times.append(time.perf_counter() - start)
    epoch_s = len(loop.data.train) / images_per_s
    seconds = min(times)
    return {"probe": size, "seconds": seconds, "epoch_seconds": epoch_s, "share": seconds / epoch_s}


def _alternate(loops: dict[str, Any], steps: int, rounds: int, warmup: int) -> dict[str, list]:
    """Seconds per round for each loop, the loops interleaved round by round."""
    for loop in loops.values():
        if warmup:
            loop.steps(warmup)
    times: dict[str, list[tuple[float, int, int]]] = {name: [] for name in loops}
    for _ in range(rounds):
        for name, loop in loops.items():
            before, faults = loop.images, page_faults()
            seconds = loop.steps(steps)
            times[name].append((seconds, loop.images - before, page_faults() - faults))
    return times


def _loop_table(
    times: dict[str, list], ceiling_ips: float, base: float | None = None
) -> dict[str, Any]:
    """Median / spread of images/s per loop; `vs_article` against `base` (else this article)."""
    table = {}
    for name, rows in times.items():
        rates = [images / seconds for seconds, images, _ in rows]
        faults = sum(f for _, _, f in rows) / max(1, sum(images for _, images, _ in rows)) * 64
        table[name] = {
            "page_faults_per_64_images": faults,
            "images_per_s": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "rounds": rates,
            "share_of_ceiling": statistics.median(rates) / ceiling_ips,
        }
    if base is None and "article" in table:
        base = table["article"]["images_per_s"]
    for row in table.values():
        row["vs_article"] = row["images_per_s"] / base if base else None
    return table
