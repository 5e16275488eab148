"""Shared fixtures: tiny CPU run configs on the bundled mnist-mini, and one finished run."""

from __future__ import annotations

# Before anything imports torch: the suite trains in portable mode (the default), whose kernels
# are chosen when torch loads. Subprocesses inherit the pins.
from runners import determinism  # isort: skip
from runners.openmp import prefer_passive_wait  # isort: skip

determinism.pin("portable")
# The suite runs in two pytest-xdist processes on two cores: OpenMP threads that spin while they
# wait (the default) would take the cores from the other process's work. How idle threads wait
# never changes results (runners/openmp.py); the CLI sets the same.
prefer_passive_wait()

import shutil  # noqa: E402
import subprocess  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from runners.config import RunConfig  # noqa: E402
from runners.engine.train import train_run  # noqa: E402
from runners.store.format import run_dir  # noqa: E402

# Small enough for a 2-core CPU (4 steps of 64 images per epoch), big enough to learn something.
TINY = {
    "dataset": "mnist-mini",
    "train_subset": 256,
    "test_subset": 128,
    "epochs": 1,
    "batch_size": 64,
    "device": "cpu",
    "num_threads": 1,
    # Off: at this size the gradient diagnostics cost more than training (~P x 512 decodes an
    # epoch); tests of them turn them on (with diagnostics_probe 4), as `finished_run` does.
    "diagnostics": "off",
    "diagnostics_probe": 4,
}


@pytest.fixture
def tiny_config() -> Callable[..., RunConfig]:
    """Factory: a tiny CPU run config on mnist-mini; keyword arguments override fields."""

    def make(**overrides: object) -> RunConfig:
        return RunConfig.from_dict({**TINY, **overrides})

    return make


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, Path]:
    """One completed 2-epoch tiny run, trained once per session: (config, run folder).

    Read-only: tests that modify a run copy it first (see `copy_run`).
    """
    config = RunConfig.from_dict({**TINY, "epochs": 2, "diagnostics": "epoch"})
    store = tmp_path_factory.mktemp("finished-store")
    summary = train_run(config, store, progress=False, raise_errors=True)
    assert summary["status"] == "completed"
    return config, run_dir(store, config.run_id)


@pytest.fixture
def copy_run(tmp_path: Path) -> Callable[[Path], Path]:
    """Copy a run folder into a fresh store under tmp_path; returns the new store root."""

    def copy(folder: Path) -> Path:
        store = tmp_path / "store"
        shutil.copytree(
            folder, store / "runs" / folder.name, ignore=shutil.ignore_patterns(".lock")
        )
        return store

    return copy


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test (modules opt in with `pytest.mark.usefixtures`): the CPU
    is shared, and two threads fighting for a busy core crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Factory: mount a fresh tmpfs with these options (e.g. "ro,size=1m") under tmp_path; needs
    root, else the test skips. Root ignores file modes; a read-only or full mount it cannot."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def read_only_folder(tmpfs: Callable[[str], Path]) -> Path:
    """An empty read-only filesystem (see `tmpfs`)."""
    return tmpfs("ro,size=1m")
