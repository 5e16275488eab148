"""What a run records (`runners.store.records`): the table, its documentation, and the keys that
real runs of each task write."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from runners.config import RunConfig
from runners.config_tasks import TASKS
from runners.engine.train import train_run
from runners.store.format import SUMMARY_KEYS, read_json, read_jsonl, run_dir
from runners.store.records import (
    AUTOENCODER,
    DIAGNOSTIC,
    DIAGNOSTIC_METRICS,
    DIAGNOSTICS_PREFIX,
    EPOCH,
    EPOCH_METRICS,
    GRADIENT_ERROR,
    GRADIENT_ERROR_METRICS,
    GRADIENT_ERROR_PREFIX,
    GRADIENT_ERROR_TIME,
    HIGHER,
    LOWER,
    METRICS,
    RECORD_INDEX,
    RECORD_LISTS,
    SUMMARY,
    SUMMARY_METRICS,
    TAUS,
    TIMING_KEYS,
    VAE,
    direction,
    label,
    lower_is_better,
    metric_names,
    tau_name,
)

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def test_every_row_is_well_formed_and_every_list_comes_from_the_table():
    assert {AUTOENCODER, VAE} == set(TASKS)
    for name, metric in METRICS.items():
        assert metric.name == name and metric.label
        assert metric.group in (EPOCH, DIAGNOSTIC, GRADIENT_ERROR, SUMMARY)
        assert metric.direction in (LOWER, HIGHER, None)
        assert metric.task in (None, *TASKS)
    assert all(m.startswith(DIAGNOSTICS_PREFIX) for m in metric_names(DIAGNOSTIC))
    assert all(m.startswith(GRADIENT_ERROR_PREFIX) for m in metric_names(GRADIENT_ERROR))
    lists = (EPOCH_METRICS, SUMMARY_METRICS, DIAGNOSTIC_METRICS, GRADIENT_ERROR_METRICS)
    listed = [m for names in lists for m in names]
    assert len(listed) == len(set(listed))
    assert set(METRICS) == set(listed) | TIMING_KEYS
    assert TIMING_KEYS == {
        "epoch_time_s", "images_per_s", "wall_time_s", "diag_time_s", GRADIENT_ERROR_TIME,
    }  # fmt: skip
    assert not {*RECORD_INDEX, *RECORD_LISTS} & set(METRICS)
    assert [f"diag_cosine_smoothed_tau{tau_name(t)}" for t in TAUS] == [
        "diag_cosine_smoothed_tau0_1",
        "diag_cosine_smoothed_tau1",
    ]


def test_the_epoch_metrics_are_in_the_order_the_architecture_gives():
    text = (ROOT / "docs" / "architecture.md").read_text()
    paragraph = text[text.index("Epoch record keys in metrics.jsonl") :]
    paragraph = paragraph[: paragraph.index("its summary.json has")]
    named = list(dict.fromkeys(re.findall(r"`([a-z_]+)`", paragraph)))
    assert [n for n in named if n in METRICS] == list(EPOCH_METRICS)
    assert [n for n in named if n not in METRICS] == [*RECORD_INDEX, *RECORD_LISTS]


def test_directions_and_labels():
    assert lower_is_better("test_mse") and direction("test_mse") == "lower"
    assert direction("test_psnr") == "higher" and direction("probe_accuracy") == "higher"
    assert direction("bit_flip_rate", "higher") == "higher"
    with pytest.raises(ValueError, match="direction"):
        direction("bit_flip_rate")  # no better value
    with pytest.raises(ValueError, match="no known direction"):
        direction("not_a_metric")
    with pytest.raises(ValueError, match="must be"):
        direction("test_mse", "up")
    assert label("diag_cosine_smoothed_tau0_1") == "cosine with R (τ=0.1)"
    assert label("gerr_rmse_m16") == "rel. RMSE, mean of 16"
    assert label("some_other_key") == "some other key"


def test_the_module_is_plain_python():
    code = (
        "import sys, runners.store.records; "
        "print([m for m in ('torch', 'numpy', 'pandas') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# One epoch of each task with every optional measurement on: the diagnostics (the autoencoder's
# threshold only) and the exact-gradient checkpoint (a Bernoulli-sampling estimator, few latents).
RUNS = {
    AUTOENCODER: {
        "estimator": "bernoulli", "code_channels": 8, "train_subset": 128, "test_subset": 64,
        "batch_size": 64, "diagnostics": "epoch", "diagnostics_probe": 4,
    },
    VAE: {
        "task": VAE, "estimator": "disarm", "train_subset": 120, "test_subset": 40,
        "vae_latents": 6, "vae_eval_samples": 2, "vae_train_eval": 40,
    },
}  # fmt: skip


@pytest.mark.parametrize("task", [AUTOENCODER, VAE])
def test_a_run_of_each_task_records_exactly_the_listed_keys(task, tmp_path):
    config = RunConfig.from_dict(
        {"dataset": "mnist-mini", "epochs": 1, "device": "cpu", "num_threads": 1,
         "gradient_error": "checkpoints", "gradient_error_probe": 4, **RUNS[task]}
    )  # fmt: skip
    summary = train_run(config, tmp_path, progress=False, raise_errors=True)
    assert summary["status"] == "completed"
    folder = run_dir(tmp_path, config.run_id)
    (record,) = read_jsonl(folder / "metrics.jsonl")
    expected = {
        *RECORD_INDEX,
        *metric_names(EPOCH, task=task),
        *metric_names(DIAGNOSTIC, task=task),
        *metric_names(GRADIENT_ERROR, task=task),
        *(RECORD_LISTS if task == AUTOENCODER else ()),
    }
    assert set(record) == expected
    # summary.json: every number in it but the epoch count is a metric of the table, the
    # summary-only ones included; the keys beyond the file format's are the task's own.
    summary = read_json(folder / "summary.json")
    numbers = {k for k, v in summary.items() if type(v) in (int, float)} - {"epochs_done"}
    assert numbers <= set(METRICS) and set(SUMMARY_METRICS) <= numbers
    extra = set(summary) - set(SUMMARY_KEYS) - {"spans_machines"}
    assert extra <= set(metric_names(EPOCH, task=task)) and (task == VAE) == bool(extra)
