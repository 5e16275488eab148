"""The human-readable tables of a `ste-ablate bench` result: the loops and the grid."""

from __future__ import annotations

from typing import Any


def format_report(result: dict[str, Any]) -> str:
    """The tables of a `runners.bench.main.run_bench` result, as text."""
    load = result.get("load_average")
    lines = [
        f"device {result['device']} ({result['device_name']}), {result['threads']} threads, "
        f"torch {result['torch']}, load average {' '.join(map(str, load)) if load else 'n/a'}",
        f"data: {result['dataset']} ({result['train_images']} training images), "
        f"{result['precision']}, {result['rounds']} rounds x {result['steps_per_round']} steps "
        "per loop, interleaved",
        f"fp32 ceiling: {result['ceiling_gflops']:.0f} GFLOP/s (matmul) = "
        f"{result['ceiling_images_per_s']:.0f} images/s at {result['gflop_per_image']:.3f} "
        "GFLOP/image (forward + backward)",
        f"article loop: {result['article_loop']}",
        "",
        f"{'loop':<24} {'images/s':>9} {'min-max':>15} {'vs article':>11} {'of ceiling':>11} "
        f"{'page faults/step':>17}",
    ]
    for name, row in sorted(result["loops"].items(), key=lambda item: _row_order(item[0])):
        ratio = f"{row['vs_article']:.2f}x" if row["vs_article"] else "n/a"
        spread = f"{row['min']:.0f}-{row['max']:.0f}"
        lines.append(
            f"{name:<24} {row['images_per_s']:>9.0f} {spread:>15} {ratio:>11} "
            f"{row['share_of_ceiling']:>10.0%} {row.get('page_faults_per_64_images', 0):>17.0f}"
        )
    tuned = [row for name, row in result["loops"].items() if name.endswith("malloc tuned")]
    if tuned and "vs_article_same_malloc" in tuned[-1]:
        lines.append(
            "  (malloc tuned: after runners.training.kernels.tune_cpu_malloc(), run after the rows "
            f"above; vs the article with the same malloc: {tuned[-1]['vs_article_same_malloc']:.2f}x)"
        )
    if result.get("malloc_tuned_before"):
        lines.append("  (malloc was already tuned in this process: every row ran tuned)")
    loaded = result.get("loaded")
    if loaded:
        lines.append(
            f"{'ours, loaded':<24} {loaded['images_per_s']:>9.0f}   {loaded['kept']:.0%} of "
            f"{loaded['quiet_images_per_s']:.0f} quiet, beside a second training process with "
            f"{loaded['competitor_threads']} threads (OMP_WAIT_POLICY {loaded['wait_policy']})"
        )
    diag = result.get("diagnostics")
    if diag:
        lines.append(
            f"diagnostics: {diag['seconds']:.2f} s per epoch = {diag['share']:.1%} of training "
            f"(probe {diag['probe']} test images; an epoch of {result['train_images']} images "
            f"at ours' latest images/s: {diag['epoch_seconds']:.0f} s)"
        )
    grid = result.get("grid")
    if grid:
        lines += ["", *format_grid(grid)]
    return "\n".join(lines)


def _row_order(name: str) -> tuple[bool, int, str]:
    """Report rows: the article, ours with plain layers, ours; the malloc-tuned rows after."""
    base = name.removesuffix(", malloc tuned")
    known = ("article", "ours, plain layers", "ours")
    return name != base, known.index(base) if base in known else len(known), name


def format_grid(grid: dict[str, Any]) -> list[str]:
    """Lines of the grid table of a `runners.bench.grid.run_grid` result."""
    lines = [
        f"grid: {grid['cells']} cells x {grid['epochs']} epochs, stacks of {grid['stack']} "
        f"({grid['mode']})",
    ]
    if "article_s" in grid:
        lines.append(f"  article, one cell after another: {grid['article_s']:8.1f} s  "
                     f"({grid['article_how']})")  # fmt: skip
    lines.append(
        f"  ours, stacked:                   {grid['ours_s']:8.1f} s  ({grid['ours_how']})"
    )
    if "speedup" in grid:
        lines.append(f"  speed-up: {grid['speedup']:.2f}x  "
                     f"({grid['ours_images_per_s']:.0f} training images/s over the grid)")  # fmt: skip
    return lines
