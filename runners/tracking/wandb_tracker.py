"""Weights & Biases tracking: one cell -> one W&B run, with the real `wandb` client.

`WandbOptions` is how a grid reports (picklable, inside each `CellTask`); `make_tracker` builds
a cell's tracker from them. A failing W&B call raises into `runners.tracking.tracker.SafeTracker`,
which switches tracking off for the rest of the run: local results are unaffected (the run
store, not W&B, is the source of truth).

W&B layout of a cell's run: group = spec name, job_type = canonical estimator spec, name like
``sigmoid(beta=4)-s3``, id derived from the cell's run id (so a resumed cell resumes the same
W&B run), config = the resolved RunConfig plus ``run_id``, ``spec`` and ``factors``. Metrics:
``train/loss`` against the custom step ``global_step``; ``epoch/<key>`` for every scalar of the
epoch record and the ``codes/bit_rates`` histogram against ``epoch``; the ``reconstruction``
image; the final summary's scalars in the run summary. Custom step axes (not W&B's own
``_step``) keep a resumed run's history consistent.
"""

from __future__ import annotations

import netrc
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runners.tracking.tracker import NullTracker, Tracker

WANDB_MODES = ("auto", "online", "offline", "disabled")
WANDB_ALIASES = {"off": "disabled"}  # what people type for "no W&B"
DEFAULT_PROJECT = "ste-ablations"
DEFAULT_HOST = "https://api.wandb.ai"
# Online start-up gives up after this long and the tracker falls back to offline.
DEFAULT_INIT_TIMEOUT_S = 60.0
_ONLINE_FAILED: list[str] = []  # run ids whose online start-up failed in this process


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
    `off` is `disabled` (`WANDB_ALIASES`).
    """
    mode = WANDB_ALIASES.get(mode, mode)
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
    options: WandbOptions,
    *,
    job_type: str | None = None,
    name: str | None = None,
    extra_config: dict[str, Any] | None = None,
) -> Tracker:
    """The tracker for one cell: `NullTracker` when `options.mode` is "disabled", else a
    `WandbTracker` (resolve "auto" first with `resolve_mode`).

    Args:
        options: the grid's W&B options.
        job_type, name: the cell's W&B run fields (canonical estimator spec, `display_name`).
        extra_config: added to the resolved config sent to W&B.
    """
    if options.mode == "disabled":
        return NullTracker()
    return WandbTracker(options, job_type=job_type, name=name, extra_config=extra_config)


class WandbTracker(Tracker):
    """One cell -> one W&B run. Failures raise: `runners.tracking.tracker.SafeTracker` handles
    them; only the online start-up has its own fallback (to offline)."""

    def __init__(
        self,
        options: WandbOptions,
        *,
        job_type: str | None = None,
        name: str | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.options = options
        self.mode = options.mode  # becomes "offline" when an online start-up fails
        self.job_type, self.name = job_type, name
        self.extra_config = dict(extra_config or {})
        self.run: Any = None
        self._epoch = 0

    # --- Tracker interface -------------------------------------------------------------------

    def start(self, config: dict[str, Any], run_id: str, resumed: bool) -> None:
        """Start (or resume) the cell's W&B run; falls back to offline if online start-up fails."""
        if self.run is not None:
            return
        wandb = _client()
        opts = self.options
        # The image comes at the end; without epochs logged in this process (a resume right
        # before the end) it still belongs to the last epoch.
        self._epoch = int(config.get("epochs") or 0)
        kwargs: dict[str, Any] = dict(
            project=opts.project,
            entity=opts.entity,
            group=opts.group,
            job_type=self.job_type,
            name=self.name or run_id,
            tags=list(opts.tags) or None,
            config={**config, **self.extra_config, "run_id": run_id},
            id=wandb_run_id(run_id),
            resume="allow",
            dir=opts.directory,
        )
        if opts.directory:
            Path(opts.directory).mkdir(parents=True, exist_ok=True)
        _silence_terminal(wandb)
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

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        """Log the step's scalars as ``train/<key>`` against ``global_step``."""
        data: dict[str, Any] = {
            f"train/{_step_key(k)}": v for k, v in metrics.items() if v is not None
        }
        data["global_step"] = step
        self._log(data)

    def log_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        """Log the epoch record's scalars as ``epoch/<key>`` and bit rates as a histogram."""
        if self.run is None:
            return
        wandb = _client()
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
        self._log(data)

    def log_image(self, key: str, path: str) -> None:
        """Log an image file (e.g. the reconstruction figure) against the current epoch."""
        if self.run is None:
            return
        self._log({key: _client().Image(str(path), caption=Path(path).name), "epoch": self._epoch})

    def finish(self, summary: dict[str, Any]) -> None:
        """Write the final summary's scalars and close the run (a no-op when already closed)."""
        if self.run is None:
            return
        self.run.summary.update({k: v for k, v in summary.items() if _is_scalar(v) or v is None})
        status = summary.get("status")
        if status == "interrupted" and hasattr(self.run, "mark_preempting"):
            self.run.mark_preempting()
        self.run.finish(exit_code=0 if status == "completed" else 1)
        self.run = None

    def abort(self) -> None:
        """Close the W&B run as failed (after another hook raised)."""
        run, self.run = self.run, None
        if run is not None:
            run.finish(exit_code=1)

    # --- internals ---------------------------------------------------------------------------

    def _settings(self) -> Any:
        # silent: the grid prints its own progress; console off: don't wrap stdout/tqdm.
        # reinit="create_new": stacked training keeps K runs open in one process; the default
        # would hand every later wandb.init the first, still-open run.
        return _client().Settings(
            init_timeout=self.options.init_timeout,
            silent=True,
            console="off",
            reinit="create_new",
        )

    def _log(self, data: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log(data)


def _client() -> Any:
    # The wandb client is imported on first use: it is optional and takes about a second.
    import wandb

    return wandb


def _silence_terminal(wandb: Any) -> None:
    # Settings(silent=True) given to wandb.init silences the run, not the process-wide terminal
    # setup through which wandb's login prints ("Loaded credentials for ..."): silence that too.
    setup = wandb.setup(settings=wandb.Settings(silent=True))
    wandb.termsetup(setup.settings, None)


def writable_folder(path: str | os.PathLike[str]) -> bool:
    """Whether W&B can use `path` as its root folder (it falls back to the system's temp folder
    otherwise, silently in silent mode)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.R_OK)


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
