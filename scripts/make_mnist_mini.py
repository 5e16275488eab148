"""Make `runners/data/mnist_mini.npz`, the small MNIST subset bundled with the package.

Selection (fixed, documented, reproducible):
- From full MNIST (torchvision layout, ROOT/MNIST/raw/*-idx?-ubyte), for each digit 0..9 in turn,
  draw a permutation of that digit's indices with `numpy.random.default_rng(SEED)` (one generator,
  used in this order: train digits 0..9, then test digits 0..9) and keep the first 600 train /
  100 test indices. The kept indices are sorted, so the subset keeps MNIST's own order; the
  training code shuffles anyway.
- Result: 6000 train images (600 per digit) and 1000 test images (100 per digit), uint8 28x28,
  labels uint8, and the source indices into MNIST (`train_index`, `test_index`) for checking.

The file is a zip of .npy arrays (what `numpy.load` reads) written with fixed timestamps, so the
same input gives the same bytes (numpy.savez_compressed stamps the current time into the zip).

Usage: python scripts/make_mnist_mini.py [--root DIR (default $STE_DATA_ROOT, else ../shared/datasets)] [--out runners/data/mnist_mini.npz]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np

SEED = 20240601
TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 100
MAX_BYTES = 2 * 1024 * 1024
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "runners" / "data" / "mnist_mini.npz"


def select(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """The first `per_class` of a random permutation of each digit's indices, sorted."""
    keep = []
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)
        keep.append(idx[rng.permutation(len(idx))[:per_class]])
    return np.sort(np.concatenate(keep))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> bytes:
    """Write a deflated .npz with fixed zip timestamps; returns the bytes written."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue(), compresslevel=9)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root",
        default=os.environ.get("STE_DATA_ROOT")
        or str(Path(__file__).resolve().parents[1].parent / "shared" / "datasets"),
        help="MNIST root (torchvision; default $STE_DATA_ROOT, else ../shared/datasets)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz")
    args = parser.parse_args()

    from torchvision.datasets import MNIST

    train = MNIST(args.root, train=True, download=False)
    test = MNIST(args.root, train=False, download=False)
    rng = np.random.default_rng(SEED)
    train_y = train.targets.numpy()
    test_y = test.targets.numpy()
    train_index = select(train_y, TRAIN_PER_CLASS, rng)
    test_index = select(test_y, TEST_PER_CLASS, rng)
    arrays = {
        "train_x": train.data.numpy()[train_index],
        "train_y": train_y[train_index].astype(np.uint8),
        "test_x": test.data.numpy()[test_index],
        "test_y": test_y[test_index].astype(np.uint8),
        "train_index": train_index.astype(np.int32),
        "test_index": test_index.astype(np.int32),
    }
    data = write_npz(args.out, arrays)
    if len(data) > MAX_BYTES:
        raise SystemExit(f"{args.out} is {len(data)} bytes, over the {MAX_BYTES} byte budget")
    digest = hashlib.sha256(data).hexdigest()
    print(f"wrote {args.out}: {len(data)} bytes, sha256 {digest}")
    for name, array in arrays.items():
        print(f"  {name}: {array.dtype} {array.shape}")


if __name__ == "__main__":
    main()
