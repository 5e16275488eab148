"""The values of a figures manifest, checked like a spec's before anything is read or drawn.

`manifest_problems(doc)` lists every value of a manifest (see `analysis.render.figures`) that is
mistyped or out of range: the seed and resample count, the formats, the output folder (relative,
never leaving the manifest's folder), the snapshot paths (read from anywhere), each item's name
(a file stem: the characters of a spec name) and study settings. Keys and kinds are checked by
`analysis.render.figures.load_manifest`, which adds these problems to its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

FORMATS = ("pdf", "png", "svg")
MAX_SEED = 2**32
MAX_RESAMPLES = 1_000_000
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")  # as a spec name
_CHOICES = {
    "design": ("auto", "paired", "unpaired"),
    "correction": ("holm", "bh"),
    "direction": (None, "lower", "higher"),
}
_UNIT = ("alpha", "confidence", "power")  # open interval (0, 1)


def manifest_problems(doc: Mapping[str, Any]) -> list[str]:
    """Every mistyped or out-of-range value of a manifest (keys are checked elsewhere)."""
    problems = []
    seed = doc.get("seed", 0)
    if not _int(seed) or not 0 <= seed < MAX_SEED:
        problems.append(f"seed must be an integer in [0, {MAX_SEED}), got {_short(seed)}")
    resamples = doc.get("n_resamples", 9999)
    if not _int(resamples) or not 1 <= resamples <= MAX_RESAMPLES:
        problems.append(
            f"n_resamples must be an integer in [1, {MAX_RESAMPLES}], got {_short(resamples)}"
        )
    problems += _formats_problems("formats", doc.get("formats"))
    problems += _path_problems("output", doc.get("output", "build"))
    snapshots = doc.get("snapshots")
    for name, path in snapshots.items() if isinstance(snapshots, Mapping) else ():
        if not isinstance(path, str) or not path.strip():  # read from anywhere, written never
            problems.append(f"snapshots.{_short(name)} must be a file's path, got {_short(path)}")
    items = doc.get("items")
    for i, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, Mapping):
            problems += _item_problems(f"items[{i}]", item)
    return problems


def _item_problems(where: str, item: Mapping[str, Any]) -> list[str]:
    problems = []
    name = item.get("name")
    if name is not None and (not isinstance(name, str) or not NAME.match(name)):
        problems.append(
            f"{where}: name must be a word of letters, digits, '_', '.', '-' (a file name), "
            f"got {_short(name)}"
        )
    if "metric" in item and not (isinstance(item["metric"], str) and item["metric"]):
        problems.append(f"{where}: metric must be a metric's name, got {_short(item['metric'])}")
    if "options" in item and not isinstance(item["options"], Mapping | None):
        problems.append(f"{where}: options must be a mapping")
    if "optional" in item and not isinstance(item["optional"], bool):
        problems.append(f"{where}: optional must be true or false")
    problems += _formats_problems(f"{where}: formats", item.get("formats"))
    study = item.get("study")
    for key, value in study.items() if isinstance(study, Mapping) else ():
        if key in _CHOICES and value not in _CHOICES[key]:
            problems.append(
                f"{where}: study.{key} must be one of {_CHOICES[key]}, got {_short(value)}"
            )
        elif key in _UNIT and not (_number(value) and 0 < value < 1):
            problems.append(f"{where}: study.{key} must be a number in (0, 1), got {_short(value)}")
        elif key == "target_diff" and value is not None and not (_number(value) and value > 0):
            problems.append(f"{where}: study.target_diff must be a positive number")
    return problems


def _formats_problems(where: str, formats: Any) -> list[str]:
    if formats is None:
        return []
    if not isinstance(formats, list) or not formats or any(f not in FORMATS for f in formats):
        return [f"{where} must be a non-empty list of {', '.join(FORMATS)}, got {_short(formats)}"]
    return []


def _path_problems(where: str, path: Any) -> list[str]:
    if not isinstance(path, str) or not path.strip():
        return [f"{where} must be a relative path, got {_short(path)}"]
    pure = PurePath(path)
    if pure.is_absolute() or ".." in pure.parts:
        return [f"{where} must stay inside the manifest's folder, got {_short(path)}"]
    return []


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
