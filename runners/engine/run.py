"""Everything a run writes and reports while the engine trains it: store files, tracker, progress.

`Run` is one run being trained: its `RunState` plus its folder, tracker and progress display. It
prepares the folder (resume from a usable checkpoint or start clean), buffers step losses until
the engine syncs, ends epochs (evaluation, checkpoint, logs, tracker), and writes the summary.
Divergence is found here: a non-finite step loss or test MSE ends the run as "diverged".
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from runners.config import RunConfig
from runners.engine.progress import RunProgress
from runners.gradients.during import epoch_gradient_error
from runners.store import format as st
from runners.store.checkpoint import load_checkpoint, save_checkpoint
from runners.store.format import atomic_write_json, atomic_write_jsonl
from runners.store.provenance import write_config
from runners.tasks.lookup import get_task
from runners.tracking.tracker import SafeTracker, Tracker
from runners.training.data import batch_bounds
from runners.training.process import keep_thread_count, runtime_info
from runners.training.state import RunState

Outcome = tuple[str, str | None]  # (status, error)


class Run:
    """One run being trained into `folder`: its state, store files, tracker and progress.

    Attributes:
        state: the run's `RunState` (set by `prepare`).
        pending: steps not yet read back from the device: (step, epoch, loss, gradient norm).
        outcome: (status, error) once training ended for this run, else None.
    """

    def __init__(
        self,
        config: RunConfig,
        folder: Path,
        device: torch.device,
        data: Any,
        tracker: Tracker | None,
        progress: bool | None,
    ) -> None:
        self.config, self.folder, self.device, self.data = config, folder, device, data
        self.task = get_task(config.task)
        self.tracker = SafeTracker.wrap(tracker)
        self.bounds = batch_bounds(len(data.train), config.batch_size)
        self.epoch_images = self.bounds[-1][1] - self.bounds[0][0]
        self.total_steps = len(self.bounds) * config.epochs
        # Reading a loss back syncs with the device: every step on the CPU (free), in blocks on a GPU.
        self.sync_every = 1 if device.type == "cpu" else 50
        self.progress = RunProgress(progress, config.run_id, self.total_steps)
        self.session_start = time.perf_counter()
        self.state: RunState | None = None
        self.pending: list[tuple[int, int, torch.Tensor, torch.Tensor | None]] = []
        self.outcome: Outcome | None = None

    # ------------------------------------------------------------------ start
    def prepare(self) -> None:
        """Resume from a usable checkpoint or start clean; write config.json; start the tracker.

        Sets `state`, and torch's thread count to the one the run started with (on the CPU).
        """
        folder, config = self.folder, self.config
        (folder / st.SUMMARY).unlink(missing_ok=True)  # not final, or corrupt: superseded now
        (folder / st.FIGURE).unlink(missing_ok=True)
        self._drop_foreign_config()
        ckpt = load_checkpoint(
            folder, config.run_id, epochs=config.epochs, batches=len(self.bounds)
        )
        state, resumed = None, False
        if ckpt is not None:
            try:
                state = RunState.from_checkpoint(config, self.device, ckpt, self.task)
                resumed = True
            except Exception as exc:
                print(
                    f"warning: cannot resume from {folder / st.CHECKPOINT} ({exc}); "
                    "starting from scratch",
                    file=sys.stderr,
                )
        if state is None:
            for name in (st.METRICS, st.STEPS, st.CHECKPOINT):
                (folder / name).unlink(missing_ok=True)
            state = RunState(config, self.device, self.task)
        state.session_start = self.session_start
        # The count the run started with: its checkpoint's, else config.json's (an older
        # checkpoint, or a restart after a kill before the first checkpoint was written).
        recorded = state.torch_threads if resumed else None
        if recorded is None:
            runtime = (st.read_config(folder) or {}).get("runtime") or {}
            recorded = runtime.get("torch_threads")
        state.torch_threads = keep_thread_count(config, self.device, recorded)
        state.train_threads = torch.get_num_threads()
        self.state = state
        if st.read_config(folder) is None:
            write_config(folder, config.run_id, config.to_dict(), runtime_info(config, self.device))
        self.write_logs()
        self.tracker.start(config.to_dict(), config.run_id, resumed)

    def _drop_foreign_config(self) -> None:
        """A config.json that does not parse or describes another run is corrupt: nothing in
        the folder can be trusted to belong to this run, so the run starts from scratch."""
        document, problem = st.read_json_checked(self.folder / st.CONFIG)
        if document is not None:
            problem = st.config_problem(document, self.config.run_id)
        if problem is None:
            return
        print(f"warning: {self.folder.name}: {problem}; training it from scratch", file=sys.stderr)
        for name in (st.CONFIG, st.CHECKPOINT, st.METRICS, st.STEPS):
            (self.folder / name).unlink(missing_ok=True)

    # ------------------------------------------------------------------ steps
    def add_step(self, epoch: int, number: int, loss: torch.Tensor, norm: Any) -> None:
        """Count a finished step (batch `number` of `epoch`); its values stay on the device."""
        state = self.state
        state.step += 1
        state.step_in_epoch = number + 1
        self.pending.append((state.step, epoch, loss, norm))

    def flush(self) -> bool:
        """Read back the pending steps (one sync), log them; False (and logs written) when a
        loss is not finite: the run diverged and `outcome` says where."""
        pending, self.pending = self.pending, []
        losses = torch.stack([p[2] for p in pending]).tolist()
        norms = [p[3] for p in pending]
        norm_values = torch.stack(norms).tolist() if None not in norms else [None] * len(norms)
        state = self.state
        for (step, epoch, _, _), loss, norm in zip(pending, losses, norm_values, strict=True):
            state.steps.append({"step": step, "epoch": epoch, "train_loss": loss})
            if norm is not None:
                state.epoch_grad_norms.append(norm)
            metrics = (
                {"train_loss": loss}
                if norm is None
                else {"train_loss": loss, "grad_norm_pre": norm}
            )
            self.tracker.log_step(step, metrics)
            if not math.isfinite(loss):
                self.write_logs()
                self.outcome = (
                    "diverged",
                    f"train loss became {loss} at step {step} (epoch {epoch})",
                )
                return False
        self.progress.steps(len(pending), losses[-1])
        return True

    def interrupt(self, trained: float, error: str) -> None:
        """Stop inside an epoch after `trained` more seconds of training: checkpoint and logs."""
        self.state.epoch_train_time += trained
        save_checkpoint(self.folder, self.state.to_checkpoint(final=False))
        self.write_logs()
        self.outcome = ("interrupted", error)

    # ------------------------------------------------------------------ epochs
    def close_epoch(self, epoch: int, started: float) -> bool:
        """After an epoch's last step: evaluate, checkpoint, log. False when the task's
        divergence metric (the article: test MSE) is not finite (`outcome` says so).

        `started` is when the epoch began (moved back by its training time in earlier sessions).
        """
        record = self._epoch_record(epoch, started)
        key = self.task.divergence_key
        if not math.isfinite(record[key]):
            self.write_logs()
            self.outcome = ("diverged", f"{key} became {record[key]} at epoch {epoch}")
            return False
        self.state.end_epoch(epoch, record)
        final = epoch == self.config.epochs
        save_checkpoint(self.folder, self.state.to_checkpoint(final=final))
        self.write_logs()
        self.tracker.log_epoch(epoch, record)
        self.progress.epoch(record, self.config.epochs, self.task.describe_record(record))
        return True

    def _epoch_record(self, epoch: int, started: float) -> dict[str, Any]:
        """Evaluate in eval mode (the article never calls eval) and build the record."""
        config, state = self.config, self.state
        model = state.model
        model.eval()
        model.binarize.set_progress(state.step / self.total_steps)
        losses = [s["train_loss"] for s in state.steps if s["epoch"] == epoch]
        record: dict[str, Any] = {
            "epoch": epoch,
            "step": state.step,
            "images_seen": epoch * self.epoch_images,
            self.task.train_key: math.fsum(losses) / len(losses),
        }
        record.update(self.task.evaluate(state, self.data, epoch, epoch == config.epochs))
        record["epoch_time_s"] = time.perf_counter() - started
        record["images_per_s"] = self.epoch_images / max(state.epoch_train_time, 1e-9)
        # After the timings: they measure the run, not the diagnostics.
        began = time.perf_counter()
        diagnostics = self.task.diagnostics(state, self.data)
        if diagnostics:
            record.update(diagnostics)
            record["diag_time_s"] = time.perf_counter() - began
        record.update(epoch_gradient_error(model, self.data.test.images, epoch, config))
        model.train()
        return record

    # ------------------------------------------------------------------ end
    def write_logs(self) -> None:
        """metrics.jsonl and steps.jsonl as they stand (atomically)."""
        atomic_write_jsonl(self.folder / st.METRICS, self.state.records)
        atomic_write_jsonl(self.folder / st.STEPS, self.state.steps)

    def write_figure(self) -> None:
        """The reconstruction figure of a completed run, also sent to the tracker."""
        self.state.model.eval()
        path = self.folder / st.FIGURE
        if self.task.write_figure(self.state, self.data, path):
            self.tracker.log_image("reconstruction", str(path))

    def finish(self, status: str, error: str | None) -> dict[str, Any]:
        """Write summary.json, finish the tracker and the progress display; returns the summary."""
        state = self.state
        if status == "failed" and state is not None:
            try:
                self.write_logs()
            except Exception:  # the failure may be the store itself; the summary still tries
                pass
        records = state.records if state is not None else []
        epochs = state.epoch if state is not None else 0
        train_time = state.train_time if state is not None else 0.0
        last = records[-1] if records and status != "diverged" else {}
        # keep_checkpoint "none": the completed run's weights go once its summary no longer
        # lists them (a kill in between leaves an unlisted checkpoint, never a corrupt cell).
        drop_weights = status == "completed" and self.config.keep_checkpoint == "none"
        files = st.file_hashes(self.folder)
        if drop_weights:
            files.pop(st.CHECKPOINT, None)
        summary = {
            "run_id": self.config.run_id,
            "status": status,
            "epochs_done": epochs,
            "test_mse": last.get("test_mse"),
            "test_psnr": last.get("test_psnr"),
            "bit_entropy": last.get("bit_entropy"),
            "dead_bits": last.get("dead_bits"),
            # The probe runs after the last epoch: only a completed run has its accuracy.
            "probe_accuracy": last.get("probe_accuracy") if status == "completed" else None,
            # The task's own summary metrics (the article's are the ones above).
            **{key: last.get(key) for key in self.task.summary_keys if key not in st.SUMMARY_KEYS},
            "wall_time_s": (
                state.wall_time() if state is not None else time.perf_counter() - self.session_start
            ),
            "images_per_s": epochs * self.epoch_images / train_time if train_time > 0 else None,
            "error": error,
            "spans_machines": state.spans_machines if state is not None else False,
            "files": files,
        }
        atomic_write_json(self.folder / st.SUMMARY, summary)
        if drop_weights:
            (self.folder / st.CHECKPOINT).unlink(missing_ok=True)
        self.tracker.finish(summary)
        self.progress.close(summary)
        return summary
