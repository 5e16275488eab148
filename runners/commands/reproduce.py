"""`ste-ablate reproduce SNAPSHOT`: re-train cells of a result snapshot and check them bit for bit.

Each chosen cell is re-trained from the config the snapshot recorded (into a temporary store,
in this process), and every metric of every epoch is compared with the snapshot's value: equal
bits, or the largest difference and the first metric that differs. Timing is not compared.
Exit codes: 0 every cell reproduced bit for bit, 1 some cell differs or failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from typing import Any

from analysis.sources.snapshot import read_meta, read_snapshot
from analysis.sources.tidy import StoreError
from runners.config import RunConfig
from runners.determinism import MODES
from runners.engine.train import train_run
from runners.errors import UserError
from runners.store.format import METRICS, read_jsonl, run_dir
from runners.store.records import TIMING_KEYS
from runners.store.runtime import runtime_record

_EPILOG = """\
examples:
  ste-ablate reproduce paper/snapshots/estimators.csv --cells 2      the first two cells
  ste-ablate reproduce paper/snapshots/estimators.csv --run-id identity-s0-1a2b3c4d5e

A snapshot made in portable mode (the default determinism) reproduces on the CPUs where
portable mode was verified (Intel and AMD with AVX2: README, Reproducibility), given the same
torch version and thread count (both recorded); a machine-mode snapshot only on the kind of CPU
that made it. When a cell differs, the recorded and the current CPU, ATen capability, MKL branch
in force, oneDNN ISA, threads and versions are printed beside it, with what the difference
means; `pytest tests/test_kernel_fingerprint.py` then names the op whose kernel differs.
Full MNIST cells read --data-root or $STE_DATA_ROOT.
"""


def register(subparsers: Any) -> None:
    """Add the ``reproduce`` command."""
    parser = subparsers.add_parser(
        "reproduce",
        help="re-train cells of a snapshot and check every metric bit for bit",
        description="Re-train cells of a result snapshot from their recorded configs and report, "
        "per cell, whether every metric matches bit for bit (and by how much it differs if not).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("snapshot", metavar="SNAPSHOT", help="a snapshot table (.csv or .parquet)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--cells", type=int, default=1, metavar="N", help="the first N (default 1)")
    which.add_argument("--run-id", metavar="ID", help="one cell, by run id")
    parser.add_argument("--data-root", metavar="DIR", help="folder holding MNIST/raw/")
    parser.add_argument(
        "--determinism",
        choices=MODES,
        help="the CPU kernels to pin; must be the snapshot's (default: portable)",
    )
    parser.add_argument("--json", action="store_true", help="print the per-cell report as JSON")
    parser.add_argument(
        "--unverified",
        action="store_true",
        help="read a snapshot that has no metadata, or whose files differ from it, as it is",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Re-train the chosen cells; print one line per cell; 0 when all are bit-identical."""
    try:
        table = read_snapshot(args.snapshot, verify=not args.unverified).table
        recorded_runtimes = read_meta(args.snapshot).get("runtime") or {}
    except StoreError as exc:
        raise UserError(str(exc)) from None
    chosen = _choose(table, args.cells, args.run_id)
    reports = []
    with tempfile.TemporaryDirectory(prefix="ste-reproduce-") as store:
        for run_id in chosen:
            rows = table[table["run_id"] == run_id]
            config = _config(rows, args.data_root)
            if config.run_id != run_id:
                raise UserError(f"the snapshot's config of {run_id} gives run id {config.run_id}")
            summary = train_run(config, store, progress=False)
            if summary["status"] != "completed":
                reports.append({"run_id": run_id, "status": summary["status"], "same": False})
            else:
                records = read_jsonl(run_dir(store, run_id) / METRICS)
                reports.append({"run_id": run_id, **compare(rows, records)})
            if not reports[-1]["same"]:
                recorded = recorded_runtimes.get(run_id)
                current = runtime_record(run_dir(store, run_id))
                reports[-1]["recorded_runtime"], reports[-1]["runtime"] = recorded, current
                reports[-1]["explanation"] = explain(recorded, current)
            print(_line(reports[-1]), flush=True)
    if args.json:
        print(json.dumps(reports, indent=2))
    same = sum(r["same"] for r in reports)
    print(f"{same}/{len(reports)} cells reproduced bit for bit")
    return 0 if same == len(reports) else 1


def _choose(table: Any, cells: int, run_id: str | None) -> list[str]:
    completed = [r for r in dict.fromkeys(table["run_id"]) if _status(table, r) == "completed"]
    if run_id is not None:
        if run_id not in completed:
            raise UserError(f"no completed cell {run_id!r} in the snapshot")
        return [run_id]
    if cells < 1:
        raise UserError("--cells must be >= 1")
    if not completed:
        raise UserError("the snapshot has no completed cell")
    return completed[:cells]


def _status(table: Any, run_id: str) -> str:
    return str(table.loc[table["run_id"] == run_id, "status"].iloc[0])


def _config(rows: Any, data_root: str | None) -> RunConfig:
    """The cell's RunConfig from the snapshot's config columns."""
    first = rows.iloc[0]
    values = {}
    for name in RunConfig.field_names():
        if name in rows.columns:
            value = first[name]
            values[name] = None if _missing(value) else _plain(value)
    values["data_root"] = data_root  # where MNIST is on this machine, not where it was
    values.setdefault("determinism", "machine")  # snapshots from before the field existed
    return RunConfig.from_dict(values)


def compare(rows: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Every (epoch, metric) of the snapshot against the re-trained run's epoch records."""
    by_epoch = {int(r["epoch"]): r for r in records}
    worst, first, compared = 0.0, None, 0
    for row in rows.itertuples(index=False):
        if _missing(row.epoch) or _missing(row.metric) or row.metric in TIMING_KEYS:
            continue
        record = by_epoch.get(int(row.epoch), {})
        got, want = record.get(row.metric), row.value
        compared += 1
        if _same(got, want):
            continue
        diff = abs(float(got) - float(want)) if _number(got) and _number(want) else math.inf
        worst = max(worst, diff)
        first = first or f"epoch {int(row.epoch)} {row.metric}: {want!r} -> {got!r}"
    if compared == 0:  # nothing but timing values: nothing was shown to reproduce
        first = "the snapshot holds no value of this cell but timings"
    return {"status": "completed", "same": first is None, "compared": compared,
            "max_abs_diff": worst, "first_difference": first}  # fmt: skip


def _same(got: Any, want: Any) -> bool:
    if _number(got) and _number(want):
        a, b = float(got), float(want)
        return a == b or (math.isnan(a) and math.isnan(b))
    return (None if _missing(got) else got) == (None if _missing(want) else want)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) or hasattr(value, "dtype")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """numpy scalars as Python values (RunConfig checks types); "True"/"False" (a table read
    without its metadata's dtypes) as bools."""
    if isinstance(value, str) and value in ("True", "False"):
        return value == "True"
    return value.item() if hasattr(value, "item") else value


# What decides CPU rounding, in the order a reader checks them (labels for `explain`).
_RUNTIME_FIELDS = (
    ("cpu_vendor", "CPU vendor"), ("cpu_model", "CPU model"), ("cpu_capability", "ATen capability"),
    ("mkl_branch", "MKL branch in force"), ("onednn_isa", "oneDNN ISA"),
    ("torch_threads", "threads"), ("torch", "torch"), ("mkl_version", "MKL"),
    ("determinism", "determinism"), ("device", "device"),
)  # fmt: skip
_KERNEL_KEYS = ("cpu_capability", "mkl_branch", "onednn_isa", "torch_threads", "torch",
                "mkl_version", "determinism", "device")  # fmt: skip


def explain(recorded: dict[str, Any] | None, current: dict[str, Any] | None) -> list[str]:
    """Lines that put a difference in context: the recorded and the current runtime side by side
    (CPU, ATen capability, MKL branch, oneDNN ISA, threads, versions) and what they imply."""
    if not current:
        return ["the re-trained run recorded no runtime"]
    if not recorded:
        here = ", ".join(f"{label} {current.get(key)}" for key, label in _RUNTIME_FIELDS)
        return [
            "the snapshot does not record where its cells were trained (made before runtimes "
            "were kept); here: " + here
        ]
    lines = []
    for key, label in _RUNTIME_FIELDS:
        then, now = recorded.get(key), current.get(key)
        mark = "  " if then == now else "≠ "
        lines.append(f"{mark}{label:<20} recorded {then!s:<34} here {now}")
    changed = [key for key in _KERNEL_KEYS if recorded.get(key) != current.get(key)]
    if changed:
        names = ", ".join(label for key, label in _RUNTIME_FIELDS if key in changed)
        lines.append(f"expected: the kernels or their settings differ ({names})")
    elif recorded.get("determinism") != "portable":
        lines.append("expected unless the CPU is of the same kind: machine-mode kernels are "
                     "chosen by the CPU")  # fmt: skip
    else:
        lines.append(
            "not expected: same portable kernels on "
            + ("another CPU" if recorded.get("cpu_model") != current.get("cpu_model") else
               "the same kind of CPU")
            + "; run `pytest tests/test_kernel_fingerprint.py` to name the op that differs"
        )  # fmt: skip
    return lines


def _line(report: dict[str, Any]) -> str:
    if report.get("status") != "completed":
        return f"{report['run_id']}: re-training ended {report.get('status')}"
    if report["compared"] == 0:
        return f"{report['run_id']}: NOT CHECKED: {report['first_difference']}"
    if report["same"]:
        return f"{report['run_id']}: bit-identical ({report['compared']} values)"
    head = (
        f"{report['run_id']}: DIFFERS, largest difference {report['max_abs_diff']:.3g}; first: "
        f"{report['first_difference']}"
    )
    return "\n".join([head, *("    " + line for line in report.get("explanation", []))])
