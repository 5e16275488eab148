"""Limits checked before anything is expanded or written: cells per spec, YAML aliases, every
numeric config field, names, and the length of every quoted value in an error message."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from runners.cli import main
from runners.config import ConfigError, RunConfig, memory_estimate_bytes
from runners.errors import short_repr
from runners.grids.limits import MAX_CELLS, TooManyCellsError
from runners.grids.spec import SpecError, load_spec

TINY_BASE = "base: {dataset: mnist-mini, train_subset: 128, test_subset: 64, epochs: 1}\n"


def spec_file(tmp_path: Path, body: str, name: str = "limits") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(body)
    return path


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The error `main` printed: one line, `ste-ablate: error: ...`, nothing on stdout."""
    captured = capsys.readouterr()
    assert captured.err.startswith("ste-ablate: error:"), captured.err
    assert "Traceback" not in captured.err
    return captured.err


def test_a_million_cell_grid_fails_at_once_naming_the_count_and_the_flag(tmp_path, capsys):
    seeds = ", ".join(str(i) for i in range(100))
    lrs = ", ".join(f"{(i + 1) * 1e-4:.4g}" for i in range(100))
    sizes = ", ".join(str(i + 2) for i in range(100))
    path = spec_file(
        tmp_path,
        f"name: huge\n{TINY_BASE}grid:\n  seed: [{seeds}]\n  lr: [{lrs}]\n"
        f"  batch_size: [{sizes}]\n",
    )
    started = time.perf_counter()
    assert main(["run", str(path), "--dry-run", "--store", str(tmp_path / "s")]) == 2
    assert time.perf_counter() - started < 5  # the count comes before any expansion (minutes)
    err = one_line_error(capsys)
    assert "1000000 cells" in err and f"limit of {MAX_CELLS}" in err and "--max-cells" in err
    with pytest.raises(TooManyCellsError):
        load_spec(path)


def test_max_cells_lifts_the_limit(tmp_path, capsys):
    path = spec_file(tmp_path, f"name: three\n{TINY_BASE}grid:\n  seed: [0, 1, 2]\n")
    assert main(["run", str(path), "--dry-run", "--max-cells", "2"]) == 2
    assert "3 cells" in one_line_error(capsys)
    assert main(["run", str(path), "--dry-run", "--max-cells", "3", "--store", str(tmp_path)]) == 0
    assert len(load_spec(path, max_cells=3).cells) == 3


def test_a_yaml_alias_bomb_is_refused_before_it_is_built(tmp_path, capsys):
    levels = ["&a0 [0, 0, 0, 0, 0, 0, 0, 0, 0]"]
    levels += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    path = spec_file(tmp_path, f"name: bomb\n{TINY_BASE}grid:\n  seed: [[{', '.join(levels)}]]\n")
    started = time.perf_counter()
    assert main(["run", str(path), "--dry-run", "--store", str(tmp_path / "s")]) == 2
    assert time.perf_counter() - started < 5  # aliases counted, not built (387 million strings)
    err = one_line_error(capsys)
    assert "aliases" in err and len(err) < 400


def test_a_recursive_alias_is_an_error(tmp_path):
    path = spec_file(tmp_path, f"name: loop\n{TINY_BASE}grid:\n  seed: &a [*a]\n")
    with pytest.raises(SpecError, match="alias refers to the node it sits in"):
        load_spec(path)


def test_aliases_within_the_limit_still_work(tmp_path):
    path = spec_file(
        tmp_path,
        f"name: reuse\n{TINY_BASE}grid:\n  seed: &seeds [0, 1]\n"
        "include:\n  - {estimator: sigmoid, seed: *seeds}\n",
    )
    assert len(load_spec(path).cells) == 4


def test_an_error_message_quotes_a_huge_value_in_bounded_length(tmp_path, capsys):
    nested: object = [0] * 9
    for _ in range(9):
        nested = [nested] * 9  # 387 million leaves, shared: cheap to build, not to print
    assert len(short_repr(nested)) <= 120
    assert len(short_repr("x" * 10**6)) <= 120
    assert short_repr(10**5000) == "<a 16610-bit integer>"
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"seed": nested})
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("code_channels", "1000000", "code_channels must be in [1, 65536]"),
        ("seed", "9" * 300, "seed must be in [0, 4294967295]"),
        ("epochs", str(10**12), "epochs must be in [1, 10000]"),
        ("batch_size", str(10**9), "batch_size must be in [2, 65536]"),
        ("lr", "1e300", "lr must be in (0, 1e+30]"),
        ("num_threads", "100000", "num_threads must be in [1, 1024]"),
        ("stack", "100000", "stack must be in [1, 1024]"),
    ],
)
def test_numeric_fields_have_upper_bounds(tmp_path, capsys, field, value, message):
    path = spec_file(
        tmp_path, f"name: bound\nbase: {{dataset: mnist-mini, {field}: {value}}}\n"
        "grid:\n  estimator: [hardtanh]\n",
    )  # fmt: skip
    assert main(["run", str(path), "--dry-run", "--store", str(tmp_path / "s")]) == 2
    err = one_line_error(capsys)
    assert message in err and len(err) < 300


def test_the_memory_estimate_bounds_width_and_batch_together():
    article = memory_estimate_bytes(512, 64)
    assert 50 * 2**20 < article < 2**30  # 7 M parameters with Adam and a batch: ~0.2 GiB
    RunConfig(code_channels=16_384, batch_size=64)  # wide, but fits
    with pytest.raises(ConfigError, match="needs about .* GiB"):
        RunConfig(code_channels=65_536, batch_size=65_536)


def test_a_long_spec_name_is_refused_and_leaves_no_folder(tmp_path, capsys):
    path = spec_file(tmp_path, f"name: {'n' * 245}\n{TINY_BASE}grid:\n  seed: [0]\n")
    store = tmp_path / "store"
    assert main(["run", str(path), "--store", str(store), "--wandb", "disabled"]) == 2
    assert "at most 100 characters" in one_line_error(capsys)
    assert not store.exists()  # not even an empty specs/ folder


def test_a_spec_file_over_the_size_limit_is_refused(tmp_path):
    path = spec_file(tmp_path, f"name: big\n{TINY_BASE}description: '{'x' * (1 << 20)}'\n")
    with pytest.raises(SpecError, match="bytes, more than"):
        load_spec(path)
