"""The store's integrity rule, on every read path: a file summary.json vouches for must belong to
the cell's own config (its run id, and the run id its identity fields hash to), not only parse;
a mismatch is corruption and the cell is redone. Also what a cell's folder says after a failure:
no stale temp files, no probe accuracy on a failed run, the reason a cell is not completed, and
a warning when cells were trained with different thread counts."""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path

import pytest

from analysis.sources.store import read_cell
from runners.cli import main
from runners.config import RunConfig
from runners.engine.train import train_run
from runners.grids.spec import load_spec
from runners.store import format as st
from runners.store.format import read_json, read_jsonl
from runners.store.records import DIAGNOSTICS_PREFIX, TIMING_KEYS
from runners.tasks import autoencoder

# The spec whose one cell is conftest's `finished_run` (TINY, 2 epochs, hardtanh, seed 0).
SPEC = (
    "name: one\nbase: {dataset: mnist-mini, train_subset: 256, test_subset: 128, epochs: 2, "
    'batch_size: 64, device: cpu, num_threads: 1, diagnostics: "off"}\ngrid:\n  seed: [0]\n'
)


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "one.yaml"
    path.write_text(SPEC)
    return path


def tamper_config(folder: Path, *, rehash: bool) -> None:
    """Replace config.json by valid JSON with other values; `rehash` also updates summary.json's
    sha256 of it, so that only the content check can tell."""
    document = read_json(folder / st.CONFIG)
    document["config"].update(lr=5.0, estimator="identity")
    (folder / st.CONFIG).write_text(json.dumps(document))
    if rehash:
        summary = read_json(folder / st.SUMMARY)
        summary["files"][st.CONFIG] = st.sha256_file(folder / st.CONFIG)
        (folder / st.SUMMARY).write_text(json.dumps(summary))


def stripped(folder: Path) -> list[dict]:
    return [
        # `finished_run` has gradient diagnostics, the spec's cells not (they never change
        # training: tests/test_diagnostics_training.py; same run id)
        {
            k: v
            for k, v in r.items()
            if k not in TIMING_KEYS and not k.startswith(DIAGNOSTICS_PREFIX)
        }
        for r in read_jsonl(folder / st.METRICS)
    ]


def test_config_problem_checks_run_id_and_identity(finished_run):
    config, folder = finished_run
    document = read_json(folder / st.CONFIG)
    assert st.config_problem(document, config.run_id) is None
    assert st.run_id_for(config.identity()) == config.run_id
    assert "names run" in st.config_problem({**document, "run_id": "other"}, config.run_id)
    changed = {**document, "config": {**document["config"], "lr": 5.0}}
    assert "belong to run" in st.config_problem(changed, config.run_id)
    execution = {**document, "config": {**document["config"], "device": "cuda", "stack": 4}}
    assert st.config_problem(execution, config.run_id) is None  # not part of the identity


@pytest.mark.slow
@pytest.mark.parametrize("rehash", [False, True])
def test_a_replaced_config_json_is_corruption_and_the_cell_is_redone(
    finished_run, copy_run, spec, capsys, rehash
):
    config, original = finished_run
    store = copy_run(original)
    folder = st.run_dir(store, config.run_id)
    tamper_config(folder, rehash=rehash)
    info = st.cell_info(folder)
    assert info.state == "interrupted" and info.summary is None  # status: not completed

    assert main(["run", str(spec), "--store", str(store), "--wandb", "disabled"]) == 0
    assert st.config_problem(read_json(folder / st.CONFIG), config.run_id) is None
    assert read_json(folder / st.CONFIG)["config"]["lr"] == config.lr
    # Retrained from scratch, not "completed" again with the altered file hashed into a new
    # summary: the same numbers as the untouched run.
    assert stripped(folder) == stripped(original)
    assert read_jsonl(folder / st.STEPS) == read_jsonl(original / st.STEPS)
    assert "training it from scratch" in capsys.readouterr().err


def test_the_analysis_reads_a_replaced_config_json_as_corrupt(finished_run, copy_run, tmp_path):
    config, original = finished_run
    store = copy_run(original)
    folder = st.run_dir(store, config.run_id)
    assert read_cell(folder, config.run_id).status == "completed"
    tamper_config(folder, rehash=True)
    record = read_cell(folder, config.run_id)
    assert record.status == "corrupt" and "belong to run" in record.issues[0]
    assert record.epochs == []  # none of its numbers are used


def test_metrics_that_do_not_fit_the_summary_are_corrupt(finished_run, copy_run):
    config, original = finished_run
    store = copy_run(original)
    folder = st.run_dir(store, config.run_id)
    records = read_jsonl(folder / st.METRICS)
    st.atomic_write_jsonl(folder / st.METRICS, records[:1])  # a 2-epoch run with one epoch
    summary = read_json(folder / st.SUMMARY)
    summary["files"][st.METRICS] = st.sha256_file(folder / st.METRICS)
    (folder / st.SUMMARY).write_text(json.dumps(summary))
    assert "holds 1 epochs of a 2-epoch run" in st.verify_summary(folder)[1]


def test_temp_files_left_by_a_kill_are_removed_when_the_cell_runs_again(
    finished_run, copy_run, spec
):
    config, original = finished_run
    store = copy_run(original)
    folder = st.run_dir(store, config.run_id)
    (folder / st.SUMMARY).unlink()  # killed before the summary: interrupted
    leftovers = [folder / ".checkpoint.pt.k2j4_x9a.tmp", folder / ".summary.json.8dh3kq1z.tmp"]
    for path in leftovers:
        path.write_bytes(b"torn")
    assert main(["run", str(spec), "--store", str(store), "--wandb", "disabled"]) == 0
    assert not any(path.exists() for path in leftovers)
    assert not list(folder.glob(".*.tmp"))


def test_a_failed_run_has_no_probe_accuracy(tiny_config, tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    # The disk fills up at the last write of a run, after the last epoch's probe.
    monkeypatch.setattr(autoencoder, "save_reconstruction_png", full_disk)
    summary = train_run(tiny_config(), tmp_path, progress=False)
    assert summary["status"] == "failed" and "No space left" in summary["error"]
    assert read_jsonl(st.run_dir(tmp_path, summary["run_id"]) / st.METRICS)[-1]["probe_accuracy"]
    assert summary["probe_accuracy"] is None  # docs: failed runs carry no probe (not 0.5)
    assert summary["test_mse"] is not None  # the last finished epoch's numbers stay


@pytest.mark.slow
def test_a_full_disk_fails_the_cell_cleanly_and_the_rerun_completes(
    finished_run, spec, tmpfs, capsys
):
    config, reference = finished_run
    store = tmpfs("size=24m")  # room for config.json and logs, not for a 3 x 28 MB checkpoint
    argv = ["run", str(spec), "--store", str(store), "--wandb", "disabled"]
    assert main(argv) == 1
    folder = st.run_dir(store, config.run_id)
    info = st.cell_info(folder)
    assert info.state in ("failed", "interrupted")  # the summary itself may not have fit
    assert not list(folder.glob(".*.tmp"))  # a failed atomic write leaves no temp file
    subprocess.run(["mount", "-o", "remount,size=400m", str(store)], check=True)
    assert main(argv) == 0
    assert stripped(folder) == stripped(reference)
    assert read_jsonl(folder / st.STEPS) == read_jsonl(reference / st.STEPS)


def test_status_says_why_a_cell_is_not_completed(finished_run, copy_run, spec, capsys):
    config, original = finished_run
    store = copy_run(original)
    (st.run_dir(store, config.run_id) / st.SUMMARY).unlink()
    assert main(["status", str(spec), "--store", str(store)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if config.run_id in line)
    assert "interrupted" in row and "no summary.json" in row


@pytest.mark.slow
def test_status_and_analyze_warn_when_thread_counts_differ(tmp_path, capsys):
    spec = tmp_path / "mix.yaml"
    spec.write_text(
        "name: mix\nbase: {dataset: mnist-mini, train_subset: 128, test_subset: 64, epochs: 1, "
        'device: cpu, diagnostics: "off"}\ngrid:\n  estimator: [identity, hardtanh]\n'
        "  seed: [0, 1]\n"
    )
    store = tmp_path / "store"
    configs = [RunConfig.from_dict({**c, "num_threads": n}) for c, n in _cells(spec)]
    for config in configs:  # as if some cells came from `--workers 2`, the others sequential
        assert train_run(config, store, progress=False)["status"] == "completed"
    assert main(["status", str(spec), "--store", str(store)]) == 0
    err = capsys.readouterr().err
    assert "different torch thread counts" in err and "2 cells with 1, 2 cells with 2" in err
    out = tmp_path / "report"
    assert main(["analyze", str(spec), "--store", str(store), "--out", str(out)]) == 0
    assert "different torch thread counts" in capsys.readouterr().err


def _cells(spec: Path) -> list[tuple[dict, int]]:
    cells = load_spec(spec).cells
    return [(c.config.to_dict(), 1 + n % 2) for n, c in enumerate(cells)]
