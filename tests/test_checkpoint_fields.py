"""Checkpoint fields are validated with bounds before use.

A checkpoint that parses and names its run, but holds a field that is missing, mistyped or out
of bounds, is ignored with a one-line warning: the cell is retrained from scratch and ends
bit-identical to an uninterrupted run. The same for a thread count recorded in config.json.
`gradcheck` refuses such a checkpoint, and a folder that is corrupt, with a one-line error.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from runners.cli import main
from runners.config import RunConfig
from runners.engine.train import train_run
from runners.store import format as st
from runners.store.checkpoint_fields import checkpoint_problem
from runners.store.format import read_json, read_jsonl
from runners.tracking.tracker import Tracker
from runners.training.metrics import strip_timing

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {
    "dataset": "mnist-mini",
    "train_subset": 64,
    "test_subset": 64,
    "epochs": 2,
    "batch_size": 32,
    "code_channels": 16,
    "device": "cpu",
    "diagnostics": "off",
}


class StopAt(Tracker):
    """Sends SIGINT to this process after global step `at`."""

    def __init__(self, at: int) -> None:
        self.at = at

    def log_step(self, step, metrics):
        if step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, Path, Path]:
    """(config, an interrupted run folder stopped mid epoch 2, the uninterrupted run folder)."""
    torch.set_num_threads(1)
    config = RunConfig.from_dict(SMALL)  # num_threads unset: a resumed run takes the record's
    whole = tmp_path_factory.mktemp("whole")
    assert train_run(config, whole, progress=False)["status"] == "completed"
    stopped = tmp_path_factory.mktemp("stopped")
    summary = train_run(config, stopped, tracker=StopAt(3), progress=False)
    assert summary["status"] == "interrupted"
    return config, st.run_dir(stopped, config.run_id), st.run_dir(whole, config.run_id)


def tampered(folder: Path, tmp_path: Path, **fields) -> Path:
    """A copy of the run folder whose checkpoint has `fields` replaced (None value: removed)."""
    copy = tmp_path / "store" / "runs" / folder.name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns(".lock"))
    payload = torch.load(copy / st.CHECKPOINT, weights_only=True)
    for key, value in fields.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value
    torch.save(payload, copy / st.CHECKPOINT)
    return copy


def same_metrics(folder: Path, reference: Path) -> None:
    strip = [strip_timing(r) for r in read_jsonl(folder / st.METRICS)]
    assert strip == [strip_timing(r) for r in read_jsonl(reference / st.METRICS)]
    assert read_jsonl(folder / st.STEPS) == read_jsonl(reference / st.STEPS)


BAD_FIELDS = {
    "threads-huge": {"torch_threads": 100000},
    "threads-bool": {"torch_threads": True},
    "epoch-huge": {"epoch": 10**6},
    "epoch-negative": {"epoch": -1},
    "epoch-text": {"epoch": "1"},
    "position-negative": {"step_in_epoch": -5},
    "position-past-the-epoch": {"step_in_epoch": 7},
    "step-inconsistent": {"step": 2},
    "records-text": {"records": "x"},
    "records-wrong-epoch": {"records": [{"epoch": 5}]},
    "steps-text": {"steps": "x"},
    "time-negative": {"train_time": -1.0},
    "time-nan": {"wall_time": float("nan")},
    "no-records": {"records": None},
    "model-empty": {"model": {}},
    "noise-state-float": {"noise_state": torch.zeros(3)},
}


@pytest.mark.parametrize("name", list(BAD_FIELDS))
def test_a_bad_checkpoint_field_restarts_the_cell_from_scratch(
    runs, tmp_path, capsys, name
) -> None:
    config, stopped, whole = runs
    folder = tampered(stopped, tmp_path, **BAD_FIELDS[name])
    with pytest.warns(RuntimeWarning, match="ignoring unusable checkpoint") as caught:
        summary = train_run(config, folder.parents[1], progress=False)
    assert summary["status"] == "completed", summary
    message = str(caught[0].message)
    assert "\n" not in message and "starting this run from scratch" in message
    same_metrics(folder, whole)
    assert st.cell_state(folder) == "completed"


def test_the_valid_checkpoint_resumes(runs, tmp_path) -> None:
    config, stopped, whole = runs
    folder = tampered(stopped, tmp_path)
    ckpt = torch.load(folder / st.CHECKPOINT, weights_only=True)
    assert checkpoint_problem(ckpt, epochs=2, batches=2) is None
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["step"]) == (1, 1, 3)
    assert train_run(config, folder.parents[1], progress=False)["status"] == "completed"
    same_metrics(folder, whole)


def test_a_huge_thread_count_in_config_json_is_ignored(runs, tmp_path, capsys) -> None:
    """A restart with no checkpoint takes config.json's count, bounded like the config's."""
    config, stopped, whole = runs
    folder = tampered(stopped, tmp_path)
    (folder / st.CHECKPOINT).unlink()
    document = read_json(folder / st.CONFIG)
    document["runtime"]["torch_threads"] = 100000
    st.atomic_write_json(folder / st.CONFIG, document)
    assert train_run(config, folder.parents[1], progress=False)["status"] == "completed"
    err = capsys.readouterr().err
    assert "ignoring the recorded torch_threads must be an integer in [1, 1024]" in err
    same_metrics(folder, whole)


@pytest.mark.parametrize(
    "fields",
    [
        {"epoch": None, "records": None, "steps": None},  # a minimal checkpoint
        {"epoch": "2"},
        {"model": {"encoder.weight": "x"}},
    ],
)
def test_gradcheck_on_a_minimal_or_mistyped_checkpoint_is_a_one_line_error(
    runs, tmp_path, capsys, fields
) -> None:
    _, _, whole = runs
    folder = tampered(whole, tmp_path, **fields)
    (folder / st.SUMMARY).unlink()  # the checkpoint is no longer the summarised one
    assert main(["gradcheck", str(folder), "--estimators", "identity", "--probe", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ste-ablate: error:") and "no usable checkpoint.pt (" in err
    assert len(err.splitlines()) == 1
    assert not (folder / st.GRADCHECK).exists()


def test_gradcheck_refuses_a_corrupt_folder(runs, tmp_path, capsys) -> None:
    _, _, whole = runs
    folder = tampered(whole, tmp_path, train_time=5.0)  # a valid payload, another sha256
    assert "checkpoint.pt does not match its sha256" in st.cell_info(folder).problem
    assert main(["gradcheck", str(folder), "--estimators", "identity", "--probe", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is corrupt (checkpoint.pt does not match its sha256" in err
    assert len(err.splitlines()) == 1
    assert not (folder / st.GRADCHECK).exists()
