"""summary.json is typed and cross-checked with the epoch records it vouches for.

Each attack edits a copy of a finished run the way a careless or hostile user would, rewriting
the sha256s summary.json lists where the attack needs it (only a forger who rewrites every value
consistently goes unseen). The cell must read as not final (the next `run` redoes it), and the
analysis must mark it corrupt and use none of its numbers, without a traceback. A malformed
gradcheck.json leaves analyze and snapshot working.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.sources.store import load_store
from runners.cli import main
from runners.engine.train import train_run
from runners.store import format as st
from runners.store.format import read_json, read_jsonl


def rewrite(folder: Path, *, summary: dict | None = None, metrics: list | None = None) -> None:
    """Write the edited files, with summary.json's sha256s matching them (a consistent forger)."""
    document = read_json(folder / st.SUMMARY)
    if metrics is not None:
        text = "".join(json.dumps(r) + "\n" for r in metrics)
        (folder / st.METRICS).write_text(text)
        document["files"][st.METRICS] = st.sha256_file(folder / st.METRICS)
    document.update(summary or {})
    (folder / st.SUMMARY).write_text(json.dumps(document))


HUGE = int("9" * 400)


def edit_summary_mse(folder: Path) -> None:
    rewrite(folder, summary={"test_mse": 0.0001})


def diverged_no_files(folder: Path) -> None:
    rewrite(folder, summary={"status": "diverged", "files": {}})


def bool_mse(folder: Path) -> None:
    rewrite(folder, summary={"test_mse": True})


def huge_int_in_summary(folder: Path) -> None:
    rewrite(folder, summary={"dead_bits": HUGE})


def huge_int_in_metrics(folder: Path) -> None:
    records = read_jsonl(folder / st.METRICS)
    records[0]["unique_codes"] = HUGE
    rewrite(folder, metrics=records)


def bool_in_metrics(folder: Path) -> None:
    records = read_jsonl(folder / st.METRICS)
    records[0]["test_psnr"] = True
    rewrite(folder, metrics=records)


def metrics_and_summary_disagree(folder: Path) -> None:
    records = read_jsonl(folder / st.METRICS)
    records[-1]["test_mse"] = 0.5
    rewrite(folder, metrics=records)


def file_outside(folder: Path) -> None:
    document = read_json(folder / st.SUMMARY)
    outside = folder.parent / "elsewhere.txt"
    outside.write_text("not of this run")
    rewrite(folder, summary={"files": {**document["files"], "../elsewhere.txt": "0" * 64}})


def absolute_file(folder: Path) -> None:
    document = read_json(folder / st.SUMMARY)
    rewrite(folder, summary={"files": {**document["files"], "/etc/hostname": "0" * 64}})


def unknown_status(folder: Path) -> None:
    rewrite(folder, summary={"status": "great"})


def epochs_done_text(folder: Path) -> None:
    rewrite(folder, summary={"epochs_done": "2"})


ATTACKS = {
    f.__name__: f
    for f in (
        edit_summary_mse,
        diverged_no_files,
        bool_mse,
        huge_int_in_summary,
        huge_int_in_metrics,
        bool_in_metrics,
        metrics_and_summary_disagree,
        file_outside,
        absolute_file,
        unknown_status,
        epochs_done_text,
    )
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_lying_summary_is_not_final_and_the_analysis_uses_none_of_it(
    finished_run, copy_run, attack
) -> None:
    _, reference = finished_run
    store = copy_run(reference)
    folder = st.run_dir(store, reference.name)
    assert st.cell_state(folder) == "completed"
    ATTACKS[attack](folder)
    info = st.cell_info(folder)
    assert info.state == "interrupted" and info.summary is None, info
    assert "\n" not in info.problem
    table = load_store(store)
    assert set(table["status"]) == {"corrupt"}
    assert table["value"].isna().all()


def test_the_rerun_redoes_a_cell_whose_summary_lies(finished_run, copy_run) -> None:
    config, reference = finished_run
    store = copy_run(reference)
    folder = st.run_dir(store, reference.name)
    edit_summary_mse(folder)
    summary = train_run(config, store, progress=False)
    assert summary["status"] == "completed"
    assert summary["test_mse"] == read_jsonl(folder / st.METRICS)[-1]["test_mse"] != 0.0001


def test_a_file_outside_the_run_folder_is_never_read(finished_run, copy_run, monkeypatch):
    _, reference = finished_run
    store = copy_run(reference)
    folder = st.run_dir(store, reference.name)
    absolute_file(folder)
    opened = []
    real = st.sha256_file
    monkeypatch.setattr(st, "sha256_file", lambda path: opened.append(str(path)) or real(path))
    assert "not a file of a run" in st.cell_info(folder).problem
    assert not any("hostname" in path for path in opened)


@pytest.mark.parametrize(
    "document",
    [
        '{"run_id": 5, "seed": "abc", "epoch": [], "estimators": 7}',
        '{"estimators": [{"estimator": 3, "coverage": "x"}, 5, {"estimator": "identity", '
        '"coverage": ' + "9" * 400 + "}]}",
        "[1, 2, 3]",
        '{"seed": ' + "9" * 400 + ', "estimators": [{"estimator": "identity"}]}',
    ],
)
def test_a_malformed_gradcheck_json_does_not_break_analyze_or_snapshot(
    finished_run, copy_run, tmp_path, capsys, document
) -> None:
    config, reference = finished_run
    store = copy_run(reference)
    folder = st.run_dir(store, reference.name)
    (folder / st.GRADCHECK).write_text(document)
    spec = tmp_path / "one.yaml"
    identity = {k: v for k, v in config.identity().items() if k not in ("estimator", "seed")}
    spec.write_text(
        f"name: one\nbase: {json.dumps(identity)}\n"
        f"grid:\n  estimator: [{config.estimator}]\n  seed: [{config.seed}]\n"
    )
    snap = tmp_path / "snap.csv"
    assert main(["snapshot", str(spec), "--store", str(store), "--out", str(snap)]) == 0
    out = tmp_path / "report"
    argv = ["analyze", str(spec), "--store", str(store), "--out", str(out), "--resamples", "99"]
    assert main(argv) == 0, capsys.readouterr().err


def test_a_gradcheck_of_other_weights_is_not_read(finished_run, copy_run) -> None:
    from analysis.sources.gradcheck import read_gradchecks

    _, reference = finished_run
    store = copy_run(reference)
    folder = st.run_dir(store, reference.name)
    document = {
        "run_id": folder.name,
        "run_estimator": "hardtanh",
        "seed": 0,
        "epoch": 2,
        "probe": 2,
        "flip_corr": 0.5,
        "estimators": [{"estimator": "identity", "coverage": 1.0}],
        "checkpoint_sha256": st.sha256_file(folder / st.CHECKPOINT),
    }
    (folder / st.GRADCHECK).write_text(json.dumps(document))
    assert read_gradchecks({folder.name: folder}) is not None
    (folder / st.GRADCHECK).write_text(json.dumps({**document, "checkpoint_sha256": "0" * 64}))
    assert read_gradchecks({folder.name: folder}) is None
