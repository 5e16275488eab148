"""`ste-ablate run` and `ste-ablate status` end to end (in-process, and in subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners.cli import main
from runners.commands.run import stack_size
from runners.grids.spec import load_spec
from runners.store import format as run_store
from runners.store.format import read_json

TINY_BASE = (
    "base: {dataset: mnist-mini, train_subset: 128, test_subset: 64, epochs: 1, "
    'device: cpu, diagnostics: "off", num_threads: 1}\n'
)


def write_spec(tmp_path: Path, grid: str, name: str = "tiny", base: str = TINY_BASE) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ndescription: test grid\n{base}grid:\n{grid}")
    return path


def ste(*args: str) -> subprocess.Popen:
    """`ste-ablate ARGS` in a subprocess (stdout/stderr piped, own session)."""
    return subprocess.Popen(
        [sys.executable, "-m", "runners.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")},
            "WANDB_MODE": "disabled",
            "PYTHONUNBUFFERED": "1",
        },
    )


def test_bad_spec_lists_every_problem_exits_2_and_writes_nothing(tmp_path, capsys) -> None:
    spec = write_spec(tmp_path, "  estimator: [identity, sigmod]\n  sed: [0]\n")
    store = tmp_path / "store"
    assert main(["run", str(spec), "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ste-ablate: error:")
    assert "sigmod" in err and "'sed' (did you mean 'seed'?)" in err and "2 problems" in err
    assert not store.exists()
    assert main(["status", str(spec), "--store", str(store)]) == 2
    assert main(["run", str(tmp_path / "missing.yaml"), "--store", str(store)]) == 2
    assert not store.exists()


def test_dry_run_lists_cells_and_writes_nothing(tmp_path, capsys) -> None:
    spec = write_spec(tmp_path, "  estimator: [identity, 'sigmoid(beta=1)']\n  seed: [0, 1]\n")
    store = tmp_path / "store"
    assert main(["run", str(spec), "--store", str(store), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for cell in load_spec(spec).cells:
        assert cell.run_id in out
    assert "4 would run (4 missing)" in out and "sigmoid" in out
    assert not store.exists()


def test_run_then_rerun_trains_nothing_and_status_shows_the_table(tmp_path, capsys) -> None:
    spec_path = write_spec(tmp_path, "  estimator: [identity, hardtanh]\n  seed: [0]\n")
    store = tmp_path / "store"
    args = ["run", str(spec_path), "--store", str(store), "--wandb", "disabled", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 to run, 0 already final" in out and "2 completed" in out

    spec = load_spec(spec_path)
    index = read_json(store / "specs" / "tiny.json")
    assert index["spec_sha256"] == spec.sha256 and index["axes"] == ["estimator", "seed"]
    assert [c["run_id"] for c in index["cells"]] == [c.run_id for c in spec.cells]
    assert index["cells"][1]["factors"] == {"estimator": "hardtanh", "seed": 0}

    summaries = {c.run_id: run_store.run_dir(store, c.run_id) / "summary.json" for c in spec.cells}
    mtimes = {k: p.stat().st_mtime_ns for k, p in summaries.items()}
    started = time.perf_counter()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "0 to run, 2 already final" in out
    assert {k: p.stat().st_mtime_ns for k, p in summaries.items()} == mtimes
    assert time.perf_counter() - started < 10  # nothing trained

    assert main(["status", str(spec_path), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    for cell in spec.cells:
        line = next(line for line in out.splitlines() if line.startswith(cell.run_id))
        mse = read_json(summaries[cell.run_id])["test_mse"]
        assert "completed" in line and f"{mse:.5f}" in line
    assert "2 completed" in out
    header = next(line for line in out.splitlines() if line.startswith("run_id"))
    assert header.split() == ["run_id", "estimator", "seed", "state", "epochs", "test_mse"]


def test_diverged_cell_is_final_and_makes_the_exit_code_1(tmp_path, capsys) -> None:
    spec_path = write_spec(tmp_path, "  lr: [0.001, 1.0e+30]\n")
    store = tmp_path / "store"
    args = ["run", str(spec_path), "--store", str(store), "--wandb", "disabled", "--no-progress"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "1 completed, 1 diverged" in out
    assert main(args) == 1
    assert "0 to run, 2 already final" in capsys.readouterr().out
    assert main(["status", str(spec_path), "--store", str(store)]) == 0
    assert "diverged" in capsys.readouterr().out


def test_offline_wandb_lands_in_the_store(tmp_path, capsys, monkeypatch) -> None:
    for name in ("WANDB_DIR", "WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    spec_path = write_spec(tmp_path, "  seed: [0]\n")
    store = tmp_path / "store"
    args = ["run", str(spec_path), "--store", str(store), "--wandb", "offline", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"wandb sync {store / 'wandb'}/offline-run-*" in out
    assert len(list((store / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    import wandb

    wandb.teardown()  # W&B ran in this process: stop its service, drop WANDB_SERVICE
    assert "WANDB_SERVICE" not in os.environ


def test_help_explains_options_and_exit_codes(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for piece in ("--workers", "--wandb", "--dry-run", "--store", "exit codes", "wandb sync"):
        assert piece in text


@pytest.mark.slow
def test_two_runs_on_one_store_share_the_cells(tmp_path) -> None:
    spec_path = write_spec(
        tmp_path,
        "  seed: [0, 1]\n",
        base=TINY_BASE.replace("epochs: 1", "epochs: 3").replace("128, test", "256, test"),
    )
    store = tmp_path / "store"
    spec = load_spec(spec_path)
    first_dir = run_store.run_dir(store, spec.cells[0].run_id)
    first = ste("run", str(spec_path), "--store", str(store), "--no-progress")
    try:
        deadline = time.monotonic() + 120
        while not run_store.lock_held(first_dir):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        second = ste("run", str(spec_path), "--store", str(store), "--no-progress")
        out2, err2 = second.communicate(timeout=300)
        out1, err1 = first.communicate(timeout=300)
    finally:
        first.kill()
    assert "1 to run, 0 already final, 1 running elsewhere" in out2, out2 + err2
    assert {first.returncode, second.returncode} <= {0, 1}, err1 + err2
    for cell in spec.cells:
        folder = run_store.run_dir(store, cell.run_id)
        assert run_store.cell_state(folder) == "completed"
        assert len(json.loads((folder / "summary.json").read_text())["files"]) >= 4
    # each cell was trained by exactly one of the two processes
    trained1 = {c.run_id for c in spec.cells if f"completed   {c.run_id}" in err1}
    trained2 = {c.run_id for c in spec.cells if f"completed   {c.run_id}" in err2}
    assert trained1 | trained2 == {c.run_id for c in spec.cells}
    assert not trained1 & trained2


@pytest.mark.slow
def test_stack_flag_trains_cells_together_bit_identical_to_one_at_a_time(tmp_path, capsys) -> None:
    grid = "  estimator: [identity, sigmoid, 'approx_sign']\n  seed: [0]\n"
    spec_path = write_spec(tmp_path, grid)
    cells = load_spec(spec_path).cells
    alone, stacked = tmp_path / "alone", tmp_path / "stacked"
    common = ["--wandb", "disabled", "--no-progress"]
    assert main(["run", str(spec_path), "--store", str(alone), "--stack", "1", *common]) == 0
    assert "stacks of" not in capsys.readouterr().out
    assert main(["run", str(spec_path), "--store", str(stacked), "--stack", "3", *common]) == 0
    out = capsys.readouterr().out
    assert "stacks of up to 3 cells (--stack" in out and "3 completed" in out
    for cell in cells:  # each cell has its own store entry, equal to its unstacked run's
        a, b = (run_store.run_dir(s, cell.run_id) for s in (alone, stacked))
        assert (a / "steps.jsonl").read_bytes() == (b / "steps.jsonl").read_bytes()
        ma, mb = (read_json(d / "summary.json") for d in (a, b))
        assert ma["status"] == mb["status"] == "completed" and ma["test_mse"] == mb["test_mse"]


def test_stack_size_comes_from_the_flag_the_spec_or_the_device(tmp_path, capsys) -> None:
    cells = load_spec(write_spec(tmp_path, "  seed: [0, 1, 2]\n")).cells
    assert stack_size(2, cells, workers=1) == (2, "--stack")
    assert stack_size(None, cells, workers=1) == (1, "automatic")  # the CPU: no stacking
    base = TINY_BASE.replace("num_threads: 1}", "num_threads: 1, stack: 3}")
    spec_cells = load_spec(write_spec(tmp_path, "  seed: [0, 1, 2]\n", "s2", base)).cells
    assert stack_size(None, spec_cells, workers=1) == (3, "spec")
    assert stack_size(1, spec_cells, workers=1) == (1, "--stack")  # the flag wins
    assert [c.run_id for c in spec_cells] == [c.run_id for c in cells]  # not part of the id
    with pytest.raises(SystemExit) as exc:
        main(["run", "x.yaml", "--stack", "0"])
    assert exc.value.code == 2 and "--stack must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_grouped_stacks_run_through_the_cli_on_the_cpu(tmp_path, capsys) -> None:
    # The code path a GPU takes by default (one grouped model for the stack), run on the CPU:
    # each cell gets its own store entry, and its results equal its unstacked run's up to float
    # rounding (the first step exactly to rounding; later steps drift as runners/training/kernels.py says).
    grid = "  estimator: [identity, sigmoid, 'approx_sign']\n  seed: [0]\n"
    spec_path = write_spec(tmp_path, grid)
    alone, grouped = tmp_path / "alone", tmp_path / "grouped"
    common = ["--wandb", "disabled", "--no-progress"]
    assert main(["run", str(spec_path), "--store", str(alone), *common]) == 0
    args = ["run", str(spec_path), "--store", str(grouped), "--stack", "3"]
    assert main([*args, "--stack-mode", "grouped", *common]) == 0
    assert "stacks of up to 3 cells (--stack, grouped" in capsys.readouterr().out
    for cell in load_spec(spec_path).cells:
        a, b = (run_store.run_dir(s, cell.run_id) for s in (alone, grouped))
        first = [json.loads((d / "steps.jsonl").read_text().splitlines()[0]) for d in (a, b)]
        assert first[1]["train_loss"] == pytest.approx(first[0]["train_loss"], rel=1e-5)
        sa, sb = (read_json(d / "summary.json") for d in (a, b))
        assert sa["status"] == sb["status"] == "completed"
        assert sb["test_mse"] == pytest.approx(sa["test_mse"], rel=0.2)


@pytest.mark.parametrize(
    "problem",
    ["device", "store", "data"],
)
def test_dry_run_fails_where_the_run_would_and_the_same_way(tmp_path, capsys, problem) -> None:
    """--dry-run checks the device, the data and the store as the run does first: exit 2, the
    same one-line error, nothing written."""
    spec = write_spec(tmp_path, "  estimator: [identity]\n  seed: [0]\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    store, extra = tmp_path / "store", []
    if problem == "device":
        if __import__("torch").cuda.is_available():
            pytest.skip("this machine has CUDA")
        extra = ["--device", "cuda"]
    elif problem == "store":
        store = blocker / "store"
    else:
        spec = write_spec(
            tmp_path, "  estimator: [identity]\n  seed: [0]\n", base=TINY_BASE.replace("-mini", "")
        )
        extra = ["--data-root", str(blocker / "data")]
    errors = []
    for dry in (["--dry-run"], []):
        args = ["run", str(spec), "--store", str(store), "--wandb", "disabled", *extra, *dry]
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ste-ablate: error:"), err
        errors.append(err[0])
    assert not (tmp_path / "store").exists()
    word = {"device": "CUDA", "store": "cannot write to the store", "data": "MNIST is not in"}
    assert all(word[problem] in e for e in errors), errors
    if problem != "data":  # the run names why the download failed; --dry-run does not download
        assert errors[0] == errors[1]


def test_dry_run_warns_that_missing_mnist_will_be_downloaded(tmp_path, capsys) -> None:
    spec = write_spec(
        tmp_path, "  estimator: [identity]\n  seed: [0]\n", base=TINY_BASE.replace("-mini", "")
    )
    root = tmp_path / "data"
    args = ["run", str(spec), "--store", str(tmp_path / "s"), "--data-root", str(root)]
    assert main([*args, "--dry-run"]) == 0
    assert "will try to download it" in capsys.readouterr().err
    assert not root.exists() and not (tmp_path / "s").exists()


@pytest.mark.slow
def test_without_a_terminal_each_finished_cell_prints_its_position_and_an_eta(tmp_path) -> None:
    spec = write_spec(tmp_path, "  estimator: [identity, hardtanh]\n  seed: [0]\n")
    proc = ste("run", str(spec), "--store", str(tmp_path / "store"))  # stderr is a pipe
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    lines = [line for line in err.splitlines() if line.startswith("cell ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"], err
    assert "completed" in lines[0] and "ETA" in lines[0] and lines[1].endswith("ETA 0s")


@pytest.mark.slow
def test_num_threads_flag_sets_the_runs_thread_count_not_its_id(tmp_path) -> None:
    spec = write_spec(tmp_path, "  estimator: [identity]\n  seed: [0]\n")  # the spec says 1
    store = tmp_path / "store"
    proc = ste("run", str(spec), "--store", str(store), "--num-threads", "2")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    (cell,) = load_spec(spec).cells
    written = read_json(run_store.run_dir(store, cell.run_id) / "config.json")
    assert written["config"]["num_threads"] == 2 and written["runtime"]["torch_threads"] == 2
    bad = ste("run", str(spec), "--store", str(store), "--num-threads", "0")
    _, err = bad.communicate(timeout=60)
    assert bad.returncode == 2 and "--num-threads must be at least 1" in err
