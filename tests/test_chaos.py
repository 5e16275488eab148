"""Chaos: a small grid killed with SIGKILL at random (seeded) moments, over and over, through
every executor that runs here (in-process and `--workers 2`), resumed each time; at the end
every cell is bit-identical to an uninterrupted store, no temp file remains, no process is left.

Each kill cycle runs `runners.cli.main` (exactly what `ste-ablate run` runs) in a process forked
from a forkserver that has imported torch and the runners already: a fresh interpreter per cycle
would spend most of the test importing torch. Pool workers are spawned as usual. Half of the
pool kills hit the parent alone (its workers must checkpoint and exit by themselves), half hit
the parent and its workers at once.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from runners.cli import main
from runners.store import format as st
from runners.store.format import read_json, read_jsonl
from runners.training.metrics import strip_timing

pytestmark = pytest.mark.slow

KILLS = {"in-process": 30, "workers-2": 20}  # 50 kill points
DELAY_S = {"in-process": (0.0, 3.0), "workers-2": (0.5, 7.0)}  # after the command starts
SPEC = """\
name: chaos
base: {dataset: mnist-mini, train_subset: 192, test_subset: 64, epochs: 2, batch_size: 64,
       code_channels: 16, device: cpu, num_threads: 1}
grid:
  estimator: [hardtanh, sigmoid]
  seed: [0, 1]
"""
TAG = "STE_CHAOS_TAG"


def run_cli(argv: list[str], log: str, tag: str) -> None:
    """A forkserver child: `ste-ablate ARGV`, output to `log`, descendants tagged by `tag`."""
    os.environ[TAG] = tag  # inherited by everything it spawns (pool workers, trackers)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.exit(main(argv))


def tagged(tag: str) -> list[int]:
    """Live processes started by a chaos command (their environment holds the tag)."""
    needle = f"{TAG}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def wait_gone(tag: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while left := tagged(tag):
        assert time.monotonic() < deadline, f"processes left after a kill: {left}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def context():
    if not Path("/proc/self/environ").exists():
        pytest.skip("needs /proc")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "runners.cli", "runners.commands.run"])
    return ctx


def command(ctx, spec: Path, store: Path, workers: bool, log: Path):
    argv = ["run", str(spec), "--store", str(store), "--wandb", "disabled", "--no-progress"]
    tag = uuid.uuid4().hex
    process = ctx.Process(
        target=run_cli, args=(argv + (["--workers", "2"] if workers else []), str(log), tag)
    )
    process.start()
    return process, tag


def same_cell(folder: Path, reference: Path) -> None:
    def strip(records: list[dict]) -> list[dict]:
        return [strip_timing(r) for r in records]

    assert strip(read_jsonl(folder / st.METRICS)) == strip(read_jsonl(reference / st.METRICS))
    assert read_jsonl(folder / st.STEPS) == read_jsonl(reference / st.STEPS)
    assert (folder / st.FIGURE).read_bytes() == (reference / st.FIGURE).read_bytes()
    ours, theirs = (
        torch.load(f / st.CHECKPOINT, map_location="cpu", weights_only=True)["model"]
        for f in (folder, reference)
    )
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    summary, expected = read_json(folder / st.SUMMARY), read_json(reference / st.SUMMARY)
    for key in ("status", "epochs_done", "test_mse", "test_psnr", "bit_entropy", "dead_bits",
                "probe_accuracy", "error"):  # fmt: skip
        assert summary[key] == expected[key], key


@pytest.mark.parametrize("executor", list(KILLS))  # two tests: xdist can run them side by side
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, context, executor):
    spec = tmp_path / "chaos.yaml"
    spec.write_text(SPEC)
    log = tmp_path / "chaos.log"
    reference = tmp_path / "reference"
    process, tag = command(context, spec, reference, False, log)
    process.join(300)
    assert process.exitcode == 0, log.read_text()[-3000:]
    cells = [p.name for p in st.runs_root(reference).iterdir()]
    assert len(cells) == 4

    rng = random.Random(14 if executor == "in-process" else 15)
    restarts = 0
    count = KILLS[executor]
    workers = executor == "workers-2"
    store = tmp_path / executor
    done = 0
    while done < count:
        process, tag = command(context, spec, store, workers, log)
        time.sleep(rng.uniform(*DELAY_S[executor]))
        victims = [] if process.exitcode is not None else [process.pid]
        if victims and workers and done % 2 == 1:  # the parent and its workers at once
            victims += [pid for pid in tagged(tag) if pid != process.pid]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended between the look and the kill
                pass
        process.join(60)
        if process.exitcode != -signal.SIGKILL:  # the grid finished first: start it over
            assert process.exitcode == 0, log.read_text()[-3000:]
            wait_gone(tag)
            for name in cells:
                same_cell(st.run_dir(store, name), st.run_dir(reference, name))
            restarts += 1  # a fresh store each time, or the finished one finishes at once again
            store = tmp_path / f"{executor}-restart-{restarts}"
            continue
        wait_gone(tag)
        done += 1
    process, tag = command(context, spec, store, workers, log)  # resume to the end
    process.join(300)
    assert process.exitcode == 0, log.read_text()[-3000:]
    wait_gone(tag)
    for name in cells:
        assert st.cell_state(st.run_dir(store, name)) == "completed"
        same_cell(st.run_dir(store, name), st.run_dir(reference, name))
    assert not list(store.rglob("*.tmp")), "temp files left behind"
