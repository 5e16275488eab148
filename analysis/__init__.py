"""Analysis side of ste-ablations: reads the run store (or W&B), statistics, figures, reports.

Never imports training code: the run store's file format is the contract (docs/architecture.md).

Modules: `load` (run store → tidy table), `tidy` (the table itself), `wandb_source` (W&B → the
same table), `snapshot` (frozen tables), `metrics` (directions), `stats` (+ `omnibus`,
`planning`; numpy and scipy only), `study` (one comparison's numbers), `style`, `plots`
(+ `plots_runs`), `tables`, `figures` (named figures, the paper manifest), `report` (the
`analyze` outputs), `io` (atomic writes).
"""
