"""The `ste-ablate` command line.

Each subcommand lives in a module of `runners.commands` that exposes `register(subparsers)`,
which adds its parser (`analyze` adds three: snapshot, analyze, figures) and sets
`func(args) -> int`. Bad input raises `UserError` (or one of the library's validation errors):
printed as one line on stderr, exit code 2.

A command module imports what its command needs at its top (torch, pandas, submitit: seconds),
so the CLI imports one module only: the one of the command named on the command line, found
before any parsing (`command_module`). `ste-ablate --help` lists every command from the
`COMMANDS` table and imports no command module; `ste-ablate COMMAND --help` imports COMMAND's
module. Of those, `status` and `dashboard` load neither torch nor `analysis`; `snapshot`,
`analyze` and `figures` load `analysis` (pandas, scipy, matplotlib) but not torch; the others
load torch.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any, NoReturn

from runners import determinism
from runners.config import KEY_ALIASES, ConfigError
from runners.errors import UserError, close_names
from runners.openmp import prefer_passive_wait

# Every command, in the order `ste-ablate --help` lists them, with the one-line summary shown
# there (tests/test_cli_startup.py checks that each is the help its module registers).
COMMANDS = {
    "estimators": "list the gradient estimators, or describe one",
    "train": "train one run into the run store",
    "run": "run an ablation grid (only its missing or unfinished cells)",
    "status": "table of a grid's cells and their state",
    "snapshot": "freeze a spec's results into one table file (CSV or Parquet)",
    "analyze": "statistics, figures and an HTML report comparing a spec's estimators",
    "figures": "regenerate the paper's figures and tables from committed snapshots",
    "dashboard": "save a W&B view of a spec's runs: grouped by its axes, mean and error band",
    "gradcheck": "compare estimators' gradients on a trained run's weights",
    "reproduce": "re-train cells of a snapshot and check every metric bit for bit",
    "bench": "benchmark the article's training loop against ours",
}


def command_module(name: str) -> ModuleType:
    """The module that registers command `name` (one of `COMMANDS`), imported on first use."""
    # Here, not at the top: a command loads its own dependencies only, and after `main` has
    # pinned the determinism mode (torch chooses its kernels when it loads).
    match name:
        case "estimators":
            from runners.commands import estimators as module
        case "train":
            from runners.commands import train as module
        case "run":
            from runners.commands import run as module
        case "status":
            from runners.commands import status as module
        case "snapshot" | "analyze" | "figures":
            from runners.commands import analyze as module
        case "dashboard":
            from runners.commands import dashboard as module
        case "gradcheck":
            from runners.commands import gradcheck as module
        case "reproduce":
            from runners.commands import reproduce as module
        case "bench":
            from runners.commands import bench as module
        case _:
            raise KeyError(name)
    return module


def command_name(argv: list[str]) -> str | None:
    """The command a command line names: its first argument that is not an option (the
    top-level parser takes no option with a value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints its usage before an error; we print one line and exit 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of `ste-ablate`, with `command`'s full parser (its module imported and
    registered, with the other commands that module adds); every other command is listed by its
    summary only, enough for `ste-ablate --help`. `command` must be one of `COMMANDS` or None."""
    parser = _OneLineParser(
        prog="ste-ablate",
        description=(
            "Straight-through estimator ablations: list estimators, train one run, run ablation "
            "grids (local or SLURM) with W&B tracking, and analyse the results."
        ),
    )
    # Subparsers inherit the parser class, so every subcommand errors in one line too.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    if command is not None:
        command_module(command).register(sub)
    for name, summary in COMMANDS.items():
        if name not in sub.choices:  # not added by the module of `command`
            sub.add_parser(name, help=summary, add_help=False)
    # Listed in the table's order, wherever the module of `command` stands in it.
    sub._choices_actions.sort(key=lambda action: list(COMMANDS).index(action.dest))
    return parser


def user_errors() -> tuple[type[Exception], ...]:
    """Bad input (printed as one line, exit code 2): UserError, ConfigError, and
    EstimatorSpecError once the estimators are loaded (before that none can have been raised;
    importing them here would load torch for every command)."""
    spec = sys.modules.get("ste_variants.spec")
    return (UserError, ConfigError) + ((spec.EstimatorSpecError,) if spec else ())


def _unknown_command(command: str) -> str:
    """argparse's "invalid choice", with the command a typo may have meant."""
    close = close_names(command, COMMANDS)
    if close:
        return f"argument COMMAND: invalid choice: {command!r} (did you mean {' or '.join(close)}?)"
    return f"argument COMMAND: invalid choice: {command!r} (choose from {', '.join(COMMANDS)})"


def _unknown_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace, unknown: list[str]
) -> str:
    """argparse's "unrecognized arguments", with what a mistyped --flag may have meant."""
    message = f"unrecognized arguments: {' '.join(unknown)}"
    flag = next((u.split("=", 1)[0] for u in unknown if u.startswith("--")), None)
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    command = sub.choices.get(getattr(args, "command", None) or "") if sub else None
    if flag is None or command is None:
        return message
    flags = [o for a in command._actions for o in a.option_strings if o.startswith("--")]
    aliases = {
        f"--{spelt}": f"--{new.replace('_', '-')}"
        for old, new in KEY_ALIASES.items()
        for spelt in (old, old.replace("_", "-"))
    }
    close = close_names(flag, flags, aliases)
    return message + (f" (did you mean {' or '.join(close)}?)" if close else "")


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the executors' and the training loop's own handling: a stop like Ctrl-C,
    exit 143."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises `Terminated` while a command runs (the default would end the process
    without a word and without the exit code 143 the executors give)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _tolerant_output() -> None:
    """Characters the terminal's encoding lacks (σ, τ, ∞ under PYTHONIOENCODING=latin-1) are
    printed escaped instead of ending the command with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="backslashreplace")


def _one_line_warning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    """A warning as the user reads it: one line, without the source line that raised it."""
    return f"ste-ablate: warning: {' '.join(str(message).split())}\n"


def main(argv: list[str] | None = None) -> int:
    prefer_passive_wait()  # before any command imports torch
    _tolerant_output()
    warnings.formatwarning = _one_line_warning
    argv = sys.argv[1:] if argv is None else list(argv)
    command = command_name(argv)
    if command is not None and command not in COMMANDS:
        build_parser().error(_unknown_command(command))
    mode = determinism.mode_for_command(argv)
    if mode in determinism.MODES:
        try:  # before any command module loads torch: the kernels are chosen when it loads
            determinism.pin(mode)
        except UserError as exc:
            print(f"ste-ablate: error: {exc}", file=sys.stderr)
            return 2
    parser = build_parser(command)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(_unknown_arguments(parser, args, unknown))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with _sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        print("ste-ablate: interrupted", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:
        if not isinstance(exc, user_errors()):
            raise
        print(f"ste-ablate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
