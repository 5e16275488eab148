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


def condition_label(factors: dict[str, Any], estimator: str) -> str:
    """The condition a cell belongs to, as the analysis labels it: the estimator spec, then
    ``factor=value`` for every other grid factor but the seed (``"hardtanh, lr=0.01"``).

    One W&B config key that groups the runs exactly as the analysis compares them.
    """
    others = [f"{k}={v}" for k, v in factors.items() if k not in ("estimator", "seed")]
    return ", ".join([str(factors.get("estimator", estimator)), *others])


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


def resolve_options(
    choice: str,
    *,
    store: str | os.PathLike[str] | None,
    project: str | None = None,
    entity: str | None = None,
    group: str | None = None,
    tags: tuple[str, ...] = (),
) -> WandbOptions:
    """The W&B options for a `--wandb CHOICE` flag (see `resolve_mode`); says on stderr why a
    mode or a folder was changed.

    W&B's files go to WANDB_DIR when it is set and writable, else to `store` (`STORE/wandb/`);
    with neither, to W&B's own default (the current folder).
    """
    mode, message = resolve_mode(choice)
    env_dir = os.environ.get("WANDB_DIR")
    fallback = str(Path(store).resolve()) if store is not None else None
    directory = None if env_dir else fallback
    if message:
        print(f"W&B: {message}", file=sys.stderr)
    if mode != "disabled" and env_dir and not writable_folder(env_dir):
        directory = fallback
        where = f"{directory}/wandb" if directory else "the current folder"
        print(f"W&B: WANDB_DIR {env_dir} is not writable; W&B files go to {where}", file=sys.stderr)
    return WandbOptions(
        mode=mode,
        project=project or DEFAULT_PROJECT,
        entity=entity,
        group=group,
        tags=tuple(tags),
        directory=directory,
    )


def wandb_root(options: WandbOptions) -> Path:
    """The `wandb/` folder the runs of `options` write into."""
    return Path(options.directory or os.environ.get("WANDB_DIR") or ".") / "wandb"


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
        self.run, self.mode = start_run(opts, self.mode, kwargs)
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
        wandb = wandb_client()
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
        self._log(
            {key: wandb_client().Image(str(path), caption=Path(path).name), "epoch": self._epoch}
        )

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

    def _log(self, data: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log(data)


def start_run(options: WandbOptions, mode: str, kwargs: dict[str, Any]) -> tuple[Any, str]:
    """`wandb.init(mode=mode, **kwargs)` with the package's settings; returns (run, mode).

    An online start-up that fails (no network, a server that does not answer within
    `options.init_timeout`) warns once and starts the run offline instead; once that happened
    in this process, later online starts go offline at once. Other failures raise.
    """
    wandb = wandb_client()
    if options.directory:
        Path(options.directory).mkdir(parents=True, exist_ok=True)
    _silence_terminal(wandb)
    if mode == "online" and _ONLINE_FAILED:
        # One timeout per process is enough: later runs go offline at once.
        mode = "offline"
    try:
        return wandb.init(mode=mode, settings=_settings(options), **kwargs), mode
    except Exception as exc:
        if mode != "online":
            raise
        _warn(
            f"W&B online start-up failed ({_one_line(exc)}); logging offline from now on "
            "(upload later with `wandb sync`)"
        )
        _ONLINE_FAILED.append(str(kwargs.get("id")))
        # The failed attempt still holds the run id in W&B's service process: restart it.
        wandb.teardown()
        return wandb.init(mode="offline", settings=_settings(options), **kwargs), "offline"


def _settings(options: WandbOptions) -> Any:
    # silent: the grid prints its own progress; console off: don't wrap stdout/tqdm.
    # reinit="create_new": stacked training keeps K runs open in one process; the default
    # would hand every later wandb.init the first, still-open run.
    return wandb_client().Settings(
        init_timeout=options.init_timeout,
        silent=True,
        console="off",
        reinit="create_new",
    )


def wandb_client() -> Any:
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
