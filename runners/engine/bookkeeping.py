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
from runners.store import format as st
from runners.store.checkpoint import load_checkpoint, save_checkpoint
from runners.store.format import atomic_write_json, atomic_write_jsonl
from runners.store.provenance import write_config
from runners.tracking.tracker import SafeTracker, Tracker
from runners.training.data import RunData, batch_bounds, normalize
from runners.training.diagnostics import epoch_diagnostics, probe_indices
from runners.training.evaluate import (
    FIGURE_IMAGES,
    encode_all,
    evaluate,
    figure_digits,
    reconstruct,
    save_reconstruction_png,
)
from runners.training.metrics import code_stats, probe_accuracy, psnr
from runners.training.session import keep_thread_count, runtime_info
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
        data: RunData,
        tracker: Tracker | None,
        progress: bool | None,
    ) -> None:
        self.config, self.folder, self.device, self.data = config, folder, device, data
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
                state, resumed = RunState.from_checkpoint(config, self.device, ckpt), True
            except Exception as exc:
                print(
                    f"warning: cannot resume from {folder / st.CHECKPOINT} ({exc}); "
                    "starting from scratch",
                    file=sys.stderr,
                )
        if state is None:
            for name in (st.METRICS, st.STEPS, st.CHECKPOINT):
                (folder / name).unlink(missing_ok=True)
            state = RunState(config, self.device)
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
        """After an epoch's last step: evaluate, checkpoint, log. False when the test MSE is not
        finite (the run diverged; `outcome` says so).

        `started` is when the epoch began (moved back by its training time in earlier sessions).
        """
        record = self._epoch_record(epoch, started)
        if not math.isfinite(record["test_mse"]):
            self.write_logs()
            self.outcome = ("diverged", f"test MSE became {record['test_mse']} at epoch {epoch}")
            return False
        self.state.end_epoch(epoch, record)
        final = epoch == self.config.epochs
        save_checkpoint(self.folder, self.state.to_checkpoint(final=final))
        self.write_logs()
        self.tracker.log_epoch(epoch, record)
        self.progress.epoch(record, self.config.epochs)
        return True

    def _epoch_record(self, epoch: int, started: float) -> dict[str, Any]:
        """Evaluate on the test set (eval mode; the article never calls eval) and build the record."""
        config, state, data = self.config, self.state, self.data
        model = state.model
        model.eval()
        model.binarize.set_progress(state.step / self.total_steps)
        result = evaluate(model, data.test.images, config.precision)
        stats = code_stats(result.codes, state.prev_codes)
        state.prev_codes = result.codes
        losses = [s["train_loss"] for s in state.steps if s["epoch"] == epoch]
        record: dict[str, Any] = {
            "epoch": epoch,
            "step": state.step,
            "train_mse": math.fsum(losses) / len(losses),
            "test_mse": result.mse,
            "test_psnr": psnr(result.mse),
            "grad_norm_pre": (
                math.fsum(state.epoch_grad_norms) / len(state.epoch_grad_norms)
                if state.epoch_grad_norms
                else None
            ),
            **stats,
        }
        if epoch == config.epochs:
            train_codes = encode_all(model, data.train.images, config.precision)
            record["probe_accuracy"] = probe_accuracy(
                config.probe, train_codes, data.train.labels, result.codes, data.test.labels
            )
        record["epoch_time_s"] = time.perf_counter() - started
        record["images_per_s"] = self.epoch_images / max(state.epoch_train_time, 1e-9)
        if config.diagnostics == "epoch":  # after the timings: they measure the run, not this
            record.update(self._diagnostics())
        model.train()
        return record

    def _diagnostics(self) -> dict[str, Any]:
        """The gradient diagnostics of the run's own estimator on the probe batch (`diag_*`
        keys); they leave the model, its generators and the global RNG as they were."""
        began = time.perf_counter()
        test = self.data.test.images
        probe = normalize(
            test[probe_indices(len(test), self.config.diagnostics_probe).to(test.device)]
        )
        values = epoch_diagnostics(self.state.model, probe)
        values["diag_time_s"] = time.perf_counter() - began
        return values

    # ------------------------------------------------------------------ end
    def write_logs(self) -> None:
        """metrics.jsonl and steps.jsonl as they stand (atomically)."""
        atomic_write_jsonl(self.folder / st.METRICS, self.state.records)
        atomic_write_jsonl(self.folder / st.STEPS, self.state.steps)

    def write_figure(self) -> None:
        """The reconstruction figure of a completed run, also sent to the tracker."""
        model = self.state.model
        model.eval()
        chosen = figure_digits(self.data.test.labels, FIGURE_IMAGES)
        images = self.data.test.images[torch.tensor(chosen, device=self.data.test.images.device)]
        originals, recons = reconstruct(model, images, self.config.precision)
        labels = [int(self.data.test.labels[i]) for i in chosen]
        path = self.folder / st.FIGURE
        save_reconstruction_png(path, originals, recons, labels)
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
