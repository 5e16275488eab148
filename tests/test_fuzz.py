"""Fuzz tests (hypothesis): specs, estimator spec strings and run configs. Any input ends in a
result or in one `ste-ablate: error:` message with exit 2, within a time bound: never a
traceback, never a file written. The default suite runs a few hundred examples; the `slow` ones
run thousands."""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as s

from runners.cli import main
from runners.config import ConfigError, RunConfig
from runners.store.format import config_problem, identity_of, run_id_for
from ste_variants import EstimatorSpecError, canonical_spec, list_estimators

FAST = settings(
    max_examples=150,
    deadline=timedelta(seconds=5),  # generous on a shared CPU; a hang or a blow-up fails it
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SLOW = settings(FAST, max_examples=1500)

FIELDS = RunConfig.field_names()
scalars = (
    s.none()
    | s.booleans()
    | s.integers(min_value=-(2**70), max_value=2**70)
    | s.floats(allow_nan=True, allow_infinity=True)
    | s.text(max_size=30)
    | s.sampled_from(["mnist-mini", "mnist", "cpu", "auto", "fp32", "bf16", "knn", "linear"])
    | s.sampled_from(list_estimators())
)
values = s.recursive(
    scalars, lambda inner: s.lists(inner, max_size=4) | s.dictionaries(s.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)  # fmt: skip
config_dicts = s.dictionaries(s.sampled_from(FIELDS) | s.text(max_size=12), values, max_size=6)
estimator_strings = s.text(max_size=60) | s.builds(
    lambda name, args: f"{name}({', '.join(args)})",
    s.sampled_from(list_estimators()) | s.text(max_size=10),
    s.lists(
        s.builds(
            lambda k, v: f"{k}={v}",
            s.text(alphabet="abcdefghijklmnopqrstuvwxyz_", max_size=8),
            s.integers(-(10**30), 10**30).map(str) | s.floats().map(repr) | s.text(max_size=6),
        ),
        max_size=3,
    ),
)
specs = s.fixed_dictionaries(
    {},
    optional={
        "name": s.text(max_size=20) | s.sampled_from(["g", "grid-1", "a.b_c"]),
        "description": values,
        "base": config_dicts | values,
        "grid": s.dictionaries(
            s.sampled_from(FIELDS) | s.text(max_size=8),
            s.lists(values, min_size=0, max_size=4) | values,
            max_size=3,
        )
        | values,
        "include": s.lists(config_dicts, max_size=2) | values,
        "exclude": s.lists(config_dicts, max_size=2) | values,
        "wandb": s.dictionaries(s.sampled_from(["project", "entity", "tags", "x"]), values)
        | values,
        "extra": values,
    },
)


def cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def check_spec_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        store = Path(folder) / "store"
        for command in (["run", str(path), "--dry-run"], ["status", str(path)]):
            code, out, err = cli([*command, "--store", str(store)])
            assert code in (0, 2), (code, err)
            if code == 2:
                assert err.startswith("ste-ablate: error:") and "Traceback" not in err
                assert len(err) < 20_000
            assert not store.exists()  # nothing written, whatever the outcome
        assert sorted(p.name for p in Path(folder).iterdir()) == ["fuzz.yaml"]


def _dump(spec: dict[str, Any]) -> str:
    return yaml.safe_dump(spec, allow_unicode=True)


@pytest.mark.slow
@FAST
@given(specs)
def test_any_spec_ends_in_a_result_or_one_error(spec):
    check_spec_text(_dump(spec))


@FAST
@given(s.text(max_size=300))
def test_any_text_as_a_spec_ends_in_a_result_or_one_error(text):
    check_spec_text(text)


def check_estimator(spec: str) -> None:
    try:
        canonical = canonical_spec(spec)
    except EstimatorSpecError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 400
        return
    assert canonical_spec(canonical) == canonical  # canonical specs are fixed points


@FAST
@given(estimator_strings)
def test_any_estimator_spec_string_resolves_or_raises_one_line(spec):
    check_estimator(spec)


def check_config(data: dict[str, Any]) -> None:
    try:
        config = RunConfig.from_dict(data)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 4000
        return
    assert len(config.run_id) < 200  # a file name
    assert run_id_for(identity_of(config.to_dict())) == config.run_id
    document = {"run_id": config.run_id, "config": config.to_dict()}
    assert config_problem(document, config.run_id) is None
    for name in ("seed", "epochs", "batch_size", "code_channels"):
        assert math.isfinite(getattr(config, name))


@FAST
@given(config_dicts)
def test_any_run_config_is_valid_or_one_line_error(data):
    check_config(data)


@pytest.mark.slow
@SLOW
@given(specs)
def test_many_specs(spec):
    check_spec_text(_dump(spec))


@pytest.mark.slow
@SLOW
@given(estimator_strings)
def test_many_estimator_specs(spec):
    check_estimator(spec)


@pytest.mark.slow
@SLOW
@given(config_dicts)
def test_many_run_configs(data):
    check_config(data)
