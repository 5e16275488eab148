"""The per-cell lock: one process trains a cell at a time.

An fcntl `flock` on STORE/runs/<run_id>/.lock, taken without waiting. It belongs to the open file,
so it dies with the process (also on kill -9) and a stale lock file blocks no one. Taking it
also removes the temp files that writers killed midway left in the folder (no one else writes
there while it is held). `runners.store.format.lock_held` is the read side.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runners.store.format import LOCK, LOCKS_HELD_HERE, TEMP_SUFFIX

_HELD: dict[str, list[Any]] = {}  # realpath of .lock -> [open file, depth]
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def cell_lock(folder: str | os.PathLike[str]) -> Iterator[Path | None]:
    """Hold the cell's fcntl lock for the `with` block, without waiting.

    Yields the lock file's path when acquired, or None when another process (or another open of
    the file) already holds it: the caller must then leave the cell alone. Re-entrant within one
    process, so an executor may hold the lock while `train_run` takes it again. Creates the cell's
    folder. The lock dies with the process (also on kill -9).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    key = os.path.realpath(path)
    with _HELD_GUARD:
        acquired = _acquire(path, key)
        first = acquired and _HELD[key][1] == 1
    if not acquired:
        yield None
        return
    if first:
        remove_stale_temps(folder)
    try:
        yield path
    finally:
        with _HELD_GUARD:
            entry = _HELD[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _HELD[key]
                LOCKS_HELD_HERE.discard(key)
                fcntl.flock(entry[0].fileno(), fcntl.LOCK_UN)
                entry[0].close()


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold `folder`/.lock for the `with` block, waiting for it, and first remove the temp files
    writers killed midway left there: for folders that several processes write briefly (the
    spec indexes in STORE/specs). Creates the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the file closes
        remove_stale_temps(folder)
        yield


def _acquire(path: Path, key: str) -> bool:
    held = _HELD.get(key)
    if held is not None:
        held[1] += 1
        return True
    handle = open(path, "a+b")  # noqa: SIM115 - stays open while the lock is held
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    _HELD[key] = [handle, 1]
    LOCKS_HELD_HERE.add(key)
    return True


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[str]:
    """Delete the temp files of atomic writes killed midway in `folder`; returns their names.

    Safe only while no other process writes there: for a cell, while holding its lock.
    """
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(entry.name)
    return sorted(removed)
