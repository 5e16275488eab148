"""Reliability of `ste-ablate run` under real kills: kill -9, SIGTERM, pool workers.

A killed grid resumes its cell from the last epoch checkpoint and ends bit-identical (metrics
and per-step losses, timing fields aside) to an uninterrupted run in another store; the cell's
W&B run continues under the same id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from runners.executors.cells import CellTask, execute_cell
from runners.grids.spec import load_spec
from runners.store import format as run_store
from runners.store.format import read_jsonl
from runners.tracking.wandb_tracker import wandb_run_id
from runners.training.metrics import strip_timing

SPEC = """\
name: killme
description: three short epochs, so a kill lands mid-run
base: {dataset: mnist-mini, train_subset: 256, test_subset: 64, epochs: 3, device: cpu,
       num_threads: 1, diagnostics: "off"}
grid:
  estimator: [sigmoid]
  seed: [4]
"""


def wandb_rows(run_folder: Path) -> list[dict]:
    from test_wandb import of_type, wandb_records

    return [h["item"] for h in of_type(wandb_records(run_folder), "history")]


@pytest.fixture(scope="module")
def spec_and_reference(tmp_path_factory: pytest.TempPathFactory):
    """The spec file and the uninterrupted run of its one cell, in a store of its own."""
    folder = tmp_path_factory.mktemp("kill-spec")
    path = folder / "killme.yaml"
    path.write_text(SPEC)
    spec = load_spec(path)
    (cell,) = spec.cells
    reference = folder / "reference-store"
    assert execute_cell(CellTask(cell.config, str(reference)))["status"] == "completed"
    return path, cell, run_store.run_dir(reference, cell.run_id)


def start_run(spec: Path, store: Path, *extra: str, wandb_dir: Path | None = None):
    # No WANDB_* from this process: after W&B ran here, WANDB_SERVICE would point the child at
    # this process's W&B service, which still holds the killed run's id.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONUNBUFFERED="1", WANDB_DATA_DIR=str(store.parent / "wd"))
    return subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "run", str(spec), "--store", str(store), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: kill -9 reaches its children too
        env=env,
    )


def wait_for_first_checkpoint(
    process: subprocess.Popen, folder: Path, timeout: float = 180
) -> None:
    deadline = time.monotonic() + timeout
    while not (folder / "checkpoint.pt").is_file() or not read_jsonl_safe(folder / "metrics.jsonl"):
        if process.poll() is not None:
            pytest.fail(f"run ended before its first checkpoint:\n{process.stdout.read()}")
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


def read_jsonl_safe(path: Path) -> list:
    try:
        return read_jsonl(path)
    except (OSError, ValueError):
        return []


def same_results(folder: Path, reference: Path) -> None:
    def strip(records: list[dict]) -> list[dict]:
        return [strip_timing(r) for r in records]

    assert strip(read_jsonl(folder / "metrics.jsonl")) == strip(
        read_jsonl(reference / "metrics.jsonl")
    )
    assert read_jsonl(folder / "steps.jsonl") == read_jsonl(reference / "steps.jsonl")


@pytest.mark.slow
@pytest.mark.serial
def test_kill_9_mid_run_resumes_bit_identical(tmp_path, spec_and_reference) -> None:
    spec, cell, reference = spec_and_reference
    store = tmp_path / "store"
    folder = run_store.run_dir(store, cell.run_id)
    process = start_run(spec, store, "--wandb", "offline", "--no-progress")
    try:
        wait_for_first_checkpoint(process, folder)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the runner and its children (W&B's service)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert run_store.cell_state(folder) == "interrupted"  # checkpoint, no summary, lock free
    checkpoint = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert 1 <= checkpoint["epoch"] < 3

    again = start_run(spec, store, "--wandb", "offline", "--no-progress")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    assert "1 to run" in out
    assert run_store.cell_state(folder) == "completed"
    same_results(folder, reference)

    # One W&B run id across both processes; the second one resumed after the checkpoint's step.
    first, second = sorted((store / "wandb").glob("offline-run-*"))
    assert first.name.endswith(wandb_run_id(cell.run_id))
    assert second.name.endswith(wandb_run_id(cell.run_id))
    steps = [r["global_step"] for r in wandb_rows(second) if "train/loss" in r]
    assert steps[0] == checkpoint["step"] + 1 and steps[-1] == len(
        read_jsonl(folder / "steps.jsonl")
    )


@pytest.mark.slow
@pytest.mark.serial
def test_sigterm_checkpoints_marks_interrupted_and_exits_143(tmp_path, spec_and_reference) -> None:
    spec, cell, reference = spec_and_reference
    store = tmp_path / "store"
    folder = run_store.run_dir(store, cell.run_id)
    process = start_run(spec, store, "--wandb", "disabled", "--no-progress")
    try:
        wait_for_first_checkpoint(process, folder)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 128 + signal.SIGTERM, out
    info = run_store.cell_info(folder)
    assert info.state == "interrupted" and "SIGTERM" in info.summary["error"]
    assert "rerun the same command to resume" in out

    again = start_run(spec, store, "--wandb", "disabled", "--no-progress")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    same_results(folder, reference)


@pytest.mark.slow
@pytest.mark.serial
def test_sigterm_reaches_pool_workers(tmp_path) -> None:
    spec = tmp_path / "pool.yaml"
    spec.write_text(SPEC.replace("seed: [4]", "seed: [0, 1]").replace("name: killme", "name: pool"))
    cells = load_spec(spec).cells
    store = tmp_path / "store"
    process = start_run(spec, store, "--wandb", "disabled", "--no-progress", "--workers", "2")
    folders = [run_store.run_dir(store, c.run_id) for c in cells]
    try:
        wait_for_first_checkpoint(process, folders[0])
        process.send_signal(signal.SIGTERM)  # to the parent only: it forwards to its workers
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 128 + signal.SIGTERM, out
    states = [run_store.cell_state(f) for f in folders]
    assert "running" not in states  # every worker has let go of its cell
    assert states[0] == "interrupted"
    assert run_store.cell_info(folders[0]).summary["error"].startswith("interrupted by SIGTERM")
