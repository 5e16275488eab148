"""Experiment tracking hooks called by the training loop.

`Tracker` is the interface; `NullTracker` does nothing; `WandbTracker` sends one cell to one
W&B run with the real `wandb` client. A tracker must never raise into training: failures are
logged and tracking is switched off for the rest of the run, local results are unaffected (the
run store, not W&B, is the source of truth).

W&B layout of a cell's run: group = spec name, job_type = canonical estimator spec, name like
``sigmoid(beta=4)-s3``, id derived from the cell's run id (so a resumed cell resumes the same
W&B run), config = the resolved RunConfig plus ``run_id``, ``spec`` and ``factors``. Metrics:
``train/loss`` against the custom step ``global_step``; ``epoch/<key>`` for every scalar of the
epoch record and the ``codes/bit_rates`` histogram against ``epoch``; the ``reconstruction``
image; the final summary's scalars in the run summary. Custom step axes (not W&B's own
``_step``) keep a resumed run's history consistent.
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

WANDB_MODES = ("auto", "online", "offline", "disabled")
DEFAULT_PROJECT = "ste-ablations"
DEFAULT_HOST = "https://api.wandb.ai"
# Online start-up gives up after this long and the tracker falls back to offline.
DEFAULT_INIT_TIMEOUT_S = 60.0
_ONLINE_FAILED: list[str] = []  # run ids whose online start-up failed in this process


class Tracker:
    """Interface called by `runners.training.run.train_run`."""

    def start(self, config: dict[str, Any], run_id: str, resumed: bool) -> None:
        """Called once before training (also when resuming from a checkpoint)."""

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        """Called after each training step (global step, 1-based)."""

    def log_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        """Called after each epoch with the record written to metrics.jsonl."""

    def log_image(self, key: str, path: str) -> None:
        """Called with the path of an image written to the run folder."""

    def finish(self, summary: dict[str, Any]) -> None:
        """Called once at the end with the summary written to summary.json."""


class NullTracker(Tracker):
    """Tracks nothing."""


def has_wandb_credentials() -> bool:
    """True when a W&B API key is configured (env var or a netrc entry for the W&B host).

    Only looks; never prompts and never touches the network.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST).hostname
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        entry = netrc.netrc(path).authenticators(host or "")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def resolve_mode(mode: str) -> tuple[str, str | None]:
    """Turn a `--wandb` choice into the mode W&B runs in, plus a message for the user (or None).

    `auto` honours WANDB_MODE when set, else picks online with credentials and offline without.
    `online` without credentials falls back to offline rather than prompting for a login.
    """
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb mode must be one of {', '.join(WANDB_MODES)}, got {mode!r}")
    if mode == "auto":
        env = os.environ.get("WANDB_MODE", "").strip().lower()
        if env in ("offline", "dryrun"):
            return "offline", None
        if env == "disabled":
            return "disabled", None
        if has_wandb_credentials():
            return "online", None
        return (
            "offline",
            "no W&B credentials found (WANDB_API_KEY or `wandb login`): logging offline",
        )
    if mode == "online" and not has_wandb_credentials():
        return "offline", "--wandb online but no W&B credentials found: logging offline instead"
    return mode, None


def wandb_run_id(run_id: str) -> str:
    """The W&B run id of a cell: its run id without the characters W&B reserves."""
    return "".join("-" if c in ":;,#?/'" or c.isspace() else c for c in run_id)[:128]


def display_name(estimator: str, seed: int, factors: dict[str, Any] | None = None) -> str:
    """A readable W&B run name: ``sigmoid(beta=4)-s3`` plus any other grid factors."""
    extra = [f"{k}={v}" for k, v in (factors or {}).items() if k not in ("estimator", "seed")]
    return "-".join([f"{estimator}-s{seed}", *extra])


@dataclass(frozen=True)
class WandbOptions:
    """How a grid's cells report to W&B (picklable; travels inside each `CellTask`).

    Attributes:
        mode: the resolved mode, "online", "offline" or "disabled" (see `resolve_mode`).
        project, entity, tags: the W&B run's fields (project defaults to "ste-ablations").
        group: the spec's name.
        directory: parent of the `wandb/` folder; None = WANDB_DIR or the current folder.
        init_timeout: seconds before an online start-up falls back to offline.
    """

    mode: str = "disabled"
    project: str = DEFAULT_PROJECT
    entity: str | None = None
    group: str | None = None
    tags: tuple[str, ...] = ()
    directory: str | None = None
    init_timeout: float = DEFAULT_INIT_TIMEOUT_S


def make_tracker(
    mode: str,
    *,
    project: str | None = None,
    entity: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    name: str | None = None,
    tags: tuple[str, ...] | list[str] = (),
    directory: str | os.PathLike[str] | None = None,
    extra_config: dict[str, Any] | None = None,
    init_timeout: float = DEFAULT_INIT_TIMEOUT_S,
) -> Tracker:
    """Build the tracker for one cell.

    Args:
        mode: "online", "offline" or "disabled" (resolve "auto" first with `resolve_mode`).
        project, entity, group, job_type, name, tags: the W&B run's fields.
        directory: where W&B writes (it makes a `wandb/` folder inside); None = WANDB_DIR or cwd.
        extra_config: added to the resolved config sent to W&B.
        init_timeout: seconds before an online start-up gives up and falls back to offline.

    Returns:
        `NullTracker` when disabled, else a `WandbTracker`.
    """
    if mode == "disabled":
        return NullTracker()
    return WandbTracker(
        mode=mode,
        project=project or DEFAULT_PROJECT,
        entity=entity,
        group=group,
        job_type=job_type,
        name=name,
        tags=tuple(tags),
        directory=None if directory is None else os.fspath(directory),
        extra_config=dict(extra_config or {}),
        init_timeout=init_timeout,
    )


class WandbTracker(Tracker):
    """One cell → one W&B run. Every call is guarded: a failure disables the tracker."""

    def __init__(
        self,
        *,
        mode: str,
        project: str,
        entity: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        name: str | None = None,
        tags: tuple[str, ...] = (),
        directory: str | None = None,
        extra_config: dict[str, Any] | None = None,
        init_timeout: float = DEFAULT_INIT_TIMEOUT_S,
    ) -> None:
        self.mode = mode
        self.project = project
        self.entity = entity
        self.group = group
        self.job_type = job_type
        self.name = name
        self.tags = tuple(tags)
        self.directory = directory
        self.extra_config = dict(extra_config or {})
        self.init_timeout = init_timeout
        self.run: Any = None
        self.disabled = False
        self.error: str | None = None  # why tracking stopped, if it did
        self._epoch = 0

    # --- Tracker interface -------------------------------------------------------------------

    def start(self, config: dict[str, Any], run_id: str, resumed: bool) -> None:
        """Start (or resume) the cell's W&B run; falls back to offline if online start-up fails."""
        if self.run is not None or self.disabled:
            return
        try:
            self._start(config, run_id)
        except Exception as exc:  # any W&B problem: keep training, say why once
            self._disable("start", exc)

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        """Log the step's scalars as ``train/<key>`` against ``global_step``."""
        data: dict[str, Any] = {
            f"train/{_step_key(k)}": v for k, v in metrics.items() if v is not None
        }
        data["global_step"] = step
        self._log(data, "log_step")

    def log_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        """Log the epoch record's scalars as ``epoch/<key>`` and bit rates as a histogram."""
        if not self._active():
            return
        try:
            import wandb

            self._epoch = epoch
            data: dict[str, Any] = {"epoch": epoch}
            if isinstance(record.get("step"), int):
                data["global_step"] = record["step"]
            for key, value in record.items():
                if key in ("epoch", "step"):
                    continue
                if key == "bit_rates" and isinstance(value, list) and value:
                    data["codes/bit_rates"] = wandb.Histogram(value, num_bins=32)
                elif _is_scalar(value):
                    data[f"epoch/{key}"] = value
        except Exception as exc:
            self._disable("log_epoch", exc)
            return
        self._log(data, "log_epoch")

    def log_image(self, key: str, path: str) -> None:
        """Log an image file (e.g. the reconstruction figure) against the current epoch."""
        if not self._active():
            return
        try:
            import wandb

            data = {key: wandb.Image(str(path), caption=Path(path).name), "epoch": self._epoch}
        except Exception as exc:
            self._disable("log_image", exc)
            return
        self._log(data, "log_image")

    def finish(self, summary: dict[str, Any]) -> None:
        """Write the final summary's scalars and close the run (a no-op when already closed)."""
        if not self._active():
            return
        run, self.run = self.run, None
        try:
            run.summary.update({k: v for k, v in summary.items() if _is_scalar(v) or v is None})
            status = summary.get("status")
            if status == "interrupted" and hasattr(run, "mark_preempting"):
                run.mark_preempting()
            run.finish(exit_code=0 if status == "completed" else 1)
        except Exception as exc:
            self.run = run
            self._disable("finish", exc)

    # --- internals ---------------------------------------------------------------------------

    def _start(self, config: dict[str, Any], run_id: str) -> None:
        import wandb

        full_config = {**config, **self.extra_config, "run_id": run_id}
        # The image comes at the end; without epochs logged in this process (a resume right
        # before the end) it still belongs to the last epoch.
        self._epoch = int(config.get("epochs") or 0)
        kwargs: dict[str, Any] = dict(
            project=self.project,
            entity=self.entity,
            group=self.group,
            job_type=self.job_type,
            name=self.name or run_id,
            tags=list(self.tags) or None,
            config=full_config,
            id=wandb_run_id(run_id),
            resume="allow",
            dir=self.directory,
        )
        if self.directory:
            Path(self.directory).mkdir(parents=True, exist_ok=True)
        if self.mode == "online" and _ONLINE_FAILED:
            # One timeout per process is enough: later cells go offline at once.
            self.mode = "offline"
        try:
            self.run = wandb.init(mode=self.mode, settings=self._settings(), **kwargs)
        except Exception as exc:
            if self.mode != "online":
                raise
            _warn(
                f"W&B online start-up failed ({_one_line(exc)}); logging offline from now on "
                "(upload later with `wandb sync`)"
            )
            _ONLINE_FAILED.append(run_id)
            self.mode = "offline"
            # The failed attempt still holds the run id in W&B's service process: restart it.
            wandb.teardown()
            self.run = wandb.init(mode="offline", settings=self._settings(), **kwargs)
        # Custom step axes: resuming never fights W&B's internal, monotonically growing _step.
        self.run.define_metric("global_step", hidden=True)
        self.run.define_metric("epoch", hidden=True)
        self.run.define_metric("train/*", step_metric="global_step")
        self.run.define_metric("epoch/*", step_metric="epoch")
        self.run.define_metric("codes/*", step_metric="epoch")
        self.run.define_metric("reconstruction", step_metric="epoch")

    def _settings(self) -> Any:
        import wandb

        # silent: the grid prints its own progress; console off: don't wrap stdout/tqdm.
        # reinit="create_new": stacked training keeps K runs open in one process; the default
        # would hand every later wandb.init the first, still-open run.
        return wandb.Settings(
            init_timeout=self.init_timeout, silent=True, console="off", reinit="create_new"
        )

    def _active(self) -> bool:
        return self.run is not None and not self.disabled

    def _log(self, data: dict[str, Any], where: str) -> None:
        if not self._active():
            return
        try:
            self.run.log(data)
        except Exception as exc:
            self._disable(where, exc)

    def _disable(self, where: str, exc: BaseException) -> None:
        self.disabled = True
        self.error = f"{where}: {_one_line(exc)}"
        _warn(f"W&B tracking stopped ({self.error}); training and local results are unaffected")
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # already broken; nothing more to save
                log.debug("W&B finish after failure also failed", exc_info=True)


def _step_key(key: str) -> str:
    return "loss" if key == "train_loss" else key


def _is_scalar(value: Any) -> bool:
    # NaN/inf are kept: a diverged cell's last loss is worth seeing in the dashboard.
    return isinstance(value, bool | int | float | str)


def _warn(message: str) -> None:
    # Printed, not logged: with no logging configured, logging would print it a second time.
    print(f"ste-ablate: warning: {message}", file=sys.stderr, flush=True)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
