"""Write the generated parts of docs/estimators.md and the README from the estimator registry.

    python scripts/gen_estimator_docs.py           # rewrite the files
    python scripts/gen_estimator_docs.py --check   # exit 1 if a committed file is out of date

Only the text between the marker comments is generated: in README.md the table between
``<!-- estimators:start -->`` and ``<!-- estimators:end -->``; in docs/estimators.md that table
and the per-estimator reference between ``<!-- estimators-reference:start/end -->``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ste_variants import describe, list_estimators
from ste_variants.catalog import markdown_reference, markdown_table, replace_between

ROOT = Path(__file__).resolve().parents[1]


def generated(root: Path = ROOT) -> dict[Path, str]:
    """Each generated file's path and its full text as the registry gives it."""
    infos = [describe(name) for name in list_estimators()]
    table = markdown_table(infos)
    readme = root / "README.md"
    docs = root / "docs" / "estimators.md"
    docs_text = replace_between(docs.read_text(encoding="utf-8"), "estimators", table)
    docs_text = replace_between(docs_text, "estimators-reference", markdown_reference(infos))
    return {
        readme: replace_between(readme.read_text(encoding="utf-8"), "estimators", table),
        docs: docs_text,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report out-of-date files")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated().items():
        if path.read_text(encoding="utf-8") != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(text, encoding="utf-8")
    if args.check and stale:
        names = ", ".join(str(p) for p in stale)
        print(f"out of date: {names} (run python scripts/gen_estimator_docs.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
