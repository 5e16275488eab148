"""How many cells a stack holds: the one decision (`runners.speed.stack_size.decide_stack`)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from runners.speed.stack_size import GPU_MAX_STACK, StackSize, decide_stack
from runners.training.device import device_kind


def test_requested_wins_over_the_spec_and_the_device():
    assert decide_stack(4, 8, "cuda", 100, workers=2) == StackSize(4, "--stack")
    assert decide_stack(1, 8, "cuda", 100) == (1, "--stack")  # --stack 1 turns stacking off
    assert decide_stack(64, None, "cpu", 3) == (64, "--stack")  # taken as given, even on the CPU


def test_the_spec_wins_over_the_device():
    assert decide_stack(None, 3, "cuda", 100) == (3, "spec")
    assert decide_stack(None, 3, "cpu", 100) == (3, "spec")
    assert decide_stack(None, 3, None, 100) == (3, "spec")


def test_automatic_is_one_off_cuda():
    for kind in ("cpu", "mps", None):  # None: a device not usable here
        assert decide_stack(None, None, kind, 80, workers=1) == (1, "automatic")


@pytest.mark.parametrize(
    ("cells", "workers", "size"),
    [
        (1, 1, 1),
        (10, 1, 10),
        (GPU_MAX_STACK, 1, GPU_MAX_STACK),
        (GPU_MAX_STACK + 1, 1, GPU_MAX_STACK),  # capped
        (100, 4, 25),  # the cells each worker gets
        (9, 2, 5),  # rounded up
        (3, 8, 1),  # more workers than cells
        (0, 1, 1),  # at least 1
    ],
)
def test_automatic_on_cuda_is_the_cells_per_worker_capped(cells, workers, size):
    assert decide_stack(None, None, "cuda", cells, workers) == (size, "automatic")


def test_device_kind_is_the_resolved_type_or_none():
    assert device_kind("cpu") == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device_kind("auto") == expected
    assert device_kind("cuda:4096") is None  # no such device here, on any machine


def test_the_decision_loads_no_torch():
    code = (
        "import sys; import runners.speed.stack_size, runners.executors.slurm.options; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
