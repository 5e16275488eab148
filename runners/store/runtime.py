"""What decides a run's CPU rounding, read back from its config.json (plain Python, no torch).

config.json's "runtime" (written by `runners.store.provenance`) records the CPU, the kernel
settings in force and the versions; snapshots keep the rounding-relevant part of it per run, so
`ste-ablate reproduce` can say whether a difference is expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runners.store.format import read_config

# What a snapshot keeps of each run's runtime record (config.json's "runtime"): the facts that
# decide CPU rounding, so `reproduce` can say whether a difference is expected.
RUNTIME_KEYS = (
    "cpu_vendor", "cpu_model", "cpu_capability", "onednn_isa", "onednn_max_cpu_isa", "mkl_branch",
    "mkl_cbwr", "mkl_version", "torch", "torch_threads", "device", "determinism",
)  # fmt: skip


def runtime_record(folder: Path) -> dict[str, Any] | None:
    """The rounding-relevant part of a run's runtime record (`RUNTIME_KEYS`), or None."""
    document = read_config(folder)
    runtime = document.get("runtime") if document else None
    if not isinstance(runtime, dict):
        return None
    return {key: runtime[key] for key in RUNTIME_KEYS if key in runtime}
