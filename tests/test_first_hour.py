"""What a new user meets first: flags and keys spelt the way people spell them, a data root
given one level too deep, a device checked even when nothing is left to train, and messages that
say one thing."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from runners.cli import build_parser, main
from runners.config import ConfigError, RunConfig
from runners.errors import UserError
from runners.grids.spec import SpecError, load_spec
from runners.tracking.wandb_tracker import resolve_mode
from runners.training import data

TINY_BASE = (
    "base: {dataset: mnist-mini, train_subset: 128, test_subset: 64, epochs: 1, device: cpu, "
    'diagnostics: "off", num_threads: 1}\n'
)


def test_wandb_off_is_disabled():
    args = build_parser("run").parse_args(["run", "x.yaml", "--wandb", "off"])
    assert args.wandb == "disabled"
    assert resolve_mode("off") == ("disabled", None)


def test_learning_rate_suggests_lr_in_configs_and_specs(tmp_path):
    with pytest.raises(
        ConfigError, match=r"unknown config key 'learning_rate' \(did you mean 'lr'\?\)"
    ):
        RunConfig.from_dict({"learning_rate": 0.01})
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nbase: {num_epochs: 2}\ngrid: {learning_rate: [0.1], seed: [0]}\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    message = str(info.value)
    assert "'num_epochs' (did you mean 'epochs'?)" in message
    assert "'learning_rate' (did you mean 'lr'?)" in message


def _idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist(raw: Path) -> None:
    """Tiny files in MNIST's IDX layout (not MNIST's content): 6 train and 4 test images."""
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", 0x803, rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", 0x801, np.arange(n) % 10)


def test_a_data_root_that_already_is_mnist_raw_is_taken_as_meant(tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    _fake_mnist(raw)
    for given in (tmp_path / "data", raw.parent, raw):
        # found in the folder meant, and refused there for not being MNIST's published files
        with pytest.raises(UserError, match="is not the published one") as found:
            data.load_arrays("mnist", given, download=False)
        assert str(raw / "train-images-idx3-ubyte") in str(found.value)
    empty = tmp_path / "empty" / "MNIST" / "raw"
    with pytest.raises(data.MissingDataError) as info:
        data.load_arrays("mnist", empty, download=False)
    assert info.value.folder == empty and f"MNIST is not in {empty}." in str(info.value)
    assert "MNIST/raw/MNIST" not in str(info.value)


def test_dry_run_with_mnist_missing_says_one_thing(tmp_path, capsys):
    spec = tmp_path / "full.yaml"
    spec.write_text(f"name: full\n{TINY_BASE.replace('-mini', '')}grid: {{seed: [0]}}\n")
    root = tmp_path / "data"
    args = ["run", str(spec), "--store", str(tmp_path / "s"), "--data-root", str(root)]
    assert main([*args, "--dry-run"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "will try to download it there" in err[0], err
    assert "downloads are off" not in err[0] and str(root / "MNIST" / "raw") in err[0]
    assert not root.exists()


def test_the_device_is_checked_when_every_cell_is_done(tmp_path, capsys):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(f"name: tiny\n{TINY_BASE}grid: {{seed: [0]}}\n")
    args = ["run", str(spec), "--store", str(tmp_path / "s"), "--wandb", "disabled"]
    assert main([*args, "--no-progress"]) == 0
    capsys.readouterr()
    for extra in (["--dry-run"], []):
        assert main([*args, "--device", "cuda:99", *extra]) == 2
        err = capsys.readouterr().err
        assert "device 'cuda:99' asked for" in err, err


def test_a_mistyped_flag_gets_what_it_may_have_meant(capsys):
    for argv, meant in (
        (["train", "--learning_rate", "0.1"], "(did you mean --lr?)"),
        (["train", "--learning-rate=0.1"], "(did you mean --lr?)"),
        (["run", "x.yaml", "--wandb-projct", "p"], "(did you mean --wandb-project"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and "unrecognized arguments" in err and meant in err, err
    with pytest.raises(SystemExit):
        main(["train", "--seed", "1", "extra"])
    assert "did you mean" not in capsys.readouterr().err
