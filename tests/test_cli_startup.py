"""The CLI imports one command module: none for `ste-ablate --help`, the named command's for the
rest; the commands its docstring calls torch-free start without torch; the top-level table's
summaries are the help the modules register; the CLI sets a passive OpenMP wait policy before
anything loads torch."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from runners.cli import COMMANDS, build_parser, main

# Commands whose `--help` (and parser) must not load torch (see runners/cli.py's docstring).
TORCH_FREE = ("status", "dashboard", "snapshot", "analyze", "figures")

# In a fresh interpreter: print each command's help in turn, then report what got imported.
_PROBE = """
import json, os, sys
from runners.cli import main
loaded = {}
for command in json.loads(sys.argv[1]):
    try:
        main([*command, "--help"])
    except SystemExit:
        pass
    loaded[" ".join(command)] = {
        "torch": "torch" in sys.modules,
        "commands": sorted(m for m in sys.modules if m.startswith("runners.commands.")),
    }
print(json.dumps({"loaded": loaded, "omp": os.environ.get("OMP_WAIT_POLICY")}), file=sys.stderr)
"""


def _probe(commands: list[list[str]], env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(commands)],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    return json.loads(done.stderr.strip().splitlines()[-1])


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A parser's subcommands by name (none: empty)."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _summaries(parser: argparse.ArgumentParser) -> dict[str, str]:
    """What `--help` lists: each command's one-line help."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {choice.dest: choice.help for choice in action._choices_actions}


def test_top_level_help_imports_no_command_module_and_no_torch() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    result = _probe([[]], env)
    assert result["loaded"][""] == {"torch": False, "commands": []}
    assert result["omp"] == "PASSIVE"


def test_a_command_imports_its_own_module_only() -> None:
    result = _probe([["status"]], dict(os.environ))
    modules = result["loaded"]["status"]["commands"]
    assert [m for m in modules if not m.startswith("runners.commands.parts")] == [
        "runners.commands.status"
    ]


def test_help_of_the_torch_free_commands_does_not_import_torch() -> None:
    result = _probe([[name] for name in TORCH_FREE], dict(os.environ))
    assert {name: result["loaded"][name]["torch"] for name in TORCH_FREE} == dict.fromkeys(
        TORCH_FREE, False
    )


def test_each_summary_is_the_help_its_module_registers() -> None:
    listed = _summaries(build_parser())
    assert listed == COMMANDS
    for name in COMMANDS:
        assert _summaries(build_parser(name))[name] == COMMANDS[name], name


def test_every_command_and_subcommand_has_its_help(capsys) -> None:
    commands = [[name] for name in COMMANDS]
    for name in COMMANDS:
        nested = _subcommands(_subcommands(build_parser(name))[name])
        commands += [[name, sub] for sub in nested]
    assert ["estimators", "describe"] in commands
    for command in commands:
        with pytest.raises(SystemExit) as stop:
            main([*command, "--help"])
        assert stop.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: ste-ablate {' '.join(command)} ")


def test_an_unknown_command_is_one_line_with_what_it_may_mean(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["trian", "x.yaml"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "ste-ablate: error: argument COMMAND: invalid choice: 'trian' (did you mean train?) "
        "(see --help)\n"
    )
    with pytest.raises(SystemExit):
        main(["zzz"])
    assert "choose from estimators, train, run," in capsys.readouterr().err


def test_no_command_prints_the_table_and_exits_2(capsys) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(summary.split()[0] in out for summary in COMMANDS.values())


def test_an_explicit_wait_policy_is_kept() -> None:
    result = _probe([[]], {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"})
    assert result["omp"] == "ACTIVE"
