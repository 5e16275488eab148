"""The training engine: the one epoch loop over K >= 1 runs, their bookkeeping and claims."""
