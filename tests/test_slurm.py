"""The SLURM executor against the real local cluster (`scripts/slurm-local.sh start`).

The tests marked `slurm` (off by default; `make test-slurm`) skip when the cluster is down. Each submits tiny mnist-mini cells
through submitit to the running cluster and checks the run store afterwards: an array ends with
every cell completed; a task preempted (SIGUSR2, as SLURM sends before a time limit) is requeued
and its cell resumes; a task cancelled with scancel leaves its cell interrupted, a second `run`
resubmits it and it resumes; both end identical to an uninterrupted run; a failing cell is
reported as failed by the store, by SLURM and by the exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slurm_helpers import cluster_problem, wait_until

from runners.commands.parts.slurm import add_arguments, options_from_args, run_on_slurm
from runners.config import RunConfig
from runners.errors import UserError
from runners.executors.cells import CellTask, execute_cell
from runners.executors.slurm.executor import SlurmExecutor, task_chunks
from runners.executors.slurm.options import SlurmOptions
from runners.executors.slurm.record import latest_tasks, slurm_states
from runners.executors.slurm.task import CellBatch, task_threads
from runners.grids.spec import load_spec
from runners.store import format as run_store
from runners.store.format import read_json, read_jsonl
from runners.store.records import TIMING_KEYS
from runners.tracking.wandb_tracker import wandb_run_id

BASE = {
    "dataset": "mnist-mini",
    "train_subset": 256,
    "test_subset": 64,
    "epochs": 2,
    "batch_size": 32,
    "code_channels": 32,
    "device": "cpu",
    "diagnostics": "off",
}
# Long enough (3 epochs of 16 steps, over a second each) that a signal sent once the first epoch
# is written lands mid-run.
LONG = {**BASE, "train_subset": 512, "epochs": 3}
TIMING = TIMING_KEYS | {"files"}  # and the file hashes (a summary lists its own files)


@pytest.fixture(scope="module")
def cluster() -> None:
    """Skip (saying why) unless the local cluster answers."""
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture
def store(tmp_path: Path, cluster: None) -> Iterator[Path]:
    """A run store; every job it recorded is cancelled at the end (a failed test leaves none)."""
    root = tmp_path / "store"
    yield root
    for record in (root / "slurm").glob("*.json"):
        arrays = {t.split("_")[0] for t in latest_tasks(root, record.stem).values()}
        if arrays:
            subprocess.run(["scancel", *sorted(arrays)], capture_output=True, timeout=30)


def write_spec(folder: Path, name: str, base: dict[str, Any], grid: dict[str, list]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps({"name": name, "base": base, "grid": grid}))  # JSON is YAML
    return path


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("WANDB_DIR", None)  # W&B files go to STORE/wandb, where the tests look
    return subprocess.run(
        [sys.executable, "-m", "runners.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def state(store: Path, run_id: str) -> str:
    return run_store.cell_state(run_store.run_dir(store, run_id))


def epochs_written(store: Path, run_id: str) -> int:
    try:
        return len(read_jsonl(run_store.run_dir(store, run_id) / run_store.METRICS))
    except (OSError, ValueError):
        return 0


def outcome(store: Path, run_id: str) -> dict[str, Any]:
    """A finished cell's results without timings: per-epoch metrics, steps, summary, figure."""
    folder = run_store.run_dir(store, run_id)
    summary = read_json(folder / run_store.SUMMARY)
    return {
        "metrics": [
            {k: v for k, v in r.items() if k not in TIMING}
            for r in read_jsonl(folder / "metrics.jsonl")
        ],
        "steps": read_jsonl(folder / "steps.jsonl"),
        "summary": {k: v for k, v in summary.items() if k not in TIMING},
        "figure": summary["files"]["reconstruction.png"],
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, cluster: None) -> dict[str, Any]:
    """The LONG cell trained here without interruption (1 thread, as the SLURM tasks use)."""
    config = RunConfig.from_dict({**LONG, "estimator": "hardtanh", "seed": 1, "num_threads": 1})
    root = tmp_path_factory.mktemp("reference")
    summary = execute_cell(CellTask(config, str(root)))
    assert summary["status"] == "completed", summary
    return outcome(root, config.run_id)


@pytest.mark.slurm
def test_array_runs_every_cell_into_the_store(tmp_path: Path, store: Path) -> None:
    spec = write_spec(
        tmp_path, "array", BASE, {"estimator": ["hardtanh", "identity"], "seed": [0, 1]}
    )
    args = ["run", str(spec), "--store", str(store), "--executor", "slurm", "--time-min", "5"]
    out = cli(*args, "--cells-per-task", "2", "--cpus-per-task", "1", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted 4 cells as SLURM job array" in out.stdout
    cells = load_spec(spec).cells
    assert {state(store, c.run_id) for c in cells} == {"completed"}
    # One array of two tasks, two cells each.
    tasks = latest_tasks(store, "array")
    assert len({t.split("_")[0] for t in tasks.values()}) == 1
    assert len(set(tasks.values())) == 2
    for cell in cells:  # the tasks ran with one torch thread (SLURM_CPUS_PER_TASK=1)
        config = read_json(run_store.run_dir(store, cell.run_id) / run_store.CONFIG)
        assert config["runtime"]["torch_threads"] == 1
    states = wait_until(
        lambda: set(slurm_states(store, "array").values()) == {"COMPLETED"}, 60, "sacct"
    )
    assert states
    status = cli("status", str(spec), "--store", str(store))
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("COMPLETED") == 4
    # A second run submits nothing: every cell is final.
    again = cli(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "submitted" not in again.stdout


@pytest.mark.slurm
def test_stacked_array_tasks_train_their_cells_together(tmp_path: Path, store: Path) -> None:
    spec = write_spec(
        tmp_path, "stacked", BASE, {"estimator": ["hardtanh", "sigmoid"], "seed": [0, 1]}
    )
    args = ["run", str(spec), "--store", str(store), "--executor", "slurm", "--time-min", "5"]
    out = cli(*args, "--stack", "2", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted 4 cells as SLURM job array" in out.stdout and "(2 tasks)" in out.stdout
    cells = load_spec(spec).cells
    assert {state(store, c.run_id) for c in cells} == {"completed"}
    assert len(set(latest_tasks(store, "stacked").values())) == 2


@pytest.mark.slurm
def test_preempted_task_is_requeued_and_resumes(
    tmp_path: Path, store: Path, reference: dict[str, Any]
) -> None:
    spec = write_spec(tmp_path, "preempt", LONG, {"estimator": ["hardtanh"], "seed": [1]})
    (cell,) = load_spec(spec).cells
    out = cli("run", str(spec), "--store", str(store), "--executor", "slurm", "--time-min", "5")
    assert out.returncode == 0, out.stdout + out.stderr
    (task,) = latest_tasks(store, "preempt").values()
    wait_until(lambda: epochs_written(store, cell.run_id) >= 1, 180, "the first epoch")
    # What SLURM sends before a time limit or on preemption (submitit's --signal=USR2@...).
    subprocess.run(["scancel", "--signal=USR2", task], check=True, timeout=30)
    wait_until(lambda: state(store, cell.run_id) == "completed", 240, "the requeued task to finish")
    assert _restarts(task) >= 1
    # The first attempt stopped mid-run (checkpointed and recorded interrupted) before the requeue.
    log = "".join(p.read_text() for p in (store / "slurm" / "logs" / task).glob("*_log.err"))
    assert "caught SIGUSR2" in log and "interrupted after" in log
    assert outcome(store, cell.run_id) == reference
    # The W&B run resumed under the cell's id: both task runs wrote to the same run.
    runs = sorted((store / "wandb").glob("offline-run-*"))
    assert len(runs) >= 2
    assert {p.name for r in runs for p in r.glob("run-*.wandb")} == {
        f"run-{wandb_run_id(cell.run_id)}.wandb"
    }


def _restarts(task: str) -> int:
    out = subprocess.run(
        ["scontrol", "show", "job", task], capture_output=True, text=True, timeout=30
    )
    field = next((w for w in out.stdout.split() if w.startswith("Restarts=")), "Restarts=0")
    return int(field.split("=")[1])


@pytest.mark.slurm
def test_cancelled_task_is_resubmitted_and_resumes(
    tmp_path: Path, store: Path, reference: dict[str, Any]
) -> None:
    spec = write_spec(tmp_path, "cancel", LONG, {"estimator": ["hardtanh"], "seed": [1]})
    (cell,) = load_spec(spec).cells
    args = ["run", str(spec), "--store", str(store), "--executor", "slurm", "--time-min", "5"]
    out = cli(*args)
    assert out.returncode == 0, out.stdout + out.stderr
    (task,) = latest_tasks(store, "cancel").values()
    wait_until(lambda: epochs_written(store, cell.run_id) >= 1, 180, "the first epoch")
    subprocess.run(["scancel", task], check=True, timeout=30)
    wait_until(lambda: state(store, cell.run_id) == "interrupted", 60, "the cell to checkpoint")
    assert 1 <= epochs_written(store, cell.run_id) < LONG["epochs"]
    wait_until(lambda: slurm_states(store, "cancel").get(cell.run_id) == "CANCELLED", 60, "sacct")
    again = cli(*args, "--wait")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "submitted 1 cells" in again.stdout
    assert latest_tasks(store, "cancel")[cell.run_id] != task
    assert state(store, cell.run_id) == "completed"
    assert outcome(store, cell.run_id) == reference


@pytest.mark.slurm
def test_failing_cell_is_reported_failed(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Full MNIST from a folder that does not exist: validation passes, the task fails at run time.
    bad = RunConfig.from_dict({**BASE, "dataset": "mnist", "data_root": str(store / "no-mnist")})
    options = options_from_args(parse("--time-min", "5"))
    code = run_on_slurm([CellTask(bad, str(store), "failing")], options, store, wait=True)
    assert code == 1
    assert state(store, bad.run_id) == "failed"
    summary = read_json(run_store.run_dir(store, bad.run_id) / run_store.SUMMARY)
    assert "MNIST" in summary["error"]
    assert "failed" in capsys.readouterr().err
    wait_until(
        lambda: slurm_states(store, "failing").get(bad.run_id) == "FAILED", 60, "sacct FAILED"
    )


# ----------------------------------------------------------------------------- no cluster needed


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.add_argument("--stack", type=int, default=None)  # `ste-ablate run`'s own option
    return parser.parse_args(list(argv))


def test_options_become_sbatch_parameters() -> None:
    args = parse(
        "--partition", "gpu", "--gpus-per-task", "2", "--cpus-per-task", "4", "--mem-gb", "1.5",
        "--time-min", "30", "--slurm-arg", "account=abc", "--slurm-arg", "exclusive",
    )  # fmt: skip
    params = options_from_args(args).executor_parameters("ste-x")
    assert params["partition"] == "gpu"
    assert params["gpus_per_task"] == 2
    assert params["cpus_per_task"] == 4
    assert params["mem"] == "1536M"
    assert params["time"] == 30
    assert params["signal_delay_s"] == 90
    assert params["additional_parameters"] == {"account": "abc", "exclusive": True}
    # Every submission has a time limit, and the warning signal comes before it.
    short = options_from_args(parse("--time-min", "1")).executor_parameters("ste-x")
    assert short["time"] == 1 and short["signal_delay_s"] < 60


@pytest.mark.parametrize("bad", ["=x", "", "a b=1"])
def test_malformed_slurm_arg_is_a_user_error(bad: str) -> None:
    with pytest.raises(UserError, match="--slurm-arg"):
        options_from_args(parse("--slurm-arg", bad))


@pytest.mark.parametrize(
    "flag", ["--time-min=0", "--cpus-per-task=0", "--mem-gb=-1", "--gpus-per-task=x"]
)
def test_bad_resource_values_are_rejected(flag: str) -> None:
    with pytest.raises(SystemExit):
        parse(flag)


def test_task_threads_come_from_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert task_threads() == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert task_threads() is None


def test_stacking_inside_array_tasks() -> None:
    plain = options_from_args(parse("--cells-per-task", "3"))
    assert (plain.stack_size(), plain.chunk_size()) == (1, 3)
    gpus = options_from_args(parse("--cells-per-task", "40", "--gpus-per-task", "1"))
    assert (gpus.stack_size(), gpus.chunk_size()) == (32, 40)  # automatic on GPUs, capped
    told = options_from_args(parse("--gpus-per-task", "1", "--stack", "4"))
    assert (told.stack_size(), told.chunk_size()) == (4, 4)  # a task holds at least one stack
    # The spec's stack counts when --stack is not given; --stack wins over it.
    assert (gpus.stack_size(spec=5), plain.stack_size(spec=5), told.stack_size(spec=5)) == (5, 5, 4)


def test_array_tasks_hold_whole_stacks() -> None:
    # The grid's last axis is lr, so stackable cells are not adjacent in grid order.
    configs = [
        RunConfig.from_dict({**BASE, "estimator": e, "seed": s, "lr": lr})
        for e in ("hardtanh", "sigmoid") for s in (0, 1) for lr in (1e-3, 2e-3)
    ]  # fmt: skip
    tasks = [CellTask(c, "store") for c in configs]
    chunks = task_chunks(tasks, size=4, stack=4)
    assert [len(c) for c in chunks] == [4, 4]
    assert all(len({t.config.lr for t in chunk}) == 1 for chunk in chunks)
    assert [len(c) for c in task_chunks(tasks, size=3, stack=1)] == [3, 3, 2]


@pytest.mark.slow
def test_cell_batch_trains_stacks_like_single_cells(tmp_path: Path) -> None:
    # The array task's callable, run here: stacks of 2 equal the cells trained one at a time.
    configs = [
        RunConfig.from_dict({**BASE, "epochs": 1, "estimator": e, "seed": s, "num_threads": 1})
        for e, s in (("hardtanh", 0), ("sigmoid", 0), ("identity", 1))
    ]
    stacked, alone = tmp_path / "stacked", tmp_path / "alone"
    summaries = CellBatch([CellTask(c, str(stacked)) for c in configs], stack=2)()
    assert [s["status"] for s in summaries] == ["completed"] * 3
    for config in configs:
        assert execute_cell(CellTask(config, str(alone)))["status"] == "completed"
        assert outcome(stacked, config.run_id) == outcome(alone, config.run_id)


def test_no_submission_means_no_slurm_states(tmp_path: Path) -> None:
    assert slurm_states(tmp_path, "never-submitted") == {}


def test_options_are_plain_data() -> None:
    # The backend takes a dataclass, not the command line; the record stores its fields.
    options = SlurmOptions(time_min=5, stack=2)
    assert (options.stack_size(), options.chunk_size()) == (2, 2)
    executor = SlurmExecutor(Path("store"), options)
    assert executor.store.is_absolute() and executor.options is options
