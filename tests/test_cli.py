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
