"""Portable determinism: the pins, when they can be set, the refusals, the hardware record,
resuming on other kernels, and `ste-ablate reproduce`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runners import determinism
from runners.cli import main
from runners.commands.reproduce import compare, explain
from runners.determinism import PORTABLE_ENV, DeterminismError, mode_for_command
from runners.store import format as st
from runners.training.state import RunState

ROOT = Path(__file__).resolve().parents[1]
SPEC = """\
name: repro
base: {dataset: mnist-mini, train_subset: 128, test_subset: 64, epochs: 2, device: cpu,
       num_threads: 1, diagnostics: "off"}
grid:
  estimator: [identity, "sigmoid(beta=4)"]
  seed: [0]
"""


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV and k != "STE_DETERMINISM"}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**base, **(env or {}), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def test_this_suite_trains_on_pinned_kernels():
    assert determinism.portable_env_active()
    assert torch.backends.cpu.get_cpu_capability() == "AVX2"


def test_the_mode_is_found_without_torch(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nbase: {determinism: machine}\ngrid: {seed: [0]}\n")
    assert mode_for_command(["train", "--determinism", "machine"]) == "machine"
    assert mode_for_command(["train", "--determinism=portable"]) == "portable"
    assert mode_for_command(["run", str(spec), "--dry-run"]) == "machine"
    assert mode_for_command(["run", str(tmp_path / "missing.yaml")]) == "portable"
    assert mode_for_command(["estimators"]) == "portable"


def test_too_late_to_pin_is_refused_not_ignored():
    # This process loaded torch with the portable pins: neither mode can change now.
    with pytest.raises(DeterminismError, match="already loaded"):
        determinism.pin("machine")
    code = (
        "import torch\n"
        "from runners import determinism\n"
        "try:\n    determinism.pin('portable')\nexcept determinism.DeterminismError as e:\n"
        "    print('refused:', e)\n"
    )
    done = _python(code)
    assert "refused: portable determinism must be set before torch is imported" in done.stdout


def test_a_library_call_in_an_unpinned_process_refuses_to_train(tmp_path):
    code = (
        "from runners.config import RunConfig\n"
        "from runners.engine.train import train_run\n"
        "from runners.determinism import DeterminismError\n"
        "c = RunConfig(dataset='mnist-mini', train_subset=64, test_subset=32, epochs=1,"
        " device='cpu')\n"
        f"try:\n    train_run(c, r'{tmp_path}')\nexcept DeterminismError as e:\n"
        "    print('refused:', e)\n"
    )
    done = _python(code)
    assert "refused: portable determinism must be set before torch is imported" in done.stdout
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.slow
def test_the_cli_pins_before_torch_loads_and_records_the_hardware(tmp_path):
    argv = ["train", "--dataset", "mnist-mini", "--train-subset", "64", "--test-subset", "32",
            "--epochs", "1", "--device", "cpu", "--num-threads", "1", "--diagnostics", "off",
            "--store", str(tmp_path), "--quiet"]  # fmt: skip
    done = _python(f"import sys; from runners.cli import main; sys.exit(main({argv!r}))")
    assert done.returncode == 0, done.stderr
    (folder,) = (tmp_path / "runs").iterdir()
    runtime = st.read_json(folder / st.CONFIG)["runtime"]
    assert runtime["cpu_capability"] == "AVX2"
    assert runtime["onednn_max_cpu_isa"] == "AVX2" and runtime["mkl_cbwr"] == "COMPATIBLE,STRICT"
    assert runtime["mkl_branch"] == "COMPATIBLE,STRICT"  # what MKL itself reports
    assert runtime["determinism"] == "portable" and runtime["cpu_model"] and runtime["cpu_vendor"]
    assert st.read_json(folder / st.CONFIG)["config"]["determinism"] == "portable"


def test_machine_mode_is_refused_in_a_pinned_process(tiny_config, tmp_path):
    from runners.engine.train import train_run

    with pytest.raises(DeterminismError, match="pinned to portable"):
        train_run(tiny_config(determinism="machine"), tmp_path)
    assert not (tmp_path / "runs").exists()


def test_determinism_is_in_the_run_id_only_when_portable(tiny_config):
    portable, machine = tiny_config(), tiny_config(determinism="machine")
    assert portable.run_id != machine.run_id
    assert "determinism" not in machine.identity()


@pytest.mark.slow
def test_resuming_on_other_kernels_warns_and_the_run_spans_machines(finished_run, capsys):
    config, folder = finished_run
    ckpt = torch.load(folder / st.CHECKPOINT, weights_only=True)
    assert ckpt["hardware"]["cpu_capability"] == "AVX2" and ckpt["spans_machines"] is False
    same = RunState.from_checkpoint(config, torch.device("cpu"), ckpt)
    assert not same.spans_machines and "warning" not in capsys.readouterr().err
    ckpt["hardware"] = {
        **ckpt["hardware"],
        "cpu_capability": "AVX512",
        "onednn_max_cpu_isa": "default",
    }
    moved = RunState.from_checkpoint(config, torch.device("cpu"), ckpt)
    assert moved.spans_machines
    assert "started on AVX512 kernels" in capsys.readouterr().err
    assert moved.to_checkpoint(final=True)["spans_machines"] is True


@pytest.mark.slow
def test_reproduce_re_trains_snapshot_cells_bit_for_bit(tmp_path, capsys):
    spec, store, snap = tmp_path / "repro.yaml", tmp_path / "store", tmp_path / "snap.csv"
    spec.write_text(SPEC)
    assert main(["run", str(spec), "--store", str(store), "--wandb", "disabled"]) == 0
    assert main(["snapshot", str(spec), "--store", str(store), "--out", str(snap)]) == 0
    capsys.readouterr()
    assert main(["reproduce", str(snap), "--cells", "2", "--json"]) == 0
    out = capsys.readouterr().out
    assert "2/2 cells reproduced bit for bit" in out
    report = json.loads(out[out.index("[") : out.rindex("]") + 1])
    assert all(r["same"] and r["compared"] > 10 for r in report)
    runtimes = json.loads((tmp_path / "snap.csv.meta.json").read_text())["runtime"]
    assert len(runtimes) == 2
    for record in runtimes.values():
        assert record["mkl_branch"] == "COMPATIBLE,STRICT" and record["cpu_capability"] == "AVX2"
        assert record["cpu_vendor"] and record["torch_threads"] == 1


def test_a_changed_value_is_reported_with_its_difference():
    import pandas as pd

    rows = pd.DataFrame(
        {
            "epoch": [1, 1, 1],
            "metric": ["test_mse", "bit_flip_rate", "epoch_time_s"],
            "value": [0.25, float("nan"), 9.0],
        }  # fmt: skip
    )
    same = compare(rows, [{"epoch": 1, "test_mse": 0.25, "bit_flip_rate": None, "epoch_time_s": 1}])
    assert same["same"] and same["compared"] == 2
    differs = compare(rows, [{"epoch": 1, "test_mse": 0.2500001, "bit_flip_rate": None}])
    assert not differs["same"] and differs["max_abs_diff"] == pytest.approx(1e-7)
    assert differs["first_difference"].startswith("epoch 1 test_mse")


def test_mkl_reports_the_vendor_neutral_branch_in_this_pinned_suite():
    assert determinism.mkl_branch() == "COMPATIBLE,STRICT"
    unpinned = _python("import torch; from runners import determinism as d; print(d.mkl_branch())")
    assert unpinned.returncode == 0, unpinned.stderr
    assert unpinned.stdout.strip() == "OFF"  # nothing set: MKL's own dispatch


def test_a_branch_mkl_does_not_honour_is_refused(monkeypatch):
    # On AMD, MKL runs AUTO when asked for an Intel-only branch such as AVX2: what MKL reports in
    # force decides, not the variable.
    determinism.check_active("portable")
    monkeypatch.setattr(determinism, "mkl_branch", lambda: "AUTO,STRICT")
    with pytest.raises(DeterminismError, match="MKL runs AUTO,STRICT here"):
        determinism.check_active("portable")


def test_a_difference_is_explained_by_what_changed_between_the_runtimes():
    recorded = {
        "cpu_vendor": "GenuineIntel", "cpu_model": "Xeon", "cpu_capability": "AVX2",
        "mkl_branch": "COMPATIBLE,STRICT", "onednn_isa": "AVX2", "torch_threads": 1,
        "torch": "2.14.1", "mkl_version": "2024.2", "determinism": "portable", "device": "cpu",
    }  # fmt: skip
    amd = {**recorded, "cpu_vendor": "AuthenticAMD", "cpu_model": "EPYC"}
    lines = explain(recorded, amd)
    assert any(line.startswith("≠ CPU vendor") and "AuthenticAMD" in line for line in lines)
    assert lines[-1].startswith("not expected: same portable kernels on another CPU")
    assert "test_kernel_fingerprint" in lines[-1]
    auto = explain(recorded, {**amd, "mkl_branch": "AUTO,STRICT", "torch_threads": 2})
    assert (
        auto[-1] == "expected: the kernels or their settings differ (MKL branch in force, threads)"
    )
    assert "made before runtimes were kept" in explain(None, amd)[0]
