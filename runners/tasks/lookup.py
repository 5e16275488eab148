"""`get_task(name)`: the `runners.tasks.base.Task` of a run config's `task` field."""

from __future__ import annotations

import functools
import importlib

from runners.config_tasks import DEFAULT_TASK, TASKS

_MODULES = {"autoencoder": "runners.tasks.autoencoder", "bernoulli_vae": "runners.tasks.vae"}


@functools.cache
def get_task(name: str = DEFAULT_TASK):  # noqa: ANN201 (a runners.tasks.base.Task)
    """The task called `name` (one of TASKS); its module is imported on first use."""
    if name not in _MODULES:
        raise ValueError(f"unknown task {name!r} (choose from {', '.join(TASKS)})")
    return importlib.import_module(_MODULES[name]).TASK
