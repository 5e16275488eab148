"""The diagnostics in the analysis: tidy table, figures, report, snapshot and paper manifest,
from a real tiny study (trained here) and a gradcheck of one of its runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from analysis.sources.snapshot import gradcheck_path, read_snapshot
from analysis.sources.store import load_store
from runners.cli import main
from runners.store import format as st

# A real 4-cell study with diagnostics is trained once for the module (~30 s): make test-slow.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

SPEC = """\
name: diag-tiny
base: {dataset: mnist-mini, train_subset: 128, test_subset: 64, epochs: 2, device: cpu,
       num_threads: 1, diagnostics_probe: 4}
grid:
  estimator: [identity, "sigmoid(beta=4)"]
  seed: [0, 1]
"""
MANIFEST = """\
version: 1
output: build
formats: [png]
n_resamples: 99
snapshots:
  s: {snapshot}
items:
  - {{name: fidelity, snapshot: s, kind: gradient_fidelity, optional: true}}
  - {{name: check, snapshot: s, kind: gradcheck, optional: true}}
  - {{name: curves, snapshot: s, kind: learning_curves, metric: test_mse}}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("diag-study")
    spec = root / "spec.yaml"
    spec.write_text(SPEC)
    store = root / "store"
    assert main(["run", str(spec), "--store", str(store), "--wandb", "disabled"]) == 0
    return spec, store


def test_diagnostics_reach_the_tidy_table_figures_report_and_snapshot(study, tmp_path, capsys):
    spec, store = study
    table = load_store(store)
    metrics = set(table["metric"])
    assert {"diag_flip_corr", "diag_descent_agreement", "diag_coverage"} <= metrics
    assert set(table.loc[table["metric"] == "diag_rel_to_identity", "epoch"]) == {1, 2}

    run = sorted((store / "runs").iterdir())[0]
    assert main(["gradcheck", str(run), "--estimators", "identity,hardtanh,gumbel", "--probe",
                 "4"]) == 0  # fmt: skip
    out = tmp_path / "report"
    assert main(["analyze", str(spec), "--store", str(store), "--out", str(out),
                 "--resamples", "99"]) == 0  # fmt: skip
    html = (out / "report.html").read_text()
    assert 'id="fig-gradient_fidelity"' in html and 'id="fig-gradcheck"' in html
    assert (out / "figures" / "gradient_fidelity.png").stat().st_size > 1000
    assert (out / "figures" / "gradcheck.png").stat().st_size > 1000

    snap = tmp_path / "snap" / "s.csv"
    assert main(["snapshot", str(spec), "--store", str(store), "--out", str(snap)]) == 0
    data = read_snapshot(snap)
    assert gradcheck_path(snap).is_file()
    assert set(data.gradcheck["estimator"]) == {"identity", "hardtanh", "gumbel"}
    manifest = tmp_path / "snap" / "figures.yaml"
    manifest.write_text(MANIFEST.format(snapshot="s.csv"))
    capsys.readouterr()
    assert main(["figures", str(manifest)]) == 0
    written = capsys.readouterr().out
    assert "fidelity.png" in written and "check.png" in written


def test_optional_diagnostic_figures_are_skipped_when_a_snapshot_lacks_them(
    study, tmp_path, capsys
):
    spec, store = study
    snap = tmp_path / "s.csv"
    assert main(["snapshot", str(spec), "--store", str(store), "--out", str(snap)]) == 0
    # The same study without diagnostics: drop their rows (a snapshot made before them).
    meta = json.loads((tmp_path / "s.csv.meta.json").read_text())
    lines = [ln for ln in snap.read_text().splitlines() if ",diag_" not in ln]
    snap.write_text("\n".join(lines) + "\n")
    # ... and its metadata as such a snapshot's: the new table's sha256, no gradcheck file
    meta["files"]["s.csv"] = hashlib.sha256(snap.read_bytes()).hexdigest()
    meta["files"].pop(gradcheck_path(snap).name, None)
    meta["rows"] = len(lines) - 1
    (tmp_path / "s.csv.meta.json").write_text(json.dumps(meta))
    gradcheck_path(snap).unlink(missing_ok=True)
    manifest = tmp_path / "figures.yaml"
    manifest.write_text(MANIFEST.format(snapshot="s.csv"))
    capsys.readouterr()
    assert main(["figures", str(manifest)]) == 0
    captured = capsys.readouterr()
    assert "curves.png" in captured.out and "fidelity" not in captured.out
    assert "figure fidelity skipped" in captured.err and "figure check skipped" in captured.err
    assert st.GRADCHECK == "gradcheck.json"
