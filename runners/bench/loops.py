"""`ste-ablate bench`: the article's training loop against ours, same process, device and data.

Single-run mode alternates rounds of (a) the faithful copy of the article's loop in
benchmarks/article_loop.py (torchvision MNIST, per-image transforms, DataLoader, batch 64),
(b) ours as `train_run` trains (`runners.training.run.build_model`/`build_optimizer`/`train_step` on
device-resident uint8 data, with the fast path of `runners.speed.layers`: point-layer matmuls, fused
Adam) and (c) ours with plain nn layers and torch's default Adam, to show what the fast path
adds. Each reports training images/s, the
ratio to the article and the share of the device's fp32 ceiling, measured in the same run with
a large matmul and converted at `flops_per_image()` FLOP per image (forward + backward).

Grid mode times N cells x E epochs: ours (stacked, `runners.training.stacked`) against the article's loop
run once per cell. A grid that would take longer than the budget is extrapolated from measured
steps, and the output says so.
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

import torch

from runners.config import RunConfig
from runners.errors import UserError

GRID_ESTIMATORS = ("hardtanh", "identity", "saturated", "sigmoid")  # the four required names


# --------------------------------------------------------------------------- FLOPs, ceiling


def conv_macs(model: torch.nn.Module, shape: tuple[int, ...] = (1, 1, 28, 28)) -> int:
    """Multiply-accumulates of the model's (transposed) convolutions for one input of `shape`.

    Conventions: a Conv2d costs out_elements · (Cin/groups) · kh · kw; a ConvTranspose2d costs
    in_elements · (Cout/groups) · kh · kw (every input element meets the whole kernel, also the
    part its padding crops later). BatchNorm, activations and the loss are not counted.
    """
    total = 0

    def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        if isinstance(module, torch.nn.ConvTranspose2d):
            per = module.out_channels // module.groups * kh * kw
            total += inputs[0].numel() * per
        else:
            total += out.numel() * (module.in_channels // module.groups) * kh * kw

    convs = [
        m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            model(torch.zeros(shape, device=next(model.parameters()).device))
            model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return total


def flops_per_image(model: torch.nn.Module | None = None) -> float:
    """Training FLOP per image: 2 · MACs forward, times 3 for forward + backward (input and
    weight gradients). The article's model: 30.7M MACs, 0.184 GFLOP."""
    if model is None:
        from runners.training.model import BinaryAutoencoder

        model = BinaryAutoencoder()
    return 3 * 2 * conv_macs(model)


def measure_ceiling(device: torch.device, seconds: float = 1.0, size: int | None = None) -> float:
    """Best fp32 GFLOP/s of a square matmul on `device` over ~`seconds` (TF32 off on CUDA)."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    with _tf32(False):
        a @ b  # warm-up (kernel choice, memory)
        best, end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            start, count = time.perf_counter(), 0
            while count < 3 or time.perf_counter() - start < seconds / 4:
                a @ b
                count += 1
                _sync(device)
            best = max(best, 2 * size**3 * count / (time.perf_counter() - start) / 1e9)
    return best


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
def bench_data(data_root: str | None) -> Iterator[tuple[str, str]]:
    """(dataset, torchvision root) for both loops: full MNIST when present, else mnist-mini.

    mnist-mini is written to a temporary folder as the four IDX files torchvision reads, so the
    article's loop reads it through its own unchanged `datasets.MNIST`.
    """
    from runners.training.data import MNIST_FILES, resolve_data_root

    root = resolve_data_root(data_root)
    if all((root / "MNIST" / "raw" / name).is_file() for name in MNIST_FILES):
        yield "mnist", str(root)
        return
    from runners.training.data import load_arrays

    train, test = load_arrays("mnist-mini")
    with tempfile.TemporaryDirectory(prefix="ste-bench-") as tmp:
        raw = Path(tmp) / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for split, prefix in ((train, "train"), (test, "t10k")):
            _write_idx(raw / f"{prefix}-images-idx3-ubyte", split.images.numpy(), 3)
            _write_idx(raw / f"{prefix}-labels-idx1-ubyte", split.labels.numpy(), 1)
        yield "mnist-mini", tmp


def _write_idx(path: Path, array: Any, dims: int) -> None:
    import numpy as np

    header = bytes([0, 0, 8, dims]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


# --------------------------------------------------------------------------- our loop


class OursLoop:
    """Our hot loop as `train_run` runs it, a chunk of steps at a time (for alternation).

    Args:
        config: the run (dataset, device, precision...).
        data: `runners.training.data.RunData` on the device.
        plain: without the fast path of `runners.speed.layers` (plain nn layers, torch's default Adam):
            the reference row that shows what the fast path adds.
    """

    def __init__(
        self, config: RunConfig, data: Any, device: torch.device, plain: bool = False
    ) -> None:
        from runners.training.data import batch_bounds
        from runners.training.recipe import build_model, build_optimizer, derive_seed

        self.config, self.data, self.device = config, data, device
        self.model = build_model(config, device, fast=not plain)
        self.optimizer = build_optimizer(config, self.model, fast=not plain)
        self.generator = torch.Generator().manual_seed(derive_seed(config.seed, "data"))
        self.bounds = batch_bounds(len(data.train), config.batch_size)
        self.position, self.order = len(self.bounds), None
        self.images = 0

    def steps(self, n: int) -> float:
        """Train n steps; the wall time in seconds (ends with a device sync)."""
        from runners.training.data import epoch_permutation, get_batch
        from runners.training.recipe import EagerStep
        from runners.training.session import torch_settings

        images = self.data.train.images
        config, device = self.config, self.device
        step = EagerStep(self.model, self.optimizer, device=device, precision=config.precision)
        with torch_settings(self.config, self.device):
            start = time.perf_counter()
            for _ in range(n):
                if self.position == len(self.bounds):
                    order = epoch_permutation(len(self.data.train), self.generator)
                    self.order, self.position = order.to(self.device), 0
                begin, end = self.bounds[self.position]
                self.position += 1
                x = get_batch(images, self.order[begin:end])
                loss, _ = step(x)
                self.images += end - begin
            loss.item()
            return time.perf_counter() - start


# --------------------------------------------------------------------------- the benchmark


def run_bench(
    *,
    device: str = "auto",
    steps: int = 30,
    rounds: int = 3,
    warmup: int = 3,
    precision: str = "fp32",
    data_root: str | None = None,
    threads: int | None = None,
    article_path: str | None = None,
    grid: tuple[int, int] | None = None,
    stack: int | None = None,
    budget_s: float = 90.0,
    ceiling_s: float = 1.0,
    subsets: tuple[int | None, int | None] = (None, None),
    log: Any = None,
) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-ready result (see `format_report`).

    `subsets` (train, test) shrinks the grid's cells (tests); the loops always see all images.
    """
    from runners.training.data import prepare_data
    from runners.training.session import resolve_device

    if steps < 1 or rounds < 1 or warmup < 0:
        raise UserError("--steps and --rounds must be >= 1")
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    resolved = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    article, where = article_module(article_path)
    result: dict[str, Any] = {
        "device": str(resolved),
        "device_name": _device_name(resolved),
        "threads": torch.get_num_threads(),
        "load_average": _load_average(),
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
    with bench_data(data_root) as (dataset, root):
        config = RunConfig(dataset=dataset, device=str(resolved), precision=precision,
                           data_root=root if dataset == "mnist" else None)  # fmt: skip
        data = prepare_data(dataset, None, None, resolved, config.data_root)
        result.update(dataset=dataset, train_images=len(data.train))
        from runners.speed import layers as fast

        result["malloc_tuned_before"] = fast.malloc_tuned() is True  # e.g. an earlier run here
        with fast.defer_malloc_tuning():  # first as the article's script runs: glibc defaults
            loops: dict[str, Any] = {}
            if article is not None:
                loops["article"] = article.ArticleLoop(str(resolved), root)
            loops["ours, plain layers"] = OursLoop(config, data, resolved, plain=True)
            loops["ours"] = OursLoop(config, data, resolved)
            log(f"alternating {', '.join(loops)}: {rounds} rounds of {steps} steps on {dataset}")
            table = _loop_table(_alternate(loops, steps, rounds, warmup), ceiling / gflop)
        if resolved.type == "cpu" and fast.tune_cpu_malloc():
            # Process-wide and irreversible, so measured after the rest, interleaved again.
            tuned = {
                f"{name}, malloc tuned": loops[name]
                for name in ("article", "ours")
                if name in loops
            }
            log(
                f"tuned glibc malloc (runners.speed.layers.tune_cpu_malloc); alternating {', '.join(tuned)}"
            )
            base = table.get("article", {}).get("images_per_s")
            second = _loop_table(_alternate(tuned, steps, rounds, 1), ceiling / gflop, base)
            if "article, malloc tuned" in second:
                same = second["article, malloc tuned"]["images_per_s"]
                for row in second.values():
                    row["vs_article_same_malloc"] = row["images_per_s"] / same
            table.update(second)
        result["loops"] = table
        if grid is not None:
            from runners.bench.grid import run_grid

            cells = config.replace(train_subset=subsets[0], test_subset=subsets[1])
            if subsets != (None, None):
                data = prepare_data(dataset, *subsets, resolved, config.data_root)
            result["grid"] = run_grid(
                grid, stack, cells, data, resolved, result["loops"], budget_s, log
            )
    return result


def _alternate(loops: dict[str, Any], steps: int, rounds: int, warmup: int) -> dict[str, list]:
    """Seconds per round for each loop, the loops interleaved round by round."""
    for loop in loops.values():
        if warmup:
            loop.steps(warmup)
    times: dict[str, list[tuple[float, int, int]]] = {name: [] for name in loops}
    for _ in range(rounds):
        for name, loop in loops.items():
            before, faults = loop.images, _page_faults()
            seconds = loop.steps(steps)
            times[name].append((seconds, loop.images - before, _page_faults() - faults))
    return times


def _page_faults() -> int:
    """Minor page faults of this process so far (0 where getrusage is missing)."""
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    except (ImportError, OSError):
        return 0


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


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return f"cpu ({os.cpu_count()} CPUs)"


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------- report


def format_report(result: dict[str, Any]) -> str:
    """The human-readable tables of a `run_bench` result."""
    load = result.get("load_average")
    lines = [
        f"device {result['device']} ({result['device_name']}), {result['threads']} threads, "
        f"torch {result['torch']}, load average {' '.join(map(str, load)) if load else 'n/a'}",
        f"data: {result['dataset']} ({result['train_images']} training images), "
        f"{result['precision']}, {result['rounds']} rounds x {result['steps_per_round']} steps "
        "per loop, interleaved",
        f"fp32 ceiling: {result['ceiling_gflops']:.0f} GFLOP/s (matmul) = "
        f"{result['ceiling_images_per_s']:.0f} images/s at {result['gflop_per_image']:.3f} "
        "GFLOP/image (forward + backward)",
        f"article loop: {result['article_loop']}",
        "",
        f"{'loop':<24} {'images/s':>9} {'min-max':>15} {'vs article':>11} {'of ceiling':>11} "
        f"{'page faults/step':>17}",
    ]
    for name, row in sorted(result["loops"].items(), key=lambda item: _row_order(item[0])):
        ratio = f"{row['vs_article']:.2f}x" if row["vs_article"] else "n/a"
        spread = f"{row['min']:.0f}-{row['max']:.0f}"
        lines.append(
            f"{name:<24} {row['images_per_s']:>9.0f} {spread:>15} {ratio:>11} "
            f"{row['share_of_ceiling']:>10.0%} {row.get('page_faults_per_64_images', 0):>17.0f}"
        )
    tuned = [row for name, row in result["loops"].items() if name.endswith("malloc tuned")]
    if tuned and "vs_article_same_malloc" in tuned[-1]:
        lines.append(
            "  (malloc tuned: after runners.speed.layers.tune_cpu_malloc(), run after the rows above; "
            f"vs the article with the same malloc: {tuned[-1]['vs_article_same_malloc']:.2f}x)"
        )
    if result.get("malloc_tuned_before"):
        lines.append("  (malloc was already tuned in this process: every row ran tuned)")
    grid = result.get("grid")
    if grid:
        from runners.bench.grid import format_grid

        lines += ["", *format_grid(grid)]
    return "\n".join(lines)


def _row_order(name: str) -> tuple[bool, int, str]:
    """Report rows: the article, ours with plain layers, ours; the malloc-tuned rows after."""
    base = name.removesuffix(", malloc tuned")
    known = ("article", "ours, plain layers", "ours")
    return name != base, known.index(base) if base in known else len(known), name
