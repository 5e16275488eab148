"""Where cells run: one `Executor` interface (`base`), one module per backend (in this process,
a local process pool, SLURM job arrays); every backend runs `cells.execute_cell`'s unit of work."""
