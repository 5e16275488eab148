"""One training run: learning, bit-identity, shared seeds, divergence, failure, resume."""

from __future__ import annotations

import math
import os
import signal
import warnings
from pathlib import Path

import pytest
import torch

from runners.config import ConfigError
from runners.engine.train import exit_code, train_run
from runners.errors import UserError
from runners.executors.cells import CellTask, execute_cell, set_worker_resources
from runners.store import format as st
from runners.store.format import read_json, read_jsonl
from runners.store.records import (
    AUTOENCODER,
    DIAGNOSTIC,
    EPOCH,
    RECORD_INDEX,
    RECORD_LISTS,
    metric_names,
)
from runners.tracking.tracker import Tracker
from runners.training.data import normalize, prepare_data
from runners.training.device import resolve_device
from runners.training.evaluate import evaluate
from runners.training.metrics import strip_timing
from runners.training.recipe import build_model
from runners.training.state import RunState

# An autoencoder record with diagnostics (the last epoch's also has probe_accuracy).
RECORD_KEYS = {
    *RECORD_INDEX,
    *RECORD_LISTS,
    *metric_names(EPOCH, task=AUTOENCODER),
    *metric_names(DIAGNOSTIC),
}


def outputs(folder: Path) -> dict:
    """A run's results minus timing: what must be bit-identical between equal runs."""
    summary = strip_timing(read_json(folder / st.SUMMARY))
    summary.pop("files")
    return {
        "metrics": [strip_timing(r) for r in read_jsonl(folder / st.METRICS)],
        "steps": (folder / st.STEPS).read_bytes(),
        "summary": summary,
        "figure": (folder / st.FIGURE).read_bytes(),
    }


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / st.CHECKPOINT, weights_only=True)["model"]


def assert_same_run(a: Path, b: Path) -> None:
    assert outputs(a) == outputs(b)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


class Recorder(Tracker):
    """Records the hook calls; optionally signals this process at a step or an epoch."""

    def __init__(self, at_step=None, at_epoch=None, signum=signal.SIGINT, fail_step=None):
        self.calls: list[tuple] = []
        self.at_step, self.at_epoch, self.signum, self.fail_step = (
            at_step,
            at_epoch,
            signum,
            fail_step,
        )

    def start(self, config, run_id, resumed):
        self.calls.append(("start", resumed))

    def log_step(self, step, metrics):
        self.calls.append(("step", step))
        if step == self.fail_step:
            raise ConnectionError("tracking server went away")
        if step == self.at_step:
            os.kill(os.getpid(), self.signum)

    def log_epoch(self, epoch, record):
        self.calls.append(("epoch", epoch))
        if epoch == self.at_epoch:
            os.kill(os.getpid(), self.signum)

    def log_image(self, key, path):
        self.calls.append(("image", Path(path).name))

    def finish(self, summary):
        self.calls.append(("finish", summary["status"]))


def test_short_run_learns_and_records_everything(finished_run):
    config, folder = finished_run
    records = read_jsonl(folder / st.METRICS)
    assert [r["epoch"] for r in records] == [1, 2]
    assert set(records[0]) == RECORD_KEYS - {"probe_accuracy"} and set(records[1]) == RECORD_KEYS
    # Training lowers the test MSE, below the untrained model's too.
    untrained = build_model(config, torch.device("cpu")).eval()
    test_images = prepare_data("mnist-mini", 256, 128, "cpu").test.images
    initial = evaluate(untrained, test_images).mse
    assert records[1]["test_mse"] < records[0]["test_mse"] < initial
    assert records[0]["bit_flip_rate"] is None and 0 < records[1]["bit_flip_rate"] < 1
    assert len(records[1]["bit_rates"]) == 512 and records[1]["grad_norm_pre"] > 0
    assert records[1]["test_psnr"] == pytest.approx(10 * math.log10(4 / records[1]["test_mse"]))
    assert 0 < records[1]["probe_accuracy"] <= 1
    # The trivial reconstruction (the mean training image), the same at every epoch.
    train = prepare_data("mnist-mini", 256, 128, "cpu").train.images
    mean = normalize(train).double().mean(0)
    trivial = float(((normalize(test_images).double() - mean) ** 2).mean())
    assert records[0]["mean_image_mse"] == records[1]["mean_image_mse"]
    assert records[1]["mean_image_mse"] == pytest.approx(trivial, rel=1e-6)
    assert [r["images_seen"] for r in records] == [256, 512]
    assert [r["step"] for r in records] == [4, 8]
    steps = read_jsonl(folder / st.STEPS)
    assert [s["step"] for s in steps] == list(range(1, 9)) and steps[-1]["epoch"] == 2
    assert records[0]["train_mse"] == pytest.approx(sum(s["train_loss"] for s in steps[:4]) / 4)

    summary, problem = st.verify_summary(folder)
    assert problem is None and summary["status"] == "completed" and summary["epochs_done"] == 2
    for key in ("test_mse", "test_psnr", "bit_entropy", "dead_bits", "probe_accuracy"):
        assert summary[key] == records[-1][key]
    assert summary["images_per_s"] > 0 and summary["error"] is None
    assert set(summary["files"]) == {"config.json", "metrics.jsonl", "steps.jsonl",
                                     "reconstruction.png", "checkpoint.pt"}  # fmt: skip
    assert (folder / st.FIGURE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recorded = read_json(folder / st.CONFIG)
    assert recorded["run_id"] == config.run_id and recorded["config"] == config.to_dict()
    assert {"python", "torch", "torchvision", "numpy"} <= set(recorded["versions"])
    assert "git_commit" in recorded and recorded["created_utc"].endswith("+00:00")
    ckpt = torch.load(folder / st.CHECKPOINT, weights_only=True)
    assert ckpt["final"] and ckpt["optimizer"] is None  # a finished run keeps the weights only


def test_same_config_twice_is_bit_identical(finished_run, tmp_path, capsys):
    config, folder = finished_run
    summary = train_run(config, tmp_path, progress=None)  # not a terminal: log lines
    assert summary["status"] == "completed"
    assert_same_run(folder, st.run_dir(tmp_path, config.run_id))
    err = capsys.readouterr().err
    assert f"[{config.run_id}] epoch 2/2 train_mse=" in err and "completed after 2" in err


def test_estimators_share_initial_weights_and_batch_order(tiny_config, tmp_path):
    cpu = torch.device("cpu")
    images = len(prepare_data("mnist-mini", 256, 128, cpu).train)
    loops = [
        RunState(tiny_config(estimator=spec, seed=seed), cpu)
        for spec, seed in (
            ("hardtanh", 0),
            ("sigmoid(beta=4)", 0),
            ("bernoulli", 0),
            ("hardtanh", 1),
        )
    ]
    states = [loop.model.state_dict() for loop in loops]
    orders = [loop.epoch_order(images) for loop in loops]
    for state, order in zip(states[1:3], orders[1:3], strict=True):
        assert all(torch.equal(state[k], states[0][k]) for k in state)
        assert torch.equal(order, orders[0])
    assert not torch.equal(states[3]["encoder.0.weight"], states[0]["encoder.0.weight"])
    assert not torch.equal(orders[3], orders[0])

    # In real runs: identical first-step loss (same weights, same first batch), then they part.
    first = {}
    for spec in ("hardtanh", "sigmoid(beta=4)"):
        config = tiny_config(estimator=spec, train_subset=128)
        train_run(config, tmp_path, progress=False, raise_errors=True)
        first[spec] = [
            s["train_loss"] for s in read_jsonl(st.run_dir(tmp_path, config.run_id) / st.STEPS)
        ]
    assert first["hardtanh"][0] == first["sigmoid(beta=4)"][0]
    assert first["hardtanh"][1] != first["sigmoid(beta=4)"][1]


def test_nan_loss_is_recorded_as_diverged_and_never_retrained(tiny_config, tmp_path):
    config = tiny_config(lr=1e30, epochs=2)
    summary = train_run(config, tmp_path, progress=False)
    folder = st.run_dir(tmp_path, config.run_id)
    assert summary["status"] == "diverged" and "nan" in summary["error"]
    assert summary["test_mse"] is None and exit_code(summary) == 1
    assert st.cell_state(folder) == "diverged"
    steps = read_jsonl(folder / st.STEPS)
    assert not math.isfinite(steps[-1]["train_loss"])
    mtime = (folder / st.STEPS).stat().st_mtime_ns
    assert train_run(config, tmp_path, progress=False) == summary
    assert (folder / st.STEPS).stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_resume_after_an_epoch_is_bit_identical(finished_run, tmp_path):
    config, reference = finished_run
    first = Recorder(at_epoch=1, signum=signal.SIGINT)
    summary = train_run(config, tmp_path, tracker=first, progress=False)
    folder = st.run_dir(tmp_path, config.run_id)
    assert summary["status"] == "interrupted" and summary["epochs_done"] == 1
    assert "SIGINT" in summary["error"] and exit_code(summary) == 130
    assert st.cell_state(folder) == "interrupted"
    assert first.calls == [("start", False), *[("step", i) for i in range(1, 5)], ("epoch", 1),
                           ("finish", "interrupted")]  # fmt: skip

    second = Recorder()
    assert train_run(config, tmp_path, tracker=second, progress=False)["status"] == "completed"
    assert second.calls == [("start", True), *[("step", i) for i in range(5, 9)], ("epoch", 2),
                            ("image", "reconstruction.png"), ("finish", "completed")]  # fmt: skip
    assert_same_run(reference, folder)


@pytest.mark.slow
def test_resume_in_the_middle_of_an_epoch_is_bit_identical(finished_run, tmp_path):
    config, reference = finished_run
    summary = train_run(config, tmp_path, tracker=Recorder(at_step=6, signum=signal.SIGTERM),
                        progress=False)  # fmt: skip
    folder = st.run_dir(tmp_path, config.run_id)
    assert summary["status"] == "interrupted" and exit_code(summary) == 143
    assert len(read_jsonl(folder / st.STEPS)) == 6
    ckpt = torch.load(folder / st.CHECKPOINT, weights_only=True)
    assert (ckpt["epoch"], ckpt["step"], ckpt["step_in_epoch"]) == (1, 6, 2)
    assert train_run(config, tmp_path, progress=False)["status"] == "completed"
    assert_same_run(reference, folder)


@pytest.fixture
def keep_torch_threads():
    """Restores torch's thread count (and a worker's resources) after the test."""
    threads = torch.get_num_threads()
    yield
    set_worker_resources(None, None)
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["train_run", "pool worker", "no checkpoint yet"])
def test_resume_keeps_the_thread_count_the_run_started_with(
    finished_run, tmp_path, keep_torch_threads, how
):
    reference_config, reference = finished_run  # trained with num_threads=1
    config = reference_config.replace(num_threads=None)  # torch's count: not part of the run id
    assert config.run_id == reference_config.run_id
    folder = st.run_dir(tmp_path, config.run_id)
    torch.set_num_threads(1)
    summary = train_run(config, tmp_path, tracker=Recorder(at_epoch=1), progress=False)
    assert summary["status"] == "interrupted"
    if how == "no checkpoint yet":  # killed before the first checkpoint: a restart from scratch
        (folder / st.CHECKPOINT).unlink()

    torch.set_num_threads(2)  # another machine, or a pool that gives each worker 2 threads
    if how == "pool worker":
        set_worker_resources(None, 2)
        summary = execute_cell(CellTask(config, str(tmp_path)))
    else:
        summary = train_run(config, tmp_path, progress=False)
    assert summary["status"] == "completed" and torch.get_num_threads() == 2  # restored
    assert_same_run(reference, folder)  # as if trained in one go with 1 thread
    assert read_json(folder / st.CONFIG)["runtime"]["torch_threads"] == 1
    assert torch.load(folder / st.CHECKPOINT, weights_only=True)["torch_threads"] == 1


def test_explicit_thread_count_wins_on_resume_with_a_warning(
    tiny_config, tmp_path, keep_torch_threads, capsys
):
    config = tiny_config(epochs=2, train_subset=128, test_subset=64)  # num_threads=1
    train_run(config, tmp_path, tracker=Recorder(at_step=1), progress=False)
    folder = st.run_dir(tmp_path, config.run_id)
    assert torch.load(folder / st.CHECKPOINT, weights_only=True)["torch_threads"] == 1
    capsys.readouterr()

    class Threads(Recorder):
        def log_step(self, step, metrics):
            self.calls.append(("threads", torch.get_num_threads()))

    tracker = Threads()
    summary = train_run(config.replace(num_threads=2), tmp_path, tracker=tracker, progress=False)
    assert summary["status"] == "completed"
    assert {call for call in tracker.calls if call[0] == "threads"} == {("threads", 2)}
    err = capsys.readouterr().err
    assert "started with 1 torch thread(s) and goes on with num_threads=2" in err
    assert "not be bit-identical" in err
    # The record keeps the count the run started with.
    assert torch.load(folder / st.CHECKPOINT, weights_only=True)["torch_threads"] == 1


@pytest.mark.slow
def test_corrupt_checkpoint_is_ignored_and_the_run_restarts(finished_run, tmp_path):
    config, reference = finished_run
    train_run(config, tmp_path, tracker=Recorder(at_epoch=1), progress=False)
    checkpoint = st.run_dir(tmp_path, config.run_id) / st.CHECKPOINT
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    tracker = Recorder()
    with pytest.warns(RuntimeWarning, match="ignoring unusable checkpoint"):
        assert train_run(config, tmp_path, tracker=tracker, progress=False)["status"] == "completed"
    assert tracker.calls[:2] == [("start", False), ("step", 1)]  # from scratch
    assert_same_run(reference, st.run_dir(tmp_path, config.run_id))


@pytest.mark.parametrize("damage", ["truncate-summary", "edit-metrics", "delete-figure"])
def test_corrupt_finished_run_is_redone_from_its_checkpoint(finished_run, copy_run, damage):
    config, reference = finished_run
    store = copy_run(reference)
    folder = st.run_dir(store, config.run_id)
    if damage == "truncate-summary":
        (folder / st.SUMMARY).write_text('{"run_id": ')
    elif damage == "edit-metrics":
        (folder / st.METRICS).write_text((folder / st.METRICS).read_text().replace("0", "1", 1))
    else:
        (folder / st.FIGURE).unlink()
    assert st.cell_state(folder) == "interrupted"
    tracker = Recorder()
    assert train_run(config, store, tracker=tracker, progress=False)["status"] == "completed"
    assert not any(call[0] == "step" for call in tracker.calls)  # nothing retrained
    assert st.cell_state(folder) == "completed"
    assert_same_run(reference, folder)


@pytest.mark.slow
def test_exception_is_recorded_as_failed_and_the_run_resumes(finished_run, tmp_path):
    config, reference = finished_run
    folder = st.run_dir(tmp_path, config.run_id)

    class BreakStore(Recorder):
        def log_epoch(self, epoch, record):  # the disk "fails": metrics.jsonl cannot be replaced
            (folder / st.METRICS).unlink()
            (folder / st.METRICS).mkdir()

    summary = train_run(config, tmp_path, tracker=BreakStore(), progress=False)
    assert summary["status"] == "failed" and "IsADirectoryError" in summary["error"]
    assert summary["epochs_done"] == 2 and exit_code(summary) == 1
    assert st.cell_state(folder) == "failed"
    with pytest.raises(IsADirectoryError):  # still broken; raise_errors re-raises after recording
        train_run(config, tmp_path, progress=False, raise_errors=True)
    assert st.cell_state(folder) == "failed"
    (folder / st.METRICS).rmdir()  # the disk is fixed: the run resumes from its last checkpoint
    assert train_run(config, tmp_path, progress=False)["status"] == "completed"
    assert_same_run(reference, folder)


def test_tracker_errors_never_stop_training(tiny_config, tmp_path, capsys):
    tracker = Recorder(fail_step=2)
    summary = train_run(tiny_config(), tmp_path, tracker=tracker, progress=False)
    assert summary["status"] == "completed"
    assert tracker.calls == [("start", False), ("step", 1), ("step", 2)]  # then switched off
    assert "tracking stopped (log_step: ConnectionError" in capsys.readouterr().err


@pytest.mark.slow
def test_bf16_precision_and_knn_probe(tiny_config, tmp_path):
    config = tiny_config(precision="bf16", probe="knn", train_subset=128, test_subset=64)
    summary = train_run(config, tmp_path, progress=False, raise_errors=True)
    assert summary["status"] == "completed" and math.isfinite(summary["test_mse"])
    assert 0 <= summary["probe_accuracy"] <= 1


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_nothing_is_written_for_a_bad_device(tiny_config, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    with pytest.raises(UserError), warnings.catch_warnings():
        train_run(tiny_config(device="cuda"), tmp_path / "store", progress=False)
    assert not (tmp_path / "store").exists()


def test_keep_checkpoint_none_drops_the_weights_of_a_completed_run_only(tiny_config, tmp_path):
    config = tiny_config(keep_checkpoint="none")
    assert config.run_id == tiny_config().run_id
    summary = train_run(config, tmp_path, progress=False, raise_errors=True)
    folder = st.run_dir(tmp_path, config.run_id)
    assert summary["status"] == "completed" and "checkpoint.pt" not in summary["files"]
    assert not (folder / "checkpoint.pt").exists()
    assert st.cell_info(folder).state == "completed"  # final: never retrained
    again = train_run(config, tmp_path, progress=False, raise_errors=True)
    assert again == summary and not (folder / "checkpoint.pt").exists()
    with pytest.raises(ConfigError, match="keep_checkpoint"):
        tiny_config(keep_checkpoint="best")
