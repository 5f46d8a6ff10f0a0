"""The ``medlens`` command.

Each subcommand lives in its own module under :mod:`medlens.commands` and
exposes ``register(subparsers)``; the module's ``run(args)`` returns the exit
code. A :class:`MedlensError` is printed as one clear line (exit code 2), never
as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from . import __version__, commands
from ._cli_types import MedlensArgumentParser
from ._errors import MedlensError


def build_parser() -> argparse.ArgumentParser:
    parser = MedlensArgumentParser(
        prog="medlens",
        description="Explain, audit and validate medical-imaging classifiers; write the evidence.",
    )
    parser.add_argument("--version", action="version", version=f"medlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


def one_line(message: str) -> str:
    """A possibly multi-line error message as one line.

    ``"head:\n  a: x\n  b: y"`` becomes ``"head: a: x; b: y"`` (a list of problems
    under a heading, as config and plan validation word them).
    """
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else message
    return f"{lines[0]} {'; '.join(lines[1:])}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 1
    try:
        return int(args.run(args) or 0)
    except MedlensError as exc:
        print(f"medlens {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medlens {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
