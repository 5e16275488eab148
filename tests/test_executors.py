"""The executors' shared shape: the two local executors are one base with one `run`, and the
SLURM path of `ste-ablate run` goes through `SlurmExecutor.run` like any executor.

This machine has no SLURM: the SLURM tests replace `SlurmExecutor.submit` (the call to sbatch)
by a submission that found nothing to submit; the real cluster is tested in test_slurm.py.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from runners.commands.parts.slurm import run_on_slurm
from runners.executors.base import GridOutcome, LocalExecutor
from runners.executors.cells import CellTask
from runners.executors.display import ProgressOptions
from runners.executors.local import InProcessExecutor, local_executor
from runners.executors.pool import PoolExecutor
from runners.executors.slurm.executor import SlurmExecutor, Submission
from runners.executors.slurm.options import SlurmOptions


def test_the_local_executors_share_one_base_and_one_run():
    assert issubclass(InProcessExecutor, LocalExecutor) and issubclass(PoolExecutor, LocalExecutor)
    assert InProcessExecutor.run is LocalExecutor.run and PoolExecutor.run is LocalExecutor.run
    progress = ProgressOptions(total=3, show=False)
    here = local_executor(1, stack=2, stack_mode="looped", progress=progress)
    pool = local_executor(2, ["cuda:0", "cuda:1"], stack=2, stack_mode="looped", progress=progress)
    assert isinstance(here, InProcessExecutor) and isinstance(pool, PoolExecutor)
    for executor in (here, pool):
        assert (executor.stack, executor.stack_mode, executor.progress) == (2, "looped", progress)
        assert pickle.loads(pickle.dumps(executor)) == executor
    assert (pool.workers, pool.devices) == (2, ("cuda:0", "cuda:1"))


def test_in_process_run_records_every_cell(finished_run, copy_run, tiny_config):
    config, folder = finished_run
    store = copy_run(folder)
    tasks = [CellTask(config, str(store)), CellTask(tiny_config(seed=5, epochs=1), str(store))]
    outcome = InProcessExecutor(progress=ProgressOptions(show=False)).run(tasks)
    assert list(outcome.summaries) == [t.run_id for t in tasks]
    assert outcome.counts() == {"completed": 2} and outcome.signum is None
    assert outcome.not_started == []


@pytest.fixture
def nothing_to_submit(monkeypatch) -> list[str]:
    """`SlurmExecutor.submit` as it answers when every cell is final (no sbatch call)."""
    calls: list[str] = []

    def submit(self, tasks):
        calls.append("submit")
        return Submission("tiny", None, 0, (), (), self.store / "slurm" / "logs")

    monkeypatch.setattr(SlurmExecutor, "submit", submit)
    return calls


def test_slurm_run_submits_then_follows_the_cells(finished_run, nothing_to_submit):
    config, folder = finished_run
    store = folder.parent.parent
    seen: list[Submission] = []
    task = CellTask(config, str(store), "tiny")
    followed = SlurmExecutor(store, SlurmOptions(), poll_s=0.01, on_submit=seen.append).run([task])
    assert nothing_to_submit == ["submit"] and [s.spec_name for s in seen] == ["tiny"]
    assert followed.summaries[config.run_id]["status"] == "completed"
    alone = SlurmExecutor(store, SlurmOptions(), follow=False).run([task])
    assert alone == GridOutcome()


def test_the_slurm_command_goes_through_run(finished_run, nothing_to_submit, monkeypatch, capsys):
    config, folder = finished_run
    store = folder.parent.parent
    runs: list[int] = []
    real_run = SlurmExecutor.run

    def counted(self, tasks):
        runs.append(len(tasks))
        return real_run(self, tasks)

    monkeypatch.setattr(SlurmExecutor, "run", counted)
    task = CellTask(config, str(store), "tiny")
    for wait in (False, True):
        assert run_on_slurm([task], SlurmOptions(), Path(store), wait=wait) == 0
        assert "nothing to submit" in capsys.readouterr().out
    assert runs == [1, 1] and nothing_to_submit == ["submit", "submit"]
