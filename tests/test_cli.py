"""The CLI dispatcher: help, unknown commands, and one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse

import pytest

from medlens import cli
from medlens._errors import InputDataError


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 1
    assert "usage: medlens" in capsys.readouterr().out


def test_unknown_command_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_medlens_error_is_one_line_exit_2(monkeypatch, capsys):
    def fake_parser():
        parser = argparse.ArgumentParser(prog="medlens")
        sub = parser.add_subparsers(dest="command")

        def run(args):
            raise InputDataError(
                "expected a column 'label'; found: case_id, score", source="preds.csv"
            )

        sub.add_parser("boom").set_defaults(run=run)
        return parser

    monkeypatch.setattr(cli, "build_parser", fake_parser)
    assert cli.main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "medlens boom: error: preds.csv: expected a column 'label'; found: case_id, score"
    )
    assert "Traceback" not in err


def _argparse_error(argv: list[str], capsys) -> str:
    """The last stderr line of an argparse error (exit 2), before any work is done."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["demo", "--n-patients", "0"],
            "medlens demo: error: --n-patients: expected an integer >= 1, got 0",
        ),
        (
            ["demo", "--image-size", "7"],
            "medlens demo: error: --image-size: expected an integer >= 32, got 7",
        ),
        (["demo", "--seed", "x"], "medlens demo: error: --seed: expected an integer >= 0, got x"),
        (
            ["audit", "--config", "c.yaml", "--out", "o", "--max-cases", "0"],
            "medlens audit: error: --max-cases: expected an integer >= 1, got 0",
        ),
        (
            ["explain", "--config", "c.yaml", "--case", "x", "--seed", "-1"],
            "medlens explain: error: --seed: expected an integer >= 0, got -1",
        ),
        (
            ["explain", "--config", "c.yaml", "--case", "x", "--batch-size", "0"],
            "medlens explain: error: --batch-size: expected an integer >= 1 or 'auto', got '0'",
        ),
        (
            ["inspect", "f.dcm", "--window", "2048", "-5"],
            "medlens inspect: error: --window: expected CENTER WIDTH with WIDTH > 0, got 2048 -5",
        ),
        (
            ["validate", "p.csv", "--out", "o", "--replicates", "0"],
            "medlens validate: error: --replicates: expected an integer >= 1, got 0",
        ),
        (
            ["validate", "p.csv", "--out", "o", "--threshold", "1.5"],
            "medlens validate: error: --threshold: expected a number >= 0 and <= 1, got 1.5",
        ),
    ],
)
def test_bad_values_name_the_flag(argv, line, capsys):
    assert _argparse_error(argv, capsys) == line


def test_argument_types():
    from medlens._cli_types import float_between, int_at_least, name_list

    assert int_at_least(0)(" 3 ") == 3
    for bad in ("-1", "1.5", "", "one"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected an integer >= 0"):
            int_at_least(0)(bad)
    with pytest.raises(TypeError):
        int_at_least(1.0)
    unit = float_between(0, 1, low_inclusive=False)
    assert unit("1") == 1.0
    for bad in ("0", "nan", "inf", "2", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected a number > 0 and <= 1"):
            unit(bad)
    names = name_list(lambda: ["gradcam", "saliency"])
    assert names("saliency, gradcam,") == ["saliency", "gradcam"] and names("") == []
    with pytest.raises(argparse.ArgumentTypeError, match=r"'gradcm' \(did you mean 'gradcam'\?\)"):
        names("gradcm")


def test_plan_errors_are_one_line_with_a_position(tmp_path, capsys):
    pred = tmp_path / "p.csv"
    pred.write_text("case_id,label,score\na,1,0.9\nb,0,0.1\n")
    syntax = tmp_path / "syntax.yaml"
    syntax.write_text("version: 1\nanalysis:\n  bootstrap: [1, 2\n  other: 3\n")
    key = tmp_path / "key.yaml"
    key.write_text("version: 1\nanalysis:\n  bootstrap:\n    replicatez: 5\n")
    out = str(tmp_path / "v")
    assert cli.main(["validate", str(pred), "--plan", str(syntax), "--out", out]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"medlens validate: error: {syntax}:4:") and "not valid YAML" in err
    assert cli.main(["validate", str(pred), "--plan", str(key), "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"medlens validate: error: {key}:4:5: invalid analysis plan: "
        "analysis.bootstrap.replicatez: unknown key; check the spelling"
    )


def test_multi_line_errors_become_one_line():
    assert cli.one_line("plan: invalid:\n  a: x\n  b: y\n") == "plan: invalid: a: x; b: y"
    assert cli.one_line("one line") == "one line"


def test_fail_on_verdict_is_documented(capsys):
    for command in ("run", "validate"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert "--fail-on-verdict" in capsys.readouterr().out
