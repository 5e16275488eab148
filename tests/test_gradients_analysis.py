"""The exact-gradient measurements in the analysis: tidy table, report, snapshot, paper manifest,
from a real tiny VAE study with checkpoints (trained here) and a gradcheck of one of its runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.sources.snapshot import read_snapshot
from analysis.sources.store import load_store
from runners.cli import main
from runners.store.records import GRADIENT_ERROR_METRICS

# A real 4-cell study is trained once for the module (~15 s): make test-slow.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

SPEC = """\
name: gerr-tiny
base: {task: bernoulli_vae, vae_latents: 5, dataset: mnist-mini, train_subset: 200,
       test_subset: 40, epochs: 2, vae_eval_samples: 2, vae_train_eval: 40, device: cpu,
       num_threads: 1, gradient_error: checkpoints, gradient_error_probe: 4}
grid:
  estimator: [disarm, bernoulli]
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
  - {{name: gerr, snapshot: s, kind: gradient_error, metric: test_iwae_bound}}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("gerr-study")
    spec = root / "spec.yaml"
    spec.write_text(SPEC)
    store = root / "store"
    assert main(["run", str(spec), "--store", str(store), "--wandb", "disabled"]) == 0
    return spec, store


def test_checkpoints_reach_the_table_report_snapshot_and_manifest(study, tmp_path, capsys):
    spec, store = study
    table = load_store(store)
    assert set(GRADIENT_ERROR_METRICS) <= set(table["metric"])
    assert set(table.loc[table["metric"] == "gerr_bias", "epoch"]) == {1, 2}

    run = sorted((store / "runs").iterdir())[0]
    args = ["gradcheck", str(run), "--estimators", "disarm,bernoulli", "--probe", "4"]
    assert main([*args, "--estimates", "64"]) == 0
    out = tmp_path / "report"
    assert main(["analyze", str(spec), "--store", str(store), "--out", str(out),
                 "--resamples", "99"]) == 0  # fmt: skip
    html = (out / "report.html").read_text()
    assert 'id="fig-gradient_error"' in html and 'id="fig-gradcheck_exact"' in html
    assert (out / "figures" / "gradient_error.png").stat().st_size > 1000

    snap = tmp_path / "snap" / "s.csv"
    assert main(["snapshot", str(spec), "--store", str(store), "--out", str(snap)]) == 0
    assert "gerr_variance" in set(read_snapshot(snap).table["metric"])
    manifest = tmp_path / "snap" / "figures.yaml"
    manifest.write_text(MANIFEST.format(snapshot="s.csv"))
    capsys.readouterr()
    assert main(["figures", str(manifest)]) == 0
    assert "gerr.png" in capsys.readouterr().out
