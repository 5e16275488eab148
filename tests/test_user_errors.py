"""User-caused conditions end in one line and exit 2, never a traceback; reports are replaced
whole. SYNTHETIC TEST DATA (tests/analysis_synth.py) for the analysis commands."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from analysis_synth import make_store, spec_cells

from runners.cli import main

SPEC = """\
name: userr
base: {dataset: mnist-mini, epochs: 2}
grid:
  estimator: [identity, hardtanh]
  seed: [0, 1, 2]
"""
FAST = ["--resamples", "99", "--formats", "png"]
MANIFEST = """\
version: 1
output: build
formats: [png]
seed: 0
n_resamples: 99
snapshots: {{s: {snap}}}
items:
  - {{name: final, snapshot: s, kind: final_metric}}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(spec, store, snapshot) of a small synthetic study."""
    root = tmp_path_factory.mktemp("userr")
    spec = root / "spec.yaml"
    spec.write_text(SPEC)
    name, cells = spec_cells(spec)
    make_store(root / "store", name=name, cells=cells, epochs=2)
    snap = root / "snap.csv"
    assert main(["snapshot", str(spec), "--store", str(root / "store"), "--out", str(snap)]) == 0
    return spec, root / "store", snap


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("ste-ablate: error:") and len(err.splitlines()) == 1, err
    return err


def test_a_store_on_a_symlink_loop_is_an_error(study, tmp_path, capsys) -> None:
    spec, _, _ = study
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert main(["run", str(spec), "--store", str(loop), "--wandb", "disabled"]) == 2
    assert "cannot be used" in one_line(capsys)
    assert main(["train", "--dataset", "mnist-mini", "--store", str(loop / "x")]) == 2
    assert "cannot be used" in one_line(capsys)


def test_out_below_a_regular_file_is_an_error(study, tmp_path, capsys) -> None:
    spec, store, snap = study
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file")
    argv = ["analyze", str(spec), "--store", str(store), "--out", str(blocker / "r"), *FAST]
    assert main(argv) == 2
    assert "file.txt" in one_line(capsys)
    argv = ["snapshot", str(spec), "--store", str(store), "--out", str(blocker / "s.csv")]
    assert main(argv) == 2
    one_line(capsys)
    manifest = tmp_path / "figures.yaml"
    manifest.write_text(MANIFEST.format(snap=snap))
    assert main(["figures", str(manifest), "--out", str(blocker / "build")]) == 2
    one_line(capsys)


def test_a_folder_where_the_meta_goes_is_an_error_before_anything_is_written(
    study, tmp_path, capsys
) -> None:
    spec, store, _ = study
    out = tmp_path / "snap.csv"
    (tmp_path / "snap.csv.meta.json").mkdir()
    assert main(["snapshot", str(spec), "--store", str(store), "--out", str(out)]) == 2
    assert "is a folder" in one_line(capsys)
    assert not out.exists()


def test_a_full_disk_is_a_one_line_error(study, tmpfs, capsys) -> None:
    spec, store, snap = study
    full = tmpfs("size=4k")
    argv = ["analyze", str(spec), "--store", str(store), "--out", str(full / "r"), *FAST]
    assert main(argv) == 2
    assert "No space left on device" in one_line(capsys)
    assert list(full.iterdir()) == []  # the partial report folder is gone
    argv = ["snapshot", str(spec), "--store", str(store), "--out", str(full / "s.csv")]
    assert main(argv) == 2
    assert "No space left on device" in one_line(capsys)
    manifest = full.parent / "figures.yaml"
    manifest.write_text(MANIFEST.format(snap=snap))
    assert main(["figures", str(manifest), "--out", str(full / "build")]) == 2
    assert "No space left on device" in one_line(capsys)


BAD_ITEMS = {
    "seed: abc": ("seed: 0", "seed: abc", "seed must be an integer"),
    "n_resamples: -5": ("n_resamples: 99", "n_resamples: -5", "n_resamples must be"),
    "formats: [exe]": ("formats: [png]", "formats: [exe]", "formats must be"),
    "metric: nosuch": ("kind: final_metric}", "kind: final_metric, metric: nosuch}", "nosuch"),
    "options: {bogus: 1}": ("final_metric}", "final_metric, options: {bogus: 1}}", "bogus"),
    "study: {alpha: 5}": ("final_metric}", "final_metric, study: {alpha: 5}}", "alpha"),
    "name: ../x": ("name: final", "name: ../../x", "name must be"),
    "output: /abs": ("output: build", "output: /tmp/elsewhere", "output must stay"),
}


@pytest.mark.parametrize("bad", list(BAD_ITEMS))
def test_every_bad_value_of_a_figures_manifest_is_a_one_line_error(
    study, tmp_path, capsys, bad
) -> None:
    _, _, snap = study
    old, new, expected = BAD_ITEMS[bad]
    text = MANIFEST.format(snap=snap)
    assert old in text
    manifest = tmp_path / "figures.yaml"
    manifest.write_text(text.replace(old, new, 1))
    assert main(["figures", str(manifest)]) == 2
    assert expected in one_line(capsys)
    assert not (tmp_path / "build").exists()


def test_estimators_print_on_a_latin_1_terminal() -> None:
    env = {**os.environ, "PYTHONIOENCODING": "latin-1"}
    done = subprocess.run(
        [sys.executable, "-m", "runners.cli", "estimators"], capture_output=True, env=env
    )
    assert done.returncode == 0, done.stderr.decode("latin-1")
    assert b"Traceback" not in done.stderr


@pytest.mark.slow
def test_gradcheck_prints_on_a_latin_1_terminal(finished_run, copy_run) -> None:
    _, reference = finished_run
    folder = copy_run(reference) / "runs" / reference.name
    env = {**os.environ, "PYTHONIOENCODING": "latin-1"}
    argv = [sys.executable, "-m", "runners.cli", "gradcheck", str(folder)]
    done = subprocess.run(
        [*argv, "--estimators", "identity", "--probe", "2"], capture_output=True, env=env
    )
    assert done.returncode == 0, done.stderr.decode("latin-1")
    assert b"Traceback" not in done.stderr


def report_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_failing_analyze_leaves_the_earlier_report_whole(
    study, tmp_path, capsys, monkeypatch
) -> None:
    spec, store, _ = study
    out = tmp_path / "report"
    argv = ["analyze", str(spec), "--store", str(store), "--out", str(out), *FAST]
    assert main(argv) == 0
    before = report_files(out)
    from analysis.render import report

    real = report.atomic_write_text

    def write_then_fail(path, text):
        real(path, text)
        if Path(path).name == "cells.csv":
            raise OSError(28, "No space left on device")  # the figures are written by now

    monkeypatch.setattr(report, "atomic_write_text", write_then_fail)
    assert main([*argv[: -len(FAST)], "--metric", "test_psnr", *FAST]) == 2
    assert report_files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_analyze_refuses_to_replace_a_folder_that_is_not_a_report(study, tmp_path, capsys):
    spec, store, _ = study
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    argv = ["analyze", str(spec), "--store", str(store), "--out", str(out), *FAST]
    assert main(argv) == 2
    assert "notes.txt" in one_line(capsys)
    assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_kill_9_during_analyze_leaves_the_old_or_the_new_report(study, tmp_path) -> None:
    spec, store, _ = study
    out = tmp_path / "report"
    base = [sys.executable, "-m", "runners.cli", "analyze", str(spec), "--store", str(store)]
    old_argv = [*base, "--out", str(out), *FAST]
    new_argv = [*base, "--out", str(tmp_path / "new"), "--metric", "test_psnr", *FAST]
    subprocess.run(old_argv, check=True, capture_output=True)
    subprocess.run(new_argv, check=True, capture_output=True)
    old, new = report_files(out), report_files(tmp_path / "new")
    assert old != new
    pristine = tmp_path / "pristine"
    shutil.copytree(out, pristine)
    for delay in (2.5, 3.5, 4.5, 5.5, 7.0):
        process = subprocess.Popen([*base, "--out", str(out), "--metric", "test_psnr", *FAST])
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        now = report_files(out) if out.exists() else None
        assert now in (old, new, None), delay
        if now != old:  # the old report back for the next kill; the killed run's leftovers stay
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(pristine, out)
    subprocess.run(old_argv, check=True, capture_output=True)  # a rerun after the kills
    assert report_files(out) == old
    assert not list(tmp_path.glob(".report.*")), "a killed run's folders outlived the rerun"
