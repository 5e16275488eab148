"""W&B tracking with the real client, offline: assertions read the .wandb files it wrote.

The records are read with `wandb leet inspect --json`, the client's own reader of its
transaction log (one JSON object per record: run, metric, history, summary, exit, ...).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import runners.tracking.wandb_tracker
from runners.engine.train import train_run
from runners.executors.cells import CellTask, execute_cell
from runners.store.format import read_json, read_jsonl, run_dir
from runners.tracking.tracker import SafeTracker
from runners.tracking.wandb_tracker import (
    WandbOptions,
    WandbTracker,
    display_name,
    make_tracker,
    resolve_mode,
    wandb_run_id,
)

WANDB = Path(sys.executable).with_name("wandb")


def offline_runs(root: Path) -> list[Path]:
    """The offline run folders under a W&B dir (root/wandb/offline-run-*), oldest first."""
    return sorted((root / "wandb").glob("offline-run-*"))


def wandb_records(run_folder: Path) -> list[dict[str, Any]]:
    """Every record of the run's .wandb file, parsed by the W&B client itself."""
    (log,) = run_folder.glob("run-*.wandb")
    out = subprocess.run(
        [str(WANDB), "leet", "inspect", "--json", str(log)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def of_type(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r[kind] for r in records if r["type"] == kind]


def final_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for summary in of_type(records, "summary"):
        merged.update(summary.get("update", {}))
    return merged


@pytest.fixture
def no_wandb_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No credentials, no WANDB_* overrides, staging files under tmp_path; W&B's service is
    shut down afterwards (it would otherwise leave WANDB_SERVICE for later subprocesses)."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    yield
    import wandb

    wandb.teardown()


@pytest.mark.slow
def test_offline_cell_writes_config_history_and_summary(tmp_path, tiny_config, no_wandb_env):
    config = tiny_config(estimator="sigmoid(beta=4)", seed=3, epochs=2)
    store = tmp_path / "store"
    task = CellTask(
        config,
        str(store),
        spec_name="demo-grid",
        factors={"estimator": "sigmoid(beta=4)", "seed": 3},
        wandb=WandbOptions(mode="offline", project="proj", tags=("t1", "t2")),
    )
    summary = execute_cell(task)
    assert summary["status"] == "completed"

    # WANDB_DIR unset: W&B's files sit inside the store.
    (run_folder,) = offline_runs(store)
    assert run_folder.name.endswith(wandb_run_id(config.run_id))
    records = wandb_records(run_folder)

    (run,) = of_type(records, "run")
    assert run["run_id"] == wandb_run_id(config.run_id)
    assert run["project"] == "proj" and run["run_group"] == "demo-grid"
    assert run["job_type"] == "sigmoid(beta=4)"
    assert run["display_name"] == "sigmoid(beta=4)-s3"
    assert run["tags"] == ["t1", "t2"]
    sent = run["config"]["update"]
    assert sent["run_id"] == config.run_id and sent["spec"] == "demo-grid"
    for key, value in config.to_dict().items():
        assert sent[key] == value, key
    assert sent["factors"] == {"estimator": "sigmoid(beta=4)", "seed": 3}

    metrics = {m.get("glob_name") or m.get("name"): m for m in of_type(records, "metric")}
    assert metrics["train/*"]["step_metric"] == "global_step"
    assert metrics["epoch/*"]["step_metric"] == "epoch"

    folder = run_dir(store, config.run_id)
    steps = read_jsonl(folder / "steps.jsonl")
    epochs = read_jsonl(folder / "metrics.jsonl")
    items = [h["item"] for h in of_type(records, "history")]
    step_rows = [i for i in items if "train/loss" in i]
    assert [r["global_step"] for r in step_rows] == [s["step"] for s in steps]
    assert [r["train/loss"] for r in step_rows] == pytest.approx([s["train_loss"] for s in steps])
    epoch_rows = [i for i in items if "epoch/test_mse" in i]
    assert [r["epoch"] for r in epoch_rows] == [1, 2]
    assert [r["epoch/test_mse"] for r in epoch_rows] == pytest.approx(
        [e["test_mse"] for e in epochs]
    )
    assert epoch_rows[-1]["epoch/probe_accuracy"] == pytest.approx(epochs[-1]["probe_accuracy"])
    assert all(r["codes/bit_rates._type"] == "histogram" for r in epoch_rows)
    (image,) = [i for i in items if "reconstruction._type" in i]
    assert image["reconstruction._type"] == "image-file"
    assert (run_folder / "files" / image["reconstruction.path"]).is_file()

    final = final_summary(records)
    stored = read_json(folder / "summary.json")
    assert final["status"] == "completed"
    for key in ("test_mse", "test_psnr", "bit_entropy", "probe_accuracy", "epochs_done"):
        assert final[key] == pytest.approx(stored[key]), key
    (exit_record,) = of_type(records, "exit")
    assert exit_record.get("exit_code", 0) == 0


@pytest.mark.slow
def test_wandb_failures_never_stop_training(tmp_path, tiny_config, no_wandb_env, capsys):
    # 1. W&B refuses to start (an invalid mode reaches the real client's settings validation).
    bad_start = SafeTracker(
        make_tracker(WandbOptions("not-a-mode", directory=str(tmp_path / "wb")))
    )
    summary = train_run(tiny_config(seed=1), tmp_path / "a", tracker=bad_start, progress=False)
    assert summary["status"] == "completed"
    assert bad_start.error.startswith("start")

    # 2. W&B breaks mid-run: the real run is closed under the tracker, so its next log raises.
    class ClosedUnderneath(WandbTracker):
        def log_epoch(self, epoch: int, record: dict[str, Any]) -> None:
            self.run.finish()
            super().log_epoch(epoch, record)

    options = WandbOptions(mode="offline", project="p", directory=str(tmp_path / "wb"))
    broken = SafeTracker(ClosedUnderneath(options))
    summary = train_run(tiny_config(seed=2), tmp_path / "b", tracker=broken, progress=False)
    assert summary["status"] == "completed" and math.isfinite(summary["test_mse"])
    assert broken.error.startswith("log_epoch") and broken.tracker.run is None  # aborted
    assert "tracking stopped (log_epoch" in capsys.readouterr().err

    # 3. Through the unit of work: a W&B folder that cannot be created.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    task = CellTask(
        tiny_config(seed=3),
        str(tmp_path / "c"),
        wandb=WandbOptions(mode="offline", directory=str(blocker)),
    )
    assert execute_cell(task)["status"] == "completed"


@pytest.mark.slow
def test_online_start_up_times_out_and_falls_back_to_offline(
    tmp_path, tiny_config, no_wandb_env, monkeypatch
):
    # Credentials exist but the server does not answer (a closed local port): no prompt, no hang.
    monkeypatch.setattr(
        runners.tracking.wandb_tracker, "_ONLINE_FAILED", []
    )  # this process's memory of it
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    assert resolve_mode("auto") == ("online", None)
    options = WandbOptions(mode="online", project="p", directory=str(tmp_path / "wb"))
    tracker = make_tracker(replace(options, init_timeout=5))
    safe = SafeTracker(tracker)
    summary = train_run(tiny_config(), tmp_path / "store", tracker=safe, progress=False)
    assert summary["status"] == "completed"
    assert tracker.mode == "offline" and safe.error is None
    (run_folder,) = offline_runs(tmp_path / "wb")
    assert final_summary(wandb_records(run_folder))["status"] == "completed"
    # The next cell of this process does not wait for the server again.
    again = make_tracker(options)  # the default time-out: a minute
    started = time.perf_counter()
    again.start({"seed": 1}, "second-cell", resumed=False)
    assert time.perf_counter() - started < 30
    assert again.mode == "offline" and again.run is not None
    again.finish({"status": "completed"})


def test_auto_mode_picks_online_only_with_credentials(tmp_path, no_wandb_env, monkeypatch):
    mode, message = resolve_mode("auto")
    assert mode == "offline" and "no W&B credentials" in message
    assert resolve_mode("online")[0] == "offline"  # never a login prompt
    assert resolve_mode("disabled") == ("disabled", None)
    assert resolve_mode("offline") == ("offline", None)

    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert resolve_mode("auto") == ("online", None)

    monkeypatch.setenv("WANDB_MODE", "disabled")  # an explicit environment choice wins in auto
    assert resolve_mode("auto") == ("disabled", None)
    with pytest.raises(ValueError):
        resolve_mode("sometimes")


def test_names_and_ids() -> None:
    assert display_name("sigmoid(beta=4)", 3) == "sigmoid(beta=4)-s3"
    assert (
        display_name("relu", 0, {"estimator": "relu", "seed": 0, "pre_threshold_relu": False})
        == "relu-s0-pre_threshold_relu=False"
    )
    assert wandb_run_id("sigmoid-beta-4-s3-1a2b3c4d5e") == "sigmoid-beta-4-s3-1a2b3c4d5e"
    assert wandb_run_id("a/b:c") == "a-b-c"
    assert make_tracker(WandbOptions("disabled")).__class__.__name__ == "NullTracker"
