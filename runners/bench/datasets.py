"""Which MNIST the benchmarks time on: `--dataset auto|mnist|mnist-mini`, decided once for the
article's benchmark (`runners.bench.main`) and the VAE's (`runners.bench.vae`)."""

from __future__ import annotations

from pathlib import Path

from runners.errors import UserError
from runners.training.data import mnist_available

BENCH_DATASETS = ("auto", "mnist", "mnist-mini")


def pick_dataset(data_root: str | None, dataset: str = "auto") -> tuple[str, Path | None]:
    """("mnist", its root) or ("mnist-mini", None) for `dataset`.

    "auto": full MNIST when present, else mnist-mini; "mnist": full MNIST, a `UserError` when
    absent; "mnist-mini": the bundled set, even where full MNIST is.
    """
    if dataset not in BENCH_DATASETS:
        raise UserError(f"dataset {dataset!r}: choose one of {', '.join(BENCH_DATASETS)}")
    root = mnist_available(data_root) if dataset != "mnist-mini" else None
    if root is not None:
        return "mnist", root
    if dataset == "mnist":
        raise UserError("the benchmark asked for full MNIST, but it is not here (see --data-root)")
    return "mnist-mini", None
