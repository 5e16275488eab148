"""Ctrl-C and SIGTERM stop an in-process grid wherever they land, and the store resumes.

A real signal is sent to this process at a chosen point of a cell's life (while it prepares,
trains a step, evaluates its last epoch, draws its figure, writes its summary, or between
cells): `ste-ablate run` must exit 130 (SIGINT) or 143 (SIGTERM) without starting another cell,
and the next `run` must finish the grid. The slow test does the same to a real `ste-ablate run`
process at random moments.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners.cli import main
from runners.engine import run as engine_run
from runners.grids.spec import load_spec
from runners.store import format as st

SPEC = """\
name: stops
base: {dataset: mnist-mini, train_subset: 64, test_subset: 64, epochs: 1, batch_size: 32,
       code_channels: 16, device: cpu, num_threads: 1, diagnostics: "off"}
grid:
  seed: [0, 1, 2]
"""

# Where the signal lands: a method of the cell's bookkeeping, entered for the first time.
POINTS = {
    "prepare": "prepare",
    "step": "add_step",
    "last-epoch-evaluation": "_epoch_record",
    "figure": "write_figure",
    "summary": "finish",
}


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "stops.yaml"
    path.write_text(SPEC)
    return path


def states(spec: Path, store: Path) -> list[str]:
    return [st.cell_state(st.run_dir(store, c.run_id)) for c in load_spec(spec).cells]


def signal_at(monkeypatch: pytest.MonkeyPatch, method: str, signum: int) -> None:
    """Send `signum` to this process the first time `Run.<method>` is entered."""
    original = getattr(engine_run.Run, method)
    sent = []

    def wrapped(self, *args, **kwargs):
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signum)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(engine_run.Run, method, wrapped)


@pytest.mark.parametrize(
    ("point", "signum"),
    [
        ("last-epoch-evaluation", signal.SIGINT),
        ("last-epoch-evaluation", signal.SIGTERM),
        ("figure", signal.SIGTERM),
        ("summary", signal.SIGINT),
        ("prepare", signal.SIGTERM),
        ("step", signal.SIGINT),
    ],
)
def test_a_stop_anywhere_in_a_cell_stops_the_in_process_grid(
    spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str, signum: int
) -> None:
    store = tmp_path / "store"
    argv = ["run", str(spec), "--store", str(store), "--wandb", "disabled", "--no-progress"]
    with monkeypatch.context() as patch:
        signal_at(patch, POINTS[point], signum)
        code = main(argv)
    assert code == 128 + signum
    after = states(spec, store)
    assert after[1:] == ["missing", "missing"]  # no other cell started
    assert after[0] in ("completed", "interrupted")
    assert main(argv) == 0
    assert states(spec, store) == ["completed"] * 3


def test_a_stop_between_cells_stops_the_grid(
    spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal after one cell's summary and before the next cell starts."""
    store = tmp_path / "store"
    original = engine_run.Run.finish

    def finish_then_signal(self, *args, **kwargs):
        summary = original(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return summary

    monkeypatch.setattr(engine_run.Run, "finish", finish_then_signal)
    argv = ["run", str(spec), "--store", str(store), "--wandb", "disabled", "--no-progress"]
    assert main(argv) == 143
    assert states(spec, store) == ["completed", "missing", "missing"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signals_at_random_moments_stop_a_real_run_within_seconds(
    spec: Path, tmp_path: Path, signum: int
) -> None:
    """`ste-ablate run` (in-process executor) stopped at seeded random moments, 4 times each."""
    rng = random.Random(signum)
    store = tmp_path / "store"
    argv = [sys.executable, "-m", "runners.cli", "run", str(spec), "--store", str(store)]
    argv += ["--wandb", "disabled", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    for _ in range(4):
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        # Wait until the CLI is past its imports (it prints the grid line), then a bit more.
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "stops:" in line, line
        time.sleep(rng.uniform(0.0, 2.0))
        if process.poll() is not None:
            break  # the grid finished before the signal: nothing left to stop
        sent = time.monotonic()
        process.send_signal(signum)
        out, _ = process.communicate(timeout=60)
        assert time.monotonic() - sent < 20, out
        if process.returncode == -signum and "stops: 3 completed" in out:
            break  # the signal came as the finished command exited
        # Rarely (about 1 in 15 SIGTERMs here) CPython ends the process by SIGINT after the
        # command returned 143: a KeyboardInterrupt raised by a handler inside some C
        # extension's call is kept and re-raised at exit. The shell reads that as 130: still
        # a stop, with the store as the command left it.
        assert process.returncode in (128 + signum, -signal.SIGINT), out
        assert "stopped by signal" in out or "interrupted" in out, out
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert states(spec, store) == ["completed"] * 3
