"""Training side of ste-ablations: model, data, one run, grids, executors, tracking, the run store."""

__version__ = "0.1.0"
