"""docs/estimators.md and the README's estimator table are generated from the registry: the
committed files must equal what scripts/gen_estimator_docs.py writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ste_variants import describe, list_estimators
from ste_variants.catalog import markdown_table, replace_between

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location(
        "gen_estimator_docs", ROOT / "scripts" / "gen_estimator_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("relative", ["README.md", "docs/estimators.md"])
def test_committed_docs_are_the_generated_ones(relative):
    path = ROOT / relative
    want = _generator().generated(ROOT)[path]
    assert path.read_text(encoding="utf-8") == want, (
        f"{relative} is out of date: run python scripts/gen_estimator_docs.py"
    )


def test_docs_table_lists_every_estimator_in_order():
    for relative in ("README.md", "docs/estimators.md"):
        text = (ROOT / relative).read_text(encoding="utf-8")
        text = text.split("<!-- estimators:start -->")[1].split("<!-- estimators:end -->")[0]
        rows = [line for line in text.splitlines() if line.startswith("| `")]
        assert [row.split("`")[1] for row in rows] == list_estimators(), relative


def test_table_shows_area_and_peak_side_by_side():
    table = markdown_table([describe(n) for n in ("saturated", "superspike", "ede", "reinmax")])
    lines = table.splitlines()
    assert lines[0] == "| name | backward dL/dx | defaults | area | peak | paper |"
    cells = {line.split("`")[1]: [c.strip() for c in line.split(" | ")] for line in lines[2:]}
    assert cells["saturated"][3:5] == ["2", "1"]
    assert cells["superspike"][3:5] == ["0.2", "1"]
    assert cells["ede"][3:5] == ["10 → 1", "0.5 → 5"]
    assert cells["reinmax"][3:5] == ["0.693", "0.25"]


def test_replace_between_keeps_the_rest():
    text = "a\n<!-- t:start -->\nold\n<!-- t:end -->\nb\n"
    assert replace_between(text, "t", "new\n") == "a\n<!-- t:start -->\nnew\n<!-- t:end -->\nb\n"
    with pytest.raises(ValueError, match="markers"):
        replace_between("no markers", "t", "x")
