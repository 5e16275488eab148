"""A report folder is replaced whole: written beside its place, then renamed into it.

`analyze` writes every file of a report into a fresh hidden folder next to `--out` and renames it
into place at the end, so a kill (or a full disk) never leaves new figures beside an older
report's tables: `--out` holds the old report or the new one. A kill between the two renames
leaves no `--out`, and both complete reports in hidden folders (`.NAME.*.old`, `.NAME.*.tmp`)
that the next `analyze` into the same place removes. Only a folder that holds nothing but a
report's files is ever replaced.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from runners.errors import UserError

REPORT_FILES = frozenset(
    {"summary.csv", "pairwise.csv", "cells.csv", "omnibus.json", "table.tex", "report.html"}
)
FIGURE_SUFFIXES = (".pdf", ".png", ".svg")


def check_replaceable(out: Path) -> None:
    """`out` may receive a report: absent, or a folder of a report's files only.

    Raises:
        UserError: `out` is not a folder, cannot be looked up, or holds other files.
    """
    try:
        os.stat(out)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UserError(f"--out {out} cannot be used: {exc.strerror or exc}") from None
    if not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    for entry in out.iterdir():
        if entry.name in REPORT_FILES and entry.is_file():
            continue
        if entry.name == "figures" and entry.is_dir():
            if all(f.is_file() and f.suffix in FIGURE_SUFFIXES for f in entry.iterdir()):
                continue
        raise UserError(
            f"--out {out} holds {entry.name!r}, which is not a report's file; give a new folder "
            "or one that holds only an earlier report"
        )


def write_report_folder(out: Path, write: Callable[[Path], Path]) -> Path:
    """Call `write(folder)` on a fresh folder beside `out`, then put that folder in `out`'s
    place (an earlier report there is removed); returns `write`'s path, moved under `out`.

    Raises:
        UserError: `out` may not be replaced (`check_replaceable`).
        OSError: the folder could not be written (full disk, no permission).
    """
    check_replaceable(out)
    parent = out.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(parent, out.name)
    fresh = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        os.chmod(fresh, 0o777 & ~_umask())  # mkdtemp's 0700 is not what mkdir gives
        result = write(fresh)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
            os.replace(out, old)  # onto the empty folder mkdtemp made
            os.replace(fresh, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(fresh, out)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return out / result.relative_to(fresh)


def _remove_leftovers(parent: Path, name: str) -> None:
    """Folders a killed `write_report_folder` of `name` left in `parent`."""
    for suffix in (".tmp", ".old"):
        for folder in parent.glob(f".{name}.*{suffix}"):
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
