"""Portable mode's kernels, op by op: this CPU computes what the recording CPU computed.

`tests/golden/kernel_cases.py` hashes the result of every op a portable run executes (each
layer's forward and gradients in training, evaluation at its batch sizes, fused Adam, the
probe's float64 algebra, the random streams) in fresh processes with 1 and 2 threads; the hashes
are compared with `tests/golden/kernels.json`. Where portability breaks, the failure names the
first op that differs (the kernel at fault; later ops may inherit its difference) and both CPUs,
instead of only a loss that drifts after a few hundred steps.
"""

from __future__ import annotations

import json

import pytest
from golden import kernel_cases as cases

from runners.determinism import cpu_flags

GOLDEN = json.loads(cases.GOLDEN.read_text())


@pytest.mark.parametrize("threads", cases.THREADS, ids=lambda t: f"{t}t")
def test_every_kernel_a_portable_run_uses_matches_the_recording(threads):
    if "avx2" not in cpu_flags():
        pytest.skip("portable mode needs a CPU with AVX2")
    got = cases.in_fresh_process(threads)
    want = GOLDEN["threads"][str(threads)]
    differ = cases.differences(want, got["ops"])
    here, there = got["machine"], GOLDEN["machine"]
    assert not differ, (
        f"{len(differ)} of {len(want)} ops differ with {threads} thread(s); first: {differ[0]} "
        f"(then {', '.join(differ[1:6])}{', ...' if len(differ) > 6 else ''}). "
        f"Here: {here['cpu_vendor']} {here['cpu_model']}, MKL {here['mkl_branch']}, "
        f"oneDNN {here['onednn_isa']}, torch {here['torch']}; "
        f"recorded: {there['cpu_vendor']} {there['cpu_model']}, MKL {there['mkl_branch']}, "
        f"oneDNN {there['onednn_isa']}, torch {there['torch']}"
    )


def test_the_comparison_names_the_first_differing_op():
    want = {"train/a.fwd": "1", "train/b.fwd": "2", "adam/w": "3"}
    got = {"train/a.fwd": "1", "train/b.fwd": "x", "adam/w": "y", "extra": "z"}
    assert cases.differences(want, got) == ["train/b.fwd", "adam/w", "extra"]
    assert cases.differences(want, dict(want)) == []


def test_the_recording_covers_every_layer_in_training_and_evaluation():
    ops = GOLDEN["threads"]["1"]
    layers = {name.split(" ")[0] for name in ops if name.startswith("train/") and ".fwd" in name}
    assert {"train/encoder.0", "train/binarize", "train/decoder.9"} <= layers
    for prefix in ("adam/", "eval64/", "eval1000/", "probe/", "random/", "vae/disarm/"):
        assert any(name.startswith(prefix) for name in ops), prefix
    assert GOLDEN["threads"]["1"].keys() == GOLDEN["threads"]["2"].keys()
