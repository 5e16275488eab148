"""Golden values in portable mode: exact results that every x86-64 CPU with AVX2 must reproduce.

`python tests/golden/portable_cases.py record` trains every case (through the CLI, in fresh
processes, the default portable determinism) and writes `portable.json`;
`tests/test_portable_golden.py` re-trains them and compares every metric, step loss and summary
value bit for bit, on any machine. A failure on a new CPU means portable mode does not hold
there: the test prints the CPU and the first value that differs.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/, when this file runs as a script
from golden.engine_cases import train_cases  # noqa: E402

GOLDEN = HERE / "portable.json"
TINY = [
    "--dataset", "mnist-mini", "--train-subset", "192", "--test-subset", "64",
    "--epochs", "2", "--device", "cpu", "--diagnostics", "off", "--determinism", "portable",
]  # fmt: skip
SINGLE = {
    "hardtanh_1t": ["--estimator", "hardtanh", "--seed", "0", "--num-threads", "1"],
    "hardtanh_2t": ["--estimator", "hardtanh", "--seed", "0", "--num-threads", "2"],
    "bernoulli_stochastic": ["--estimator", "bernoulli", "--seed", "1", "--num-threads", "1"],
    "ede_annealed": ["--estimator", "ede", "--seed", "2", "--num-threads", "1"],
    "vae_disarm": [
        "--task",
        "bernoulli_vae",
        "--vae-arch",
        "nonlinear",
        "--estimator",
        "disarm",
        "--seed",
        "3",
        "--num-threads",
        "1",
    ],
}
SPEC = """\
name: golden-portable-stack
base: {dataset: mnist-mini, train_subset: 192, test_subset: 64, epochs: 2, device: cpu,
       num_threads: 1, diagnostics: "off", determinism: portable}
grid:
  estimator: [identity, "sigmoid(beta=4)"]
  seed: [0]
"""
CASES = [*SINGLE, "stack_looped"]


def train_case(name: str, work: Path) -> dict[str, dict]:
    """Train one case into a fresh store under `work`; its runs' results by run id."""
    return train_cases(name, work, TINY, SINGLE, SPEC, ["--stack", "2", "--stack-mode", "looped"])


def main() -> None:
    if sys.argv[1:] != ["record"]:
        sys.exit("usage: python tests/golden/portable_cases.py record")
    with tempfile.TemporaryDirectory() as tmp:
        cases = {name: train_case(name, Path(tmp)) for name in CASES}
    GOLDEN.write_text(json.dumps({"cases": cases}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
