"""Tasks: what is trained and how it is scored; the engine drives every task the same way.

`get_task(name)` returns the `runners.tasks.base.Task` of a run config's `task` field.
"""

from __future__ import annotations

import functools
import importlib

from runners.store.format import DEFAULT_TASK, TASKS

_MODULES = {"autoencoder": "runners.tasks.autoencoder", "bernoulli_vae": "runners.tasks.vae"}

__all__ = ["DEFAULT_TASK", "TASKS", "get_task"]


@functools.cache
def get_task(name: str = DEFAULT_TASK):  # noqa: ANN201 (a runners.tasks.base.Task)
    """The task called `name` (one of TASKS); its module is imported on first use."""
    if name not in _MODULES:
        raise ValueError(f"unknown task {name!r} (choose from {', '.join(TASKS)})")
    return importlib.import_module(_MODULES[name]).TASK
