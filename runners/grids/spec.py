"""Ablation specs: load a YAML grid, validate all of it, expand it into cells.

A spec is data, not code::

    name: estimators
    description: The article's recipe, every registered family, ten seeds.
    base: {dataset: mnist, epochs: 5}          # fixed RunConfig fields (diffs against defaults)
    grid:                                      # axes: the product of these lists
      estimator: [identity, hardtanh, "sigmoid(beta=4)"]
      seed: [0, 1, 2]
    exclude: [{estimator: identity, seed: 2}]  # drop product cells matching every key given
    include: [{estimator: tanh, seed: [0, 1]}] # extra cells (lists expand); base applies, grid not
    wandb: {project: ste-ablations, entity: null, tags: [paper]}

Any `RunConfig` field may be a base value, an axis, or a key of an include/exclude entry. The
whole spec is checked before anything runs and every problem is reported at once (`SpecError`).
A cell's id is its resolved config's `run_id`; two entries that resolve to the same config (say
"sigmoid" and "sigmoid(beta=1)") are an error, not two runs.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners.config import ConfigError, RunConfig, unknown_key_message, validate_dict
from runners.errors import UserError, short_repr
from runners.grids.limits import (
    MAX_CELLS,
    SpecYamlError,
    TooManyCellsError,
    count_cells,
    read_yaml,
)

SPEC_KEYS = ("name", "description", "base", "grid", "include", "exclude", "wandb")
WANDB_KEYS = ("project", "entity", "tags")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
MAX_NAME_CHARS = 100  # the name is a file name (STORE/specs/<name>.json) and a W&B group
MAX_ERRORS_SHOWN = 20


class SpecError(UserError):
    """An invalid spec; `errors` lists every problem found (the message shows them all)."""

    def __init__(self, path: str | Path, errors: list[str]) -> None:
        self.path = str(path)
        self.errors = list(errors)
        if len(errors) == 1:
            message = f"{path}: {errors[0]}"
        else:
            lines = "".join(f"\n  - {e}" for e in errors[:MAX_ERRORS_SHOWN])
            more = len(errors) - MAX_ERRORS_SHOWN
            lines += f"\n  - ... and {more} more" if more > 0 else ""
            message = f"{path}: {len(errors)} problems in the spec:{lines}"
        super().__init__(message)


@dataclass(frozen=True)
class WandbSettings:
    """The spec's `wandb:` block (None = not given; the CLI fills in its defaults)."""

    project: str | None = None
    entity: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cell:
    """One run of the grid: its resolved config and the values of the spec's axes."""

    config: RunConfig
    factors: dict[str, Any] = field(hash=False)

    @property
    def run_id(self) -> str:
        """The stable cell id: the resolved config's run id."""
        return self.config.run_id


@dataclass(frozen=True)
class Spec:
    """A loaded, validated and expanded ablation spec."""

    name: str
    description: str
    path: Path
    sha256: str  # of the file's bytes
    base: dict[str, Any]
    axes: list[str]
    cells: list[Cell]
    wandb: WandbSettings

    def index(self) -> dict[str, Any]:
        """The spec index written to STORE/specs/<name>.json (docs/architecture.md, section 3)."""
        return {
            "name": self.name,
            "description": self.description,
            "spec_sha256": self.sha256,
            "axes": list(self.axes),
            "cells": [{"run_id": c.run_id, "factors": dict(c.factors)} for c in self.cells],
        }


def load_spec(path: str | Path, *, max_cells: int = MAX_CELLS) -> Spec:
    """Read, validate and expand a spec file.

    Args:
        path: the YAML file.
        max_cells: the most cells the spec may expand to (counted before expanding).

    Returns:
        The expanded `Spec` (cells in product order, then the include cells).

    Raises:
        SpecError: every problem found (unknown keys with close matches, bad values or estimator
            specs, an empty grid, duplicate cells); nothing has been written.
        TooManyCellsError: more than `max_cells` cells.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read spec {path}: {exc.strerror or exc}") from None
    try:
        data = read_yaml(raw)
    except SpecYamlError as exc:
        raise SpecError(path, [str(exc)]) from None
    errors: list[str] = []
    spec = _build(data, path, hashlib.sha256(raw).hexdigest(), errors, max_cells)
    if errors or spec is None:
        raise SpecError(path, errors or ["empty spec"])
    return spec


def valid_name(name: Any) -> bool:
    """A spec name: at most MAX_NAME_CHARS of letters, digits, '_', '.', '-', starting with a
    letter or digit (a file and folder name that cannot leave its folder)."""
    return isinstance(name, str) and bool(_NAME_RE.match(name)) and len(name) <= MAX_NAME_CHARS


def _build(data: Any, path: Path, sha: str, errors: list[str], max_cells: int) -> Spec | None:
    if not isinstance(data, Mapping):
        errors.append(f"a spec must be a mapping with keys {', '.join(SPEC_KEYS)}")
        return None
    for key in data:
        if key not in SPEC_KEYS:
            errors.append(unknown_key_message(key, SPEC_KEYS, "spec key"))

    name = data.get("name")
    if name is None:
        errors.append("name: required")
    elif not valid_name(name):
        errors.append(
            f"name must be a word of letters, digits, '_', '.', '-' of at most {MAX_NAME_CHARS} "
            f"characters, got {short_repr(name)}"
        )
    description = data.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        errors.append(f"description must be text, got {short_repr(description)}")

    count = count_cells(data.get("grid"), data.get("include"))
    if count > max_cells:  # before a single value is checked or a cell expanded
        raise TooManyCellsError(path, count, max_cells)
    base = _check_base(data.get("base", {}), errors)
    grid = _check_grid(data.get("grid"), base, errors)
    include = _check_entries(data.get("include", []), "include", base, errors)
    exclude = _check_entries(data.get("exclude", []), "exclude", base, errors)
    wandb = _check_wandb(data.get("wandb", {}), errors)
    if errors or base is None or grid is None:
        return None

    cells = _expand(base, grid, include, exclude, errors)
    axes = list(grid)
    for entry in include:
        axes += [k for k in entry if k not in axes]
    if not errors and not cells:
        errors.append("the grid has no cells (every cell excluded)")
    if errors:
        return None
    return Spec(
        name=name,
        description=description,
        path=path,
        sha256=sha,
        base=dict(base),
        axes=axes,
        cells=[Cell(c, {a: getattr(c, a) for a in axes}) for c in cells],
        wandb=wandb,
    )


def _check_base(base: Any, errors: list[str]) -> dict[str, Any] | None:
    if base is None:
        return {}
    if not isinstance(base, Mapping):
        errors.append(f"base must be a mapping of run-config fields, got {short_repr(base)}")
        return None
    found = [f"base: {e}" for e in validate_dict(base)]
    errors += found
    return None if found else dict(base)


def _check_grid(grid: Any, base: dict | None, errors: list[str]) -> dict[str, list] | None:
    if grid is None:
        errors.append("grid: required (a mapping of run-config field -> list of values)")
        return None
    if not isinstance(grid, Mapping):
        errors.append(f"grid must be a mapping of field -> list of values, got {short_repr(grid)}")
        return None
    if not grid:
        errors.append("grid is empty: give at least one axis (e.g. seed: [0, 1, 2])")
        return None
    ok = True
    names = RunConfig.field_names()
    for axis, values in grid.items():
        where = f"grid.{axis}"
        if axis not in names:
            errors.append(unknown_key_message(axis, names, "grid axis"))
            ok = False
            continue
        if base is not None and axis in base:
            errors.append(f"{where}: also set in base (set it in one place)")
            ok = False
        if not isinstance(values, list) or not values:
            errors.append(f"{where} must be a non-empty list of values, got {short_repr(values)}")
            ok = False
            continue
        seen: dict[Any, Any] = {}
        for i, value in enumerate(values):
            canon = _canonical(axis, value, base or {}, f"{where}[{i}]", errors)
            if canon is _BAD:
                ok = False
            elif _key(canon) in seen:
                first = seen[_key(canon)]
                errors.append(
                    f"{where}: {short_repr(value)} and {short_repr(first)} are the same value "
                    f"({short_repr(canon)})"
                )
                ok = False
            else:
                seen[_key(canon)] = value
    return dict(grid) if ok else None


def _check_entries(entries: Any, where: str, base: dict | None, errors: list[str]) -> list[dict]:
    """Check include/exclude: a list of mappings field -> value or list of values."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        errors.append(
            f"{where} must be a list of mappings (field: value), got {short_repr(entries)}"
        )
        return []
    names = RunConfig.field_names()
    out = []
    for i, entry in enumerate(entries):
        at = f"{where}[{i}]"
        if not isinstance(entry, Mapping) or not entry:
            errors.append(
                f"{at} must be a non-empty mapping of field: value, got {short_repr(entry)}"
            )
            continue
        checked: dict[str, list] = {}
        for key, value in entry.items():
            if key not in names:
                errors.append(f"{at}: " + unknown_key_message(key, names, "config key"))
                continue
            values = value if isinstance(value, list) else [value]
            if not values:
                errors.append(f"{at}.{key}: empty list")
                continue
            canon = [_canonical(key, v, base or {}, f"{at}.{key}", errors) for v in values]
            if _BAD not in canon:
                checked[key] = canon
        out.append(checked)
    return out


def _check_wandb(block: Any, errors: list[str]) -> WandbSettings:
    if block is None:
        return WandbSettings()
    if not isinstance(block, Mapping):
        errors.append(
            f"wandb must be a mapping with keys {', '.join(WANDB_KEYS)}, got {short_repr(block)}"
        )
        return WandbSettings()
    for key in block:
        if key not in WANDB_KEYS:
            errors.append("wandb: " + unknown_key_message(key, WANDB_KEYS, "key"))
    project, entity = block.get("project"), block.get("entity")
    for key, value in (("project", project), ("entity", entity)):
        if value is not None and (
            not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_CHARS
        ):
            errors.append(
                f"wandb.{key} must be a non-empty string of at most {MAX_NAME_CHARS} characters "
                f"or null, got {short_repr(value)}"
            )
    tags = block.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) and 0 < len(t) <= 64 for t in tags):
        errors.append(
            f"wandb.tags must be a list of strings of 1-64 characters, got {short_repr(tags)}"
        )
        tags = []
    return WandbSettings(project=project, entity=entity, tags=tuple(tags))


_BAD = object()


def _canonical(key: str, value: Any, base: dict, where: str, errors: list[str]) -> Any:
    """The value as the resolved config holds it (canonical estimator, floats), or _BAD."""
    try:
        return getattr(RunConfig.from_dict({**base, key: value}), key)
    except ConfigError as exc:
        errors.append(f"{where}: {exc}")
        return _BAD


def _key(value: Any) -> tuple[str, Any]:
    # True == 1 in Python; keep the type in the key so they never collapse into one.
    return (type(value).__name__, value)


def _expand(
    base: dict, grid: dict[str, list], include: list[dict], exclude: list[dict], errors: list[str]
) -> list[RunConfig]:
    axes = list(grid)
    used = [False] * len(exclude)
    cells: list[RunConfig] = []
    origin: dict[str, str] = {}

    def add(values: dict[str, Any], where: str) -> None:
        try:
            config = RunConfig.from_dict({**base, **values})
        except ConfigError as exc:
            errors.append(f"{where}: {exc}")
            return
        if config.run_id in origin:
            errors.append(
                f"{where} duplicates {origin[config.run_id]} (both resolve to {config.run_id})"
            )
            return
        origin[config.run_id] = where
        cells.append(config)

    for combo in itertools.product(*(grid[a] for a in axes)):
        values = dict(zip(axes, combo, strict=True))
        try:
            resolved = RunConfig.from_dict({**base, **values})
        except ConfigError as exc:
            errors.append(f"grid cell {values}: {exc}")
            continue
        hit = [i for i, entry in enumerate(exclude) if _matches(resolved, entry)]
        for i in hit:
            used[i] = True
        if not hit:
            add(values, f"grid cell {_show(values)}")
    for i, entry in enumerate(exclude):
        if not used[i]:
            errors.append(f"exclude[{i}] matches no grid cell: {_show(entry)}")
    for i, entry in enumerate(include):
        keys = list(entry)
        for combo in itertools.product(*(entry[k] for k in keys)):
            values = dict(zip(keys, combo, strict=True))
            add(values, f"include[{i}] {_show(values)}")
    return cells


def _matches(config: RunConfig, entry: dict[str, list]) -> bool:
    return all(_key(getattr(config, k)) in {_key(v) for v in vs} for k, vs in entry.items())


def _show(values: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {short_repr(v)}" for k, v in values.items()) + "}"
