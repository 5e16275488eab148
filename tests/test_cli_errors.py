"""Bad input ends in one line and exit 2, never a traceback: a --store that is a file, a
read-only store, an unknown metric."""

from __future__ import annotations

from pathlib import Path

import pytest
from analysis_synth import make_store, spec_cells

from runners.cli import main

SPEC = (
    "name: tiny\nbase: {dataset: mnist-mini, train_subset: 128, test_subset: 64, epochs: 1, "
    'device: cpu, num_threads: 1, diagnostics: "off"}\ngrid:\n  seed: [0, 1]\n'
)


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return path


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("ste-ablate: error:") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("command", ["run", "status"])
def test_a_store_that_is_a_file_is_an_error(tmp_path, spec, capsys, command):
    store = tmp_path / "afile"
    store.write_text("not a store\n")
    assert main([command, str(spec), "--store", str(store)]) == 2
    assert "is not a folder" in error_line(capsys)  # not "2 missing", exit 0
    assert store.read_text() == "not a store\n"


def test_a_read_only_store_is_an_error(spec, read_only_folder, capsys):
    assert main(["run", str(spec), "--store", str(read_only_folder), "--wandb", "disabled"]) == 2
    assert "cannot write to the store" in error_line(capsys)  # not OSError 30, exit 1


def test_analyze_says_an_unknown_metric_does_not_exist(tmp_path, capsys):
    spec = tmp_path / "pair.yaml"
    spec.write_text(
        "name: pair\nbase: {dataset: mnist-mini, epochs: 3}\n"
        "grid:\n  estimator: [identity, hardtanh]\n  seed: [0, 1]\n"
    )
    name, cells = spec_cells(spec)
    store = tmp_path / "store"
    make_store(store, name=name, cells=cells)
    out = tmp_path / "report"
    argv = ["analyze", str(spec), "--store", str(store), "--out", str(out)]
    assert main([*argv, "--metric", "nosuch"]) == 2
    err = error_line(capsys)
    assert "'nosuch' does not exist" in err and "test_mse" in err
    assert "--direction" not in err  # no direction asked for a metric not there
    assert not out.exists()
