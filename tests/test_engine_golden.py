"""The training engine's results, recorded before the code was rebuilt, must not change.

Every case (single runs with 1 and 2 threads, a stochastic and an annealed estimator, looped and
grouped stacks) is trained through the CLI in a fresh process and compared, bit for bit, with
`tests/golden/engine.json` (metrics, per-step losses, summary values). The values hold for the
CPU they were recorded on; elsewhere the test skips and says so.
"""

from __future__ import annotations

import json

import pytest
from golden import engine_cases as cases

GOLDEN = json.loads(cases.GOLDEN.read_text())
FAST: set[str] = set()  # all of them in make test-slow (~100 s); portable golden values run here


def _param(name: str):
    marks = [] if name in FAST else [pytest.mark.slow]
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", [_param(n) for n in cases.CASES])
def test_engine_results_are_unchanged(name, tmp_path):
    recorded = GOLDEN["fingerprint"]
    here = cases.fingerprint()
    if here != recorded:
        pytest.skip(f"golden values are for {recorded}, this machine is {here}")
    got = cases.train_case(name, tmp_path)
    want = GOLDEN["cases"][name]
    assert sorted(got) == sorted(want)
    for run_id, result in want.items():
        # Keys added since the recording (new summary fields, diagnostics) are not compared.
        summary = got[run_id]["summary"]
        assert {k: summary.get(k) for k in result["summary"]} == result["summary"], run_id
        assert len(got[run_id]["metrics"]) == len(result["metrics"]), run_id
        pairs = zip(got[run_id]["metrics"], result["metrics"], strict=True)
        metrics = [{k: r.get(k) for k in w} for r, w in pairs]
        assert metrics == result["metrics"], run_id
        assert got[run_id]["steps"] == result["steps"], run_id
