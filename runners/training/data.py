"""MNIST as uint8 tensors on the training device, and the seeded batch order.

The article feeds MNIST through a DataLoader with `ToTensor()` + `Normalize((0.5,), (0.5,))`.
Here the dataset is one uint8 tensor on the training device and a batch is an index_select
followed by the same float32 arithmetic, `(x / 255 - 0.5) / 0.5`, done on the device: the values
are bit-identical to the article's transforms (tested), with no DataLoader in the hot loop.
Batch order comes from `torch.randperm` on a CPU generator, so it does not depend on the device.

Datasets: "mnist" (torchvision's `datasets.MNIST`, from the data root) and "mnist-mini" (a
6000/1000-image balanced subset bundled in `runners/data/mnist_mini.npz`, made by
`scripts/make_mnist_mini.py`). Both are checked by checksum before use
(`runners.training.data_checks`). `train_subset`/`test_subset` take the first N images of a fixed,
seed-independent permutation of each split, so every seed and estimator sees the same subset.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from runners.config import DATASET_SIZES
from runners.errors import UserError
from runners.training.data_checks import check_mini, check_mnist

# Seeds of the fixed subset selections (not the run's seed: the subset is the same for all runs).
TRAIN_SELECTION_SEED = 1_000_003
TEST_SELECTION_SEED = 1_000_033
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class Split:
    """Images (N, 1, 28, 28) uint8, on the training device, and labels (N,) int64 on the CPU."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class RunData:
    """The train and test splits of one run."""

    train: Split
    test: Split


def resolve_data_root(data_root: str | os.PathLike[str] | None = None) -> Path:
    """`data_root`, else $STE_DATA_ROOT, else $XDG_CACHE_HOME (or ~/.cache)/ste-ablations/data."""
    if data_root:
        return Path(data_root).expanduser()
    env = os.environ.get("STE_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "ste-ablations" / "data"


def torchvision_root(folder: Path) -> Path:
    """The folder torchvision reads MNIST/raw/ under: `folder`, or the one above it when `folder`
    already is .../MNIST/raw (or .../MNIST holding raw/), as people often pass."""
    if folder.name == "raw" and folder.parent.name == "MNIST":
        return folder.parent.parent
    if folder.name == "MNIST" and (folder / "raw").is_dir():
        return folder.parent
    return folder


def mnist_available(data_root: str | os.PathLike[str] | None = None) -> Path | None:
    """The folder holding MNIST/raw/ with MNIST's four IDX files (`MNIST_FILES`), when all four
    are there: `data_root` resolved as a run resolves it (`resolve_data_root`, then
    `torchvision_root`); else None. Their contents are checked when they load (`check_mnist`)."""
    root = torchvision_root(resolve_data_root(data_root))
    raw = root / "MNIST" / "raw"
    return root if all((raw / name).is_file() for name in MNIST_FILES) else None


class MissingDataError(UserError):
    """MNIST's files are not where the run looks, and were not downloaded there.

    Attributes:
        folder: the MNIST/raw/ folder that lacks them.
    """

    def __init__(self, folder: Path, why: str | None = None) -> None:
        super().__init__(
            f"MNIST is not in {folder}{f' ({why})' if why else ''}. Put the four uncompressed "
            f"IDX files ({', '.join(MNIST_FILES)}) in {folder}, or pass --data-root DIR (or set "
            "STE_DATA_ROOT) to a folder holding MNIST/raw/; or use --dataset mnist-mini (bundled)."
        )
        self.folder = folder


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [-1, 1], the same arithmetic as ToTensor + Normalize(0.5, 0.5)."""
    return (images.to(torch.float32).div(255) - 0.5) / 0.5


def load_arrays(
    dataset: str, data_root: str | os.PathLike[str] | None = None, *, download: bool = True
) -> tuple[Split, Split]:
    """Whole train and test splits of `dataset` on the CPU (uint8 images, int64 labels).

    Full MNIST is read from ROOT/MNIST/raw/ (`resolve_data_root`; a root that already is
    .../MNIST/raw/ is taken as meant, `torchvision_root`), downloaded there first when missing
    and `download` is on.

    Raises:
        UserError: unknown dataset.
        MissingDataError: MNIST missing, and `download` off or the download failed.
    """
    if dataset == "mnist-mini":
        return _load_mini()
    if dataset == "mnist":
        return _load_mnist(str(torchvision_root(resolve_data_root(data_root))), download)
    raise UserError(f"unknown dataset {dataset!r} (choose from {', '.join(DATASET_SIZES)})")


def selection(n: int, seed: int) -> torch.Tensor:
    """The fixed order in which a split's images are taken (a seeded permutation of range(n))."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def prepare_data(
    dataset: str,
    train_subset: int | None,
    test_subset: int | None,
    device: torch.device | str,
    data_root: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
) -> RunData:
    """The run's train and test images on `device` (first N of the fixed selections)."""
    train, test = load_arrays(dataset, data_root, download=download)
    return RunData(
        train=_subset(train, train_subset, TRAIN_SELECTION_SEED, device, "train_subset"),
        test=_subset(test, test_subset, TEST_SELECTION_SEED, device, "test_subset"),
    )


def epoch_permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    """The order of one epoch's images: `torch.randperm` on a CPU generator (device independent)."""
    return torch.randperm(n, generator=generator)


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch of an epoch over n images; the last batch may be smaller.

    A last batch of a single image is dropped: BatchNorm cannot train on one image (the article's
    60000 / 64 leaves 32, so the article's recipe is unaffected).
    """
    bounds = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds.pop()
    return bounds


def get_batch(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Normalised float32 batch of `images` (uint8, on the device) at `index` (same device)."""
    return normalize(images.index_select(0, index))


def _subset(
    split: Split, size: int | None, seed: int, device: torch.device | str, name: str
) -> Split:
    n = len(split)
    if size is not None and size > n:
        raise UserError(f"{name} {size} exceeds the {n} images available")
    order = selection(n, seed)[: size or n]
    images = split.images.index_select(0, order).unsqueeze(1).contiguous()
    return Split(images=images.to(device), labels=split.labels.index_select(0, order))


@functools.lru_cache(maxsize=1)
def _load_mini() -> tuple[Split, Split]:
    path = resources.files("runners") / "data" / "mnist_mini.npz"
    with resources.as_file(path) as file:
        check_mini(file)
        with np.load(file) as arrays:
            return (
                Split(torch.from_numpy(arrays["train_x"].copy()), _labels(arrays["train_y"])),
                Split(torch.from_numpy(arrays["test_x"].copy()), _labels(arrays["test_y"])),
            )


def _labels(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.int64))


@functools.lru_cache(maxsize=2)
def _load_mnist(root: str, download: bool) -> tuple[Split, Split]:
    # torchvision is imported only for the full MNIST: it is heavy, and mnist-mini needs none.
    from torchvision.datasets import MNIST

    raw = Path(root) / "MNIST" / "raw"
    if not download and mnist_available(root) is None:
        raise MissingDataError(raw)
    created = [p for p in (Path(root), Path(root) / "MNIST", raw) if not p.exists()]
    try:
        # torchvision reports its download attempts on stdout; keep stdout for results.
        with contextlib.redirect_stdout(sys.stderr):
            train = MNIST(root, train=True, download=download)
            test = MNIST(root, train=False, download=download)
    except Exception as exc:
        for folder in reversed(created):  # leave no empty folders behind a failed download
            with contextlib.suppress(OSError):
                folder.rmdir()
        text = " ".join(str(exc).split())
        urlerror = re.search(r"<urlopen error ([^>]*)>", text)
        reason = f"download failed: {urlerror.group(1)}" if urlerror else text[:120]
        raise MissingDataError(raw, reason) from None
    check_mnist(raw)  # the files a run id means (data_checks: once per root)
    return (
        Split(train.data.contiguous(), train.targets.to(torch.int64)),
        Split(test.data.contiguous(), test.targets.to(torch.int64)),
    )
