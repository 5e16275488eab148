"""The unit of work (`execute_cell`) and the local executors."""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runners.executors import cells
from runners.executors.cells import CellTask, execute_cell
from runners.executors.local import plan_workers, run_cells
from runners.store import format as run_store
from runners.store.format import read_jsonl
from runners.tracking.tracker import Tracker
from runners.training.metrics import strip_timing


def metrics_without_timing(store: Path, run_id: str) -> list[dict]:
    records = read_jsonl(run_store.run_dir(store, run_id) / "metrics.jsonl")
    return [strip_timing(r) for r in records]


def test_cell_task_pickles_and_the_unit_of_work_is_importable(tmp_path, tiny_config) -> None:
    task = CellTask(tiny_config(estimator="sigmoid(beta=4)"), str(tmp_path), "g", {"seed": 0})
    clone = pickle.loads(pickle.dumps(task))
    assert clone == task and clone.config.run_id == task.config.run_id
    assert clone.factors == {"seed": 0}
    assert pickle.loads(pickle.dumps(execute_cell)) is execute_cell


def test_completed_cell_is_never_retrained(tmp_path, tiny_config) -> None:
    task = CellTask(tiny_config(), str(tmp_path))
    first = execute_cell(task)
    assert first["status"] == "completed"
    folder = run_store.run_dir(tmp_path, task.run_id)
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = execute_cell(task)
    assert again == first
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes


def test_failures_are_recorded_not_raised(tmp_path, tiny_config) -> None:
    if not torch.cuda.is_available():
        # train_run refuses a missing device: the cell is recorded as failed, nothing raised.
        task = CellTask(tiny_config(device="cuda"), str(tmp_path / "store"))
        summary = execute_cell(task)
        assert summary["status"] == "failed" and "CUDA" in summary["error"]
        assert run_store.cell_state(run_store.run_dir(tmp_path / "store", task.run_id)) == "failed"

    # A store that cannot be created (a file in the way) still gives a summary.
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    summary = execute_cell(CellTask(tiny_config(), str(blocker)))
    assert summary["status"] == "failed" and summary["error"]


def test_diverging_and_failing_cells_do_not_stop_the_grid(tmp_path, tiny_config) -> None:
    diverging = CellTask(tiny_config(lr=1e30, train_subset=128), str(tmp_path))
    good = CellTask(tiny_config(seed=5), str(tmp_path))
    outcome = run_cells([diverging, good], workers=1, show_progress=False)
    assert outcome.signum is None and outcome.not_started == []
    assert outcome.summaries[diverging.run_id]["status"] == "diverged"
    assert outcome.summaries[good.run_id]["status"] == "completed"
    # diverged is final: a second pass returns it as it is
    folder = run_store.run_dir(tmp_path, diverging.run_id)
    before = (folder / "summary.json").stat().st_mtime_ns
    assert execute_cell(diverging)["status"] == "diverged"
    assert (folder / "summary.json").stat().st_mtime_ns == before


@pytest.mark.slow
@pytest.mark.parametrize("name", ["metrics.jsonl", "summary.json", "checkpoint.pt"])
def test_a_corrupt_file_makes_the_cell_rerun(finished_run, copy_run, name) -> None:
    config, original = finished_run
    store = copy_run(original)
    folder = run_store.run_dir(store, config.run_id)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])  # torn file
    assert run_store.cell_state(folder) == "interrupted"  # not trusted
    summary = execute_cell(CellTask(config, str(store)))
    assert summary["status"] == "completed"
    assert run_store.cell_state(folder) == "completed"
    assert metrics_without_timing(store, config.run_id) == metrics_without_timing(
        original.parent.parent, config.run_id
    )


def test_cell_locked_by_another_process_is_left_alone(tmp_path, tiny_config) -> None:
    task = CellTask(tiny_config(), str(tmp_path))
    folder = run_store.run_dir(tmp_path, task.run_id)
    folder.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a+b'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
            str(folder / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert run_store.cell_state(folder) == "running"
        summary = execute_cell(task)
        assert summary["status"] == "running" and "another process" in summary["error"]
        assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    assert execute_cell(task)["status"] == "completed"  # free again: it trains


@pytest.mark.slow
def test_process_pool_matches_in_process_execution(tmp_path, tiny_config, finished_run) -> None:
    # The session's finished run was trained in this process; the pool retrains it in a worker.
    config, original = finished_run
    other = tiny_config(estimator="sigmoid", seed=1)
    outcome = run_cells(
        [CellTask(config, str(tmp_path)), CellTask(other, str(tmp_path))],
        workers=2,
        show_progress=False,
    )
    assert outcome.signum is None
    assert {s["status"] for s in outcome.summaries.values()} == {"completed"}
    assert metrics_without_timing(tmp_path, config.run_id) == metrics_without_timing(
        original.parent.parent, config.run_id
    )


def test_worker_planning() -> None:
    assert plan_workers(None, "cpu") == (1, [])
    assert plan_workers(3, "cpu") == (3, [])
    assert plan_workers(2, "cuda:1") == (2, [])  # an explicit device is respected


@pytest.mark.gpu
def test_one_worker_per_gpu() -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    workers, devices = plan_workers(None, "auto")
    assert workers == torch.cuda.device_count()
    assert devices == [f"cuda:{i}" for i in range(workers)]


@pytest.mark.slow
def test_process_pool_runs_stacks_of_cells(tmp_path, tiny_config, finished_run) -> None:
    config, original = finished_run
    others = [tiny_config(estimator=e, seed=1) for e in ("sigmoid", "identity", "saturated")]
    tasks = [CellTask(c, str(tmp_path)) for c in (config, *others)]
    outcome = run_cells(tasks, workers=2, stack=2, show_progress=False)
    assert outcome.signum is None and outcome.not_started == []
    assert [outcome.summaries[t.run_id]["status"] for t in tasks] == ["completed"] * 4
    assert metrics_without_timing(tmp_path, config.run_id) == metrics_without_timing(
        original.parent.parent, config.run_id
    )


def test_an_escaping_interrupt_keeps_finished_cells_finished(tmp_path, tiny_config, monkeypatch):
    class Interrupt(Tracker):  # a signal outside the training loop's own handling
        def log_step(self, step, metrics):
            raise KeyboardInterrupt

    done, other = tiny_config(seed=7), tiny_config(seed=8)
    assert execute_cell(CellTask(done, str(tmp_path)))["status"] == "completed"
    monkeypatch.setattr(cells, "cell_tracker", lambda task: Interrupt())
    tasks = [CellTask(done, str(tmp_path)), CellTask(other, str(tmp_path))]
    outcome = run_cells(tasks, stack=2, show_progress=False)
    assert outcome.signum == signal.SIGINT
    assert outcome.summaries[done.run_id]["status"] == "completed"
    assert outcome.summaries[other.run_id]["status"] == "interrupted"
