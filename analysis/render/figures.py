"""Named figures of a study, and the paper manifest that regenerates them from snapshots.

`make_figure(kind, result, data, **options)` draws one of `FIGURE_KINDS` (or says why it cannot:
no run folders for reconstructions, no per-bit rates, ...). `regenerate(manifest)` rebuilds every
figure and table a manifest lists (default `paper/figures.yaml`) from committed snapshots,
without training; outputs are byte-identical on rerun (seeded bootstraps, fixed file metadata).

Manifest (YAML; paths relative to the manifest's folder)::

    version: 1
    output: build                 # where the files go
    formats: [pdf, png]           # figure formats
    seed: 0                       # bootstrap seed
    n_resamples: 9999             # bootstrap resamples
    snapshots:                    # name -> snapshot file (written by `ste-ablate snapshot`)
      estimators: snapshots/estimators.csv
    items:
      - name: estimators_final_mse   # output file stem
        snapshot: estimators
        kind: final_metric           # a figure kind, or latex_table | summary_csv | pairwise_csv
        metric: test_mse             # default test_mse
        size: single                 # single | double | double-tall | square (figures)
        options: {kind: violin}      # keyword arguments of the plot function
        study: {correction: holm, design: auto, alpha: 0.05}   # optional StudyConfig fields
        optional: true               # skip (with a note) when the data cannot draw it
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from analysis.render import plots, plots_diagnostics, plots_gradients, plots_runs, style, tables
from analysis.render.manifest_checks import manifest_problems
from analysis.sources.snapshot import read_snapshot
from analysis.sources.tidy import StoreError, StudyData
from analysis.study import StudyConfig, StudyResult, condition_labels, run_study
from runners.store.format import atomic_write_text
from runners.store.records import (
    DIAGNOSTIC_METRICS,
    DIAGNOSTICS_PREFIX,
    GRADIENT_ERROR_METRICS,
)


class FigureUnavailable(Exception):
    """A figure cannot be drawn from this data (the message says why)."""


def tie_groups(result: StudyResult) -> list[list[str]]:
    """The study's groups of tied conditions (`analysis.stats.ties`), for the figures."""
    return [group["conditions"] for group in (result.omnibus.get("ties") or {}).get("groups", [])]


def _learning_curves(result: StudyResult, data: StudyData, sty: style.Style, **opts: Any) -> Figure:
    if result.curves.empty:
        raise FigureUnavailable("no epoch values of the metric in completed runs")
    opts.setdefault("seed", result.config.seed)
    opts.setdefault("ties", tie_groups(result))
    return plots.learning_curves(result.curves, metric=result.config.metric, sty=sty, **opts)


def _final_metric(result: StudyResult, data: StudyData, sty: style.Style, **opts: Any) -> Figure:
    if result.final.empty:
        raise FigureUnavailable("no completed run has a final value")
    return plots.final_metric(result.final, metric=result.config.metric, sty=sty, **opts)


def _pairwise(value: str) -> Callable[..., Figure]:
    def draw(result: StudyResult, data: StudyData, sty: style.Style, **opts: Any) -> Figure:
        if result.pairwise.empty:
            raise FigureUnavailable("fewer than two conditions")
        opts.setdefault("alpha", result.config.alpha)
        return plots.pairwise_heatmap(result.pairwise, order=result.order, value=value, **opts)

    return draw


def _cd(result: StudyResult, data: StudyData, sty: style.Style, **opts: Any) -> Figure:
    omni = result.omnibus
    if not omni.get("average_ranks") or omni.get("cd") is None:
        raise FigureUnavailable("needs a paired design (seeds shared by every condition)")
    return plots.cd_diagram(omni["average_ranks"], omni["cd"], omni["cd_groups"], sty=sty, **opts)


def _reconstructions(result: StudyResult, data: StudyData, sty: style.Style, **opts: Any) -> Figure:
    images = {}
    for cond in result.order:
        runs = result.final[result.final["condition"] == cond].sort_values("seed")
        for run_id in runs["run_id"]:
            path = data.run_dirs.get(run_id)
            if path is not None and (path / "reconstruction.png").is_file():
                images[cond] = path / "reconstruction.png"
                break
    if not images:
        raise FigureUnavailable("no run folder with a reconstruction.png (snapshots hold none)")
    return plots_runs.reconstructions(images, **opts)


def _bit_rates(result: StudyResult, data: StudyData, sty: style.Style, **opts: Any) -> Figure:
    if data.bits is None or data.bits.empty:
        raise FigureUnavailable("no per-bit activation rates")
    usable = result.final.set_index("run_id")["condition"]
    bits = data.bits[data.bits["run_id"].isin(usable.index)].copy()
    if bits.empty:
        raise FigureUnavailable("no per-bit rates for the completed runs")
    last = bits.groupby("run_id")["epoch"].transform("max")
    bits = bits[bits["epoch"] == last]
    bits["condition"] = bits["run_id"].map(usable)
    opts.setdefault("ties", tie_groups(result))
    return plots_runs.bit_rates(bits, sty=sty, **opts)


def _surrogates(result: StudyResult, data: StudyData, sty: style.Style, **opts: Any) -> Figure:
    specs = {c: result.estimators[c] for c in result.order if c in result.estimators}
    if not specs:
        raise FigureUnavailable("no estimator specs")
    try:
        import ste_variants  # noqa: F401 - torch is optional for the analysis: probe for it
    except ImportError as exc:
        raise FigureUnavailable(f"the estimator registry is not importable ({exc})") from None
    return plots_runs.surrogates(specs, sty=sty, **opts)


def _record_curves(
    metrics: tuple[str, ...], what: str, logy: tuple[str, ...] = ()
) -> Callable[..., Figure]:
    """A figure kind: the epoch-record keys `metrics` per epoch, mean over seeds with a band."""

    def draw(result: StudyResult, data: StudyData, sty: style.Style, **opts: Any) -> Figure:
        table = data.table[
            data.table["metric"].isin(metrics) & (data.table["status"] == "completed")
        ]
        if table.empty or not table["value"].notna().any():
            raise FigureUnavailable(f"no {what} in the epoch records")
        table = table.assign(condition=condition_labels(table, result.group_by))
        curves = {
            metric: part[["condition", "seed", "epoch", "value"]].dropna(subset=["value"])
            for metric in metrics
            if not (part := table[table["metric"] == metric]).empty and part["value"].notna().any()
        }
        opts.setdefault("seed", result.config.seed)
        opts.setdefault("logy", logy)
        opts.pop("size", None)  # sized by its panels
        return plots_diagnostics.gradient_fidelity(curves, sty=sty, **opts)

    return draw


def _gradcheck_exact(result: StudyResult, data: StudyData, sty: style.Style, **opts: Any) -> Figure:
    docs = data.gradcheck_exact
    if not docs:
        raise FigureUnavailable(
            "no `ste-ablate gradcheck --exact` results (run it on a run folder)"
        )
    run_id = opts.pop("run_id", None)
    chosen = [d for d in docs if run_id is None or d.get("run_id") == run_id]
    if not chosen:
        raise FigureUnavailable(f"no gradcheck --exact results of run {run_id}")
    doc = min(chosen, key=lambda d: (d.get("seed", 0), str(d.get("run_id"))))
    opts.pop("size", None)
    return plots_gradients.gradient_error(doc, sty=sty, **opts)


def _gradcheck(result: StudyResult, data: StudyData, sty: style.Style, **opts: Any) -> Figure:
    frame = data.gradcheck
    if frame is None or frame.empty:
        raise FigureUnavailable("no `ste-ablate gradcheck` results (run it on a run folder)")
    run_id = opts.pop("run_id", None) or str(
        frame.sort_values(["seed", "run_id"])["run_id"].iloc[0]
    )
    frame = frame[frame["run_id"] == run_id]
    if frame.empty:
        raise FigureUnavailable(f"no gradcheck results of run {run_id}")
    opts.pop("size", None)
    present = set(frame.loc[frame["value"].notna(), "metric"])
    metrics = [m.removeprefix(DIAGNOSTICS_PREFIX) for m in DIAGNOSTIC_METRICS]
    head = frame.iloc[0]
    model = f"{head['run_estimator']} seed {head['seed']}, epoch {head['epoch']} ({run_id})"
    title = opts.pop("title", None)
    title = f"{title}: {model}" if title else model
    return plots_diagnostics.gradcheck(
        frame, metrics=[m for m in metrics if m in present], sty=sty, title=title, **opts
    )


FIGURE_KINDS: dict[str, Callable[..., Figure]] = {
    "learning_curves": _learning_curves,
    "final_metric": _final_metric,
    "pairwise_p": _pairwise("p_adj"),
    "pairwise_improvement": _pairwise("p_improve"),
    "cd_diagram": _cd,
    "reconstructions": _reconstructions,
    "bit_rates": _bit_rates,
    "surrogates": _surrogates,
    "gradient_fidelity": _record_curves(DIAGNOSTIC_METRICS, "gradient diagnostics"),
    "gradcheck": _gradcheck,
    "gradient_error": _record_curves(
        GRADIENT_ERROR_METRICS,
        "exact-gradient checkpoints (gradient_error: checkpoints)",
        logy=tuple(m for m in GRADIENT_ERROR_METRICS if "_rmse_" in m or m == "gerr_variance"),
    ),
    "gradcheck_exact": _gradcheck_exact,
}
TABLE_KINDS = ("latex_table", "summary_csv", "pairwise_csv")


def make_figure(kind: str, result: StudyResult, data: StudyData, /, **options: Any) -> Figure:
    """Draw figure `kind` of a study (raises FigureUnavailable with the reason).

    `options` go to the plot function (e.g. `kind="violin"` for final_metric, hence the
    positional-only parameters)."""
    if kind not in FIGURE_KINDS:
        raise ValueError(f"unknown figure kind {kind!r}; known: {', '.join(FIGURE_KINDS)}")
    return FIGURE_KINDS[kind](result, data, style.Style(list(result.order)), **options)


def make_table(kind: str, result: StudyResult, /, **options: Any) -> str:
    """Text of table `kind` ("latex_table", "summary_csv", "pairwise_csv")."""
    if kind == "latex_table":
        return tables.latex_table(result, **options)
    if kind == "summary_csv":
        return tables.to_csv(tables.summary_frame(result))
    if kind == "pairwise_csv":
        return tables.to_csv(tables.pairwise_frame(result))
    raise ValueError(f"unknown table kind {kind!r}; known: {', '.join(TABLE_KINDS)}")


_ITEM_KEYS = {
    "name",
    "snapshot",
    "kind",
    "metric",
    "size",
    "options",
    "study",
    "formats",
    "optional",
}
_STUDY_KEYS = {f.name for f in fields(StudyConfig)} - {"metric", "seed", "n_resamples"}


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read and validate a manifest; every problem is listed in one StoreError."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"manifest {path} not found") from None
    except (OSError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        reason = getattr(exc, "problem", None) or exc
        raise StoreError(f"manifest {path} is not valid YAML{where}: {reason}") from None
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise StoreError(f"manifest {path} must be a mapping")
    unknown = set(doc) - {
        "version",
        "output",
        "formats",
        "seed",
        "n_resamples",
        "snapshots",
        "items",
    }
    if unknown:
        problems.append(f"unknown top-level keys {sorted(map(str, unknown))}")
    snapshots = doc.get("snapshots") or {}
    items = doc.get("items") or []
    if not isinstance(snapshots, dict):
        problems.append("'snapshots' must map names to files")
        snapshots = {}
    if not isinstance(items, list) or not items:
        problems.append("'items' must be a non-empty list")
        items = []
    names: set[str] = set()
    for i, item in enumerate(items):
        where = f"items[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where} must be a mapping")
            continue
        name, kind, snap, size = (_text(item.get(k)) for k in ("name", "kind", "snapshot", "size"))
        where = f"items[{i}] ({name or '?'})"
        if set(item) - _ITEM_KEYS:
            problems.append(f"{where}: unknown keys {sorted(map(str, set(item) - _ITEM_KEYS))}")
        if not name or name in names:
            problems.append(f"{where}: needs a unique name")
        names.add(name)
        if kind not in FIGURE_KINDS and kind not in TABLE_KINDS:
            known = ", ".join([*FIGURE_KINDS, *TABLE_KINDS])
            problems.append(f"{where}: kind {item.get('kind')!r} is not one of {known}")
        if snap not in snapshots:
            problems.append(f"{where}: snapshot {item.get('snapshot')!r} is not in 'snapshots'")
        study = item.get("study") or {}
        if not isinstance(study, dict):
            problems.append(f"{where}: study must be a mapping")
        elif set(study) - _STUDY_KEYS:
            problems.append(
                f"{where}: unknown study keys {sorted(map(str, set(study) - _STUDY_KEYS))}"
            )
        if item.get("size") is not None and size not in style.SIZES:
            problems.append(f"{where}: size must be one of {sorted(style.SIZES)}")
    problems += manifest_problems(doc)
    if problems:
        raise StoreError(f"manifest {path}: " + "; ".join(problems))
    return doc


def _text(value: Any) -> str | None:
    """A manifest value where text is expected (None for anything else, which is not hashable
    or not a name)."""
    return value if isinstance(value, str) else None


def regenerate(
    manifest: str | Path, *, out: str | Path | None = None, only: list[str] | None = None
) -> list[Path]:
    """Rebuild the figures and tables a manifest lists; returns the files written."""
    manifest = Path(manifest)
    doc = load_manifest(manifest)
    base = manifest.parent
    out_dir = Path(out) if out is not None else base / str(doc.get("output", "build"))
    formats = list(doc.get("formats") or ["pdf", "png"])
    seed, n_resamples = int(doc.get("seed", 0)), int(doc.get("n_resamples", 9999))
    items = [i for i in doc["items"] if not only or i["name"] in only]
    if only and len(items) != len(set(only)):
        missing = sorted(set(only) - {i["name"] for i in items})
        raise StoreError(f"manifest {manifest} has no items named {missing}")
    data_cache: dict[str, StudyData] = {}
    study_cache: dict[tuple[str, str], StudyResult] = {}
    written: list[Path] = []
    for item in items:
        snap = item["snapshot"]
        if snap not in data_cache:
            snap_path = base / doc["snapshots"][snap]
            if not snap_path.is_file():
                raise StoreError(
                    f"snapshot {snap_path} not found (write it with `ste-ablate snapshot SPEC "
                    f"--out {snap_path}` after running the spec)"
                )
            data_cache[snap] = read_snapshot(snap_path)
        metric = item.get("metric", "test_mse")
        if metric not in set(data_cache[snap].table["metric"].dropna()):
            raise StoreError(f"item {item['name']}: snapshot {snap} has no metric {metric!r}")
        config = StudyConfig(
            metric=metric,
            seed=seed,
            n_resamples=n_resamples,
            **(item.get("study") or {}),
        )
        key = (snap, repr(config))
        if key not in study_cache:
            study_cache[key] = run_study(data_cache[snap], config)
        result = study_cache[key]
        stem = out_dir / item["name"]
        options = dict(item.get("options") or {})
        if item["kind"] in TABLE_KINDS:
            suffix = ".tex" if item["kind"] == "latex_table" else ".csv"
            path = stem.with_name(stem.name + suffix)
            atomic_write_text(path, make_table(item["kind"], result, **options))
            written.append(path)
            continue
        if item.get("size"):
            options["size"] = item["size"]
        try:
            fig = make_figure(item["kind"], result, data_cache[snap], **options)
        except TypeError as exc:  # options the plot function does not take
            raise StoreError(f"figure {item['name']}: bad options {options}: {exc}") from None
        except FigureUnavailable as exc:
            if item.get("optional"):  # e.g. diagnostics a snapshot may not hold yet
                print(f"figure {item['name']} skipped: {exc}", file=sys.stderr)
                continue
            raise StoreError(f"figure {item['name']}: {exc}") from None
        written.extend(style.save(fig, stem, item.get("formats") or formats))
    return written
