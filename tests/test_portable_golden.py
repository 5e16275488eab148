"""Portable determinism: tiny runs reproduce committed exact values on any x86-64 CPU with AVX2.

Single runs with 1 and 2 threads, a stochastic and an annealed estimator and a looped stack are
trained through the CLI (portable mode: ATen, oneDNN and MKL pinned to AVX2) and compared bit
for bit with `tests/golden/portable.json`, recorded on another machine: on a new kind of CPU,
this test tells whether portable mode holds there.
"""

from __future__ import annotations

import json

import pytest
from golden import portable_cases as cases

from runners.determinism import cpu_flags, cpu_model

GOLDEN = json.loads(cases.GOLDEN.read_text())
FAST = {"hardtanh_1t"}


def _param(name: str):
    marks = [] if name in FAST else [pytest.mark.slow]
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", [_param(n) for n in cases.CASES])
def test_portable_results_match_on_this_cpu(name, tmp_path):
    if "avx2" not in cpu_flags():
        pytest.skip("portable mode needs a CPU with AVX2")
    got = cases.train_case(name, tmp_path)
    want = GOLDEN["cases"][name]
    where = f"on {cpu_model()} ({', '.join(cpu_flags())})"
    assert sorted(got) == sorted(want), where
    for run_id, result in want.items():
        summary = got[run_id]["summary"]
        assert {k: summary.get(k) for k in result["summary"]} == result["summary"], where
        assert len(got[run_id]["metrics"]) == len(result["metrics"]), where
        for n, (record, recorded) in enumerate(
            zip(got[run_id]["metrics"], result["metrics"], strict=True)
        ):
            assert {k: record.get(k) for k in recorded} == recorded, f"epoch {n + 1} {where}"
        assert got[run_id]["steps"] == result["steps"], where
