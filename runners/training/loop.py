"""The epoch loop of one run: training, evaluation, checkpoints, logs and the summary.

`RunLoop` is driven by `runners.training.run.train_run`, which has already validated the config, loaded
the data and taken the cell's lock. Everything that must survive an interruption lives in the
checkpoint (`_checkpoint_payload`, CPU thread count included), so a resumed run ends
bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from runners.config import RunConfig
from runners.store import format as st
from runners.store.checkpoint import load_checkpoint, save_checkpoint
from runners.store.format import atomic_write_json, atomic_write_jsonl
from runners.store.provenance import write_config
from runners.training.data import RunData, batch_bounds, epoch_permutation
from runners.training.evaluate import (
    FIGURE_IMAGES,
    autocast_context,
    encode_all,
    evaluate,
    reconstruct,
    save_reconstruction_png,
)
from runners.training.metrics import code_stats, probe_accuracy, psnr
from runners.training.progress import RunProgress
from runners.training.run import (
    build_model,
    build_optimizer,
    derive_seed,
    epoch_batches,
    keep_thread_count,
    runtime_info,
    train_step,
)


class RunLoop:
    """Trains one cell into its folder; `execute()` returns the summary."""

    def __init__(
        self,
        config: RunConfig,
        folder: Path,
        device: torch.device,
        data: RunData,
        tracker: Any,
        progress: bool | None,
        stop: Any,
    ) -> None:
        self.config = config
        self.folder = folder
        self.device = device
        self.data = data
        self.tracker = tracker
        self.stop = stop
        self.bounds = batch_bounds(len(data.train), config.batch_size)
        self.epoch_images = self.bounds[-1][1] - self.bounds[0][0]
        self.total_steps = len(self.bounds) * config.epochs
        # Reading a loss back syncs with the device: every step on the CPU (free), in blocks on a GPU.
        self.sync_every = 1 if device.type == "cpu" else 50
        self.progress = RunProgress(progress, config.run_id, self.total_steps)
        self._fresh_state()

    # ------------------------------------------------------------------ state
    def _fresh_state(self) -> None:
        config = self.config
        self.model = build_model(config, self.device)
        self.optimizer = build_optimizer(config, self.model)
        self.data_gen = torch.Generator().manual_seed(derive_seed(config.seed, "data"))
        # A CPU generator, like the data order's: ste_variants draws the noise on the generator's
        # device and moves it, so one seed gives the same estimator noise on CPU and GPU.
        self.noise_gen = torch.Generator().manual_seed(derive_seed(config.seed, "noise"))
        self.model.binarize.generator = self.noise_gen
        self.epoch = 0  # finished epochs
        self.step = 0  # finished steps (global)
        self.step_in_epoch = 0  # finished steps of the unfinished epoch
        self.data_state = self.data_gen.get_state()  # data generator at the start of that epoch
        self.records: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.epoch_grad_norms: list[float] = []
        self.prev_codes: torch.Tensor | None = None
        self.epoch_train_time = 0.0
        self.train_time = 0.0
        self.wall_before = 0.0  # wall time of earlier sessions of this run
        self.pending: list[tuple[int, int, torch.Tensor, torch.Tensor | None]] = []
        # The thread count the run started with; resuming on the CPU keeps it (`_keep_threads`).
        self.torch_threads = torch.get_num_threads()

    def _checkpoint_payload(self, final: bool) -> dict[str, Any]:
        return {
            "run_id": self.config.run_id,
            "identity": self.config.identity(),
            "final": final,
            "epoch": self.epoch,
            "step": self.step,
            "step_in_epoch": self.step_in_epoch,
            "model": self.model.state_dict(),
            # The finished run keeps the weights only: the optimiser is 2/3 of the bytes.
            "optimizer": None if final else self.optimizer.state_dict(),
            "data_state": self.data_state,
            "noise_state": self.noise_gen.get_state(),
            "records": self.records,
            "steps": self.steps,
            "epoch_grad_norms": self.epoch_grad_norms,
            "prev_codes": self.prev_codes,
            "epoch_train_time": self.epoch_train_time,
            "train_time": self.train_time,
            "wall_time": self._wall_time(),
            "torch_threads": self.torch_threads,
        }

    def _restore(self, ckpt: dict[str, Any]) -> None:
        if ckpt["optimizer"] is None and ckpt["epoch"] < self.config.epochs:
            raise ValueError("checkpoint has no optimiser state but the run is unfinished")
        self.model.load_state_dict(ckpt["model"])
        if ckpt["optimizer"] is not None:
            load_optimizer_state(self.optimizer, ckpt["optimizer"])
        self.noise_gen.set_state(ckpt["noise_state"])
        self.data_state = ckpt["data_state"]
        self.data_gen.set_state(self.data_state)
        self.epoch, self.step, self.step_in_epoch = (
            ckpt["epoch"],
            ckpt["step"],
            ckpt["step_in_epoch"],
        )
        self.records, self.steps = list(ckpt["records"]), list(ckpt["steps"])
        self.epoch_grad_norms = list(ckpt["epoch_grad_norms"])
        self.prev_codes = ckpt["prev_codes"]
        self.epoch_train_time, self.train_time = ckpt["epoch_train_time"], ckpt["train_time"]
        self.wall_before = ckpt["wall_time"]

    def _wall_time(self) -> float:
        return self.wall_before + time.perf_counter() - self.session_start

    # ------------------------------------------------------------------ run
    def execute(self, *, raise_errors: bool = False) -> dict[str, Any]:
        """Train (or resume) to the end; write and return the summary."""
        self.session_start = time.perf_counter()
        try:
            resumed = self._prepare_folder()
            self.tracker.start(self.config.to_dict(), self.config.run_id, resumed)
            status, error = self._train()
            if status == "completed":
                self._write_figure()
        except Exception as exc:
            summary = self._finish("failed", f"{type(exc).__name__}: {exc}")
            if raise_errors:
                raise
            return summary
        return self._finish(status, error)

    def _prepare_folder(self) -> bool:
        """Resume from a usable checkpoint or start clean; returns whether it resumed."""
        folder = self.folder
        (folder / st.SUMMARY).unlink(missing_ok=True)  # not final, or corrupt: superseded now
        (folder / st.FIGURE).unlink(missing_ok=True)
        ckpt = load_checkpoint(folder, self.config.run_id)
        resumed = False
        if ckpt is not None:
            try:
                self._restore(ckpt)
                resumed = True
            except Exception as exc:
                print(
                    f"warning: cannot resume from {folder / st.CHECKPOINT} ({exc}); "
                    "starting from scratch",
                    file=sys.stderr,
                )
                self._fresh_state()
        if not resumed:
            for name in (st.METRICS, st.STEPS, st.CHECKPOINT):
                (folder / name).unlink(missing_ok=True)
        self._keep_threads(ckpt if resumed else None)
        if st.read_config(folder) is None:
            write_config(
                folder,
                self.config.run_id,
                self.config.to_dict(),
                runtime_info(self.config, self.device),
            )
        self._write_logs()
        return resumed

    def _keep_threads(self, ckpt: dict[str, Any] | None) -> None:
        # The count the run started with: its checkpoint's, else config.json's (an older
        # checkpoint, or a restart after a kill before the first checkpoint was written).
        recorded = (ckpt or {}).get("torch_threads")
        if recorded is None:
            runtime = (st.read_config(self.folder) or {}).get("runtime") or {}
            recorded = runtime.get("torch_threads")
        self.torch_threads = keep_thread_count(self.config, self.device, recorded)

    def _train(self) -> tuple[str, str | None]:
        config, model = self.config, self.model
        images = self.data.train.images
        step_fn = self._step_function()
        self.progress.start(self.step, len(self.data.train), len(self.data.test), self.device)
        while self.epoch < config.epochs:
            epoch = self.epoch + 1
            order = self.epoch_order().to(self.device)
            model.train()
            earlier = self.epoch_train_time  # this epoch's training time in earlier sessions
            started = time.perf_counter()
            last = len(self.bounds) - 1
            for number, x in epoch_batches(images, order, self.bounds, self.step_in_epoch):
                model.binarize.set_progress(self.step / self.total_steps)
                loss, grad_norm = step_fn(x)
                self.step += 1
                self.step_in_epoch = number + 1
                self.pending.append((self.step, epoch, loss, grad_norm))
                if len(self.pending) >= self.sync_every or number == last or self.stop:
                    problem = self._flush()
                    if problem:
                        self._write_logs()
                        return "diverged", problem
                if self.stop:
                    self.epoch_train_time += self._elapsed(started)
                    save_checkpoint(self.folder, self._checkpoint_payload(final=False))
                    self._write_logs()
                    return "interrupted", f"interrupted by {self.stop.signal_name}; resumable"
            self.epoch_train_time += self._elapsed(started)
            problem = self.close_epoch(epoch, started - earlier)
            if problem is not None:
                return problem
            if self.stop and epoch < config.epochs:
                return "interrupted", f"interrupted by {self.stop.signal_name}; resumable"
        return "completed", None

    def _step_function(self) -> Any:
        """x -> (loss, pre-threshold gradient norm): `train_step`, or with `config.compile` /
        `config.cuda_graph` the same step through `runners.speed.steps.TrainStep` (torch.compile of
        the forward / CUDA-graph capture of the whole step, each falling back to eager with a
        warning). A graph freezes per-step Python state, so stochastic and annealed estimators
        train eagerly."""
        config, model, optimizer, device = self.config, self.model, self.optimizer, self.device

        def autocast() -> Any:
            return autocast_context(config.precision, device)

        if not config.compile and not config.cuda_graph:
            return lambda x: train_step(model, optimizer, x, autocast)
        from runners.speed.steps import TrainStep, graph_capturable

        graph = config.cuda_graph
        if graph and device.type == "cuda" and not graph_capturable([model.estimator]):
            warnings.warn(
                f"CUDA graphs need a deterministic, non-annealed estimator ({config.estimator} is "
                "not); training eagerly instead",
                RuntimeWarning,
                stacklevel=2,
            )
            graph = False

        step = TrainStep(
            model,
            optimizer,
            model,
            lambda recon, x: F.mse_loss(recon, x).reshape(1),
            lambda: model.pre_grad_norm,
            device=device,
            precision=config.precision,
            compile=config.compile,
            cuda_graph=graph,
        )

        def one_run_step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            losses, norm = step(x)  # TrainStep returns per-member losses: one member here
            return losses[0], norm

        return one_run_step

    def close_epoch(self, epoch: int, started: float) -> tuple[str, str] | None:
        """After an epoch's last step: evaluate, checkpoint, log; (status, error) if it must end.

        `started` is when the epoch began (moved back by its training time in earlier sessions).
        Shared with stacked training (`runners.training.stacked`), whose members end epochs the same way.
        """
        record = self._end_epoch(epoch, started)
        if not math.isfinite(record["test_mse"]):
            self._write_logs()
            return "diverged", f"test MSE became {record['test_mse']} at epoch {epoch}"
        self.records.append(record)
        self.epoch, self.step_in_epoch = epoch, 0
        self.data_state = self.data_gen.get_state()
        self.epoch_grad_norms = []
        self.train_time += self.epoch_train_time
        self.epoch_train_time = 0.0
        final = epoch == self.config.epochs
        save_checkpoint(self.folder, self._checkpoint_payload(final=final))
        self._write_logs()
        self.tracker.log_epoch(epoch, record)
        self.progress.epoch(record, self.config.epochs)
        return None

    def epoch_order(self) -> torch.Tensor:
        """The unfinished epoch's image order (CPU), from the data generator's epoch-start state."""
        self.data_gen.set_state(self.data_state)
        return epoch_permutation(len(self.data.train), self.data_gen)

    def _elapsed(self, started: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - started

    def _flush(self) -> str | None:
        """Read back the pending steps' losses (one sync); returns a problem on a non-finite loss."""
        pending, self.pending = self.pending, []
        losses = torch.stack([p[2] for p in pending]).tolist()
        norms = [p[3] for p in pending]
        norm_values = torch.stack(norms).tolist() if None not in norms else [None] * len(norms)
        for (step, epoch, _, _), loss, norm in zip(pending, losses, norm_values, strict=True):
            self.steps.append({"step": step, "epoch": epoch, "train_loss": loss})
            if norm is not None:
                self.epoch_grad_norms.append(norm)
            metrics = (
                {"train_loss": loss}
                if norm is None
                else {"train_loss": loss, "grad_norm_pre": norm}
            )
            self.tracker.log_step(step, metrics)
            if not math.isfinite(loss):
                return f"train loss became {loss} at step {step} (epoch {epoch})"
        self.progress.steps(len(pending), losses[-1])
        return None

    def _end_epoch(self, epoch: int, started: float) -> dict[str, Any]:
        """Evaluate on the test set (eval mode; the article never calls eval) and build the record.

        `started` is when the epoch began (moved back by its training time in earlier sessions).
        """
        config, model = self.config, self.model
        model.eval()
        model.binarize.set_progress(self.step / self.total_steps)
        result = evaluate(model, self.data.test.images, config.precision)
        stats = code_stats(result.codes, self.prev_codes)
        self.prev_codes = result.codes
        losses = [s["train_loss"] for s in self.steps if s["epoch"] == epoch]
        record: dict[str, Any] = {
            "epoch": epoch,
            "step": self.step,
            "train_mse": math.fsum(losses) / len(losses),
            "test_mse": result.mse,
            "test_psnr": psnr(result.mse),
            "grad_norm_pre": (
                math.fsum(self.epoch_grad_norms) / len(self.epoch_grad_norms)
                if self.epoch_grad_norms
                else None
            ),
            **stats,
        }
        if epoch == config.epochs:
            train_codes = encode_all(model, self.data.train.images, config.precision)
            record["probe_accuracy"] = probe_accuracy(
                config.probe,
                train_codes,
                self.data.train.labels,
                result.codes,
                self.data.test.labels,
            )
        model.train()
        record["epoch_time_s"] = time.perf_counter() - started
        record["images_per_s"] = self.epoch_images / max(self.epoch_train_time, 1e-9)
        return record

    # ------------------------------------------------------------------ outputs
    def _write_logs(self) -> None:
        atomic_write_jsonl(self.folder / st.METRICS, self.records)
        atomic_write_jsonl(self.folder / st.STEPS, self.steps)

    def _write_figure(self) -> None:
        self.model.eval()
        count = min(FIGURE_IMAGES, len(self.data.test))
        originals, recons = reconstruct(
            self.model, self.data.test.images[:count], self.config.precision
        )
        path = self.folder / st.FIGURE
        save_reconstruction_png(path, originals, recons)
        self.tracker.log_image("reconstruction", str(path))

    def _finish(self, status: str, error: str | None) -> dict[str, Any]:
        if status == "failed":
            try:
                self._write_logs()
            except Exception:  # the failure may be the store itself; the summary still tries
                pass
        last = self.records[-1] if self.records and status != "diverged" else {}
        summary = {
            "run_id": self.config.run_id,
            "status": status,
            "epochs_done": self.epoch,
            "test_mse": last.get("test_mse"),
            "test_psnr": last.get("test_psnr"),
            "bit_entropy": last.get("bit_entropy"),
            "dead_bits": last.get("dead_bits"),
            "probe_accuracy": last.get("probe_accuracy"),
            "wall_time_s": self._wall_time(),
            "images_per_s": (
                self.epoch * self.epoch_images / self.train_time if self.train_time > 0 else None
            ),
            "error": error,
            "files": st.file_hashes(self.folder),
        }
        atomic_write_json(self.folder / st.SUMMARY, summary)
        self.tracker.finish(summary)
        self.progress.close(summary)
        return summary


# Settings of how an optimiser computes, not of what: a checkpoint does not decide them.
_IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """`optimizer.load_state_dict(state)`, keeping the optimiser's own implementation settings.

    torch takes every param_group entry from the saved state, so a checkpoint written by a plain
    Adam would switch a fused one back to the plain kernel (and the other way round).
    """
    kept = [{k: g[k] for k in _IMPLEMENTATION_KEYS if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, settings in zip(optimizer.param_groups, kept, strict=True):
        group.update(settings)
