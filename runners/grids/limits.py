"""The limits a spec is held to before anything is built: its YAML, read safely, and its size.

PyYAML's SafeLoader plus: `1e-3` reads as a float (YAML 1.1 says string), duplicate keys are
errors, and the input is bounded: the file's size, and the size of the document with every alias
expanded (nine levels of nine aliases are 387 million nodes: an "alias bomb"), checked on the
composed node graph before anything is constructed. Recursive aliases and nesting too deep for the
parser are errors too. The cells a spec makes are counted from the lengths of its lists before
one is expanded (a grid of three 100-value axes is a million cells: `TooManyCellsError`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from runners.errors import UserError

MAX_SPEC_BYTES = 1 << 20
MAX_YAML_NODES = 100_000  # with aliases expanded; a real spec has a few hundred
MAX_CELLS = 10_000  # per spec, unless the caller lifts it (`ste-ablate run --max-cells N`)


class SpecYamlError(ValueError):
    """The file is not a YAML document this reader accepts (message: one line)."""


class TooManyCellsError(UserError):
    """The spec expands to more cells than allowed (checked before expanding anything)."""

    def __init__(self, path: str | Path, cells: int, limit: int) -> None:
        self.cells, self.limit = cells, limit
        super().__init__(
            f"{path}: the spec expands to {cells} cells, more than the limit of {limit}; "
            f"allow it with --max-cells {cells}"
        )


def count_cells(grid: Any, include: Any) -> int:
    """The cells the grid and the include entries make before exclusions, from the lengths of
    their lists alone (unchecked input: anything else counts as one value)."""

    def product(entry: Any) -> int:
        if not isinstance(entry, Mapping):
            return 0
        return math.prod(len(v) if isinstance(v, list) else 1 for v in entry.values())

    entries = include if isinstance(include, list) else []
    return product(grid) + sum(product(entry) for entry in entries)


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float and rejects duplicate keys."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)(?:\.\d*)?[eE][-+]?\d+$"),
    list("-+0123456789"),
)


def _construct_mapping(loader: _SpecLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key (a list): construct_mapping reports it
            duplicate = False
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        if not isinstance(key, list | dict):
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_SpecLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(raw: bytes) -> Any:
    """The document in `raw`, read safely and within the limits above.

    Raises:
        SpecYamlError: too large, not UTF-8, not YAML, duplicate keys, an alias bomb, too deep.
    """
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecYamlError(f"the file has {len(raw)} bytes, more than {MAX_SPEC_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecYamlError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        loader = _SpecLoader(text)
    except yaml.YAMLError as exc:  # the reader checks the characters at once
        raise SpecYamlError(f"not valid YAML: {_one_line(exc)}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = expanded_size(node)
        if size > MAX_YAML_NODES:
            raise SpecYamlError(
                f"the document expands to {size} values with its aliases, more than "
                f"{MAX_YAML_NODES}"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise SpecYamlError(f"not valid YAML: {_one_line(exc)}") from None
    except RecursionError:
        raise SpecYamlError("not valid YAML: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise SpecYamlError(f"not valid YAML: {_one_line(exc)}") from None
    finally:
        loader.dispose()


def expanded_size(root: yaml.Node) -> int:
    """Nodes in the document with every alias expanded, counted on the shared node graph (an
    alias is the same node object as its anchor), stopping once past MAX_YAML_NODES.

    Raises:
        SpecYamlError: an alias that refers to the node it sits in.
    """
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = _children(node)
        if children_done:
            open_nodes.discard(key)
            sizes[key] = min(1 + sum(sizes[id(c)] for c in children), MAX_YAML_NODES + 1)
            continue
        if key in open_nodes:
            raise SpecYamlError("a YAML alias refers to the node it sits in")
        open_nodes.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                raise SpecYamlError("a YAML alias refers to the node it sits in")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
