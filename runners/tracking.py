"""Experiment tracking hooks called by the training loop.

`Tracker` is the interface; `NullTracker` does nothing. The W&B tracker lives here too
(issue: ablation grids). A tracker must never raise into training: failures are logged and
tracking is switched off for the rest of the run, local results are unaffected.
"""

from __future__ import annotations

from typing import Any


class Tracker:
    """Interface called by `runners.train.train_run`."""

    def start(self, config: dict[str, Any], run_id: str, resumed: bool) -> None:
        """Called once before training (also when resuming from a checkpoint)."""

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        """Called after each training step (global step, 1-based)."""

    def log_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        """Called after each epoch with the record written to metrics.jsonl."""

    def log_image(self, key: str, path: str) -> None:
        """Called with the path of an image written to the run folder."""

    def finish(self, summary: dict[str, Any]) -> None:
        """Called once at the end with the summary written to summary.json."""


class NullTracker(Tracker):
    """Tracks nothing."""
