"""The run store: its file format (`format`, the contract with `analysis`), the per-cell lock,
checkpoints and config.json's provenance."""
