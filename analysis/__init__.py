"""Analysis side of ste-ablations: reads the run store (or W&B), statistics, figures, reports.

Never imports training code: of `runners` it imports only `runners.store.format`, the run store's
file format, which is the contract between the two (docs/architecture.md).

Data flows `sources` → `study` → `render`, with `stats` underneath:
`sources` (`table`: the tidy table; `store`, `wandb_runs`: a run store or a W&B project → that
table; `snapshot`: the table frozen in a file), `stats` (`summary`, `pairwise`, `omnibus`,
`planning`, `metrics`: numpy and scipy only, no plotting), `study` (one comparison's numbers),
`render` (`style`, `plots`, `plots_runs`, `tables`, `figures`, `report`).
"""
