"""analysis.sources (store, table, snapshot, W&B) on synthetic stores (SYNTHETIC TEST DATA)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from analysis_synth import make_store

from analysis.sources.snapshot import meta_path, read_snapshot, write_snapshot
from analysis.sources.store import load_bit_rates, load_store, read_spec_index, scan_store
from analysis.sources.tidy import BASE_COLUMNS, StoreError, build_table, parse_estimator
from analysis.sources.wandb_runs import record_from_wandb


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, dict]:
    index = make_store(
        tmp_path / "store",
        seeds=(0, 1, 2),
        missing=(("identity", 2),),
        statuses={("hardtanh", 1): "failed", ("hardtanh", 2): "diverged"},
    )
    return tmp_path / "store", index


def _run(index: dict, estimator: str, seed: int) -> str:
    return next(
        c["run_id"]
        for c in index["cells"]
        if c["factors"] == {"estimator": estimator, "seed": seed}
    )


def test_tidy_table_columns_and_rows(store):
    root, index = store
    table = load_store(root, index)
    assert list(table.columns[: len(BASE_COLUMNS)]) == list(BASE_COLUMNS)
    for column in ("dataset", "lr", "code_channels", "pre_threshold_relu", "hp_beta"):
        assert column in table.columns
    real = table.dropna(subset=["metric"])
    assert not real.duplicated(["run_id", "epoch", "metric"]).any()  # one row per run×epoch×metric
    run = _run(index, "sigmoid(beta=4)", 0)
    rows = real[real["run_id"] == run]
    assert sorted(rows["epoch"].unique()) == [1, 2, 3]
    assert rows.query("metric == 'test_mse'")["value"].notna().all()
    # bit_flip_rate is null at epoch 1: not a row; probe and wall time only at the last epoch
    assert set(rows.query("metric == 'bit_flip_rate'")["epoch"]) == {2, 3}
    assert set(rows.query("metric == 'probe_accuracy'")["epoch"]) == {3}
    assert set(rows.query("metric == 'wall_time_s'")["epoch"]) == {3}
    assert (rows["estimator_name"] == "sigmoid").all() and (rows["hp_beta"] == 4.0).all()
    assert str(table["seed"].dtype) == "Int64" and str(table["epochs"].dtype) == "Int64"
    assert "bit_rates" not in set(table["metric"].dropna())


def test_statuses_and_placeholders_are_never_dropped(store):
    root, index = store
    table = load_store(root, index)
    cells = {c["run_id"]: c for c in table.attrs["cells"]}
    assert len(cells) == 9 and table["run_id"].nunique() == 9
    missing = _run(index, "identity", 2)
    assert cells[missing]["status"] == "missing"
    placeholder = table[table["run_id"] == missing]
    assert len(placeholder) == 1 and pd.isna(placeholder["metric"].iloc[0])
    assert placeholder["estimator"].iloc[0] == "identity" and placeholder["seed"].iloc[0] == 2
    assert cells[_run(index, "hardtanh", 1)]["status"] == "failed"
    assert "synthetic failure" in cells[_run(index, "hardtanh", 1)]["issues"]
    diverged = table[table["run_id"] == _run(index, "hardtanh", 2)]
    assert (diverged["status"] == "diverged").all()
    last = diverged.query("metric == 'test_mse' and epoch == 3")["value"]
    assert math.isnan(last.iloc[0])


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("metrics", "metrics.jsonl does not match its sha256"),
        ("summary", "summary.json does not parse"),
        ("config", "config.json does not parse"),
        ("png", "reconstruction.png does not match"),
    ],
)
def test_corrupt_files_are_reported_not_trusted(store, damage, reason):
    root, index = store
    run = _run(index, "identity", 0)
    folder = root / "runs" / run
    if damage == "metrics":
        text = (folder / "metrics.jsonl").read_text().replace('"epoch": 3', '"epoch": 4')
        (folder / "metrics.jsonl").write_text(text)
    elif damage == "summary":
        (folder / "summary.json").write_text('{"status": "comp')
    elif damage == "config":
        (folder / "config.json").write_bytes(b"\x00\x01")
    else:
        (folder / "reconstruction.png").write_bytes(b"not a png")
    data = scan_store(root, index)
    cell = data.cells.set_index("run_id").loc[run]
    assert cell["status"] == "corrupt" and reason in cell["issues"]
    rows = data.table[data.table["run_id"] == run]
    assert len(rows) == 1 and rows["metric"].isna().all()  # no number of a corrupt cell is used


def test_interrupted_and_every_folder_without_cells(store):
    root, index = store
    run = _run(index, "identity", 1)
    (root / "runs" / run / "summary.json").unlink()
    data = scan_store(root)  # no expected cells: every run folder, sorted by id
    assert list(data.cells["run_id"]) == sorted(data.cells["run_id"])
    assert len(data.cells) == 8  # the missing cell has no folder
    assert data.cells.set_index("run_id").loc[run, "status"] == "interrupted"


def test_bit_rates_loader(store):
    root, index = store
    bits = load_bit_rates(root, index)
    assert list(bits.columns) == ["run_id", "epoch", "bit", "rate"]
    per_run = bits.groupby("run_id")["bit"].count()
    assert (per_run == 16).all() and len(per_run) == 8  # every run folder (not the missing cell)
    assert bits.groupby("run_id")["epoch"].nunique().max() == 1  # each run's last epoch only
    assert set(bits[bits["run_id"] == _run(index, "hardtanh", 1)]["epoch"]) == {1}  # failed early
    every = load_bit_rates(root, index, epoch="all")
    assert len(every) > len(bits)


def test_store_errors(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        scan_store(tmp_path / "nowhere")
    with pytest.raises(StoreError, match="no spec index"):
        read_spec_index(tmp_path, "nope")


def test_parse_estimator():
    assert parse_estimator("sigmoid(beta=4)") == ("sigmoid", {"beta": 4.0})
    assert parse_estimator("identity") == ("identity", {})
    assert parse_estimator({"name": "gumbel", "tau": 0.5}) == ("gumbel", {"tau": 0.5})
    assert parse_estimator("a(x=1, y=0.25)") == ("a", {"x": 1.0, "y": 0.25})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_snapshot_round_trip(store, tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    root, index = store
    data = scan_store(root, index, axes=index["axes"])
    out = tmp_path / f"snap{suffix}"
    written = write_snapshot(data, out, spec_name="synthetic", spec_sha256="ab" * 32)
    assert out in written and meta_path(out) in written
    back = read_snapshot(out)
    pd.testing.assert_frame_equal(back.table, data.table)
    pd.testing.assert_frame_equal(back.cells, data.cells)
    pd.testing.assert_frame_equal(back.bits, data.bits, check_dtype=False)
    meta = json.loads(meta_path(out).read_text())
    assert meta["spec"]["sha256"] == "ab" * 32 and meta["axes"] == ["estimator", "seed"]
    assert (
        meta["versions"]["numpy"] and meta["versions"]["scipy"] and meta["rows"] == len(data.table)
    )


def test_tampered_snapshot_is_refused(store, tmp_path):
    root, index = store
    out = tmp_path / "snap.csv"
    write_snapshot(scan_store(root, index), out)
    out.write_text(out.read_text().replace("completed", "failed", 1))
    with pytest.raises(StoreError, match="sha256"):
        read_snapshot(out)
    with pytest.raises(StoreError, match=r"\.csv or \.parquet"):
        write_snapshot(scan_store(root, index), tmp_path / "snap.xlsx")


def test_wandb_mapping_to_the_same_table():
    config = {
        "estimator": "sigmoid(beta=4)",
        "seed": 3,
        "epochs": 2,
        "lr": 0.001,
        "run_id": "sigmoid-beta-4-s3-abc",
        "spec": "quickstart",
        "factors": {"estimator": "sigmoid(beta=4)", "seed": 3},
    }
    history = [
        {"train/loss": 0.1, "global_step": 1, "_step": 0},  # a step row: skipped
        {"epoch": 1, "global_step": 4, "epoch/test_mse": 0.05, "epoch/test_psnr": 13.0},
        {"epoch": 1, "reconstruction": {"_type": "image-file"}},  # an image row: skipped
        {"epoch": 2, "global_step": 8, "epoch/test_mse": 0.04, "epoch/probe_accuracy": 0.7},
        {"epoch": 2, "global_step": 8, "epoch/test_mse": 0.039},  # re-logged after a resume
    ]
    summary = {"status": "completed", "test_mse": 0.039, "wall_time_s": 12.0, "_runtime": 3}
    rec = record_from_wandb(config, summary, history, name="sigmoid(beta=4)-s3")
    assert rec.run_id == "sigmoid-beta-4-s3-abc" and rec.status == "completed"
    assert [e["epoch"] for e in rec.epochs] == [1, 2] and rec.epochs[1]["step"] == 8
    table = build_table([rec], ["estimator", "seed"])
    got = table.set_index(["epoch", "metric"])["value"]
    assert got[(2, "test_mse")] == pytest.approx(0.039)
    assert got[(2, "wall_time_s")] == 12.0 and got[(1, "test_psnr")] == 13.0
    assert "spec" not in table.columns and "factors" not in table.columns
    assert table["hp_beta"].iloc[0] == 4.0 and table["seed"].iloc[0] == 3
    crashed = record_from_wandb(config, {}, history[:2], state="crashed")
    assert crashed.status == "failed" and "no status" in crashed.issues[0]


def test_wandb_source_without_credentials_is_one_clean_error(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: w\ngrid: {estimator: [identity], seed: [0]}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "wb"), NETRC=str(tmp_path / "n"))
    cmd = [sys.executable, "-m", "runners.cli", "snapshot", str(spec), "--wandb-project", "p",
           "--out", str(tmp_path / "w.csv")]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("ste-ablate: error: cannot use the W&B API for p")
    assert not (tmp_path / "w.csv").exists()


def test_analysis_imports_only_the_store_format_and_records_of_runners():
    code = (
        "import sys, analysis.sources.store, analysis.sources.snapshot, analysis.study, "
        "analysis.render.report; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('runners', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # The format's own checks (standard library only) come with it.
    assert out.stdout.strip() == (
        "['runners', 'runners.store', 'runners.store.format', 'runners.store.records', "
        "'runners.store.summary_checks']"
    )
