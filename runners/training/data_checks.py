"""The datasets are the ones a run id names: MNIST's four files and mnist-mini, by checksum.

A run id hashes the config, not the data: a label file with 500 changed labels would train and
evaluate under the same id as the real MNIST. So the four uncompressed IDX files are checked
against MNIST's published checksums (the md5s below are those published for these files; the
sha256s were computed from files that match them), and the bundled mnist-mini against the
sha256 committed with it. A data root that passed is remembered by the files' identity (size,
modification and change times, inode) in the user's cache folder, so each root is hashed once
until one of its files changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from runners.errors import UserError

MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# runners/data/mnist_mini.npz as scripts/make_mnist_mini.py writes it.
MINI_SHA256 = "c66eabb477688b5201c9e4b595ce539c0d3ca59f2240b77b8041ecbe364d5095"
_CACHE_NAME = "verified-data.json"


def check_mnist(raw: Path) -> None:
    """Raise unless the four files in `raw` (MNIST/raw/) are MNIST's, by sha256.

    Raises:
        UserError: one line naming the first file that differs.
    """
    raw = Path(raw)
    key, stamp = str(raw.resolve()), _stamp(raw)
    if _read_cache().get(key) == stamp:
        return
    for name, digest in MNIST_SHA256.items():
        path = raw / name
        if _sha256(path) != digest:
            raise UserError(
                f"MNIST file {path} is not the published one (its checksum differs from md5 "
                f"{MNIST_MD5[name]}): runs on it would not be MNIST runs; put the original file "
                "there (or delete it to download it again)"
            )
    _remember(key, stamp)


def check_mini(path: Path) -> None:
    """Raise unless `path` is the bundled mnist-mini file as committed.

    Raises:
        UserError: the file's sha256 differs from MINI_SHA256.
    """
    if _sha256(path) != MINI_SHA256:
        raise UserError(
            f"the bundled mnist-mini file {path} differs from the committed one (sha256); "
            "restore it (git checkout runners/data/mnist_mini.npz)"
        )


def cache_file() -> Path:
    """Where checked data roots are remembered: $XDG_CACHE_HOME (or ~/.cache)/ste-ablations/."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "ste-ablations" / _CACHE_NAME


def _stamp(raw: Path) -> list[list[int]]:
    stamp = []
    for name in MNIST_SHA256:
        info = os.stat(raw / name)
        stamp.append([info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev])
    return stamp


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cache() -> dict[str, Any]:
    try:
        with open(cache_file(), encoding="utf-8") as handle:
            cache = json.load(handle)
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _remember(key: str, stamp: list[list[int]]) -> None:
    """Best effort: a cache that cannot be written means hashing again next time."""
    path = cache_file()
    cache = _read_cache()
    cache[key] = stamp
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.write_text(json.dumps(cache, sort_keys=True), encoding="utf-8")
        os.replace(temp, path)
    with contextlib.suppress(OSError):
        temp.unlink(missing_ok=True)
