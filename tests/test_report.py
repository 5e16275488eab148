"""`ste-ablate analyze / snapshot / figures` on synthetic stores (SYNTHETIC TEST DATA, written
in the run-store format with a seeded generator), and the report in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from analysis_synth import make_store, spec_cells

from analysis.render.figures import load_manifest
from runners.cli import main

SPEC = """\
name: synth-report
description: SYNTHETIC TEST DATA for the analysis tests (not a result).
base: {dataset: mnist-mini, train_subset: 64, test_subset: 32, epochs: 3}
grid:
  estimator: [identity, hardtanh, "sigmoid(beta=4)"]
  seed: [0, 1, 2, 3, 4, 5, 6]
"""
FAST = ["--resamples", "999"]


def _store(root: Path, **kwargs) -> tuple[Path, Path, list[dict]]:
    root.mkdir(parents=True, exist_ok=True)
    spec = root / "spec.yaml"
    spec.write_text(SPEC)
    name, cells = spec_cells(spec)
    make_store(root / "store", name=name, cells=cells, **kwargs)
    return spec, root / "store", cells


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A complete synthetic study analysed once: (spec, store, output folder)."""
    root = tmp_path_factory.mktemp("analyzed")
    spec, store, _ = _store(root)
    out = root / "out"
    assert main(["analyze", str(spec), "--store", str(store), "--out", str(out), *FAST]) == 0
    return spec, store, out


def test_analyze_writes_every_output(analyzed, capsys):
    spec, store, out = analyzed
    for name in (
        "summary.csv",
        "pairwise.csv",
        "cells.csv",
        "omnibus.json",
        "table.tex",
        "report.html",
    ):
        assert (out / name).is_file(), name
    for fig in ("learning_curves_test_mse", "final_metric_test_mse", "pairwise_p", "cd_diagram",
                "reconstructions", "bit_rates"):  # fmt: skip
        assert (out / "figures" / f"{fig}.pdf").is_file() and (
            out / "figures" / f"{fig}.png"
        ).is_file()
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["condition"]) == ["identity", "hardtanh", "sigmoid(beta=4)"]
    assert (summary["n"] == 7).all() and (summary["n_missing"] == 0).all()
    assert summary.loc[summary["best"], "condition"].tolist() == ["identity"]
    pairwise = pd.read_csv(out / "pairwise.csv")
    assert len(pairwise) == 3 and (pairwise["design"] == "paired").all()
    # identity beats hardtanh on all 7 shared seeds: Wilcoxon 2/2^7, Holm over 3 pairs
    first = pairwise.iloc[0]
    assert first["p"] == pytest.approx(2 / 2**7) and first["p_adj"] == pytest.approx(3 * 2 / 2**7)
    assert bool(first["significant"]) and 0.5 < first["p_improve"] <= 1.0  # all pairs of runs
    omnibus = json.loads((out / "omnibus.json").read_text())
    assert omnibus["test"] == "friedman" and omnibus["n_blocks"] == 7
    assert omnibus["average_ranks"]["identity"] == 1.0 and omnibus["planning"]["comparisons"] == 3
    table = (out / "table.tex").read_text()
    assert (
        r"\toprule" in table and r"\textbf{identity}" in table and r"hardtanh$^{\dagger}$" in table
    )
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') >= 6 and "<script" not in page
    assert "Holm" in page and "Wilcoxon signed-rank" in page and "999 resamples" in page
    assert omnibus["ties"]["pairs"] == [] and omnibus["ties"]["rtol"] == 1e-6
    first = page.split('<p class="findings">', 1)[1].split("</p>", 1)[0]
    assert "3 of 3 pairs differ significantly" in first and "identity better than hardtanh" in first
    assert "No two conditions are tied" in first
    # It opens with the budget and the trivial reconstruction (synthetic: 0.25, never close).
    assert first.startswith("<strong>Findings.</strong> Each run trained 30 steps of batch 64 "
                            "(1,920 images). The trivial reconstruction")  # fmt: skip
    assert "has test MSE 0.25; mean final test MSE per condition (share of it): identity " in first
    assert "Barely better" not in first and "No better than it" not in first
    assert "p_adj" not in page.split("<h2>Cells</h2>")[0]  # words, not column names, above


def test_conditions_that_barely_beat_the_mean_image_are_flagged_first(tmp_path, capsys):
    # SYNTHETIC: sigmoid's final test MSE 0.03 + 0.21 = 0.24, 96% of the trivial 0.25.
    root = tmp_path / "barely"
    spec, store, _ = _store(root, effects={"sigmoid(beta=4)": 0.21})
    out = root / "out"
    assert main(["analyze", str(spec), "--store", str(store), "--out", str(out), *FAST]) == 0
    assert (
        "note: sigmoid(beta=4): no better, or barely, than the trivial" in capsys.readouterr().err
    )
    page = (out / "report.html").read_text()
    first = page.split('<p class="findings">', 1)[1].split("</p>", 1)[0]
    assert "sigmoid(beta=4) 0.24 (96%)" in first
    assert "Barely better (above 90% of it): sigmoid(beta=4)." in first
    assert "No better than it" not in first
    assert first.index("Barely better") < first.index("pairs differ")


def test_analyze_is_byte_identical_on_rerun(analyzed, tmp_path, capsys):
    spec, store, out = analyzed
    again = tmp_path / "again"
    assert main(["analyze", str(spec), "--store", str(store), "--out", str(again), *FAST]) == 0
    assert capsys.readouterr().out.strip().endswith(str(again / "report.html"))
    first, second = _files(out), _files(again)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def test_partial_results_are_reported_not_dropped(tmp_path, capsys):
    spec, store, cells = _store(
        tmp_path,
        missing=(("identity", 6),),
        statuses={
            ("hardtanh", 1): "failed",
            ("hardtanh", 2): "diverged",
            ("identity", 3): "interrupted",
        },
    )
    out = tmp_path / "out"
    assert main(["analyze", str(spec), "--store", str(store), "--out", str(out), *FAST]) == 0
    assert "Partial results" in capsys.readouterr().err
    summary = pd.read_csv(out / "summary.csv").set_index("condition")
    assert summary.loc["identity", ["n", "n_missing", "n_interrupted"]].tolist() == [5, 1, 1]
    assert summary.loc["hardtanh", ["n", "n_failed", "n_diverged"]].tolist() == [5, 1, 1]
    assert (summary["cells"] == 7).all()
    cells_csv = pd.read_csv(out / "cells.csv")
    assert len(cells_csv) == 21 and set(cells_csv["status"]) >= {"missing", "failed", "diverged"}
    page = (out / "report.html").read_text()
    missing_id = next(
        c["run_id"] for c in cells if c["factors"] == {"estimator": "identity", "seed": 6}
    )
    assert "Partial results: 4 of 21 cells" in page and missing_id in page


def test_snapshot_then_analyze_gives_the_same_numbers(analyzed, tmp_path, capsys):
    spec, store, out = analyzed
    snap = tmp_path / "snap.csv"
    assert main(["snapshot", str(spec), "--store", str(store), "--out", str(snap)]) == 0
    meta = json.loads((tmp_path / "snap.csv.meta.json").read_text())
    assert meta["spec"]["name"] == "synth-report" and len(meta["spec"]["sha256"]) == 64
    from_snap = tmp_path / "from-snap"
    shutil.copytree(out, from_snap)  # analysing into a used folder: stale figures must go
    assert (from_snap / "figures" / "reconstructions.png").is_file()
    assert main(["analyze", "--snapshot", str(snap), "--out", str(from_snap), *FAST]) == 0
    assert not (from_snap / "figures" / "reconstructions.png").exists()
    for name in ("summary.csv", "pairwise.csv", "omnibus.json", "table.tex"):
        assert (from_snap / name).read_bytes() == (out / name).read_bytes(), name
    page = (from_snap / "report.html").read_text()
    assert "Figure reconstructions not drawn" in page  # snapshots hold no run folders


def test_bad_input_exits_2_and_writes_nothing(analyzed, tmp_path, capsys):
    spec, store, _ = analyzed
    out = tmp_path / "out"
    cases = [
        ["analyze", str(spec), "--store", str(store), "--out", str(out), "--metric", "nope"],
        ["analyze", str(spec), "--store", str(tmp_path / "none"), "--out", str(out)],
        ["analyze", str(spec), "--store", str(store), "--out", str(out), "--formats", "gif"],
        ["analyze", str(spec), "--store", str(store), "--out", str(out), "--metric", "active_rate"],
        ["analyze", "--snapshot", str(tmp_path / "missing.csv"), "--out", str(out)],
        ["snapshot", str(spec), "--store", str(store), "--out", str(tmp_path / "s.xlsx")],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ste-ablate: error: "), err
    assert not out.exists() and not (tmp_path / "s.xlsx").exists()


MANIFEST = """\
version: 1
output: build
formats: [pdf, png]
seed: 0
n_resamples: 999
snapshots:
  synth: snap.csv
items:
  - {name: final, snapshot: synth, kind: final_metric, metric: test_mse, options: {kind: violin}}
  - {name: curves, snapshot: synth, kind: learning_curves, size: double}
  - {name: cd, snapshot: synth, kind: cd_diagram}
  - {name: psnr_table, snapshot: synth, kind: latex_table, metric: test_psnr}
  - {name: summary, snapshot: synth, kind: summary_csv, study: {correction: bh}}
"""


def test_figures_from_a_manifest_are_byte_identical(analyzed, tmp_path, capsys):
    spec, store, _ = analyzed
    assert (
        main(["snapshot", str(spec), "--store", str(store), "--out", str(tmp_path / "snap.csv")])
        == 0
    )
    manifest = tmp_path / "figures.yaml"
    manifest.write_text(MANIFEST)
    assert main(["figures", str(manifest)]) == 0
    first = _files(tmp_path / "build")
    assert sorted(first) == [
        "cd.pdf", "cd.png", "curves.pdf", "curves.png", "final.pdf", "final.png",
        "psnr_table.tex", "summary.csv",
    ]  # fmt: skip
    assert main(["figures", str(manifest), "--out", str(tmp_path / "again")]) == 0
    assert _files(tmp_path / "again") == first
    assert r"test PSNR (dB) $\uparrow$" in first["psnr_table.tex"].decode()
    assert main(["figures", str(manifest), "--only", "nothing"]) == 2


def test_paper_manifest_is_valid():
    root = Path(__file__).resolve().parents[1]
    doc = load_manifest(root / "paper" / "figures.yaml")
    assert doc["items"] and all(i["snapshot"] in doc["snapshots"] for i in doc["items"])


def test_bad_manifest_lists_every_problem(tmp_path, capsys):
    manifest = tmp_path / "m.yaml"
    manifest.write_text("snapshots: {a: a.csv}\nitems:\n  - {name: x, snapshot: b, kind: pie}\n")
    assert main(["figures", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "kind 'pie'" in err and "snapshot 'b'" in err


CHROMIUM = Path("/usr/bin/chromium")
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push(String(e.message || (e.target && e.target.tagName))); }, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.map.call(document.images, function (i) {
    return i.complete ? i.naturalWidth : -1; });
  var shown = {};
  Array.prototype.forEach.call(document.querySelectorAll('figure'), function (f) {
    shown[f.id] = f.querySelector('img').clientWidth; });
  var tables = Array.prototype.map.call(document.querySelectorAll('table'), function (t) {
    return [t.scrollWidth, t.parentElement.clientWidth]; });
  var div = document.createElement('div'); div.id = 'probe';
  div.textContent = JSON.stringify({imgs: imgs, errors: window.__errors, shown: shown,
    tables: tables, page: document.documentElement.scrollWidth, viewport: window.innerWidth});
  document.body.appendChild(div);
});
</script>"""


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium)")
def test_report_opens_in_headless_chromium(analyzed, tmp_path):
    _, _, out = analyzed
    page = (out / "report.html").read_text()
    # The report itself has no script; a probe injected into a copy records what the browser saw.
    probed = tmp_path / "report.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    shutil.copytree(out / "figures", tmp_path / "figures")
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
        "--v=0", "--virtual-time-budget=10000", "--window-size=1280,900", "--hide-scrollbars",
        "--dump-dom", probed.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r'<div id="probe">([^<]*)</div>', done.stdout)
    assert match, done.stdout[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"'))
    expected = page.count("<img ")
    assert expected >= 6 and len(probe["imgs"]) == expected
    assert all(width > 0 for width in probe["imgs"]), probe  # every figure decoded
    assert probe["errors"] == []
    # At 1280 px nothing scrolls sideways: no table is wider than its column, nor the page.
    assert probe["viewport"] == 1280 and probe["page"] <= 1280, probe
    assert len(probe["tables"]) >= 3
    assert all(width <= room for width, room in probe["tables"]), probe["tables"]
    # The reconstructions are shown large enough to read (two panels a row over the page).
    assert probe["shown"]["fig-reconstructions"] >= 700, probe["shown"]
    assert [line for line in done.stderr.splitlines() if ":CONSOLE" in line] == []
