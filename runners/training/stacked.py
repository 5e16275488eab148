"""Stacked training: K cells of a grid trained in one process, in step (a speed setting).

`train_stacked(configs, store)` is `train_run` for K cells at once. It is purely a speed setting:
each cell gets the store entry, checkpoint, logs and tracker calls that `train_run` would give
it. Per-run bookkeeping is `runners.training.loop.RunLoop`'s, one per member; only the training steps
are shared (`runners.speed.grouped.TrainingStack`), in one of two modes:

- "grouped" (the default on CUDA): one grouped model and one Adam for all K members; results
  equal the unstacked runs' up to float rounding (grouped kernels sum in another order, and this
  training amplifies rounding: runners/fast.py);
- "looped" (the default on the CPU, where grouped kernels measured slower than K plain ones):
  the members' own models and optimisers stepped in turn; bit-identical to unstacked runs.

Executors: `plan_stacks(tasks, stack)` groups `CellTask`s that may share a stack and
`execute_stack(tasks)` is the stacked twin of `runners.executors.cells.execute_cell`. `auto_stack(device,
n)` is the stack size the runner uses when the user did not set one (1 on the CPU, where
stacking gains little; up to 32 on a GPU, where one run cannot fill the device).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from runners.config import RunConfig
from runners.speed.grouped import NotStackableError, TrainingStack
from runners.store import format as st
from runners.store.checkpoint import save_checkpoint
from runners.store.lock import cell_lock
from runners.tracking.wandb_tracker import Tracker

# Fields that may differ between the members of one stack; every other field must be equal.
MEMBER_FIELDS = ("estimator", "seed", "stack")
GPU_MAX_STACK = 32
MODES = ("grouped", "looped")


def stack_key(config: RunConfig) -> tuple[Any, ...]:
    """Configs with equal keys can be trained in one stack."""
    return tuple(v for k, v in sorted(config.to_dict().items()) if k not in MEMBER_FIELDS)


def check_stackable(configs: Sequence[RunConfig]) -> None:
    """Raise NotStackableError unless `configs` can share a stack (one line naming the fields)."""
    if not configs:
        raise NotStackableError("no runs to stack")
    first = configs[0].to_dict()
    differ = sorted(
        {
            name
            for config in configs[1:]
            for name, value in config.to_dict().items()
            if name not in MEMBER_FIELDS and value != first[name]
        }
    )
    if differ:
        raise NotStackableError(
            f"stacked runs may differ only in {', '.join(MEMBER_FIELDS[:2])}; "
            f"these differ: {', '.join(differ)}"
        )
    ids = [c.run_id for c in configs]
    if len(set(ids)) != len(ids):
        raise NotStackableError("the same run appears twice in one stack")


def default_mode(device: torch.device) -> str:
    """ "grouped" on CUDA (fills the device), "looped" on the CPU (grouped kernels are slower)."""
    return "grouped" if device.type == "cuda" else "looped"


def auto_stack(device: str, cells: int) -> int:
    """Stack size when none is given: 1 on the CPU, up to GPU_MAX_STACK on CUDA."""
    from runners.training.run import resolve_device

    try:
        resolved = resolve_device(device)
    except Exception:  # an unusable device is reported by the run itself
        return 1
    return max(1, min(cells, GPU_MAX_STACK)) if resolved.type == "cuda" else 1


def train_stacked(
    configs: Sequence[RunConfig],
    store: str | Path,
    *,
    trackers: Sequence[Tracker | None] | None = None,
    progress: bool | None = None,
    raise_errors: bool = False,
    mode: str | None = None,
    cuda_graph: bool = False,
) -> list[dict[str, Any]]:
    """Train the cells `configs` in `store` as one stack; returns their summaries in order.

    Cells already final are returned as they are; the others are trained (or resumed) together.
    Members resumed at different positions are trained as separate stacks, one after another.

    Args:
        configs: the cells (equal but for estimator and seed, see `check_stackable`).
        store: the run store's root folder.
        trackers: one tracker (or None) per config.
        progress: as for `train_run` (member epoch lines; a step bar on a terminal).
        raise_errors: re-raise after recording failures (tests).
        mode: "grouped" (one grouped model; the default on CUDA) or "looped" (each member's own
            model and optimiser, stepped in turn: bit-identical to unstacked runs; the default
            on the CPU, where grouped kernels measured slower than separate ones).
        cuda_graph: capture the training step in a CUDA graph (CUDA, deterministic estimators
            only; falls back to eager with a warning); also on when the configs say
            `cuda_graph: true`.

    Raises:
        NotStackableError, UserError (bad device, missing data, a cell locked elsewhere).
    """
    from runners.training.data import prepare_data
    from runners.training.run import (
        CellBusyError,
        _final_summary,
        _SafeTracker,
        _StopOnSignal,
        _torch_settings,
        resolve_device,
    )

    configs = list(configs)
    check_stackable(configs)
    cuda_graph = cuda_graph or configs[0].cuda_graph
    if mode not in (None, *MODES):
        raise NotStackableError(f"unknown stack mode {mode!r} (choose from {', '.join(MODES)})")
    trackers = list(trackers) if trackers is not None else [None] * len(configs)
    if len(trackers) != len(configs):
        raise ValueError(f"{len(trackers)} trackers for {len(configs)} runs")
    summaries: list[dict[str, Any] | None] = [
        _final_summary(st.run_dir(store, c.run_id)) for c in configs
    ]
    todo = [i for i, s in enumerate(summaries) if s is None]
    if not todo:
        return summaries  # type: ignore[return-value]
    first = configs[todo[0]]
    device = resolve_device(first.device)
    data = prepare_data(
        first.dataset, first.train_subset, first.test_subset, device, first.data_root
    )
    from runners.training.loop import RunLoop

    with contextlib.ExitStack() as locks:
        for i in todo:
            if locks.enter_context(cell_lock(st.run_dir(store, configs[i].run_id))) is None:
                raise CellBusyError(f"run {configs[i].run_id} is being trained by another process")
        with _torch_settings(first, device), _cudnn_autotune(device), _StopOnSignal() as stop:
            members = {}
            for i in todo:
                final = _final_summary(st.run_dir(store, configs[i].run_id))
                if final is not None:  # finished by another process meanwhile
                    summaries[i] = final
                    continue
                folder = st.run_dir(store, configs[i].run_id)
                members[i] = RunLoop(
                    configs[i], folder, device, data, _SafeTracker(trackers[i]), progress, stop
                )
            mode = mode or default_mode(device)
            trainer = _StackTrainer(list(members.values()), stop, progress, mode, cuda_graph)
            for i, summary in zip(members, trainer.run(raise_errors), strict=True):
                summaries[i] = summary
    return summaries  # type: ignore[return-value]


class _StackTrainer:
    """Drives K `RunLoop`s: their own preparation and bookkeeping, shared training steps."""

    def __init__(
        self, members: list[Any], stop: Any, progress: bool | None, mode: str, graph: bool
    ) -> None:
        self.given = list(members)
        # Same-estimator members adjacent: one estimator call serves them (see StackedAutoencoder).
        self.members = sorted(members, key=lambda m: (m.config.estimator, m.config.seed))
        self.stop = stop
        self.mode = mode
        self.cuda_graph = graph
        self.bar = _step_bar(progress, len(self.members))
        self.outcome: dict[int, tuple[str, str | None]] = {}  # id(member) -> (status, error)

    def run(self, raise_errors: bool) -> list[dict[str, Any]]:
        """Prepare every member, train, finish; summaries in the members' original order."""
        active = []
        threads = torch.get_num_threads()  # after the config's num_threads (_torch_settings)
        for member in self.members:
            member.session_start = time.perf_counter()
            # A resumed member sets its recorded thread count; the next fresh one must record
            # (and train with) the process's count, as it would alone.
            torch.set_num_threads(threads)
            try:
                resumed = member._prepare_folder()
                member.tracker.start(member.config.to_dict(), member.config.run_id, resumed)
                active.append(member)
            except Exception as exc:
                self.outcome[id(member)] = ("failed", f"{type(exc).__name__}: {exc}")
        error: BaseException | None = None
        try:
            # Members train together when they stand at the same position and, on the CPU, use
            # the same thread count (results depend on it: `runners.training.run.keep_thread_count`).
            by_position = defaultdict(list)
            for member in active:
                key = (member.epoch, member.step_in_epoch, member.torch_threads)
                by_position[key].append(member)
            for group in by_position.values():
                if self.stop:  # stopped while an earlier group trained: leave this one as is
                    for member in group:
                        self.outcome[id(member)] = ("interrupted", _interrupted(self.stop))
                    continue
                self._train(group)
        except Exception as exc:
            error = exc
            for member in active:
                self.outcome.setdefault(id(member), ("failed", f"{type(exc).__name__}: {exc}"))
        finally:
            if self.bar is not None:
                self.bar.close()
        summaries: dict[int, dict[str, Any]] = {}
        for member in self.members:
            status, message = self.outcome.get(id(member), ("failed", "not trained"))
            if status == "completed":
                try:
                    member._write_figure()
                except Exception as exc:
                    status, message = "failed", f"{type(exc).__name__}: {exc}"
            summaries[id(member)] = member._finish(status, message)
        if error is not None and raise_errors:
            raise error
        return [summaries[id(m)] for m in self.given]

    # ------------------------------------------------------------------ training
    def _train(self, members: list[Any]) -> None:
        """Train members that stand at the same position to the end (or stop / divergence)."""
        if members[0].device.type == "cpu":
            torch.set_num_threads(members[0].torch_threads)  # _torch_settings restores it
        stack = TrainingStack(members, self.mode, self.cuda_graph)
        config = members[0].config
        while stack.members and stack.members[0].epoch < config.epochs:
            epoch = stack.members[0].epoch + 1
            stack.train()
            orders = torch.stack([m.epoch_order() for m in stack.members]).to(stack.device)
            earlier = {id(m): m.epoch_train_time for m in stack.members}  # earlier sessions
            started = time.perf_counter()
            bounds = stack.members[0].bounds
            first, last = stack.members[0].step_in_epoch, len(bounds) - 1
            for number in range(first, len(bounds)):
                start, stop = bounds[number]
                for member in stack.members:
                    member.model.binarize.set_progress(member.step / member.total_steps)
                losses, norms = stack.train_step(orders[:, start:stop])
                for member, loss, norm in zip(stack.members, losses, norms, strict=True):
                    member.step += 1
                    member.step_in_epoch = number + 1
                    member.pending.append((member.step, epoch, loss, norm))
                if self.bar is not None:
                    self.bar.update(1)
                sync = len(stack.members[0].pending) >= stack.members[0].sync_every
                if sync or number == last or self.stop:
                    diverged = [m for m in stack.members if self._flush_diverged(m)]
                    if diverged:
                        keep = [n for n, m in enumerate(stack.members) if m not in diverged]
                        orders = orders[keep]
                        stack.drop(diverged)
                        if not stack.members:
                            return
                if self.stop:
                    stack.unload()
                    elapsed = _elapsed(stack.device, started)
                    for member in stack.members:
                        member.epoch_train_time += elapsed
                        save_checkpoint(member.folder, member._checkpoint_payload(final=False))
                        member._write_logs()
                        self.outcome[id(member)] = ("interrupted", _interrupted(self.stop))
                    return
            elapsed = _elapsed(stack.device, started)
            stack.unload()
            for member in list(stack.members):
                member.epoch_train_time += elapsed
                problem = member.close_epoch(epoch, started - earlier[id(member)])
                if problem is not None:
                    self.outcome[id(member)] = problem
                    stack.drop([member])
            if self.stop and stack.members and epoch < config.epochs:
                for member in stack.members:
                    self.outcome[id(member)] = ("interrupted", _interrupted(self.stop))
                return
        for member in stack.members:
            self.outcome[id(member)] = ("completed", None)

    def _flush_diverged(self, member: Any) -> bool:
        problem = member._flush()
        if problem:
            member._write_logs()
            self.outcome[id(member)] = ("diverged", problem)
        return bool(problem)


@contextlib.contextmanager
def _cudnn_autotune(device: torch.device) -> Any:
    """cuDNN benchmark mode on CUDA: a stack's shapes are fixed, and grouped convolutions have
    many candidate algorithms (GPU results are not promised bit-reproducible anyway)."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = previous or device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def _elapsed(device: torch.device, started: float) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def _interrupted(stop: Any) -> str:
    return f"interrupted by {stop.signal_name}; resumable"


def _step_bar(progress: bool | None, k: int) -> Any:
    import sys

    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(desc=f"stack of {k}", unit="step", file=sys.stderr, leave=False)


# --------------------------------------------------------------------------- executors


def plan_stacks(tasks: Sequence[Any], stack: int) -> list[list[Any]]:
    """Group `CellTask`s into stacks of at most `stack` cells that may train together.

    Cells are grouped by `stack_key` (and W&B options), in the order they are given; a stack
    size of 1 gives one group per cell.
    """
    groups: dict[tuple[Any, ...], list[list[Any]]] = defaultdict(list)
    order: list[list[Any]] = []
    for task in tasks:
        key = (stack_key(task.config), repr(task.wandb), task.store)
        runs = groups[key]
        if not runs or len(runs[-1]) >= max(1, stack):
            runs.append([])
            order.append(runs[-1])
        runs[-1].append(task)
    return order


def execute_stack(tasks: Sequence[Any], mode: str | None = None) -> list[dict[str, Any]]:
    """The stacked `runners.executors.cells.execute_cell`: lock, skip final cells, train.

    Cells another process holds are left alone (status "running"), as `execute_cell` does.
    Never raises for a failing cell; a KeyboardInterrupt (a signal outside the training loop's
    own handling) finishes every member's tracker as interrupted and is re-raised. `mode`:
    "grouped" or "looped" (None: the device's default, `default_mode`).
    """
    from runners.executors import cells as work

    tasks = list(tasks)
    if len(tasks) == 1:
        return [work.execute_cell(tasks[0])]
    results: dict[int, dict[str, Any]] = {}
    trainable = []
    with contextlib.ExitStack() as locks:
        for n, task in enumerate(tasks):
            config = work._with_worker_resources(task.config)
            folder = st.run_dir(task.store, config.run_id)
            info = st.cell_info(folder)
            if info.state in st.FINAL_STATES:
                results[n] = dict(info.summary or {})
            elif locks.enter_context(cell_lock(folder)) is None:
                results[n] = work._placeholder(config.run_id, "running", "locked elsewhere")
            else:
                trainable.append((n, replace(task, config=config)))
        if trainable:
            trackers = [work._tracker(task, task.config) for _, task in trainable]
            try:
                summaries = train_stacked(
                    [task.config for _, task in trainable],
                    trainable[0][1].store,
                    trackers=trackers,
                    progress=trainable[0][1].progress,
                    mode=mode,
                )
            except KeyboardInterrupt:
                for (_, task), tracker in zip(trainable, trackers, strict=True):
                    folder = st.run_dir(task.store, task.run_id)
                    work._safe_finish(tracker, work._interrupted_summary(task.run_id, folder))
                raise
            except Exception as exc:  # e.g. missing data: every cell of the stack failed
                summaries = [
                    work._record_failure(task.run_id, st.run_dir(task.store, task.run_id), exc, 0.0)
                    for _, task in trainable
                ]
            for (n, _), tracker, summary in zip(trainable, trackers, summaries, strict=True):
                work._safe_finish(tracker, summary)
                results[n] = summary
    return [results[n] for n in range(len(tasks))]


__all__ = [
    "NotStackableError",
    "auto_stack",
    "check_stackable",
    "execute_stack",
    "plan_stacks",
    "stack_key",
    "train_stacked",
]
