"""End to end: `ste-ablate run` trains a tiny spec into a store, `ste-ablate analyze` reports it."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from runners.cli import main

SPEC = """\
name: e2e-tiny
description: The smallest real grid the analysis can compare (tests only).
base: {dataset: mnist-mini, train_subset: 128, test_subset: 64, epochs: 1, code_channels: 32,
       device: cpu, num_threads: 1, diagnostics: "off"}
grid:
  estimator: [identity, hardtanh, "sigmoid(beta=4)"]
  seed: [0, 1]
"""


@pytest.mark.slow
def test_run_then_analyze_a_real_store(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    store, out = tmp_path / "store", tmp_path / "report"
    assert main(["run", str(spec), "--store", str(store), "--wandb", "disabled"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(spec), "--store", str(store), "--out", str(out),
                 "--resamples", "499"]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out / "report.html")

    summary = pd.read_csv(out / "summary.csv").set_index("condition")
    assert list(summary.index) == ["identity", "hardtanh", "sigmoid(beta=4)"]
    assert (summary["n"] == 2).all() and (summary["n_completed"] == 2).all()
    # The statistics use exactly the runner's final numbers (summary.json of each run).
    finals: dict[str, list[float]] = {}
    for folder in sorted((store / "runs").iterdir()):
        run = json.loads((folder / "summary.json").read_text())
        config = json.loads((folder / "config.json").read_text())["config"]
        finals.setdefault(config["estimator"], []).append(run["test_mse"])
    for cond, values in finals.items():
        assert summary.loc[cond, "mean"] == pytest.approx(sum(values) / len(values), rel=1e-12)
    assert (out / "figures" / "reconstructions.png").is_file()  # from the runs' PNGs
    assert (out / "figures" / "bit_rates.png").is_file()  # from metrics.jsonl's bit_rates
    page = (out / "report.html").read_text()
    assert "e2e-tiny" in page and "not drawn" not in page
    # identity and hardtanh train bit-identically here (the clamp never acts): a tie, reported
    # in omnibus.json and in the report's first paragraph.
    ties = json.loads((out / "omnibus.json").read_text())["ties"]
    assert ties["groups"] == [{"conditions": ["identity", "hardtanh"], "kind": "identical"}]
    first = page.split('<p class="findings">', 1)[1].split("</p>", 1)[0]
    assert "Tied conditions: identity ≡ hardtanh" in first
    # Two steps of 64 images: the first paragraph says so, and how little that beats the mean
    # training image by.
    assert "Each run trained 2 steps of batch 64 (128 images)." in first
    assert "The trivial reconstruction (every test image replaced by the mean" in first
    assert "No better than it: identity, hardtanh, sigmoid(beta=4)." in first
