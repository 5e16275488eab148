"""Pool workers die with their parent: after `kill -9` of `ste-ablate run --workers 2` the
training worker checkpoints and exits, the idle one exits, and nothing is left running. An idle
worker does not ignore SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners.grids.spec import load_spec
from runners.store import format as run_store

# One cell finishes at once, its worker then idles; the other trains long enough to be killed.
SPEC = """\
name: orphans
base: {dataset: mnist-mini, train_subset: 256, test_subset: 64, device: cpu, num_threads: 1,
       diagnostics: "off"}
grid:
  epochs: [1, 60]
"""


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def holds_lock(pid: int, folder: Path) -> bool:
    """Whether process `pid` has the cell's .lock open (a training worker does)."""
    lock = str((folder / run_store.LOCK).resolve())
    try:
        return any(os.readlink(fd) == lock for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.fixture
def pool_run(tmp_path: Path):
    """`ste-ablate run --workers 2` with one cell done (its worker idle) and one training:
    (process, store, short cell folder, long cell folder, worker pids); killed at the end."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc")
    spec = tmp_path / "orphans.yaml"
    spec.write_text(SPEC)
    short, long = load_spec(spec).cells
    store = tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "run", str(spec), "--store", str(store),
         "--workers", "2", "--wandb", "disabled", "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env,
    )  # fmt: skip
    folders = [run_store.run_dir(store, c.run_id) for c in (short, long)]
    started: list[int] = []
    try:
        wait_until(
            lambda: (
                run_store.cell_state(folders[0]) == "completed"
                and (folders[1] / run_store.CHECKPOINT).is_file()
            ),
            300,
            "the short cell did not complete while the long one trained",
        )
        workers = [pid for pid in children(process.pid) if alive(pid)]
        started += workers
        yield process, folders, workers
    finally:
        for pid in [process.pid, *started]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.serial
def test_kill_9_of_the_parent_leaves_no_worker_and_a_checkpoint(pool_run):
    process, (short, long), workers = pool_run
    training = [pid for pid in workers if holds_lock(pid, long)]
    assert len(training) == 1 and len(workers) >= 2  # a training worker, an idle one (+ tracker)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    # Orphaned workers would hold about 1 GB each: every one must be gone.
    wait_until(lambda: not any(alive(pid) for pid in workers), 30, "workers outlived the parent")
    info = run_store.cell_info(long)
    assert info.state == "interrupted" and info.summary["error"].startswith("interrupted by")
    assert (long / run_store.CHECKPOINT).is_file()
    assert run_store.cell_state(short) == "completed"
    assert not list(long.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.serial
def test_an_idle_worker_exits_on_sigterm(pool_run):
    process, (short, long), workers = pool_run
    idle = [pid for pid in workers if not holds_lock(pid, long) and not holds_lock(pid, short)]
    worker = next(pid for pid in idle if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text())
    os.kill(worker, signal.SIGTERM)
    wait_until(lambda: not alive(worker), 10, "an idle worker ignored SIGTERM")
    # The parent sees a worker die: the other one checkpoints, and the run ends; nothing hangs.
    assert process.wait(timeout=120) != 0
    wait_until(lambda: not any(alive(pid) for pid in workers), 30, "a worker was left behind")
    assert run_store.cell_state(long) == "interrupted"
