"""The run store: one folder per run, the source of truth for everything downstream.

Layout (docs/architecture.md section 3)::

    STORE/runs/<run_id>/config.json  metrics.jsonl  steps.jsonl  summary.json
                        reconstruction.png  checkpoint.pt  .lock

This module owns the paths, the reading and validation of those files (a file that does not parse,
or whose sha256 differs from the one recorded in summary.json, is corrupt and its cell is rerun),
the derived cell state, the checkpoint files and the per-cell lock.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import os
import platform
import subprocess
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners.store.atomic import atomic_torch_save, atomic_write_json, read_json, sha256_file

CONFIG = "config.json"
METRICS = "metrics.jsonl"
STEPS = "steps.jsonl"
SUMMARY = "summary.json"
FIGURE = "reconstruction.png"
CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"

FINAL_STATES = ("completed", "diverged")  # never retrained
SUMMARY_STATES = ("completed", "failed", "diverged", "interrupted")
CELL_STATES = (*SUMMARY_STATES, "running", "missing")
SUMMARY_KEYS = (
    "run_id",
    "status",
    "epochs_done",
    "test_mse",
    "test_psnr",
    "bit_entropy",
    "dead_bits",
    "probe_accuracy",
    "wall_time_s",
    "images_per_s",
    "error",
    "files",
)
CHECKPOINT_FORMAT = 1


def runs_root(store: str | os.PathLike[str]) -> Path:
    """STORE/runs."""
    return Path(store) / "runs"


def run_dir(store: str | os.PathLike[str], run_id: str) -> Path:
    """STORE/runs/<run_id>."""
    return runs_root(store) / run_id


# ----------------------------------------------------------------------------- config.json


def environment_versions() -> dict[str, str]:
    """Versions of Python and of the packages a result depends on."""
    import numpy
    import torch

    import runners

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "ste_ablations": runners.__version__,
    }
    with contextlib.suppress(ImportError):
        import torchvision

        versions["torchvision"] = torchvision.__version__
    return versions


def _git(*args: str) -> str | None:
    source = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(source), *args], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_commit() -> str | None:
    """The git commit of the package's source tree (None outside a git checkout)."""
    return _git("rev-parse", "HEAD") or None


def git_dirty() -> bool | None:
    """Whether tracked files differ from that commit (None outside a git checkout)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def write_config(
    folder: Path, run_id: str, config: dict[str, Any], runtime: dict[str, Any]
) -> None:
    """Write config.json: the resolved config, versions, git commit, creation time, runtime."""
    atomic_write_json(
        folder / CONFIG,
        {
            "run_id": run_id,
            "config": config,
            "versions": environment_versions(),
            "git_commit": git_commit(),
            "git_dirty": git_dirty(),
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "runtime": runtime,
        },
    )


def read_config(folder: Path) -> dict[str, Any] | None:
    """config.json's content, or None when missing or unreadable."""
    try:
        data = read_json(folder / CONFIG)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "config" in data else None


# ----------------------------------------------------------------------------- summary.json


def file_hashes(folder: Path, names: tuple[str, ...] | None = None) -> dict[str, str]:
    """sha256 of the run's files that exist (all store files except summary.json and .lock)."""
    names = names or (CONFIG, METRICS, STEPS, FIGURE, CHECKPOINT)
    return {name: sha256_file(folder / name) for name in names if (folder / name).is_file()}


def verify_summary(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Read and check summary.json and the files it lists.

    Returns:
        (summary, None) when valid; (None, reason) when missing or corrupt (the cell must rerun).
    """
    path = folder / SUMMARY
    if not path.is_file():
        return None, "no summary.json"
    try:
        summary = read_json(path)
    except (OSError, ValueError) as exc:
        return None, f"summary.json does not parse: {exc}"
    if not isinstance(summary, dict):
        return None, "summary.json is not an object"
    missing = [key for key in SUMMARY_KEYS if key not in summary]
    if missing:
        return None, f"summary.json lacks {', '.join(missing)}"
    if summary["status"] not in SUMMARY_STATES:
        return None, f"summary.json has an unknown status {summary['status']!r}"
    if summary["run_id"] != folder.name:
        return None, f"summary.json belongs to {summary['run_id']!r}, not {folder.name!r}"
    files = summary["files"]
    if not isinstance(files, dict):
        return None, "summary.json's files is not an object"
    for name, digest in files.items():
        target = folder / name
        if not target.is_file():
            return None, f"{name} is missing"
        if sha256_file(target) != digest:
            return None, f"{name} differs from its sha256 in summary.json"
    if summary["status"] == "completed":
        for name in (CONFIG, METRICS, STEPS, FIGURE):
            if name not in files:
                return None, f"a completed run must list {name}"
    return summary, None


# ----------------------------------------------------------------------------- cell state


@dataclass(frozen=True)
class CellInfo:
    """The derived state of one cell, with its summary when valid and the reason when not."""

    state: str
    summary: dict[str, Any] | None
    problem: str | None


def cell_info(folder: str | os.PathLike[str]) -> CellInfo:
    """Derive a cell's state from its folder.

    `completed`/`diverged`/`failed`/`interrupted` from a valid summary.json; `running` while a
    process holds the lock; `interrupted` when work exists (config or checkpoint) but the summary is
    missing or corrupt (so the next run resumes or redoes it); `missing` otherwise.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return CellInfo("missing", None, None)
    if lock_held(folder):
        return CellInfo("running", None, None)
    summary, problem = verify_summary(folder)
    if summary is not None:
        return CellInfo(summary["status"], summary, None)
    if (folder / CHECKPOINT).is_file() or (folder / CONFIG).is_file():
        return CellInfo("interrupted", None, problem)
    return CellInfo("missing", None, problem)


def cell_state(folder: str | os.PathLike[str]) -> str:
    """One of CELL_STATES (see `cell_info`)."""
    return cell_info(folder).state


# ----------------------------------------------------------------------------- checkpoint


def save_checkpoint(folder: Path, payload: dict[str, Any]) -> None:
    """Write checkpoint.pt atomically (payload: plain dicts, lists, numbers and tensors)."""
    atomic_torch_save(folder / CHECKPOINT, {"format": CHECKPOINT_FORMAT, **payload})


def load_checkpoint(folder: Path, run_id: str) -> dict[str, Any] | None:
    """Load checkpoint.pt; None (with a warning) when absent, corrupt, truncated or foreign."""
    import torch

    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("unknown checkpoint format")
        if payload.get("run_id") != run_id:
            raise ValueError(f"checkpoint belongs to {payload.get('run_id')!r}")
    except Exception as exc:  # a torn zip, a pickle error, a wrong payload: all mean "not usable"
        warnings.warn(
            f"ignoring unusable checkpoint {path} ({type(exc).__name__}: {exc}); "
            "starting this run from scratch",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return payload


# ----------------------------------------------------------------------------- lock

_HELD: dict[str, list[Any]] = {}  # realpath of .lock -> [open file, depth]
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def cell_lock(folder: str | os.PathLike[str]) -> Iterator[Path | None]:
    """Hold the cell's fcntl lock for the `with` block, without waiting.

    Yields the lock file's path when acquired, or None when another process (or another open of
    the file) already holds it: the caller must then leave the cell alone. Re-entrant within one
    process, so an executor may hold the lock while `train_run` takes it again. Creates the cell's
    folder. The lock dies with the process (also on kill -9).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    key = os.path.realpath(path)
    with _HELD_GUARD:
        acquired = _acquire(path, key)
    if not acquired:
        yield None
        return
    try:
        yield path
    finally:
        with _HELD_GUARD:
            entry = _HELD[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _HELD[key]
                fcntl.flock(entry[0].fileno(), fcntl.LOCK_UN)
                entry[0].close()


def _acquire(path: Path, key: str) -> bool:
    held = _HELD.get(key)
    if held is not None:
        held[1] += 1
        return True
    handle = open(path, "a+b")  # noqa: SIM115 - stays open while the lock is held
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    _HELD[key] = [handle, 1]
    return True


def lock_held(folder: str | os.PathLike[str]) -> bool:
    """Whether some process (this one included) holds the cell's lock. Creates nothing."""
    path = Path(folder) / LOCK
    if os.path.realpath(path) in _HELD:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
