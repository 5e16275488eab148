"""The experiment-tracker interface the training engine calls, and its failure guard.

`Tracker` is the interface (every hook does nothing by default); `SafeTracker` wraps any tracker
so that its first exception switches tracking off with one warning. Training only ever talks to a
`SafeTracker`: the run store, not the tracker, is the source of truth, so a tracker never stops
a run or changes its local results.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger(__name__)


class Tracker:
    """Hooks called by the training engine (`runners.engine.train`) for one run."""

    def start(self, config: dict[str, Any], run_id: str, resumed: bool) -> None:
        """Called once before training (also when resuming from a checkpoint)."""

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        """Called after each training step (global step, 1-based)."""

    def log_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        """Called after each epoch with the record written to metrics.jsonl."""

    def log_image(self, key: str, path: str) -> None:
        """Called with the path of an image written to the run folder."""

    def finish(self, summary: dict[str, Any]) -> None:
        """Called at the end with the summary written to summary.json (again is a no-op)."""

    def abort(self) -> None:
        """Called once after one of the hooks above raised: release what the tracker holds."""


class NullTracker(Tracker):
    """Tracks nothing."""


class SafeTracker(Tracker):
    """Forwards to `tracker`; the first exception switches tracking off with a warning.

    Attributes:
        tracker: the wrapped tracker.
        error: why tracking stopped ("<hook>: <exception>"), None while it works.
    """

    def __init__(self, tracker: Tracker | None = None) -> None:
        self.tracker = tracker if tracker is not None else NullTracker()
        self.error: str | None = None

    @classmethod
    def wrap(cls, tracker: Tracker | None) -> SafeTracker:
        """`tracker` itself when it is a SafeTracker already, else wrapped in one."""
        return tracker if isinstance(tracker, SafeTracker) else cls(tracker)

    def start(self, config: dict[str, Any], run_id: str, resumed: bool) -> None:  # noqa: D102
        self._call("start", config, run_id, resumed)

    def log_step(self, step: int, metrics: dict[str, float]) -> None:  # noqa: D102
        self._call("log_step", step, metrics)

    def log_epoch(self, epoch: int, record: dict[str, Any]) -> None:  # noqa: D102
        self._call("log_epoch", epoch, record)

    def log_image(self, key: str, path: str) -> None:  # noqa: D102
        self._call("log_image", key, path)

    def finish(self, summary: dict[str, Any]) -> None:  # noqa: D102
        self._call("finish", summary)

    def _call(self, hook: str, *args: Any) -> None:
        if self.error is not None:
            return
        try:
            getattr(self.tracker, hook)(*args)
        except Exception as exc:
            text = " ".join(str(exc).split())[:300]
            self.error = f"{hook}: {type(exc).__name__}: {text}"
            print(
                f"ste-ablate: warning: tracking stopped ({self.error}); training and local "
                "results are unaffected",
                file=sys.stderr,
                flush=True,
            )
            try:
                self.tracker.abort()
            except Exception:  # already broken; nothing more to save
                log.debug("tracker abort after a failure also failed", exc_info=True)
