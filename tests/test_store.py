"""The run store: its format (summary validation, derived cell states), checkpoints, the lock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runners.engine.claims import CellBusyError
from runners.engine.train import train_run
from runners.store import format as st
from runners.store.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from runners.store.format import atomic_write_json
from runners.store.lock import cell_lock
from runners.store.provenance import write_config

HOLD_LOCK = """
import sys
from runners.store.lock import cell_lock
with cell_lock(sys.argv[1]) as got:
    print("held" if got else "busy", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def lock_holder():
    """Start a process that holds a cell's lock until the test ends."""
    procs = []

    def hold(folder: Path) -> None:
        proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_paths():
    assert st.run_dir("/s", "abc") == Path("/s/runs/abc")
    assert st.spec_index_path("/s", "grid") == Path("/s/specs/grid.json")


def test_the_format_module_does_not_import_torch():
    code = "import sys, runners.store.format; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_atomic_json_is_canonical_and_readable(tmp_path):
    st.atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1.5, None]})
    assert (tmp_path / "a.json").read_text() == st.dumps_json({"a": [1.5, None], "b": 1})
    assert st.read_json(tmp_path / "a.json") == {"a": [1.5, None], "b": 1}
    st.atomic_write_jsonl(tmp_path / "r.jsonl", [{"epoch": 1}, {"epoch": 2}])
    assert st.read_jsonl(tmp_path / "r.jsonl") == [{"epoch": 1}, {"epoch": 2}]
    assert st.read_json_checked(tmp_path / "none.json") == (None, None)
    (tmp_path / "torn.json").write_text("{")
    assert st.read_json_checked(tmp_path / "torn.json") == (
        None,
        "torn.json does not parse (JSONDecodeError)",
    )


def test_states_of_missing_empty_and_started_cells(tmp_path):
    assert st.cell_state(tmp_path / "nope") == "missing"
    folder = tmp_path / "runs" / "x"
    folder.mkdir(parents=True)
    assert st.cell_state(folder) == "missing"
    write_config(folder, "x", {"seed": 0}, {"device": "cpu"})
    info = st.cell_info(folder)
    assert info.state == "interrupted" and info.problem == "no summary.json"


def test_config_json_records_versions_and_commit(tmp_path):
    write_config(tmp_path, "run", {"seed": 1}, {"device": "cpu"})
    data = json.loads((tmp_path / st.CONFIG).read_text())
    assert data["run_id"] == "run" and data["config"] == {"seed": 1}
    assert {"python", "torch", "numpy", "ste_ablations"} <= set(data["versions"])
    assert "git_commit" in data and data["runtime"] == {"device": "cpu"}
    assert st.read_config(tmp_path)["run_id"] == "run"
    (tmp_path / st.CONFIG).write_text("{")
    assert st.read_config(tmp_path) is None


def test_valid_summary_gives_its_status(finished_run):
    _, folder = finished_run
    info = st.cell_info(folder)
    assert info.state == "completed" and info.problem is None
    assert info.summary["run_id"] == folder.name


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda s: s.pop("files"), "lacks files"),
        (lambda s: s.update(status="done"), "unknown status"),
        (lambda s: s.update(run_id="other"), "belongs to 'other'"),
        (
            lambda s: s["files"].update({"steps.jsonl": "0" * 64}),
            "steps.jsonl does not match its sha256",
        ),
        (
            lambda s: s["files"].update({"extra.txt": "0" * 64}),
            "summary.json lists 'extra.txt', which is not a file of a run",
        ),
        (lambda s: s["files"].pop("reconstruction.png"), "must list reconstruction.png"),
    ],
)
def test_corrupt_summary_means_rerun(finished_run, copy_run, edit, problem):
    _, reference = finished_run
    folder = copy_run(reference) / "runs" / reference.name
    summary = json.loads((folder / st.SUMMARY).read_text())
    edit(summary)
    atomic_write_json(folder / st.SUMMARY, summary)
    info = st.cell_info(folder)
    assert info.state == "interrupted" and info.summary is None
    assert problem in info.problem


def test_torn_summary_and_edited_checkpoint_are_detected(finished_run, copy_run):
    _, reference = finished_run
    folder = copy_run(reference) / "runs" / reference.name
    (folder / st.SUMMARY).write_text('{"status": "completed"')
    assert "does not parse" in st.cell_info(folder).problem
    (folder / st.SUMMARY).write_bytes((reference / st.SUMMARY).read_bytes())
    assert st.cell_state(folder) == "completed"
    with open(folder / st.CHECKPOINT, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\0" * 16)
    assert "checkpoint.pt does not match its sha256" in st.cell_info(folder).problem


def test_unusable_checkpoints_are_ignored_with_a_warning(finished_run, tmp_path):
    _, reference = finished_run
    assert load_checkpoint(tmp_path, "x") is None  # absent: no warning
    (tmp_path / st.CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.warns(RuntimeWarning, match="ignoring unusable checkpoint"):
        assert load_checkpoint(tmp_path, "x") is None
    with pytest.warns(RuntimeWarning, match="belongs to"):
        assert load_checkpoint(reference, "another-run") is None
    ckpt = load_checkpoint(reference, reference.name)
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["epoch"] == 2


def test_lock_is_exclusive_across_processes_and_reentrant_within_one(tmp_path, lock_holder):
    folder = tmp_path / "runs" / "cell"
    with cell_lock(folder) as outer:
        assert outer == folder / st.LOCK
        with cell_lock(folder) as inner:  # same process: re-entrant
            assert inner == outer
        assert st.lock_held(folder)
    assert not st.lock_held(folder)
    lock_holder(folder)
    assert st.lock_held(folder) and st.cell_state(folder) == "running"
    with cell_lock(folder) as got:
        assert got is None


def test_train_run_refuses_a_cell_locked_elsewhere(tiny_config, tmp_path, lock_holder):
    config = tiny_config()
    folder = st.run_dir(tmp_path, config.run_id)
    lock_holder(folder)
    with pytest.raises(CellBusyError, match="another process"):
        train_run(config, tmp_path, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == [st.LOCK]
