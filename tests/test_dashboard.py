"""`ste-ablate dashboard`: the saved W&B view's definition, checked offline.

Saving needs W&B online and is not tested here; the definition is, through the objects of
`wandb-workspaces` and that package's own conversion to the view it would upload.
"""

from __future__ import annotations

import pytest
from analysis_synth import make_store, spec_cells
from test_wandb import no_wandb_env  # noqa: F401 (a fixture)

from runners.cli import main
from runners.store.records import TIMING_KEYS
from runners.tracking.workspace import build_view, plan_view

ws = pytest.importorskip("wandb_workspaces.workspaces")
pytestmark = pytest.mark.usefixtures("no_wandb_env")

SPEC = """\
name: est-lr
base: {dataset: mnist-mini, epochs: 2}
grid:
  lr: [0.001, 0.01]
  estimator: [identity, hardtanh]
  seed: [0, 1]
wandb: {project: proj-x, entity: team-y}
"""


def test_the_view_groups_by_the_axes_with_a_mean_and_standard_error(tmp_path):
    metrics = ["test_mse", "probe_accuracy", "diag_cos_1", "epoch_time_s"]
    plan = plan_view("est-lr", ["lr", "estimator", "seed"], metrics, timing=TIMING_KEYS, cells=8)
    view = build_view(plan, entity="team-y", project="proj-x")
    assert view.runset_settings.groupby == [ws.Config("estimator"), ws.Config("lr")]
    sections = {s.name: s for s in view.sections}
    assert list(sections) == [
        "est-lr: metrics per epoch",
        "gradient diagnostics",
        "training loss",
        "timing",
    ]
    plots = sections["est-lr: metrics per epoch"].panels
    assert [p.y for p in plots] == [["epoch/probe_accuracy"], ["epoch/test_mse"]]
    assert {(p.x, p.groupby_aggfunc, p.groupby_rangefunc) for p in plots} == {
        ("epoch", "mean", "stderr")
    }
    assert [p.y for p in sections["gradient diagnostics"].panels] == [["epoch/diag_cos_1"]]
    assert sections["training loss"].panels[0].x == "global_step"
    assert not sections["timing"].is_open

    # What would be uploaded: the package's own conversion of the view.
    wire = view._to_model().model_dump(by_alias=True, exclude_none=True)
    (runset,) = wire["spec"]["section"]["runSets"]
    assert runset["grouping"] == [
        {"section": "config", "name": "estimator.value"},
        {"section": "config", "name": "lr.value"},
    ]
    filters = {(f["key"]["name"], f["op"], f["value"]) for f in runset["filters"]["filters"]}
    assert filters == {("group", "=", "est-lr"), ("jobType", "!=", "analysis")}
    panels = wire["spec"]["section"]["panelBankConfig"]["sections"][0]["panels"]
    assert [p["config"]["metrics"] for p in panels] == [
        ["epoch/probe_accuracy"],
        ["epoch/test_mse"],
    ]
    assert {(p["config"]["groupAgg"], p["config"]["groupArea"]) for p in panels} == {
        ("mean", "stderr")
    }
    assert wire["spec"]["section"]["settings"]["maxRuns"] == 8


def test_dashboard_dry_run_reads_the_metrics_from_the_store(tmp_path, capsys):
    spec = tmp_path / "grid.yaml"
    spec.write_text(SPEC)
    name, cells = spec_cells(spec)
    store = tmp_path / "store"
    make_store(store, name=name, cells=cells)
    assert main(["dashboard", str(spec), "--store", str(store), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "grouped by estimator, lr" in out and "mean over a group's runs" in out
    assert "epoch/test_mse vs epoch" in out and "epoch/probe_accuracy vs epoch" in out
    assert "section 'timing' (closed): epoch/epoch_time_s vs epoch" in out
    assert "not saved (project proj-x, entity team-y)" in out


def test_dashboard_needs_wandb_online_and_a_trained_store(tmp_path, capsys):
    spec = tmp_path / "grid.yaml"
    spec.write_text(SPEC)
    name, cells = spec_cells(spec)
    store = tmp_path / "store"
    assert main(["dashboard", str(spec), "--store", str(store), "--dry-run"]) == 2
    assert "no epoch metrics" in capsys.readouterr().err
    make_store(store, name=name, cells=cells)
    assert main(["dashboard", str(spec), "--store", str(store)]) == 2  # no credentials here
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "needs W&B online" in line and "--dry-run" in line
