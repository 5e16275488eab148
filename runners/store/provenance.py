"""config.json: the resolved config written next to every result, with what produced it.

Besides the config: the versions of Python and of the packages a result depends on, the git commit
of the source tree (and whether it had local changes), the creation time and the runtime facts
(device, threads) the run was given.
"""

from __future__ import annotations

import contextlib
import datetime
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy
import torch

import runners
from runners.store.format import CONFIG, atomic_write_json


def environment_versions() -> dict[str, str]:
    """Versions of Python and of the packages a result depends on."""
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "ste_ablations": runners.__version__,
    }
    with contextlib.suppress(ImportError):
        import torchvision  # optional dependency

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
