"""The state of one run: everything a checkpoint holds, as one object that saves and loads itself.

A resumed run ends bit-identical to an uninterrupted one because the checkpoint holds the model,
the optimiser, both generators, the position inside the epoch, the records so far and the CPU
thread count the run started with.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from runners.config import RunConfig
from runners.determinism import dispatch_differs, hardware
from runners.training.data import epoch_permutation
from runners.training.recipe import build_model, build_optimizer, derive_seed

# Settings of how an optimiser computes, not of what: a checkpoint does not decide them.
_IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")


class RunState:
    """A run's model, optimiser, generators, position, records, thread count and timings.

    `RunState(config, device, task)` is the fresh state (weights from the "init" stream);
    `RunState.from_checkpoint(...)` the state a checkpoint saved (`to_checkpoint`). `task` (a
    `runners.tasks.base.Task`) builds the model and optimiser; None: the article's recipe.
    `fast=False`: the plain modules and torch's default optimiser (the benchmark's reference row;
    `runners.training.recipe.build_model`).
    `extra` holds the task's own state (e.g. running moments of a gradient), checkpointed.
    """

    def __init__(
        self, config: RunConfig, device: torch.device, task: Any = None, *, fast: bool = True
    ) -> None:
        self.config, self.device, self.task = config, device, task
        if task is None:
            self.model = build_model(config, device, fast=fast)
            self.optimizer = build_optimizer(config, self.model, fast=fast)
            self.extra: dict[str, Any] = {}
        else:
            self.model = task.build_model(config, device, fast=fast)
            self.optimizer = task.build_optimizer(config, self.model, fast=fast)
            self.extra = task.init_extra(self.model)
        self.data_gen = torch.Generator().manual_seed(derive_seed(config.seed, "data"))
        # A CPU generator, like the data order's: ste_variants draws the noise on the generator's
        # device and moves it, so one seed gives the same estimator noise on CPU and GPU.
        self.noise_gen = torch.Generator().manual_seed(derive_seed(config.seed, "noise"))
        self.model.binarize.generator = self.noise_gen
        self.epoch = 0  # finished epochs
        self.step = 0  # finished steps (global)
        self.step_in_epoch = 0  # finished steps of the unfinished epoch
        self.data_state = self.data_gen.get_state()  # data generator at the start of that epoch
        self.records: list[dict[str, Any]] = []  # one per finished epoch (metrics.jsonl)
        self.steps: list[dict[str, Any]] = []  # one per finished step (steps.jsonl)
        self.epoch_grad_norms: list[float] = []
        self.prev_codes: torch.Tensor | None = None  # test codes of the last epoch
        self.epoch_train_time = 0.0  # training seconds of the unfinished epoch
        self.train_time = 0.0  # training seconds of the finished epochs
        self.wall_before = 0.0  # wall time of earlier sessions of this run
        self.session_start = time.perf_counter()
        # The thread count the run started with (recorded; a resumed CPU run keeps it: see
        # `runners.training.process.keep_thread_count`) and the one it trains with now.
        self.torch_threads: Any = torch.get_num_threads()
        self.train_threads = self.torch_threads
        # The hardware that shapes the numbers; a run resumed on other kernels spans machines.
        self.hardware = hardware(device)
        self.spans_machines = False

    @classmethod
    def from_checkpoint(
        cls, config: RunConfig, device: torch.device, ckpt: dict[str, Any], task: Any = None
    ) -> RunState:
        """The state saved in `ckpt` (a `to_checkpoint` payload) for `config` on `device`.

        Raises:
            ValueError, KeyError, RuntimeError: the checkpoint does not fit the config.
        """
        if ckpt["optimizer"] is None and ckpt["epoch"] < config.epochs:
            raise ValueError("checkpoint has no optimiser state but the run is unfinished")
        state = cls(config, device, task)
        saved = ckpt.get("extra") or {}
        if set(saved) != set(state.extra):
            raise ValueError(
                f"checkpoint holds task state {sorted(saved)}, not {sorted(state.extra)}"
            )
        for key, value in saved.items():
            state.extra[key].copy_(value)
        state.model.load_state_dict(ckpt["model"])
        if ckpt["optimizer"] is not None:
            load_optimizer_state(state.optimizer, ckpt["optimizer"])
        state.noise_gen.set_state(ckpt["noise_state"])
        state.data_state = ckpt["data_state"]
        state.data_gen.set_state(state.data_state)
        state.epoch, state.step = ckpt["epoch"], ckpt["step"]
        state.step_in_epoch = ckpt["step_in_epoch"]
        state.records, state.steps = list(ckpt["records"]), list(ckpt["steps"])
        state.epoch_grad_norms = list(ckpt["epoch_grad_norms"])
        state.prev_codes = ckpt["prev_codes"]
        state.epoch_train_time, state.train_time = ckpt["epoch_train_time"], ckpt["train_time"]
        state.wall_before = ckpt["wall_time"]
        state.torch_threads = ckpt.get("torch_threads")  # absent in older checkpoints
        before = ckpt.get("hardware")  # absent in older checkpoints
        state.spans_machines = bool(ckpt.get("spans_machines"))
        if before is not None and dispatch_differs(before, state.hardware):
            state.spans_machines = True
            print(
                f"warning: run {config.run_id} started on {before.get('cpu_capability')} kernels "
                f"({before.get('cpu_model')}) and resumes on {state.hardware['cpu_capability']} "
                f"({state.hardware['cpu_model']}): it will not be bit-identical to an "
                "uninterrupted run",
                file=sys.stderr,
            )
        return state

    def to_checkpoint(self, final: bool) -> dict[str, Any]:
        """The checkpoint payload; a finished run (`final`) keeps the weights only."""
        return {
            "run_id": self.config.run_id,
            "identity": self.config.identity(),
            "final": final,
            "epoch": self.epoch,
            "step": self.step,
            "step_in_epoch": self.step_in_epoch,
            "model": self.model.state_dict(),
            # The optimiser is 2/3 of the bytes and a finished run no longer needs it.
            "optimizer": None if final else self.optimizer.state_dict(),
            "data_state": self.data_state,
            "noise_state": self.noise_gen.get_state(),
            "records": self.records,
            "steps": self.steps,
            "epoch_grad_norms": self.epoch_grad_norms,
            "prev_codes": self.prev_codes,
            "epoch_train_time": self.epoch_train_time,
            "train_time": self.train_time,
            "wall_time": self.wall_time(),
            "torch_threads": self.torch_threads,
            "hardware": self.hardware,
            "spans_machines": self.spans_machines,
            # The task's own state; absent when it has none (the article's checkpoints).
            **({"extra": self.extra} if self.extra else {}),
        }

    def epoch_order(self, images: int) -> torch.Tensor:
        """The unfinished epoch's order of `images` training images (CPU), from the data
        generator's state at the start of that epoch."""
        self.data_gen.set_state(self.data_state)
        return epoch_permutation(images, self.data_gen)

    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        """Move to the start of the next epoch after `epoch` ended with `record`."""
        self.records.append(record)
        self.epoch, self.step_in_epoch = epoch, 0
        self.data_state = self.data_gen.get_state()
        self.epoch_grad_norms = []
        self.train_time += self.epoch_train_time
        self.epoch_train_time = 0.0

    def wall_time(self) -> float:
        """Wall-clock seconds of this run over all its sessions so far."""
        return self.wall_before + time.perf_counter() - self.session_start


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """`optimizer.load_state_dict(state)`, keeping the optimiser's own implementation settings.

    torch takes every param_group entry from the saved state, so a checkpoint written by a plain
    Adam would switch a fused one back to the plain kernel (and the other way round).
    """
    kept = [{k: g[k] for k in _IMPLEMENTATION_KEYS if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, settings in zip(optimizer.param_groups, kept, strict=True):
        group.update(settings)
