"""The SLURM executor: a grid's cells as one submitit job array (`executor`), what runs inside
each array task (`task`), the record of submissions and SLURM's view of them (`record`)."""
