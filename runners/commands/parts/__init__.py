"""What the commands are made of that is not a command itself.

Every module directly in `runners.commands` is one `ste-ablate` command; these are their parts:
`grid` (the spec/store/determinism arguments and the cell table that `run`, `status`, `analyze`
and `dashboard` share), `slurm` (`run --executor slurm`: its flags and launch), `analyze_wandb`
(`analyze --from-wandb` and publishing to W&B), `report_folder` (`analyze`'s atomic report
folder), `gradcheck_exact` (`gradcheck --exact`: against the exact gradient).
"""
