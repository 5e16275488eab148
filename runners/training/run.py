"""One training run of the article's binary autoencoder, written to the run store.

`train_run(config, store)` trains (or resumes, or just returns) the cell `config.run_id`:

- Seeds: the run's seed gives three independent streams (`derive_seed`): "init" (weights),
  "data" (batch order, a CPU generator) and "noise" (the estimator's generator). Runs with the
  same seed and different estimators start from the same weights and see the same batches.
- Each epoch: train with Adam on MSE (the article's recipe), evaluate on the test set in eval
  mode, write checkpoint.pt, metrics.jsonl and steps.jsonl (atomically). The last epoch adds the
  digit probe; then the reconstruction figure and summary.json.
- Resume: a valid checkpoint without a final summary continues where it stopped, to the bit
  (the checkpoint holds model, optimiser, both generators and the position inside the epoch).
  On the CPU it also keeps the torch thread count the run started with (`keep_thread_count`)
  unless `config.num_threads` says otherwise: results depend on it.
- A non-finite loss ends the run as "diverged"; SIGINT/SIGTERM finishes the current step, writes a
  checkpoint and ends it as "interrupted"; any other exception ends it as "failed".
"""

from __future__ import annotations

import contextlib
import hashlib
import platform
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from runners.config import RunConfig
from runners.errors import UserError
from runners.store.lock import cell_lock
from runners.tracking.wandb_tracker import NullTracker, Tracker

STREAMS = ("init", "data", "noise")
INTERRUPT_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


class CellBusyError(UserError):
    """Another process is training this cell (its lock is held)."""


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one random stream of a run, from sha256("<seed>:<stream>")."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def resolve_device(spec: str) -> torch.device:
    """ "auto" -> cuda when available else cpu; "cuda"/"cuda:N" checked against the machine.

    Raises:
        UserError: CUDA asked for but absent, or the index is out of range.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {spec!r} asked for, but CUDA is not available here")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(
                f"device {spec!r} asked for, but this machine has {count} CUDA device(s)"
            )
    return device


def build_model(config: RunConfig, device: torch.device, *, fast: bool = True) -> torch.nn.Module:
    """The config's autoencoder with weights from the "init" stream (built on the CPU, moved).

    The model is made ready for fast training by `runners.speed.layers.prepare_model`: on the CPU the
    point layers run as matrix products (same weights, same formula, other rounding) and glibc
    malloc keeps freed memory; on CUDA channels_last. The weights drawn are the article's.
    `fast=False` gives the plain modules (the benchmark's reference row).
    """
    from runners.speed.layers import prepare_model
    from runners.training.model import BinaryAutoencoder

    # fork_rng: the global RNG is seeded for the construction only and restored afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "init"))
        model = BinaryAutoencoder(
            estimator=config.estimator,
            code_channels=config.code_channels,
            pre_threshold_relu=config.pre_threshold_relu,
        )
    model = model.to(device)
    return prepare_model(model, device) if fast else model


def build_optimizer(
    config: RunConfig, model: torch.nn.Module, *, fast: bool = True
) -> torch.optim.Optimizer:
    """Adam with the config's lr and betas (the article: 1e-3, (0.5, 0.999)).

    The fused kernel where torch has one for the device (`runners.speed.layers.adam`): the article's
    formula in one pass over the parameters. `fast=False`: torch's default (foreach) Adam.
    """
    from runners.speed.layers import adam

    betas = (config.beta1, config.beta2)
    if not fast:
        return torch.optim.Adam(model.parameters(), lr=config.lr, betas=betas)
    device = next(model.parameters()).device
    capturable = config.cuda_graph and device.type == "cuda"  # a graph replays Adam's step too
    return adam(model.parameters(), config.lr, betas, device, capturable=capturable)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimiser step on batch `x`; returns (loss, pre-threshold gradient norm), detached.

    Nothing here syncs with the device: both results stay tensors.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast():
        recon = model(x)
    loss = F.mse_loss(recon.float(), x)
    loss.backward()
    optimizer.step()
    return loss.detach(), getattr(model, "pre_grad_norm", None)


def epoch_batches(
    images: torch.Tensor, order: torch.Tensor, bounds: list[tuple[int, int]], first: int = 0
) -> Iterator[tuple[int, torch.Tensor]]:
    """(batch number, normalised batch) for batches `first`.. of an epoch in `order` (on device)."""
    from runners.training.data import get_batch

    for number in range(first, len(bounds)):
        start, stop = bounds[number]
        yield number, get_batch(images, order[start:stop])


def train_run(
    config: RunConfig,
    store: str | Path,
    *,
    tracker: Tracker | None = None,
    progress: bool | None = None,
    raise_errors: bool = False,
) -> dict[str, Any]:
    """Train the cell `config.run_id` in `store` (or resume it, or return its final summary).

    Args:
        config: the run.
        store: the run store's root folder.
        tracker: experiment tracker (`runners.tracking.wandb_tracker.Tracker`); its errors never stop training.
        progress: None = a tqdm bar on a terminal, log lines otherwise; True = always show;
            False = silent.
        raise_errors: re-raise an exception after recording the run as "failed" (default: return
            the "failed" summary, as executors need).

    `config.stack` is a setting of the executors (`runners.training.stacked`); this function trains one
    run. `config.compile` runs its forward through torch.compile and `config.cuda_graph` captures
    the whole step in a CUDA graph (each with an eager fallback and a warning).

    Returns:
        The summary dict written to summary.json.

    Raises:
        UserError: bad device, missing data, or the cell is locked by another process; these are
            raised before anything is written.
    """
    from runners.store import format as st
    from runners.training.data import prepare_data

    folder = st.run_dir(store, config.run_id)
    final = _final_summary(folder)
    if final is not None:
        return final
    device = resolve_device(config.device)
    data = prepare_data(
        config.dataset, config.train_subset, config.test_subset, device, config.data_root
    )
    with cell_lock(folder) as lock:
        if lock is None:
            raise CellBusyError(f"run {config.run_id} is being trained by another process")
        final = _final_summary(folder)  # another process may have finished it meanwhile
        if final is not None:
            return final
        from runners.training.loop import RunLoop

        with _torch_settings(config, device), _StopOnSignal() as stop:
            loop = RunLoop(config, folder, device, data, _SafeTracker(tracker), progress, stop)
            return loop.execute(raise_errors=raise_errors)


def exit_code(summary: dict[str, Any]) -> int:
    """The CLI's exit code for a run's summary: 0 completed, 130/143 interrupted, 1 otherwise."""
    status = summary.get("status")
    if status == "completed":
        return 0
    if status == "interrupted":
        error = summary.get("error") or ""
        return next((code for name, code in INTERRUPT_EXIT_CODES.items() if name in error), 130)
    return 1


def runtime_info(config: RunConfig, device: torch.device) -> dict[str, Any]:
    """Where the run executes (recorded in config.json; not part of the run's identity)."""
    from runners.training.data import resolve_data_root

    info: dict[str, Any] = {
        "data_root": str(resolve_data_root(config.data_root))
        if config.dataset == "mnist"
        else None,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        # build_model/build_optimizer: runners.speed.layers point layers (CPU) and fused Adam.
        "fast_path": True,
        "platform": platform.platform(),
        "executable": sys.executable,
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def _final_summary(folder: Path) -> dict[str, Any] | None:
    from runners.store import format as st

    if not folder.is_dir():
        return None
    summary, _ = st.verify_summary(folder)
    if summary is not None and summary["status"] in st.FINAL_STATES:
        return summary
    return None


@contextlib.contextmanager
def _torch_settings(config: RunConfig, device: torch.device) -> Iterator[None]:
    """Thread count and (on CPU) deterministic algorithms for the run; restored afterwards.

    On the CPU the flag costs nothing measurable (its import of torch._inductor is shared with
    torch.optim's); on CUDA it would need CUBLAS_WORKSPACE_CONFIG and slower kernels, so GPU
    results are not promised bit-reproducible.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.set_num_threads(threads)
        if torch.are_deterministic_algorithms_enabled() != deterministic:
            torch.use_deterministic_algorithms(deterministic)


def keep_thread_count(config: RunConfig, device: torch.device, recorded: Any) -> int:
    """Resume a run with the torch thread count it started with (CPU results depend on it).

    On the CPU, when `config.num_threads` is unset, sets torch's count to `recorded`; an explicit,
    different `num_threads` wins, with a warning that the run will not be bit-identical. Called
    inside `_torch_settings`, which restores torch's count afterwards.

    Returns:
        The count to record for the run: `recorded` when known, else the current count.
    """
    if not isinstance(recorded, int) or recorded < 1:
        return torch.get_num_threads()  # unknown: the run goes on with (and records) this one
    if device.type != "cpu":
        return recorded  # GPU results are not promised bit-reproducible
    if config.num_threads is None:
        torch.set_num_threads(recorded)
    elif config.num_threads != recorded:
        print(
            f"warning: run {config.run_id} started with {recorded} torch thread(s) and goes on "
            f"with num_threads={config.num_threads}: it will not be bit-identical to an "
            "uninterrupted run",
            file=sys.stderr,
        )
    return recorded


class _StopOnSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (main thread only).

    A second signal while the flag is set raises KeyboardInterrupt: the user insists.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name


class _SafeTracker:
    """Forwards to a tracker; the first exception switches tracking off with a warning."""

    def __init__(self, tracker: Tracker | None) -> None:
        self._tracker = tracker or NullTracker()

    def __getattr__(self, name: str) -> Callable[..., None]:
        def call(*args: Any, **kwargs: Any) -> None:
            tracker = self._tracker
            if tracker is None:
                return
            try:
                getattr(tracker, name)(*args, **kwargs)
            except Exception as exc:
                print(
                    f"warning: tracker {name} failed ({type(exc).__name__}: {exc}); "
                    "tracking is off for the rest of this run, local results are unaffected",
                    file=sys.stderr,
                )
                self._tracker = None

        return call
