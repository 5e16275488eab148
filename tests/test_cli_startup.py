"""`ste-ablate --help` and every subcommand's help start without torch; the CLI sets a passive
OpenMP wait policy before anything loads torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from runners.cli import build_parser

# In a fresh interpreter: print every command's help, then report what got imported.
_PROBE = """
import json, os, sys
from runners.cli import main
loaded = {}
for command in json.loads(sys.argv[1]):
    try:
        main([*command, "--help"])
    except SystemExit:
        pass
    loaded[" ".join(command)] = "torch" in sys.modules
print(json.dumps({"loaded": loaded, "omp": os.environ.get("OMP_WAIT_POLICY")}), file=sys.stderr)
"""


def _commands() -> list[list[str]]:
    """Every command and nested subcommand of the parser, e.g. ["estimators", "describe"]."""
    found: list[list[str]] = [[]]

    def walk(parser, prefix: list[str]) -> None:
        for action in parser._actions:
            choices = getattr(action, "choices", None)
            if isinstance(choices, dict):  # the subcommands
                for name, sub in choices.items():
                    found.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return found


def _probe(commands: list[list[str]], env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(commands)],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    return json.loads(done.stderr.strip().splitlines()[-1])


def test_help_of_every_command_does_not_import_torch() -> None:
    commands = _commands()
    assert ["run"] in commands and ["estimators", "describe"] in commands and len(commands) >= 9
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    result = _probe(commands, env)
    assert result["loaded"] == {" ".join(c): False for c in commands}
    assert result["omp"] == "PASSIVE"


def test_an_explicit_wait_policy_is_kept() -> None:
    result = _probe([[]], {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"})
    assert result["omp"] == "ACTIVE"
