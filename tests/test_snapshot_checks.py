"""Snapshots prove every file by content before they are read; names from them are validated.

SYNTHETIC TEST DATA (tests/analysis_synth.py) for the analysis side; `reproduce` re-trains the
shared tiny finished run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from analysis_synth import make_store, spec_cells

from analysis.sources.snapshot import meta_path, read_snapshot, write_snapshot
from analysis.sources.store import scan_store
from analysis.sources.tidy import StoreError
from runners.cli import main
from runners.store.records import TIMING_KEYS

SPEC = """\
name: snapcheck
base: {dataset: mnist-mini, epochs: 2}
grid:
  estimator: [identity, hardtanh]
  seed: [0, 1, 2]
"""
FAST = ["--resamples", "99", "--formats", "png"]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("snap")
    spec = root / "spec.yaml"
    spec.write_text(SPEC)
    name, cells = spec_cells(spec)
    make_store(root / "store", name=name, cells=cells, epochs=2)
    snap = root / "snap.csv"
    assert main(["snapshot", str(spec), "--store", str(root / "store"), "--out", str(snap)]) == 0
    return snap


def copy_snapshot(snap: Path, folder: Path, stem: str = "snap") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in snap.parent.glob(f"{snap.stem}.*"):
        target = path.name.replace(snap.stem, stem, 1)
        shutil.copy(path, folder / target)
    return folder / f"{stem}.csv"


def error_of(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def analyze_fails(snap: Path, capsys, *extra: str) -> str:
    out = snap.parent / "report"
    assert main(["analyze", "--snapshot", str(snap), "--out", str(out), *extra, *FAST]) == 2
    assert not out.exists()
    return error_of(capsys)


def test_the_intact_snapshot_reads(snapshot, tmp_path) -> None:
    snap = copy_snapshot(snapshot, tmp_path / "copy")
    data = read_snapshot(snap)
    assert len(data.table) and data.bits is not None


def test_a_tampered_table_renamed_with_its_meta_is_refused(snapshot, tmp_path, capsys) -> None:
    snap = copy_snapshot(snapshot, tmp_path / "copy", stem="renamed")
    snap.write_text(snap.read_text().replace("0.0", "0.1", 1))
    assert "does not match the sha256" in analyze_fails(snap, capsys)


def test_a_tampered_bits_file_is_refused(snapshot, tmp_path, capsys) -> None:
    snap = copy_snapshot(snapshot, tmp_path / "copy")
    bits = snap.with_name("snap.bits.csv")
    bits.write_text(bits.read_text().replace("0.", "0.9", 1))
    assert "bits file of snapshot" in analyze_fails(snap, capsys)


def test_a_bits_file_the_meta_does_not_list_is_refused(snapshot, tmp_path, capsys) -> None:
    snap = copy_snapshot(snapshot, tmp_path / "copy")
    meta = json.loads(meta_path(snap).read_text())
    meta["files"] = {k: v for k, v in meta["files"].items() if ".bits." not in k}
    meta_path(snap).write_text(json.dumps(meta))
    assert "not listed in its metadata" in analyze_fails(snap, capsys)


@pytest.mark.parametrize("dtype", ["int8", "Int64", "bogus"])
def test_meta_dtypes_that_would_change_values_are_refused(snapshot, tmp_path, capsys, dtype):
    snap = copy_snapshot(snapshot, tmp_path / "copy")
    meta = json.loads(meta_path(snap).read_text())
    meta["dtypes"]["value"] = dtype
    meta_path(snap).write_text(json.dumps(meta))
    assert "column 'value'" in analyze_fails(snap, capsys)


@pytest.mark.parametrize("name", ["../../escaped", "{tmp}/absolute", ".."])
def test_a_spec_name_from_the_meta_never_names_a_folder_outside(
    snapshot, tmp_path, capsys, monkeypatch, name
) -> None:
    snap = copy_snapshot(snapshot, tmp_path / "copy")
    meta = json.loads(meta_path(snap).read_text())
    meta["spec"]["name"] = name.format(tmp=tmp_path)
    monkeypatch.chdir(tmp_path)
    meta_path(snap).write_text(json.dumps(meta))
    assert main(["analyze", "--snapshot", str(snap), *FAST]) == 2
    assert "is not a spec name" in error_of(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no report anywhere
    assert not (tmp_path.parent / "escaped").exists()


def test_a_snapshot_without_meta_is_refused_unless_unverified(snapshot, tmp_path, capsys):
    snap = copy_snapshot(snapshot, tmp_path / "copy")
    meta_path(snap).unlink()
    assert "has no metadata file" in analyze_fails(snap, capsys)
    with pytest.raises(StoreError, match="--unverified"):
        read_snapshot(snap)
    out = tmp_path / "report"
    argv = ["analyze", "--snapshot", str(snap), "--unverified", "--out", str(out), *FAST]
    assert main(argv) == 0
    assert (out / "report.html").is_file()


def test_a_parquet_snapshot_without_pyarrow_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)  # as if not installed
    snap = tmp_path / "snap.parquet"
    snap.write_bytes(b"PAR1 not really")
    assert "pyarrow" in analyze_fails(snap, capsys, "--unverified")
    assert main(["reproduce", str(snap), "--unverified"]) == 2
    assert "pyarrow" in error_of(capsys)


@pytest.fixture(scope="module")
def real_snapshot(finished_run, tmp_path_factory) -> Path:
    """A snapshot of the shared finished run (a real, re-trainable cell)."""
    _, folder = finished_run
    data = scan_store(folder.parents[1], None)
    snap = tmp_path_factory.mktemp("real") / "real.csv"
    write_snapshot(data, snap, spec_name="real")
    return snap


def test_reproduce_does_not_call_a_cell_with_only_timings_reproduced(real_snapshot, capsys):
    data = read_snapshot(real_snapshot)
    data.table = data.table[data.table["metric"].isin(TIMING_KEYS)]
    timings = real_snapshot.with_name("timings.csv")
    write_snapshot(data, timings, spec_name="timings")
    assert main(["reproduce", str(timings)]) == 1
    out = capsys.readouterr().out
    assert "NOT CHECKED" in out and "0/1 cells reproduced" in out


def test_reproduce_reads_a_meta_less_snapshot_with_unverified(real_snapshot, tmp_path, capsys):
    snap = copy_snapshot(real_snapshot, tmp_path / "copy", stem="real")
    meta_path(snap).unlink()
    assert main(["reproduce", str(snap)]) == 2
    assert "--unverified" in error_of(capsys)
    assert main(["reproduce", str(snap), "--unverified"]) == 0
    assert "1/1 cells reproduced bit for bit" in capsys.readouterr().out


@pytest.mark.slow
def test_kill_9_during_snapshot_leaves_a_snapshot_that_verifies_or_is_refused(tmp_path) -> None:
    """Chaos: `snapshot` killed at seeded moments over an earlier snapshot of another store;
    what is left reads back as one whole snapshot (old or new) or is refused, never mixed."""
    import random
    import signal
    import subprocess
    import sys
    import time

    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    name, cells = spec_cells(spec)
    stores = [tmp_path / "a", tmp_path / "b"]
    for seed, store in enumerate(stores):
        make_store(store, name=name, cells=cells, epochs=2, seed=seed)
    snap = tmp_path / "snap.csv"
    wholes = []
    for store in stores:
        assert main(["snapshot", str(spec), "--store", str(store), "--out", str(snap)]) == 0
        wholes.append(read_snapshot(snap).table)
    rng = random.Random(5)
    argv = [sys.executable, "-m", "runners.cli", "snapshot", str(spec), "--out", str(snap)]
    refused = 0
    for _ in range(6):
        process = subprocess.Popen([*argv, "--store", str(stores[0])])
        time.sleep(rng.uniform(1.0, 4.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        try:
            table = read_snapshot(snap).table
        except StoreError:
            refused += 1
        else:
            assert any(table.equals(whole) for whole in wholes)
        assert main(["snapshot", str(spec), "--store", str(stores[1]), "--out", str(snap)]) == 0
