"""`ste-ablate train` end to end, in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runners.cli import main
from runners.store import format as st

# Diagnostics off: at this size they cost more than the training (tests of them turn them on).
TINY_FLAGS = ["--dataset", "mnist-mini", "--train-subset", "128", "--test-subset", "64",
              "--epochs", "1", "--device", "cpu", "--num-threads", "1", "--diagnostics", "off"]  # fmt: skip


def ste_ablate(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runners.cli", *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}, **kwargs,
    )  # fmt: skip


@pytest.mark.slow
def test_train_writes_a_finished_run_and_reports_it(tmp_path):
    out = tmp_path / "store"
    result = ste_ablate("train", "--estimator", "sigmoid(beta=4)", "--seed", "2", *TINY_FLAGS,
                        "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    run_line = next(line for line in result.stdout.splitlines() if line.startswith("run:"))
    folder = Path(run_line.split(maxsplit=1)[1])
    assert folder.parent == out / "runs" and folder.name.startswith("sigmoid-beta-4-s2-")
    assert "status:         completed" in result.stdout and "test_mse:" in result.stdout
    assert st.cell_state(folder) == "completed"
    config = json.loads((folder / st.CONFIG).read_text())["config"]
    assert config["estimator"] == "sigmoid(beta=4)" and config["seed"] == 2

    # Again, with the store from $STE_STORE: nothing is retrained, the same summary comes back.
    again = ste_ablate("train", "--estimator", "sigmoid(beta=4)", "--seed", "2", *TINY_FLAGS,
                       "--json", env={"STE_STORE": str(out)})  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == json.loads((folder / st.SUMMARY).read_text())


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
    out = tmp_path / "store"
    result = ste_ablate("train", *TINY_FLAGS, "--estimator", "sigmod", "--out", str(out))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ste-ablate: error: estimator: ")
    assert "did you mean sigmoid" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seed", "x"], "--seed must be an integer, got 'x'"),
        (["--train-subset", "7000"], "exceeds the 6000 images of mnist-mini"),
        (["--lr", "-1"], "lr must be in"),
        (["--device", "tpu"], "device must be"),
        (["--probe", "svm"], "probe must be one of 'linear', 'knn'"),
    ],
)
def test_more_bad_input_in_process(tmp_path, capsys, flags, message):
    out = tmp_path / "store"
    assert main(["train", *TINY_FLAGS, *flags, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ste-ablate: error: ") and message in lines[0]
    assert not out.exists()


def test_missing_full_mnist_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "store"
    root = tmp_path / "data"
    root.mkdir()
    # An unroutable proxy keeps the download attempt offline, whatever this machine's network.
    env = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    result = ste_ablate("train", "--dataset", "mnist", "--data-root", str(root), "--out", str(out),
                        env=env)  # fmt: skip
    assert result.returncode == 2
    error = [line for line in result.stderr.splitlines() if line.startswith("ste-ablate: error:")]
    assert len(error) == 1 and str(root / "MNIST" / "raw") in error[0]
    assert "t10k-labels-idx1-ubyte" in error[0]
    assert not out.exists() and list(root.iterdir()) == []


@pytest.mark.slow
@pytest.mark.serial
def test_sigint_interrupts_cleanly_and_the_rerun_resumes(tmp_path):
    out = tmp_path / "store"
    flags = [*TINY_FLAGS, "--train-subset", "512", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "runners.cli", "train", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    for line in proc.stderr:  # the run has started once it announces itself
        if "training on cpu" in line:
            break
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "status:         interrupted" in stdout
    folder = next((out / "runs").iterdir())
    assert st.cell_state(folder) == "interrupted"
    done = len((folder / st.STEPS).read_text().splitlines())
    assert 1 <= done < 8

    result = ste_ablate("train", *flags)
    assert result.returncode == 0, result.stderr
    assert st.cell_state(folder) == "completed"
    steps = [json.loads(line) for line in (folder / st.STEPS).read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(1, 9))
