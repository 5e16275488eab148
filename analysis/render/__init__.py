"""Figures, tables and reports from a study's numbers (matplotlib lives here, not in `stats`).

`style` (one colour and position per condition, paper sizes, byte-identical files), `plots`
(learning curves, final values, pairwise heatmaps, critical-difference diagram), `plots_runs`
(reconstructions, per-bit rates, surrogate gradients), `tables` (CSV and LaTeX), `figures`
(named figures and the paper manifest), `report` (the `analyze` outputs and the HTML report).
"""
