"""Engine equality cases: tiny CLI runs whose results must not change when the code is rebuilt.

`python tests/golden/engine_cases.py record` trains every case (through the CLI, in fresh
processes) and writes `engine.json` with this machine's fingerprint; `tests/test_engine_golden.py`
re-trains them and compares every metric, step loss and summary value bit for bit. CPU results
depend on the CPU's kernels, so the values are checked only on a machine with the recorded
fingerprint (the portable-mode golden values cover every x86-64 CPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from runners.determinism import PORTABLE_ENV, cpu_model
from runners.store.records import DIAGNOSTICS_PREFIX, TIMING_KEYS

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "engine.json"
# Gradient diagnostics (runners.training.diagnostics, keys `diag_*`) never change training
# (tests/test_diagnostics_training.py): the cases train without them, and recorded values from
# runs with them would be compared without their keys (DIAGNOSTICS_PREFIX).

# Recorded with the libraries' own kernel choice ("machine"): these values hold on one CPU kind.
TINY = [
    "--dataset", "mnist-mini", "--train-subset", "256", "--test-subset", "128",
    "--epochs", "2", "--device", "cpu", "--diagnostics", "off", "--determinism", "machine",
]  # fmt: skip

# name -> (command, extra CLI args); "train" cases are one run, "run" cases a spec.
SINGLE = {
    "hardtanh_1t": ["--estimator", "hardtanh", "--seed", "0", "--num-threads", "1"],
    "identity_2t": ["--estimator", "identity", "--seed", "1", "--num-threads", "2"],
    "bernoulli_stochastic": ["--estimator", "bernoulli", "--seed", "2", "--num-threads", "1"],
    "ede_annealed": ["--estimator", "ede", "--seed", "3", "--num-threads", "1"],
    "gumbel_stochastic": ["--estimator", "gumbel", "--seed", "0", "--num-threads", "1"],
}
SPEC = """\
name: golden-stack
base: {dataset: mnist-mini, train_subset: 256, test_subset: 128, epochs: 2, device: cpu,
       num_threads: 1, diagnostics: "off", determinism: machine}
grid:
  estimator: [identity, "sigmoid(beta=4)", bernoulli, ede]
  seed: [0, 1]
"""
STACKS = {
    "stack_looped": ["--stack", "4", "--stack-mode", "looped"],
    "stack_grouped": ["--stack", "4", "--stack-mode", "grouped"],
}


def fingerprint() -> dict[str, str]:
    """What decides machine-mode CPU rounding here: the CPU model, torch's own kernel choice
    (asked in a fresh process without the portable pins) and torch's version."""
    code = "import torch; print(torch.backends.cpu.get_cpu_capability(), torch.__version__)"
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    capability, version = done.stdout.split()
    return {"cpu": cpu_model(), "capability": capability, "torch": version}


def run_cli(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "runners.cli", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")


def read_results(store: Path) -> dict[str, dict]:
    out = {}
    for folder in sorted((store / "runs").iterdir()):
        metrics = [
            {
                k: v
                for k, v in json.loads(line).items()
                if k not in TIMING_KEYS and not k.startswith(DIAGNOSTICS_PREFIX)
            }
            for line in (folder / "metrics.jsonl").read_text().splitlines()
        ]
        summary = json.loads((folder / "summary.json").read_text())
        summary = {k: v for k, v in summary.items() if k not in TIMING_KEYS and k != "files"}
        out[folder.name] = {
            "metrics": metrics,
            "steps": (folder / "steps.jsonl").read_text(),
            "summary": summary,
        }
    return out


def train_cases(
    name: str,
    work: Path,
    tiny: list[str],
    single: dict[str, list[str]],
    spec: str,
    stack: list[str],
) -> dict[str, dict]:
    """Train case `name` into a fresh store under `work`: `single[name]` through `train` with
    the `tiny` flags, else `spec` through `run` with `stack` flags; its runs' results by run id."""
    store = work / name
    repo = HERE.parents[1]
    if name in single:
        run_cli(["train", *tiny, *single[name], "--store", str(store), "--quiet"], repo)
    else:
        path = work / "golden-spec.yaml"
        path.write_text(spec)
        run_cli(["run", str(path), "--store", str(store), "--wandb", "disabled", *stack], repo)
    return read_results(store)


def train_case(name: str, work: Path) -> dict[str, dict]:
    """Train one case into a fresh store under `work`; its runs' results by run id."""
    return train_cases(name, work, TINY, SINGLE, SPEC, STACKS.get(name, []))


CASES = [*SINGLE, *STACKS]


def main() -> None:
    import tempfile

    if sys.argv[1:] != ["record"]:
        sys.exit("usage: python tests/golden/engine_cases.py record")
    with tempfile.TemporaryDirectory() as tmp:
        cases = {name: train_case(name, Path(tmp)) for name in CASES}
    GOLDEN.write_text(json.dumps({"fingerprint": fingerprint(), "cases": cases}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
