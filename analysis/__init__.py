"""Analysis side of ste-ablations: reads the run store (or W&B), statistics, figures, reports.

Never imports training code: the run store's file format is the contract (docs/architecture.md).
"""
