"""Where results come from, all ending in the same tidy table (one row per run × epoch × metric).

`table` (the tidy table, cell records, `StudyData`), `store` (the run store → table, validated with
`runners.store.format`), `wandb_runs` (a W&B project → the same table), `snapshot` (a table frozen
in one CSV or Parquet file with its metadata).
"""
