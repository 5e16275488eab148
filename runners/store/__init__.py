"""The run store: its file format (`format`) and what a run records (`records`: the metrics'
names, directions and labels), the contract with `analysis`; the per-cell lock, checkpoints and
config.json's provenance."""
