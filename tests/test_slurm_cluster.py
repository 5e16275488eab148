"""Smoke tests of the local SLURM cluster that `scripts/slurm-local.sh start` brings up.

Marked `slurm` (off by default; `make test-slurm` runs them). They talk to the real daemons through
the SLURM client tools and skip, saying why, when the tools are missing or the cluster is down.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from slurm_helpers import cluster_problem, run, wait_until

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm-local.sh"


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)


def _sbatch(*args: str) -> str:
    out = run("sbatch", "--parsable", "--time=2", *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def _sacct_states(job_id: str) -> dict[str, str]:
    """JobID -> State of a job (or of every task of an array) as accounting records it."""
    out = run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State")
    assert out.returncode == 0, out.stderr
    rows = [line.split("|") for line in out.stdout.splitlines() if line.strip()]
    # "CANCELLED by 0" -> "CANCELLED"
    return {job: state.split()[0] for job, state in rows}


def _final_states(job_id: str, n: int, timeout: float = 60) -> dict[str, str]:
    """Wait until accounting holds n records, none of them pending or running."""

    def done() -> dict[str, str] | None:
        states = _sacct_states(job_id)
        live = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "RESIZING", "SUSPENDED"}
        if len(states) == n and not live & set(states.values()):
            return states
        return None

    return wait_until(done, timeout, f"job {job_id} to end in accounting")  # type: ignore[return-value]


def test_srun_runs_a_step_on_the_node() -> None:
    out = run("srun", "-N1", "-n1", "-t", "1", "hostname")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == run("hostname").stdout.strip()


def test_batch_job_completes_in_accounting() -> None:
    job = _sbatch("--wrap", "true")
    assert _final_states(job, 1) == {job: "COMPLETED"}


def test_failing_batch_job_is_failed_in_accounting() -> None:
    job = _sbatch("--wrap", "exit 3")
    assert _final_states(job, 1) == {job: "FAILED"}


def test_array_job_runs_every_task(tmp_path: Path) -> None:
    job = _sbatch(
        "--array=0-2",
        f"--output={tmp_path}/%A_%a.out",
        "--wrap",
        "echo task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT",
    )
    states = _final_states(job, 3)
    assert states == {f"{job}_{i}": "COMPLETED" for i in range(3)}
    outputs = sorted(p.read_text().strip() for p in tmp_path.glob(f"{job}_*.out"))
    assert outputs == [f"task {i} of 3" for i in range(3)]


def test_scancel_ends_a_running_job(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    job = _sbatch("--output=/dev/null", "--wrap", f"touch {marker}; sleep 120")
    wait_until(marker.exists, 60, "the job to start")
    assert run("scancel", job).returncode == 0
    assert _final_states(job, 1) == {job: "CANCELLED"}


def test_requeued_job_runs_again_soon(tmp_path: Path) -> None:
    # submitit requeues preempted or timed-out tasks; the cluster must restart them within seconds
    # (AuthInfo=cred_expire sets the hold; SLURM's default is 120 s).
    log = tmp_path / "log"
    job = _sbatch(
        "--requeue",
        "--output=/dev/null",
        "--wrap",
        f"echo run ${{SLURM_RESTART_COUNT:-0}} >> {log}; sleep 120",
    )
    wait_until(lambda: log.exists() and "run" in log.read_text(), 60, "the first run")
    t0 = time.monotonic()
    assert run("scontrol", "requeue", job).returncode == 0
    try:
        wait_until(lambda: "run 1" in log.read_text(), 60, "the requeued run")
        assert time.monotonic() - t0 < 45
        assert log.read_text().split() == ["run", "0", "run", "1"]
    finally:
        run("scancel", job)


def test_start_is_idempotent_while_running() -> None:
    if not SCRIPT.exists() or run("id", "-u").stdout.strip() != "0":
        pytest.skip("needs root and scripts/slurm-local.sh")
    t0 = time.monotonic()
    out = run("bash", str(SCRIPT), "start", timeout=180)
    assert out.returncode == 0, out.stderr
    assert "already running" in out.stderr
    assert time.monotonic() - t0 < 30
    status = run("bash", str(SCRIPT), "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "slurmd     running" in status.stdout
