"""Progress of training: a tqdm bar on a terminal, plain log lines on stderr otherwise, or nothing.

`RunProgress` is one run's (also each member's of a stack): a line when a lone run starts, its
bar's steps and loss, a line per finished epoch, and a closing line with the status. A stack
shows one step bar for all its members (`stack_bar`).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from tqdm import tqdm


class RunProgress:
    """A tqdm bar on a terminal, plain log lines on stderr otherwise, or nothing."""

    def __init__(self, mode: bool | None, run_id: str, total: int) -> None:
        self.run_id, self.total = run_id, total
        self.enabled = mode is not False
        self.bar_wanted = self.enabled and sys.stderr.isatty()
        self.bar = None

    def start(self, step: int, n_train: int, n_test: int, device: torch.device) -> None:
        if not self.enabled:
            return
        self._line(
            f"training on {device}: {n_train} train / {n_test} test images, "
            f"step {step}/{self.total}"
        )
        if self.bar_wanted:
            self.bar = tqdm(
                total=self.total,
                initial=step,
                desc=self.run_id,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                leave=False,
            )

    def steps(self, count: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(count)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def epoch(self, record: dict[str, Any], epochs: int, detail: str) -> None:
        """An epoch's line: its number and `detail` (the task's `describe_record`)."""
        if not self.enabled:
            return
        self._line(f"epoch {record['epoch']}/{epochs} {detail}")

    def close(self, summary: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled:
            detail = f" ({summary['error']})" if summary.get("error") else ""
            self._line(f"{summary['status']} after {summary['epochs_done']} epoch(s){detail}")

    def _line(self, text: str) -> None:
        message = f"[{self.run_id}] {text}"
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)


def stack_bar(progress: bool | None, k: int) -> tqdm | None:
    """One step bar for a stack of `k` runs (None = on a terminal only; False = none)."""
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    return tqdm(desc=f"stack of {k}", unit="step", file=sys.stderr, leave=False)
