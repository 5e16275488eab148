"""`--determinism MODE` overrides the spec's determinism for run, status, snapshot and analyze:
every cell takes the mode and the run id that follows from it."""

from __future__ import annotations

import pytest

from runners.cli import build_parser, main
from runners.commands.parts.grid import with_determinism
from runners.errors import UserError
from runners.grids.spec import load_spec
from runners.store import format as run_store

BASE = (
    "base: {dataset: mnist-mini, train_subset: 128, test_subset: 64, epochs: 1, device: cpu, "
    'diagnostics: "off", num_threads: 1, determinism: machine}\n'
)


def spec_file(tmp_path, grid="grid: {estimator: [identity], seed: [0]}\n", base=BASE):
    path = tmp_path / "mode.yaml"
    path.write_text(f"name: mode\n{base}{grid}")
    return path


def test_the_override_sets_every_cell_and_its_id(tmp_path):
    spec = load_spec(spec_file(tmp_path, "grid: {estimator: [identity, relu], seed: [0, 1]}\n"))
    assert with_determinism(spec, None) is spec
    portable = with_determinism(spec, "portable")
    assert [c.config.determinism for c in portable.cells] == ["portable"] * 4
    want = [c.config.replace(determinism="portable").run_id for c in spec.cells]
    assert [c.run_id for c in portable.cells] == want
    assert set(want).isdisjoint(c.run_id for c in spec.cells)
    assert [c["run_id"] for c in portable.index()["cells"]] == want
    # Machine is the spec's own mode: the same ids.
    same = with_determinism(spec, "machine")
    assert [c.run_id for c in same.cells] == [c.run_id for c in spec.cells]


def test_a_determinism_axis_follows_or_is_refused(tmp_path):
    base = BASE.replace(", determinism: machine", "")
    one = load_spec(spec_file(tmp_path, "grid: {determinism: [machine], seed: [0]}\n", base))
    moved = with_determinism(one, "portable")
    assert moved.cells[0].factors["determinism"] == "portable"
    grid = "grid: {determinism: [machine, portable], seed: [0]}\n"
    two = load_spec(spec_file(tmp_path, grid, base))
    with pytest.raises(UserError, match="would make cells of mode identical"):
        with_determinism(two, "portable")


def test_run_trains_the_overridden_cells_and_status_finds_them(tmp_path, capsys):
    # This suite's process is pinned to portable kernels: a machine-mode spec trains here only
    # with the override, and lands under the portable ids.
    path, store = spec_file(tmp_path), tmp_path / "store"
    spec = load_spec(path)
    machine_id = spec.cells[0].run_id
    portable_id = with_determinism(spec, "portable").cells[0].run_id
    common = ["--store", str(store), "--wandb", "disabled", "--no-progress"]
    assert main(["run", str(path), *common]) == 2
    assert "already loaded with portable" in capsys.readouterr().err
    assert main(["run", str(path), "--determinism", "portable", *common]) == 0
    config = run_store.read_json(run_store.run_dir(store, portable_id) / run_store.CONFIG)
    assert config["config"]["determinism"] == "portable" and config["run_id"] == portable_id
    assert not run_store.run_dir(store, machine_id).exists()
    capsys.readouterr()
    assert main(["status", str(path), "--store", str(store), "--determinism", "portable"]) == 0
    assert "1 completed" in capsys.readouterr().out
    assert main(["status", str(path), "--store", str(store)]) == 0
    assert "1 missing" in capsys.readouterr().out


def test_help_says_it_overrides(capsys):
    for command in ("status", "snapshot", "analyze"):
        with pytest.raises(SystemExit):
            build_parser(command).parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "the run ids that follow from it" in text, command
    with pytest.raises(SystemExit):
        build_parser("run").parse_args(["run", "--help"])
    assert "overriding the spec's" in " ".join(capsys.readouterr().out.split())


def test_machine_override_in_a_fresh_process_lists_the_machine_ids(tmp_path):
    from test_determinism import _python

    path = spec_file(tmp_path, base=BASE.replace(", determinism: machine", ""))
    spec = load_spec(path)
    machine_id = with_determinism(spec, "machine").cells[0].run_id
    store = tmp_path / "store"
    code = (
        "import sys; from runners.cli import main; "
        f"sys.exit(main(['run', {str(path)!r}, '--store', {str(store)!r}, "
        "'--determinism', 'machine', '--dry-run']))"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert machine_id in done.stdout and spec.cells[0].run_id not in done.stdout
    assert not store.exists()
