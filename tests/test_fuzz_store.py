"""Fuzz tests (hypothesis) of what the store and the analysis read back: checkpoint fields,
summary.json fields, snapshot metadata, figures manifests. Any value ends in "usable" (and then
the invariants the readers rely on hold) or in a one-line reason: never an exception, never a
value that crashes a later step. The default suite runs a few hundred examples; `slow` more."""

from __future__ import annotations

import json
import math
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from analysis_synth import make_store
from conftest import TINY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as s

from analysis.render.figures import load_manifest
from analysis.sources.snapshot import meta_path, read_snapshot, write_snapshot
from analysis.sources.store import scan_store
from analysis.sources.tidy import StoreError
from runners.config import RunConfig
from runners.engine.train import train_run
from runners.store import format as st
from runners.store.checkpoint import load_checkpoint
from runners.store.checkpoint_fields import MAX_TORCH_THREADS, checkpoint_problem
from runners.store.summary_checks import INT_LIMIT

FAST = settings(
    max_examples=120,
    deadline=timedelta(seconds=5),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
SLOW = settings(FAST, max_examples=1200)

scalars = (
    s.none()
    | s.booleans()
    | s.integers(min_value=-(2**70), max_value=2**70)
    | s.sampled_from([int("9" * 400), -1, 0, 1, 2, 3, 1024, 1025, 10**6])
    | s.floats(allow_nan=True, allow_infinity=True)
    | s.text(max_size=20)
    | s.sampled_from(["True", "completed", "diverged", "../x", "/etc/hostname", "int8"])
)
values = s.recursive(
    scalars,
    lambda inner: (
        s.lists(inner, max_size=3) | s.dictionaries(s.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


# ----------------------------------------------------------------------------- checkpoints
def valid_payload() -> dict[str, Any]:
    """A checkpoint payload of a 2-epoch run of 2 steps per epoch, stopped after step 3."""
    gen = torch.Generator().manual_seed(0)
    return {
        "format": 1,
        "run_id": "r",
        "final": False,
        "epoch": 1,
        "step": 3,
        "step_in_epoch": 1,
        "model": {"w": torch.zeros(2)},
        "optimizer": {"state": {}, "param_groups": []},
        "data_state": gen.get_state(),
        "noise_state": gen.get_state(),
        "records": [{"epoch": 1, "test_mse": 0.5}],
        "steps": [{"step": n, "epoch": 1 + (n > 2), "train_loss": 0.1} for n in (1, 2, 3)],
        "epoch_grad_norms": [0.1],
        "prev_codes": None,
        "epoch_train_time": 0.1,
        "train_time": 0.2,
        "wall_time": 0.3,
        "torch_threads": 1,
        "hardware": {},
        "spans_machines": False,
    }


FIELDS = list(valid_payload())


def check_checkpoint(changes: dict[str, Any], folder: Path) -> None:
    payload = {**valid_payload(), **changes}
    problem = checkpoint_problem(payload, epochs=2, batches=2)
    if problem is not None:
        assert isinstance(problem, str) and "\n" not in problem and len(problem) < 400
    else:  # what the engine relies on
        epoch, position, step = payload["epoch"], payload["step_in_epoch"], payload["step"]
        assert all(type(v) is int for v in (epoch, position, step))
        assert 0 <= epoch <= 2 and 0 <= position < 2 and step == 2 * epoch + position
        assert len(payload["records"]) == epoch and len(payload["steps"]) == step
        threads = payload.get("torch_threads")
        assert threads is None or 1 <= threads <= MAX_TORCH_THREADS
        for key in ("epoch_train_time", "train_time", "wall_time"):
            assert math.isfinite(payload[key]) and payload[key] >= 0
    torch.save(payload, folder / st.CHECKPOINT)
    foreign = payload["format"] != 1 or payload["run_id"] != "r"  # the loader's own checks
    unusable = problem is not None or foreign
    with pytest.warns(RuntimeWarning) if unusable else _nothing():
        loaded = load_checkpoint(folder, "r", epochs=2, batches=2)
    assert (loaded is None) == unusable


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


checkpoint_changes = s.dictionaries(s.sampled_from(FIELDS), values, min_size=1, max_size=3)


@FAST
@given(checkpoint_changes)
def test_any_checkpoint_field_is_usable_or_one_reason(tmp_path, changes):
    check_checkpoint(changes, tmp_path)


@pytest.mark.slow
@SLOW
@given(checkpoint_changes)
def test_many_checkpoint_fields(tmp_path, changes):
    check_checkpoint(changes, tmp_path)


# ----------------------------------------------------------------------------- summaries
@pytest.fixture(scope="module")
def run_folder(finished_run, tmp_path_factory) -> Path:
    _, reference = finished_run
    folder = tmp_path_factory.mktemp("fuzz-store") / "runs" / reference.name
    shutil.copytree(reference, folder, ignore=shutil.ignore_patterns(".lock"))
    return folder


@pytest.fixture(scope="module")
def weightless_run_folder(tmp_path_factory) -> Path:
    """A completed run that kept no weights (`keep_checkpoint: none`, as the quickstart trains).

    The fast summary fuzz reads a run with its checkpoint, the slow one this run: between them
    both layouts a final summary lists, and the slow one's 1,200 reads do not hash a 20 MB
    checkpoint twice each (half its time went there)."""
    config = RunConfig.from_dict(
        {**TINY, "epochs": 2, "diagnostics": "epoch", "keep_checkpoint": "none"}
    )
    store = tmp_path_factory.mktemp("fuzz-weightless")
    summary = train_run(config, store, progress=False, raise_errors=True)
    assert summary["status"] == "completed" and st.CHECKPOINT not in summary["files"]
    return st.run_dir(store, config.run_id)


SUMMARY_FIELDS = [*st.SUMMARY_KEYS, "spans_machines"]
summary_changes = s.dictionaries(s.sampled_from(SUMMARY_FIELDS), values, min_size=1, max_size=3)


def check_summary(folder: Path, changes: dict[str, Any]) -> None:
    original = json.loads((folder / st.SUMMARY).read_text())
    try:
        (folder / st.SUMMARY).write_text(json.dumps({**original, **changes}))
        info = st.cell_info(folder)
        assert info.state in st.CELL_STATES
        if info.state in st.FINAL_STATES:  # what a final cell promises its readers
            summary = info.summary
            assert summary["files"].keys() <= {st.CONFIG, st.METRICS, st.STEPS, st.FIGURE,
                                              st.CHECKPOINT}  # fmt: skip
            last = st.read_jsonl(folder / st.METRICS)[-1]
            if summary["status"] == "completed":
                assert summary["test_mse"] == last["test_mse"]
            for key in ("test_mse", "test_psnr", "probe_accuracy", "wall_time_s"):
                value = summary[key]
                # a float is a float (no overflow on conversion); an int stays within int64
                assert (
                    value is None
                    or type(value) is float
                    or (type(value) is int and abs(value) < INT_LIMIT)
                )
        else:
            assert info.problem is None or "\n" not in info.problem
        # The tidy table builds, whatever the summary says, and the cell reads as a known state.
        data = scan_store(folder.parents[1], None)
        assert set(data.cells["status"]) <= {*st.CELL_STATES, "corrupt"}
        assert list(data.cells["run_id"]) == [folder.name]
    finally:
        (folder / st.SUMMARY).write_text(json.dumps(original))


@FAST
@given(summary_changes)
def test_any_summary_field_is_final_only_when_true(run_folder, changes):
    check_summary(run_folder, changes)


@pytest.mark.slow
@SLOW
@given(summary_changes)
def test_many_summary_fields(weightless_run_folder, changes):
    check_summary(weightless_run_folder, changes)


# ----------------------------------------------------------------------------- snapshots
@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-snap")
    make_store(root / "store", estimators=("identity", "hardtanh"), seeds=(0, 1), epochs=2)
    snap = root / "snap.csv"
    write_snapshot(scan_store(root / "store", None), snap, spec_name="fuzz")
    return snap


META_FIELDS = ["format", "version", "spec", "axes", "dtypes", "rows", "files", "cells", "x"]
meta_changes = s.dictionaries(s.sampled_from(META_FIELDS), values, min_size=1, max_size=3) | (
    s.dictionaries(s.sampled_from(["value", "seed", "epoch", "status"]), values, min_size=1).map(
        lambda dtypes: {"dtypes": dtypes}
    )
)


def check_meta(snap: Path, changes: dict[str, Any]) -> None:
    original = meta_path(snap).read_text()
    try:
        meta = json.loads(original)
        if "dtypes" in changes and isinstance(changes["dtypes"], dict):
            changes = {"dtypes": {**meta["dtypes"], **changes["dtypes"]}}
        meta_path(snap).write_text(json.dumps({**meta, **changes}))
        try:
            data = read_snapshot(snap)
        except StoreError as exc:
            assert "\n" not in str(exc) or "does not parse" in str(exc)
            return
        assert str(data.table["value"].dtype) == "float64"  # no declared dtype rounds a value
    finally:
        meta_path(snap).write_text(original)


@FAST
@given(meta_changes)
def test_any_snapshot_metadata_reads_or_is_refused(snapshot, changes):
    check_meta(snapshot, changes)


@pytest.mark.slow
@SLOW
@given(meta_changes)
def test_many_snapshot_metadata(snapshot, changes):
    check_meta(snapshot, changes)


# ----------------------------------------------------------------------------- manifests
item = s.fixed_dictionaries(
    {"name": s.sampled_from(["a", "b.c", "../x", "", "/abs"]) | values,
     "snapshot": s.sampled_from(["s"]) | values,
     "kind": s.sampled_from(["final_metric", "cd_diagram", "latex_table", "nope"]) | values},
    optional={"metric": values, "size": values, "options": values, "study": values,
              "formats": values, "optional": values},
)  # fmt: skip
manifests = s.fixed_dictionaries(
    {"snapshots": s.just({"s": "snap.csv"}) | values, "items": s.lists(item, max_size=3) | values},
    optional={"version": values, "output": values, "formats": values, "seed": values,
              "n_resamples": values, "bogus": values},
)  # fmt: skip


def check_manifest(folder: Path, doc: dict[str, Any]) -> None:
    path = folder / "figures.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        loaded = load_manifest(path)
    except StoreError as exc:
        assert str(exc).startswith("manifest ")
        return
    seed, resamples = loaded.get("seed", 0), loaded.get("n_resamples", 9999)
    assert type(seed) is int and 0 <= seed < 2**32
    assert type(resamples) is int and resamples >= 1
    output = Path(str(loaded.get("output", "build")))
    assert not output.is_absolute() and ".." not in output.parts
    for entry in loaded["items"]:
        assert "/" not in entry["name"] and not entry["name"].startswith(".")


@FAST
@given(manifests)
def test_any_manifest_loads_valid_or_is_one_error(tmp_path, doc):
    check_manifest(tmp_path, doc)


@pytest.mark.slow
@SLOW
@given(manifests)
def test_many_manifests(tmp_path, doc):
    check_manifest(tmp_path, doc)
