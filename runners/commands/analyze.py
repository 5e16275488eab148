"""`ste-ablate snapshot`, `ste-ablate analyze` and `ste-ablate figures`: results to reports.

The CLI is the one place that joins `runners` (the spec: which cells to expect) and `analysis`
(which never imports `runners`). Input problems (no store, bad metric, unreadable snapshot) are
`UserError`s: one line, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.render.figures import regenerate
from analysis.render.report import write_analysis
from analysis.sources.snapshot import (
    bits_path,
    gradcheck_path,
    meta_path,
    read_meta,
    read_snapshot,
    write_snapshot,
)
from analysis.sources.store import scan_store
from analysis.sources.tidy import StoreError
from analysis.sources.wandb_runs import scan_wandb
from analysis.study import StudyConfig, run_study
from runners.commands.parts import analyze_wandb
from runners.commands.parts.grid import (
    add_determinism,
    add_max_cells,
    at_least_one,
    check_store,
    thread_mix_warning,
    with_determinism,
)
from runners.commands.parts.report_folder import write_report_folder
from runners.errors import UserError, short_repr
from runners.grids.limits import MAX_CELLS
from runners.grids.spec import load_spec, valid_name
from runners.store import records
from runners.store.format import run_dir
from runners.store.runtime import runtime_record

DEFAULT_STORE = "ste-store"
DEFAULT_MANIFEST = "paper/figures.yaml"

_ANALYZE_EPILOG = """\
examples:
  ste-ablate analyze ablations/quickstart.yaml                       store ste-store, test_mse
  ste-ablate analyze ablations/estimators.yaml --metric probe_accuracy --out reports/probe
  ste-ablate analyze --snapshot paper/snapshots/estimators.csv       no store needed
  ste-ablate analyze ablations/quickstart.yaml --wandb offline       also as a W&B run

Writes into --out (default reports/<spec name>): summary.csv, pairwise.csv, cells.csv,
omnibus.json, table.tex (booktabs), figures/*.pdf|png and a self-contained report.html, whose
path is printed at the end. Only completed runs with a finite value enter the statistics;
missing, failed, diverged, interrupted, running and corrupt cells are counted and listed.
Seeds shared by two estimators make their comparison paired (Wilcoxon signed-rank, paired t);
otherwise Mann-Whitney U and Welch's t. Holm (default) or Benjamini-Hochberg across all pairs.
Every bootstrap is seeded (--seed): rerunning gives byte-identical files.
With --wandb the analysis also becomes one W&B run in the spec's group (job_type analysis), after
the report is written: look at it online, offline with `wandb leet STORE/wandb`, upload it later
with `wandb sync`. A W&B failure is a warning; the report stays.
"""


@dataclass
class _Spec:
    name: str
    sha256: str | None
    path: str | None
    axes: list[str] | None = None
    cells: list[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def register(subparsers: Any) -> None:
    """Add the ``snapshot``, ``analyze`` and ``figures`` commands."""
    snap = subparsers.add_parser(
        "snapshot",
        help="freeze a spec's results into one table file (CSV or Parquet)",
        description="Write the tidy results table of a spec (one row per run x epoch x metric) "
        "from the run store, or from W&B with --wandb-project, as CSV (or Parquet for a .parquet "
        "file), with the per-bit rates beside it and a FILE.meta.json sidecar (package versions, "
        "the spec's sha256, cell statuses). `analyze --snapshot` and `figures` read it.",
    )
    snap.add_argument("spec", help="the ablation spec (YAML)")
    snap.add_argument("--out", required=True, metavar="FILE", help="the snapshot (.csv/.parquet)")
    snap.add_argument("--store", default=DEFAULT_STORE, help=f"run store (default {DEFAULT_STORE})")
    snap.add_argument(
        "--wandb-project",
        metavar="PROJECT",
        help="read the runs from this W&B project (group = the spec's name) instead of the store",
    )
    snap.add_argument("--wandb-entity", metavar="ENTITY", help="W&B entity (default: yours)")
    add_max_cells(snap)
    add_determinism(snap)
    snap.set_defaults(func=_snapshot)

    ana = subparsers.add_parser(
        "analyze",
        help="statistics, figures and an HTML report comparing a spec's estimators",
        description="Compare the conditions of a spec (estimators, or every grid factor but "
        "the seed) on one metric, across seeds, from the run store or a snapshot.",
        epilog=_ANALYZE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ana.add_argument("spec", nargs="?", help="the ablation spec (YAML); optional with --snapshot")
    source = ana.add_mutually_exclusive_group()
    source.add_argument("--store", help=f"run store (default {DEFAULT_STORE})")
    source.add_argument("--snapshot", metavar="FILE", help="read a snapshot instead of a store")
    add_determinism(ana)
    ana.add_argument(
        "--unverified",
        action="store_true",
        help="read a --snapshot that has no metadata, or whose files differ from it, as it is",
    )
    ana.add_argument(
        "--metric",
        default=None,
        help="metric to compare (default test_mse; test_iwae_bound for a Bernoulli VAE study)",
    )
    ana.add_argument(
        "--direction",
        choices=("lower", "higher"),
        help="which values are better (default: known per metric; test_mse lower)",
    )
    ana.add_argument("--out", metavar="DIR", help="output folder (default reports/<spec name>)")
    ana.add_argument(
        "--design",
        choices=("auto", "paired", "unpaired"),
        default="auto",
        help="auto (default): paired on shared seeds when two conditions share at least two",
    )
    ana.add_argument(
        "--correction", choices=("holm", "bh"), default="holm", help="multiple-comparison "
        "correction across all pairs: holm (family-wise, default) or bh (false discovery rate)",
    )  # fmt: skip
    ana.add_argument("--alpha", type=_unit, default=0.05, help="significance level (0.05)")
    ana.add_argument("--confidence", type=_unit, default=0.95, help="CI level (0.95)")
    ana.add_argument(
        "--resamples",
        type=at_least_one("--resamples", "a number of resamples"),
        default=9999,
        help="bootstrap resamples",
    )
    ana.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    ana.add_argument("--power", type=_unit, default=0.8, help="seed planner's power (0.8)")
    ana.add_argument(
        "--target-diff",
        type=float,
        metavar="X",
        help="seed planner: also the seeds needed to detect this absolute difference",
    )
    ana.add_argument(
        "--formats", default="pdf,png", help="figure formats, comma-separated (pdf,png,svg)"
    )
    analyze_wandb.add_arguments(ana)
    add_max_cells(ana)
    ana.set_defaults(func=_analyze)

    fig = subparsers.add_parser(
        "figures",
        help="regenerate the paper's figures and tables from committed snapshots",
        description="Rebuild every figure and table listed in a manifest from result snapshots, "
        "without training; byte-identical on rerun. See analysis/render/figures.py for the format.",
    )
    fig.add_argument(
        "manifest", nargs="?", default=DEFAULT_MANIFEST, help=f"manifest ({DEFAULT_MANIFEST})"
    )
    fig.add_argument("--out", metavar="DIR", help="output folder (default: the manifest's)")
    fig.add_argument("--only", action="append", metavar="NAME", help="only this item (repeat)")
    fig.set_defaults(func=_figures)


def _snapshot(args: argparse.Namespace) -> int:
    spec = _load_spec(args.spec, args.max_cells, args.determinism)
    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise UserError(f"--out must end in .csv or .parquet, not {out.name!r}")
    try:
        if args.wandb_project:
            data = scan_wandb(args.wandb_project, spec.name, args.wandb_entity, cells=spec.cells)
        else:
            _check_store(args.store)
            data = scan_store(args.store, spec.cells, axes=spec.axes)
        for target in (out, meta_path(out), bits_path(out), gradcheck_path(out)):
            if target.is_dir():
                raise UserError(f"{target} is a folder; the snapshot writes a file there")
        runtimes = {} if args.wandb_project else _runtimes(args.store, data.cells["run_id"])
        written = write_snapshot(
            data,
            out,
            spec_name=spec.name,
            spec_sha256=spec.sha256,
            spec_path=spec.path,
            extra={"runtime": runtimes} if runtimes else None,
        )
    except StoreError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:  # a full disk, a file where a folder goes, no permission
        raise UserError(f"cannot write the snapshot {out}: {_os_error(exc)}") from None
    counts = data.cells["status"].value_counts()
    states = ", ".join(f"{int(n)} {s}" for s, n in counts.items())
    print(f"snapshot of {spec.name}: {len(data.cells)} cells ({states}), {len(data.table)} rows")
    for path in written:
        print(path)
    return 0


def _runtimes(store: str, run_ids: Any) -> dict[str, dict[str, Any]]:
    """Each run's rounding-relevant runtime record (CPU, kernels, threads, versions), by run id:
    kept in the snapshot's metadata so `reproduce` can explain a difference."""
    found = {run_id: runtime_record(run_dir(store, run_id)) for run_id in run_ids}
    return {run_id: record for run_id, record in found.items() if record}


def _analyze(args: argparse.Namespace) -> int:
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("pdf", "png", "svg")]
    if bad or not formats:
        raise UserError(f"--formats takes pdf, png, svg (comma-separated), not {args.formats!r}")
    if args.wandb != "off" and "png" not in formats:
        formats.append("png")  # the images W&B gets
    store = None
    try:
        if args.snapshot:
            data = read_snapshot(args.snapshot, verify=not args.unverified)
            meta = read_meta(args.snapshot)
            snap_spec = meta.get("spec") or {}
            spec = _Spec(
                snap_spec.get("name") or Path(args.snapshot).stem,
                snap_spec.get("sha256"),
                snap_spec.get("path"),
            )
            if args.spec:
                given = _load_spec(args.spec, args.max_cells)
                if spec.sha256 and given.sha256 != spec.sha256:
                    print(
                        f"ste-ablate: warning: {args.spec} differs from the spec the snapshot was "
                        f"made from (sha256 {str(spec.sha256)[:12]})",
                        file=sys.stderr,
                    )
                spec.name = given.name
                spec.extra.update(given.extra)
            spec.extra["source"] = data.source
        else:
            if not args.spec:
                raise UserError("give a SPEC (or --snapshot FILE)")
            store = args.store or DEFAULT_STORE
            spec = _load_spec(args.spec, args.max_cells, args.determinism)
            _check_store(store)
            data = scan_store(store, spec.cells, axes=spec.axes)
            spec.extra["source"] = data.source
            warning = thread_mix_warning(Path(store), [c.run_id for c in spec.cells or []])
            if warning:
                print(f"ste-ablate: warning: {warning}", file=sys.stderr)
        present = set(data.table["metric"].dropna())
        if args.metric is None:  # the task's headline metric: the article's, or the VAE's bound
            vae = "test_iwae_bound" in present and "test_mse" not in present
            args.metric = "test_iwae_bound" if vae else "test_mse"
        if args.metric not in present:
            known = ", ".join(sorted(present)) or "none (no run has an epoch yet)"
            raise UserError(
                f"metric {short_repr(args.metric)} does not exist in the results; "
                f"available: {known}"
            )
        try:  # a metric that exists, but whose better direction is not known, needs --direction
            records.direction(args.metric, args.direction)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        config = StudyConfig(
            metric=args.metric,
            direction=args.direction,
            design=args.design,
            correction=args.correction,
            alpha=args.alpha,
            confidence=args.confidence,
            n_resamples=args.resamples,
            seed=args.seed,
            power=args.power,
            target_diff=args.target_diff,
        )
        result = run_study(data, config)
        if not args.out and not valid_name(spec.name):
            raise UserError(
                f"the snapshot's spec name {short_repr(spec.name)} is not a spec name (letters, "
                "digits, '_', '.', '-'): give --out DIR"
            )
        out = Path(args.out) if args.out else Path("reports") / spec.name
        report = write_report_folder(
            out,
            lambda folder: write_analysis(
                result,
                data,
                folder,
                title=spec.name,
                spec={"name": spec.name, "sha256": spec.sha256, "source": spec.extra.get("source")},
                formats=formats,
            ),
        )
    except StoreError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:  # a full disk, a file where a folder goes, no permission
        raise UserError(f"cannot write the report: {_os_error(exc)}") from None
    for warning in result.warnings:
        print(f"note: {warning}", file=sys.stderr)
    barely = [c["condition"] for c in result.budget.get("conditions", []) if c["barely"]]
    if barely:
        print(
            f"note: {', '.join(barely)}: no better, or barely, than the trivial reconstruction "
            "(the mean training image); see the report's first paragraph",
            file=sys.stderr,
        )
    analyze_wandb.publish(args, result, report.parent, spec=spec, store=store)
    print(report)
    return 0


def _figures(args: argparse.Namespace) -> int:
    try:
        written = regenerate(args.manifest, out=args.out, only=args.only)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:  # a full disk, a file where a folder goes, no permission
        raise UserError(f"cannot write the figures: {_os_error(exc)}") from None
    for path in written:
        print(path)
    return 0


def _load_spec(path: str, max_cells: int = MAX_CELLS, determinism: str | None = None) -> _Spec:
    """The spec's name, hash, axes and expected cells (with --determinism's ids)."""
    spec_path = Path(path)
    if not spec_path.is_file():
        raise UserError(f"spec {path} not found")
    spec = with_determinism(load_spec(spec_path, max_cells=max_cells), determinism)
    wandb = {
        "wandb_project": spec.wandb.project,
        "wandb_entity": spec.wandb.entity,
        "wandb_tags": spec.wandb.tags,
    }
    return _Spec(spec.name, spec.sha256, str(spec_path), list(spec.axes), list(spec.cells), wandb)


def _check_store(store: str) -> None:
    check_store(Path(store))
    if not Path(store).is_dir():
        raise UserError(f"store {store} does not exist (train the spec first: ste-ablate run)")


def _os_error(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _unit(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value
