"""`ste-ablate analyze --wandb`: the analysis as one W&B run, read back from its offline files
with the client's own reader (`wandb leet inspect --json`, see test_wandb.py), and the config
keys that let the W&B UI group cells by every grid axis."""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from analysis_synth import make_store, spec_cells
from test_wandb import final_summary, no_wandb_env, of_type, offline_runs, wandb_records  # noqa: F401

from analysis.sources import wandb_runs
from analysis.study import condition_labels
from runners.cli import main
from runners.tracking.analysis_run import ANALYSIS_JOB_TYPE, analysis_run_id
from runners.tracking.wandb_tracker import condition_label

pytestmark = pytest.mark.usefixtures("no_wandb_env")

SPEC = """\
name: pair
base: {dataset: mnist-mini, epochs: 3}
grid:
  estimator: [identity, hardtanh, "sigmoid(beta=4)"]
  seed: [0, 1, 2, 3, 4, 5]
wandb: {project: proj-x, tags: [t1]}
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _history(records: list[dict[str, Any]]) -> dict[str, Any]:
    (item,) = [h["item"] for h in of_type(records, "history")]
    return item


def _table(run_folder: Path, item: dict[str, Any], key: str) -> pd.DataFrame:
    assert item[f"{key}._type"] == "table-file"
    raw = json.loads((run_folder / "files" / item[f"{key}.path"]).read_text())
    return pd.DataFrame(raw["data"], columns=raw["columns"])


def _html(run_folder: Path, item: dict[str, Any], key: str) -> str:
    assert item[f"{key}._type"] == "html-file"
    return (run_folder / "files" / item[f"{key}.path"]).read_text()


@pytest.fixture
def study(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny spec and a synthetic store of its 18 cells: (spec, store)."""
    spec = tmp_path / "pair.yaml"
    spec.write_text(SPEC)
    name, cells = spec_cells(spec)
    store = tmp_path / "store"
    make_store(store, name=name, cells=cells, effects={"sigmoid(beta=4)": 0.01})
    return spec, store


def test_analyze_publishes_tables_figures_and_text_offline(study, tmp_path, capsys):
    spec, store = study
    out = tmp_path / "report"
    argv = ["analyze", str(spec), "--store", str(store), "--out", str(out), "--resamples", "199"]
    assert main([*argv, "--formats", "pdf", "--wandb", "offline"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1] == str(out / "report.html")
    assert "written offline" in captured.err and "wandb leet" in captured.err

    (run_folder,) = offline_runs(store)  # W&B's files beside the cells' (STORE/wandb)
    records = wandb_records(run_folder)
    (run,) = of_type(records, "run")
    assert run["run_group"] == "pair" and run["job_type"] == "analysis"
    assert wandb_runs.ANALYSIS_JOB_TYPE == ANALYSIS_JOB_TYPE  # what the W&B reader skips
    assert run["project"] == "proj-x" and run["tags"] == ["t1", "analysis"]
    assert run["run_id"].startswith("analysis-pair-test_mse-")
    config = run["config"]["update"]
    assert config["spec"]["sha256"] == _sha(spec)
    assert config["spec"]["content"]["grid"]["seed"] == [0, 1, 2, 3, 4, 5]
    assert config["source"]["kind"] == "store"
    assert config["study"]["n_resamples"] == 199 and config["study"]["metric"] == "test_mse"

    item = _history(records)
    summary = _table(run_folder, item, "tables/summary")
    written = pd.read_csv(out / "summary.csv")
    assert list(summary["condition"]) == ["identity", "hardtanh", "sigmoid(beta=4)"]
    assert list(summary.columns) == list(written.columns)
    assert summary["mean"].tolist() == pytest.approx(written["mean"].tolist(), rel=1e-12)
    assert summary["ci_low"].tolist() == pytest.approx(written["ci_low"].tolist(), rel=1e-12)
    pairwise = _table(run_folder, item, "tables/pairwise")
    assert len(pairwise) == 3 and pairwise["p_adj"].tolist() == pytest.approx(
        pd.read_csv(out / "pairwise.csv")["p_adj"].tolist(), rel=1e-12
    )
    assert len(_table(run_folder, item, "tables/cells")) == 18

    # Every figure of the report, as the same PNG bytes (written although --formats was pdf).
    pngs = sorted((out / "figures").glob("*.png"))
    assert {p.stem for p in pngs} >= {"learning_curves_test_mse", "final_metric_test_mse"}
    assert {p.stem for p in pngs} == {p.stem for p in (out / "figures").glob("*.pdf")}
    for png in pngs:
        key = f"figures/{png.stem}"
        assert item[f"{key}._type"] == "image-file", key
        assert item[f"{key}.sha256"] == _sha(png)
        assert _sha(run_folder / "files" / item[f"{key}.path"]) == _sha(png)
        assert item[f"{key}.caption"]

    page = (out / "report.html").read_text()
    findings = page.split('<p class="findings"><strong>Findings.</strong> ', 1)[1]
    assert findings.split("</p>")[0] in _html(run_folder, item, "text/findings")
    assert "\\toprule" in _html(run_folder, item, "text/latex_table")
    omnibus = html.escape((out / "omnibus.json").read_text())
    assert f"<pre>{omnibus}</pre>" in _html(run_folder, item, "text/omnibus")
    assert _html(run_folder, item, "text/report") == page
    final = final_summary(records)
    assert final["metric"] == "test_mse" and final["conditions"] == 3
    assert final["usable_cells"] == 18 and final["best"] == "identity"
    (exit_record,) = of_type(records, "exit")
    assert exit_record.get("exit_code", 0) == 0

    # Again: the same run id, and its earlier offline folder is replaced, not added to.
    assert main([*argv, "--wandb", "offline"]) == 0
    (again,) = offline_runs(store)
    assert again != run_folder
    assert of_type(wandb_records(again), "run")[0]["run_id"] == run["run_id"]


def test_a_snapshot_analysis_carries_its_sha256(study, tmp_path, capsys, monkeypatch):
    spec, store = study
    snapshot = tmp_path / "snap.csv"
    assert main(["snapshot", str(spec), "--store", str(store), "--out", str(snapshot)]) == 0
    wandb_dir = tmp_path / "wandb-dir"
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    out = tmp_path / "report"
    argv = ["analyze", "--snapshot", str(snapshot), "--out", str(out), "--resamples", "99"]
    assert main([*argv, "--wandb", "offline", "--wandb-project", "other"]) == 0
    (run_folder,) = offline_runs(wandb_dir)
    (run,) = of_type(wandb_records(run_folder), "run")
    assert run["project"] == "other" and run["run_group"] == "pair"
    assert run["config"]["update"]["source"]["sha256"] == _sha(snapshot)
    assert run["run_id"] == analysis_run_id(
        {"spec": "pair", "metric": "test_mse", "source": f"snapshot:{_sha(snapshot)}"}
    )


def test_a_wandb_failure_leaves_the_report_whole(study, tmp_path, capsys):
    spec, store = study
    (store / "wandb").write_text("not a folder")  # W&B cannot create its run folder
    out = tmp_path / "report"
    argv = ["analyze", str(spec), "--store", str(store), "--out", str(out), "--resamples", "99"]
    assert main([*argv, "--wandb", "offline"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1] == str(out / "report.html")
    (warning,) = [line for line in captured.err.splitlines() if "W&B publishing failed" in line]
    assert warning.startswith("ste-ablate: warning:") and str(out) in warning
    assert (out / "report.html").is_file() and (out / "summary.csv").is_file()


def test_without_wandb_nothing_is_published(study, tmp_path):
    spec, store = study
    out = tmp_path / "report"
    argv = ["analyze", str(spec), "--store", str(store), "--out", str(out), "--resamples", "99"]
    assert main([*argv, "--formats", "pdf"]) == 0
    assert not (store / "wandb").exists()
    assert not list((out / "figures").glob("*.png"))  # --formats as given


@pytest.mark.parametrize(
    "factors",
    [
        {"estimator": "hardtanh", "seed": 0},
        {"estimator": "sigmoid(beta=4)", "lr": 0.01, "seed": 3},
        {"lr": 0.001, "estimator": "identity", "pre_threshold_relu": False, "seed": 1},
    ],
)
def test_the_condition_key_is_the_analysis_label(factors):
    axes = list(factors)
    frame = pd.DataFrame([factors])
    group_by = sorted((a for a in axes if a != "seed"), key=lambda a: a != "estimator")
    (expected,) = condition_labels(frame, group_by)
    assert condition_label(factors, factors["estimator"]) == expected


GRID = """\
name: est-lr
base: {dataset: mnist-mini, train_subset: 128, test_subset: 64, epochs: 1, code_channels: 32,
       device: cpu, num_threads: 1, diagnostics: "off"}
grid:
  estimator: [identity, "sigmoid(beta=4)"]
  lr: [0.001, 0.01]
  seed: [0]
"""


@pytest.mark.slow
def test_a_grid_over_estimator_and_lr_groups_by_both(tmp_path, capsys):
    spec = tmp_path / "grid.yaml"
    spec.write_text(GRID)
    store = tmp_path / "store"
    assert main(["run", str(spec), "--store", str(store), "--wandb", "offline"]) == 0
    configs = {}
    for folder in offline_runs(store):
        (run,) = of_type(wandb_records(folder), "run")
        configs[run["run_id"]] = run["config"]["update"]
    assert len(configs) == 4
    # Each axis is a top-level config key (W&B groups by any, or several), and `condition`
    # joins them the way the analysis compares them.
    pairs = {(c["estimator"], c["lr"]) for c in configs.values()}
    assert pairs == {(e, lr) for e in ("identity", "sigmoid(beta=4)") for lr in (0.001, 0.01)}
    for config in configs.values():
        assert config["factors"] == {
            "estimator": config["estimator"],
            "lr": config["lr"],
            "seed": 0,
        }
        assert config["condition"] == f"{config['estimator']}, lr={config['lr']}"

    capsys.readouterr()
    out = tmp_path / "report"
    argv = ["analyze", str(spec), "--store", str(store), "--out", str(out), "--resamples", "99"]
    assert main([*argv, "--wandb", "offline"]) == 0
    (analysis,) = [f for f in offline_runs(store) if "analysis-est-lr" in f.name]
    records = wandb_records(analysis)
    summary = _table(analysis, _history(records), "tables/summary")
    assert set(summary["condition"]) == {c["condition"] for c in configs.values()}
    assert of_type(records, "run")[0]["config"]["update"]["condition_factors"] == [
        "estimator",
        "lr",
    ]


class _ApiRun:
    """What `scan_wandb` reads of a W&B public-API run (the API needs the server)."""

    def __init__(self, job_type: str, config: dict, summary: dict, history: list) -> None:
        self.job_type, self.config, self.summary, self._history = job_type, config, summary, history
        self.name, self.state = config.get("run_id", "analysis: test_mse"), "finished"

    def scan_history(self) -> list:
        return self._history


class _Api:
    def __init__(self, runs: list[_ApiRun]) -> None:
        self._runs = runs

    def runs(self, path: str, filters: dict) -> list[_ApiRun]:
        return self._runs


def test_reading_a_group_from_wandb_skips_its_analysis_run():
    factors = {"estimator": "hardtanh", "seed": 0}
    cell = _ApiRun(
        "hardtanh",
        {**factors, "run_id": "hardtanh-s0-abc", "spec": "pair", "factors": factors,
         "condition": "hardtanh"},
        {"status": "completed", "test_mse": 0.04},
        [{"epoch": 1, "global_step": 4, "epoch/test_mse": 0.04}],
    )  # fmt: skip
    analysis = _ApiRun(
        "analysis",
        {"spec": {"name": "pair"}, "study": {"metric": "test_mse"}},
        {"metric": "test_mse", "conditions": 1},
        [{"tables/summary": {"_type": "table-file"}}],
    )
    data = wandb_runs.scan_wandb("proj", "pair", api=_Api([cell, analysis]))
    assert list(data.cells["run_id"]) == ["hardtanh-s0-abc"]
    assert "condition" not in data.table.columns  # a W&B grouping key, not a run setting
