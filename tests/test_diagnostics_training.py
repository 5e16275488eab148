"""Diagnostics during training (never changing it) and `ste-ablate gradcheck` on a trained run."""

from __future__ import annotations

import json

import pytest
import torch

from runners.cli import main
from runners.engine.train import train_run, train_runs
from runners.store import format as st
from runners.store.records import DIAGNOSTIC, DIAGNOSTICS_PREFIX, TIMING_KEYS, metric_names

pytestmark = pytest.mark.usefixtures("one_thread")

DIAG_KEYS = set(metric_names(DIAGNOSTIC))  # with diag_time_s


def _results(folder):
    records = st.read_jsonl(folder / st.METRICS)
    weights = torch.load(folder / st.CHECKPOINT, weights_only=False)["model"]
    steps = (folder / st.STEPS).read_text()
    return records, steps, weights


def _untimed(record):
    return {
        k: v
        for k, v in record.items()
        if k not in TIMING_KEYS and not k.startswith(DIAGNOSTICS_PREFIX)
    }


@pytest.mark.slow
def test_training_with_diagnostics_is_bit_identical_to_training_without(tiny_config, tmp_path):
    """A stochastic and a deterministic estimator as a looped stack with diagnostics, against
    single runs without: same records (but the diag_ keys), steps and final weights."""
    on = [
        tiny_config(estimator=e, epochs=2, diagnostics="epoch") for e in ("bernoulli", "identity")
    ]
    summaries = train_runs(on, tmp_path / "on", progress=False, raise_errors=True, mode="looped")
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    for config in on:
        off = config.replace(diagnostics="off")
        assert off.run_id == config.run_id  # not part of the run's identity
        train_run(off, tmp_path / "off", progress=False, raise_errors=True)
        rec_on, steps_on, w_on = _results(st.run_dir(tmp_path / "on", config.run_id))
        rec_off, steps_off, w_off = _results(st.run_dir(tmp_path / "off", config.run_id))
        assert steps_on == steps_off
        assert [_untimed(r) for r in rec_on] == [_untimed(r) for r in rec_off]
        assert all(torch.equal(w_on[k], w_off[k]) for k in w_off)
        assert all(DIAG_KEYS <= set(r) for r in rec_on)
        assert not any(k.startswith(DIAGNOSTICS_PREFIX) for r in rec_off for k in r)
        last = rec_on[-1]
        assert -1 <= last["diag_flip_corr"] <= 1
        assert 0 <= last["diag_coverage"] <= 1
        stochastic = config.estimator == "bernoulli"
        assert (last["diag_grad_snr"] is not None) == stochastic
        if not stochastic:
            assert last["diag_rel_to_identity"] == 0.0


def test_gradcheck_compares_estimators_on_a_trained_run(finished_run, copy_run, tmp_path, capsys):
    config, folder = finished_run
    store = copy_run(folder)
    run = st.run_dir(store, config.run_id)
    specs = "identity,hardtanh,saturated,sigmoid(beta=4),gumbel"
    code = main(["gradcheck", str(run), "--estimators", specs, "--probe", "4", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    written = json.loads((run / st.GRADCHECK).read_text())
    assert printed == written
    assert f"wrote {run / st.GRADCHECK}" in captured.err
    rows = {row["estimator"]: row for row in written["estimators"]}
    assert list(rows) == ["identity", "hardtanh", "saturated", "sigmoid(beta=4)", "gumbel"]
    assert written["probe"] == 4 and written["run_id"] == config.run_id
    assert rows["identity"]["rel_to_identity"] == 0.0
    assert rows["gumbel"]["grad_snr"] is not None and rows["identity"]["grad_snr"] is None
    assert rows["sigmoid(beta=4)"]["rel_to_identity"] > 0
    # The store still trusts the run: gradcheck.json is outside summary.json's hashes.
    assert st.cell_state(run) == "completed"

    out = tmp_path / "elsewhere.json"
    args = ["gradcheck", str(run), "--estimators", "identity,gumbel", "--probe", "4"]
    assert main([*args, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "flip_corr" in captured.out and "identity" in captured.out and "gumbel" in captured.out
    assert f"gradcheck: wrote {out}" in captured.err and out.is_file()


def test_gradcheck_rejects_a_folder_without_a_run(tmp_path, capsys):
    assert main(["gradcheck", str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err
