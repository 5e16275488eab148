"""The run store's file format: the contract between the runners and the analysis.

Layout (docs/architecture.md section 3)::

    STORE/runs/<run_id>/config.json  metrics.jsonl  steps.jsonl  summary.json
                        reconstruction.png  checkpoint.pt  .lock
                        gradcheck.json (optional: `ste-ablate gradcheck`, written after the run)
    STORE/specs/<spec name>.json

File names, cell states, summary.json's keys, atomic writes, readers, and the integrity checks:
a file that does not parse, whose sha256 differs from summary.json's, or a config.json whose
identity hashes to another run id (`run_id_for`) is corrupt. Standard library only (no torch).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import reprlib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners.store.summary_checks import final_files_problem, records_problem, summary_problem

CONFIG = "config.json"
METRICS = "metrics.jsonl"
STEPS = "steps.jsonl"
SUMMARY = "summary.json"
FIGURE = "reconstruction.png"
CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"
GRADCHECK, GRADCHECK_EXACT = "gradcheck.json", "gradcheck_exact.json"  # by gradcheck; unhashed

FINAL_STATES = ("completed", "diverged")  # never retrained
SUMMARY_STATES = ("completed", "failed", "diverged", "interrupted")
CELL_STATES = (*SUMMARY_STATES, "running", "missing")
# The RunConfig fields that define a run: hashed into its run id (runners.config.RunConfig uses
# this tuple). Adding one changes every run id.
IDENTITY_FIELDS = (
    "estimator", "seed", "dataset", "train_subset", "test_subset", "epochs", "batch_size", "lr",
    "beta1", "beta2", "code_channels", "pre_threshold_relu", "precision", "probe",
)  # fmt: skip
TEMP_SUFFIX = ".tmp"  # atomic writes go through ".<name>.<random>.tmp" in the target's folder
SUMMARY_KEYS = (
    "run_id", "status", "epochs_done", "test_mse", "test_psnr", "bit_entropy", "dead_bits",
    "probe_accuracy", "wall_time_s", "images_per_s", "error", "files",
)  # fmt: skip

# Lock files this process holds (runners.store.lock keeps it): probing one from a second
# descriptor could release it on NFS (POSIX record locks), so `lock_held` answers from here.
LOCKS_HELD_HERE: set[str] = set()


# ----------------------------------------------------------------------------- run ids


def slug(text: str, max_len: int = 60) -> str:
    """Lower-case `text` with every run of other characters than [a-z0-9] turned into one '-'."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return out[:max_len].rstrip("-") or "run"


def run_id_for(identity: Mapping[str, Any]) -> str:
    """`{slug(estimator)}-s{seed}-{sha256(canonical json of identity)[:10]}` (`identity_of`)."""
    canonical = json.dumps(dict(identity), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:10]
    return f"{slug(str(identity['estimator']))}-s{identity['seed']}-{digest}"


def identity_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run config's identity: `IDENTITY_FIELDS`, `determinism` unless "machine", and for a task
    other than the article's, `task` and that task's `vae_*` fields (older run ids stay)."""
    extra = ("determinism",) if config.get("determinism", "machine") != "machine" else ()
    if config.get("task", "autoencoder") != "autoencoder":
        extra += tuple(k for k in config if k == "task" or k.startswith("vae_"))
    return {name: config[name] for name in (*IDENTITY_FIELDS, *extra)}


def config_problem(document: Any, run_id: str) -> str | None:
    """Why config.json does not belong to run `run_id` (None when it does): it must name it, and
    its identity must hash to it (changed values, say another lr, describe another run)."""
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        return "config.json has no 'config' object"
    if document.get("run_id") != run_id:
        return f"config.json names run {reprlib.repr(document.get('run_id'))}, not {run_id!r}"
    config = document["config"]
    missing = [name for name in IDENTITY_FIELDS if name not in config]
    if missing:
        return f"config.json lacks {', '.join(missing)}"
    try:
        recomputed = run_id_for(identity_of(config))
    except (TypeError, ValueError):
        return "config.json's identity fields are not plain values"
    if recomputed != run_id:
        return f"config.json's values belong to run {recomputed!r}, not {run_id!r}"
    return None


# ----------------------------------------------------------------------------- paths


def runs_root(store: str | os.PathLike[str]) -> Path:
    """STORE/runs."""
    return Path(store) / "runs"


def run_dir(store: str | os.PathLike[str], run_id: str) -> Path:
    """STORE/runs/<run_id>."""
    return runs_root(store) / run_id


def spec_index_path(store: str | os.PathLike[str], name: str) -> Path:
    """STORE/specs/<name>.json: the cells a spec expects (written by `ste-ablate run`)."""
    return Path(store) / "specs" / f"{name}.json"


# ----------------------------------------------------------------------------- atomic writes


def _current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically (temp file in the same folder + fsync + rename).

    A reader sees the old file or the new one, never a torn one (also after `kill -9`).
    """
    path = Path(path)
    created = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError:
        if created:  # leave no empty folder behind a write that never happened
            with contextlib.suppress(OSError):
                path.parent.rmdir()
        raise
    try:
        # mkstemp creates 0600 files; give the result the mode a plain open() would have.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text atomically (newlines kept as given)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any, *, indent: int | None = 2) -> str:
    """Canonical JSON text: sorted keys (equal objects give equal bytes), trailing newline."""
    return json.dumps(obj, indent=indent, sort_keys=True, allow_nan=True) + "\n"


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Write `dumps_json(obj)` atomically."""
    atomic_write_text(path, dumps_json(obj, indent=indent))


def atomic_write_jsonl(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> None:
    """Write one JSON object per line (keys sorted), atomically."""
    text = "".join(json.dumps(r, sort_keys=True, allow_nan=True) + "\n" for r in records)
    atomic_write_text(path, text)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not supported everywhere (e.g. some network filesystems).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- readers


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file (raises ValueError/OSError on a corrupt or missing file)."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_json_checked(path: str | os.PathLike[str]) -> tuple[Any, str | None]:
    """Read a JSON file that may be absent.

    Returns:
        (content, None); (None, None) when the file does not exist; (None, reason) when it does
        not parse (the file is corrupt).
    """
    path = Path(path)
    if not path.exists():
        return None, None
    try:
        return read_json(path), None
    except (OSError, ValueError) as exc:
        return None, f"{path.name} does not parse ({type(exc).__name__})"


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping blank lines; a torn or non-JSON line raises ValueError."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                records.append(json.loads(line))
    return records


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_config(folder: Path) -> dict[str, Any] | None:
    """config.json's content, or None when missing or unreadable."""
    data, _ = read_json_checked(folder / CONFIG)
    return data if isinstance(data, dict) and "config" in data else None


# ----------------------------------------------------------------------------- summary.json


def file_hashes(folder: Path, names: tuple[str, ...] | None = None) -> dict[str, str]:
    """sha256 of the run's files that exist (all store files except summary.json and .lock)."""
    names = names or (CONFIG, METRICS, STEPS, FIGURE, CHECKPOINT)
    return {name: sha256_file(folder / name) for name in names if (folder / name).is_file()}


def listed_file_problems(folder: Path, files: Mapping[str, str]) -> list[str]:
    """One line per file summary.json lists that is missing or differs from its sha256."""
    if not isinstance(files, Mapping):
        return ["summary.json's files is not an object"]
    problems = []
    for name, digest in sorted(files.items()):
        if name not in (CONFIG, METRICS, STEPS, FIGURE, CHECKPOINT):  # never a path elsewhere
            problems.append(f"summary.json lists {name[:80]!r}, which is not a file of a run")
            continue
        target = folder / name
        if not target.is_file():
            problems.append(f"{name} listed in summary.json is missing")
        elif sha256_file(target) != digest:
            problems.append(f"{name} does not match its sha256 in summary.json")
    return problems


def verify_summary(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Read and check summary.json and the files it lists.

    Returns:
        (summary, None) when valid; (None, reason) when missing or corrupt (the cell must rerun).
    """
    if not (folder / SUMMARY).is_file():
        return None, "no summary.json"
    summary, problem = read_json_checked(folder / SUMMARY)
    if problem is not None:
        return None, problem
    if not isinstance(summary, dict):
        return None, "summary.json is not an object"
    missing = [key for key in SUMMARY_KEYS if key not in summary]
    if missing:
        return None, f"summary.json lacks {', '.join(missing)}"
    if summary["status"] not in SUMMARY_STATES:
        return None, f"summary.json has an unknown status {summary['status']!r}"
    if summary["run_id"] != folder.name:
        return None, f"summary.json belongs to {summary['run_id']!r}, not {folder.name!r}"
    files = summary["files"]
    if not isinstance(files, dict):
        return None, "summary.json's files is not an object"
    problems = listed_file_problems(folder, files)
    problem = problems[0] if problems else final_files_problem(summary)
    problem = problem or content_problem(folder, summary)
    return (None, problem) if problem is not None else (summary, None)


def content_problem(folder: Path, summary: Mapping[str, Any]) -> str | None:
    """What the files summary.json vouches for say against the run's own config, or None.

    A sha256 proves only that a file is the one summarised; this checks that it belongs to this
    run: the summary's values are typed and its files are run files
    (`runners.store.summary_checks`), config.json names the run and hashes to it, metrics.jsonl
    parses, holds the epochs the summary counts, within the config's epochs (every epoch of a
    completed run), and its last record has the summary's metrics.
    """
    problem = summary_problem(summary)  # typed values, listed names
    files = summary.get("files") or {}
    if problem is not None or CONFIG not in files:
        return problem  # None: a failure before config.json was written, nothing to check
    document, problem = read_json_checked(folder / CONFIG)
    problem = problem or config_problem(document, folder.name)
    if problem is not None:
        return problem
    if METRICS in files:
        try:
            records = read_jsonl(folder / METRICS)
        except (OSError, ValueError) as exc:
            return f"{METRICS} does not parse ({type(exc).__name__})"
        return records_problem(records, summary, document["config"]["epochs"])
    return None


# ----------------------------------------------------------------------------- cell state


def lock_held(folder: str | os.PathLike[str]) -> bool:
    """Whether some process (this one included) holds the cell's lock. Creates nothing."""
    path = Path(folder) / LOCK
    if os.path.realpath(path) in LOCKS_HELD_HERE:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        # flock belongs to an open file description: probing from our own cannot release
        # anyone else's lock.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True)
class CellInfo:
    """The derived state of one cell, with its summary when valid and the reason when not."""

    state: str
    summary: dict[str, Any] | None
    problem: str | None


def cell_info(folder: str | os.PathLike[str]) -> CellInfo:
    """Derive a cell's state from its folder.

    `completed`/`diverged`/`failed`/`interrupted` from a valid summary.json; `running` while a
    process holds the lock; `interrupted` when work exists (config or checkpoint) but the summary is
    missing or corrupt (so the next run resumes or redoes it); `missing` otherwise.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return CellInfo("missing", None, None)
    if lock_held(folder):
        return CellInfo("running", None, None)
    summary, problem = verify_summary(folder)
    if summary is not None:
        return CellInfo(summary["status"], summary, None)
    if (folder / CHECKPOINT).is_file() or (folder / CONFIG).is_file():
        return CellInfo("interrupted", None, problem)
    return CellInfo("missing", None, problem)


def cell_state(folder: str | os.PathLike[str]) -> str:
    """One of CELL_STATES (see `cell_info`)."""
    return cell_info(folder).state
