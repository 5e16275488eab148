"""Ablation specs: loading, whole-spec validation, expansion, and the shipped specs."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest

from analysis.stats import planning
from runners.config import RunConfig
from runners.errors import UserError
from runners.grids.spec import SpecError, load_spec
from ste_variants import list_estimators

ABLATIONS = Path(__file__).resolve().parent.parent / "ablations"
REQUIRED = ("identity", "hardtanh", "saturated", "sigmoid")


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value.errors


def test_product_expands_in_axis_order_with_resolved_configs(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: demo\n"
        "description: two by two\n"
        "base: {dataset: mnist-mini, epochs: 2, lr: 2e-3}\n"
        "grid:\n"
        "  estimator: [identity, 'sigmoid(beta=4.0)']\n"
        "  seed: [0, 1]\n"
        "wandb: {project: p, tags: [a, b]}\n",
    )
    spec = load_spec(path)
    assert spec.name == "demo" and spec.description == "two by two"
    assert spec.axes == ["estimator", "seed"]
    assert spec.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [(c.factors["estimator"], c.factors["seed"]) for c in spec.cells] == [
        ("identity", 0),
        ("identity", 1),
        ("sigmoid(beta=4)", 0),  # canonical spec, not the text as written
        ("sigmoid(beta=4)", 1),
    ]
    first = spec.cells[0].config
    assert first == RunConfig(estimator="identity", seed=0, dataset="mnist-mini", epochs=2, lr=2e-3)
    assert first.lr == 0.002  # "2e-3" is a float here (YAML 1.1 would read a string)
    assert spec.cells[0].run_id == first.run_id
    assert len({c.run_id for c in spec.cells}) == 4
    assert spec.wandb.project == "p" and spec.wandb.tags == ("a", "b")
    index = spec.index()
    assert index["name"] == "demo" and index["spec_sha256"] == spec.sha256
    assert index["axes"] == ["estimator", "seed"]
    assert index["cells"][2] == {
        "run_id": spec.cells[2].run_id,
        "factors": {"estimator": "sigmoid(beta=4)", "seed": 0},
    }


def test_any_config_field_can_be_an_axis(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: ax\ngrid:\n  pre_threshold_relu: [true, false]\n  code_channels: [16, 32]\n"
        "  lr: [0.001, 1.0e-4]\n",
    )
    spec = load_spec(path)
    assert len(spec.cells) == 8
    assert {c.config.pre_threshold_relu for c in spec.cells} == {True, False}
    assert {c.config.code_channels for c in spec.cells} == {16, 32}
    assert spec.cells[-1].factors == {"pre_threshold_relu": False, "code_channels": 32, "lr": 1e-4}


def test_canonically_equal_values_are_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path, "name: d\ngrid:\n  estimator: [sigmoid, 'sigmoid(beta=1)']\n")
    (error,) = errors_of(path)
    assert "grid.estimator" in error and "same value" in error and "'sigmoid'" in error


def test_include_and_exclude(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: ie\n"
        "grid:\n  estimator: [identity, hardtanh]\n  seed: [0, 1, 2]\n"
        "exclude:\n  - {estimator: hardtanh, seed: [1, 2]}\n"
        "include:\n  - {estimator: 'tanh(beta=2)', seed: [7, 8], lr: 0.01}\n",
    )
    spec = load_spec(path)
    pairs = [(c.config.estimator, c.config.seed) for c in spec.cells]
    assert pairs == [
        ("identity", 0),
        ("identity", 1),
        ("identity", 2),
        ("hardtanh", 0),
        ("tanh(beta=2)", 7),
        ("tanh(beta=2)", 8),
    ]
    assert spec.axes == ["estimator", "seed", "lr"]  # keys used by include become axes
    assert spec.cells[0].factors["lr"] == 1e-3 and spec.cells[-1].factors["lr"] == 0.01


def test_include_duplicating_a_grid_cell_and_a_useless_exclude_are_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: ie\ngrid:\n  estimator: [identity]\n  seed: [0, 1]\n"
        "exclude: [{seed: 5}]\ninclude: [{estimator: identity, seed: 1}]\n",
    )
    errors = errors_of(path)
    assert any("exclude[0] matches no grid cell" in e for e in errors)
    assert any(e.startswith("include[0]") and "duplicates grid cell" in e for e in errors)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: bad name\n"
        "descripton: typo\n"
        "base: {datset: mnist, epochs: 0}\n"
        "grid:\n"
        "  estimator: [identity, sigmod, 'sigmoid(beta=-1)', 'tanh(bta=2)']\n"
        "  seed: [0, x]\n"
        "  lrr: [0.1]\n"
        "  batch_size: 64\n"
        "wandb: {projet: p}\n",
    )
    errors = errors_of(path)
    text = "\n".join(errors)
    expected = [
        "unknown spec key 'descripton' (did you mean 'description'?)",
        "name must be",
        "unknown config key 'datset' (did you mean 'dataset'?)",
        "epochs must be in [1, 10000]",
        "grid.estimator[1]",
        "sigmoid",  # the close match of 'sigmod'
        "grid.estimator[2]",
        "grid.estimator[3]",
        "grid.seed[1]: seed must be an integer",
        "unknown grid axis 'lrr' (did you mean 'lr'?)",
        "grid.batch_size must be a non-empty list",
        "unknown key 'projet' (did you mean 'project'?)",
    ]
    for piece in expected:
        assert piece in text, piece
    assert len(errors) >= 11
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert f"{len(errors)} problems" in str(info.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: e\ngrid: {}\n", "grid is empty"),
        ("name: e\n", "grid: required"),
        ("name: e\ngrid: {seed: []}\n", "non-empty list"),
        ("name: e\ngrid: {seed: [0]}\nexclude: [{seed: 0}]\n", "no cells"),
        ("name: e\nbase: {seed: 1}\ngrid: {seed: [0]}\n", "also set in base"),
        ("name: e\ngrid: {seed: [0]}\ngrid: {seed: [1]}\n", "duplicate key 'grid'"),
        ("- just\n- a list\n", "a spec must be a mapping"),
        ("name: e\ngrid: {seed: [0\n", "not valid YAML"),
        ("grid: {seed: [0]}\n", "name: required"),
        ("name: e\ngrid: {seed: [0]}\nwandb: {tags: x}\n", "wandb.tags"),
    ],
)
def test_malformed_specs(tmp_path: Path, text: str, needle: str) -> None:
    assert any(needle in e for e in errors_of(write(tmp_path, text)))


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read spec"):
        load_spec(tmp_path / "nope.yaml")


def test_shipped_specs_are_valid_and_use_registered_estimators() -> None:
    registered = set(list_estimators())
    specs = {path.stem: load_spec(path) for path in sorted(ABLATIONS.glob("*.yaml"))}
    assert {"quickstart", "estimators", "sigmoid_slope", "bottleneck"} <= set(specs)
    for stem, spec in specs.items():
        assert spec.name == stem and spec.description
        for cell in spec.cells:
            assert cell.config.estimator.split("(")[0] in registered

    quick = specs["quickstart"]
    assert {c.config.dataset for c in quick.cells} == {"mnist-mini"}
    assert set(REQUIRED) <= {c.config.estimator for c in quick.cells}

    head = specs["estimators"]
    assert {c.config.dataset for c in head.cells} == {"mnist"}
    assert {c.config.epochs for c in head.cells} == {5}
    assert {c.config.train_subset for c in head.cells} == {None}
    estimators = {c.config.estimator for c in head.cells}
    assert len(estimators) >= 8 and set(REQUIRED) <= estimators
    assert len({c.config.seed for c in head.cells}) >= 10

    slope = specs["sigmoid_slope"]
    betas = {c.config.estimator for c in slope.cells if c.config.estimator.startswith("sigmoid")}
    assert len(betas) >= 5
    assert any(c.config.estimator.startswith("slope_annealed") for c in slope.cells)

    bottleneck = specs["bottleneck"]
    assert "pre_threshold_relu" in bottleneck.axes
    assert {c.config.pre_threshold_relu for c in bottleneck.cells} == {True, False}


@pytest.mark.parametrize("name", ["quickstart", "estimators_cpu"])
def test_shipped_studies_have_the_seeds_their_comparisons_need(name: str) -> None:
    """Holm over every pair of estimators: enough paired seeds that a Wilcoxon p can reach 0.05
    (the seed planner then has no warning)."""
    spec = load_spec(ABLATIONS / f"{name}.yaml")
    pairs = math.comb(len({c.config.estimator for c in spec.cells}), 2)
    seeds = len({c.config.seed for c in spec.cells})
    assert seeds >= planning.min_seeds_for_significance(0.05, pairs)
    assert planning.significance_warnings(seeds, comparisons=pairs) == []


def test_the_quick_start_keeps_no_weights_and_its_ids_do_not_depend_on_it() -> None:
    cells = load_spec(ABLATIONS / "quickstart.yaml").cells
    assert {c.config.keep_checkpoint for c in cells} == {"none"}
    assert [c.config.replace(keep_checkpoint="final").run_id for c in cells] == [
        c.run_id for c in cells
    ]
    assert cells[0].run_id == "identity-s0-ac2f8c2f1e"  # the id the quick start always had
