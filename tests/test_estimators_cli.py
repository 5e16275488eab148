"""`ste-ablate estimators` end to end: the installed console script in a subprocess (one call
per behaviour that matters), the remaining variants in-process through `runners.cli.main`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runners.cli import main
from ste_variants import list_estimators

STE_ABLATE = Path(sys.executable).with_name("ste-ablate")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(STE_ABLATE), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_table_lists_every_estimator():
    out = run("estimators")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:2] == ["name", "backward"]
    assert "area" in lines[0].split() and "peak" in lines[0].split()
    for name in list_estimators():
        assert any(line.startswith(name + " ") for line in lines), name
    row = next(line for line in lines if line.startswith("sigmoid "))
    assert "beta=1" in row and "Bengio et al. 2013" in row
    assert row.split()[-7:-5] == ["1", "0.25"]  # area, peak
    ede = next(line for line in lines if line.startswith("ede ~"))
    assert "10 → 1" in ede and "0.5 → 5" in ede
    assert f"{len(list_estimators())} estimators" in out.stdout


def test_describe_text():
    out = run("estimators", "describe", "sigmoid(beta=4)")
    assert out.returncode == 0, out.stderr
    assert "backward:   g · β·σ(βx)·(1 − σ(βx))" in out.stdout
    assert "beta (float): default 1, value 4, (0, 1000]" in out.stdout
    assert "arXiv:      1308.3432" in out.stdout
    assert "peak:       1\n" in out.stdout and "area:       1;" in out.stdout


def test_describe_json_in_process(capsys):
    assert main(["estimators", "describe", "ede", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "ede" and info["annealed"] is True and info["area"] == 10.0
    assert info["peak"] == 0.5 and info["peak_end"] == 5.0
    assert main(["estimators", "--json"]) == 0
    every = json.loads(capsys.readouterr().out)
    assert [i["name"] for i in every] == list_estimators()


def test_unknown_name_is_one_line_exit_2():
    out = run("estimators", "describe", "sigmod")
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "ste-ablate: error: unknown estimator 'sigmod'; did you mean sigmoid?"
    ]


def test_bad_spec_in_process(capsys):
    assert main(["estimators", "describe", "sigmoid(beta=-1)"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "must be in (0, 1000]" in err


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as info:
        main(["estimators", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "describe" in out and "entry-point group" in out


def test_markdown_is_the_docs_table(capsys):
    assert main(["estimators", "--markdown"]) == 0
    out = capsys.readouterr().out
    doc = (Path(__file__).resolve().parents[1] / "docs" / "estimators.md").read_text()
    assert out.startswith("| name | backward dL/dx | defaults | area | peak | paper |")
    assert out in doc


def test_long_number_is_one_line_exit_2_without_traceback():
    out = run("estimators", "describe", "sigmoid(beta=" + "9" * 5000 + ")")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "ste-ablate: error: sigmoid: hyperparameter 'beta' must be finite, got inf"
    ]


@pytest.mark.parametrize(
    "spec",
    [
        "sigmoid(beta=" + "9" * 5000 + ")",
        "sigmoid(beta=٤)",
        "x" * 100_000,
        "gumbel(tau=1e-300)",
    ],
    ids=["long-number", "arabic-digit", "long-name", "tiny-tau"],
)
def test_bad_spec_in_train_and_describe_is_one_short_line(capsys, spec):
    for argv in (
        ["train", "--estimator", spec, "--dataset", "mnist-mini", "--epochs", "1"],
        ["estimators", "describe", spec],
    ):
        assert main(argv) == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and len(lines[0]) < 400, lines
        assert lines[0].startswith("ste-ablate: error: ") and "Traceback" not in captured.err
