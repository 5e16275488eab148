"""The code's shape, checked: file sizes, private names, function-level imports, layer contracts.

The layer contracts themselves live in pyproject.toml (`[tool.importlinter]`) and are checked by
import-linter; these tests cover what import-linter does not.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ste_variants", "runners", "analysis")
MAX_LINES = 400


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_project(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in PACKAGES


def test_every_module_is_under_the_size_limit():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _sources()
        if (n := len(p.read_text().splitlines())) >= MAX_LINES
    }
    assert not long, f"files of {MAX_LINES}+ lines (split them by concern): {long}"


def test_no_module_imports_another_modules_private_names():
    found = []
    for path in _sources():
        tree = ast.parse(path.read_text())
        aliases: dict[str, str] = {}  # local name -> project module it names
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _is_project(node.module):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(ROOT)}: {node.module}.{alias.name}")
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if _is_project(alias.name):
                        aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_function_level_imports_of_project_modules_say_why():
    """An import inside a function is allowed where a comment on it (or just above) says why."""
    found = []
    for path in _sources():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                module = None
                if isinstance(inner, ast.ImportFrom):
                    module = inner.module
                elif isinstance(inner, ast.Import):
                    module = inner.names[0].name
                if not _is_project(module):
                    continue
                if not _reason_given(lines, inner.lineno - 1):
                    found.append(
                        f"{path.relative_to(ROOT)}:{inner.lineno}: {lines[inner.lineno - 1].strip()}"
                    )
    assert not found, "function-level imports without a reason:\n" + "\n".join(found)


def _reason_given(lines: list[str], index: int) -> bool:
    """A comment on the import, on another import of its block, or just above the block (the
    cases of a `match` whose every case imports are one block)."""
    start = index
    while start > 0 and (
        lines[start - 1].strip().startswith(("from ", "import ", ")", "case ", "match "))
        or not lines[start - 1].strip()
    ):
        start -= 1
    end = index
    while end + 1 < len(lines) and lines[end + 1].strip().startswith(("from ", "import ")):
        end += 1
    block = lines[start : end + 1]
    return any("#" in line for line in block) or "#" in lines[start - 1]


def test_init_files_hold_no_code():
    """Packages re-export nothing: import things from where they live."""
    heavy = []
    for path in _sources():
        if path.name != "__init__.py":
            continue
        body = ast.parse(path.read_text()).body
        code = [
            n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
        ]
        code = [n for n in code if not (isinstance(n, ast.Assign) and _names(n) <= {"__version__"})]
        if code and _module_name(path) != "ste_variants":
            heavy.append(str(path.relative_to(ROOT)))
    assert not heavy, f"__init__.py files with code: {heavy}"


def _names(node: ast.Assign) -> set[str]:
    return {t.id for t in node.targets if isinstance(t, ast.Name)}


@pytest.mark.skipif(
    shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
    reason="import-linter is not installed (pip install -e '.[dev]')",
)
def test_layer_contracts_hold():
    exe = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
