"""Argument types and the parser class of the ``medlens`` command line.

Cheap arguments are checked by argparse itself, so that a bad value is reported against
the flag the user typed, before any file is read or model loaded::

    p.add_argument("--n-patients", type=int_at_least(1), default=200)
    p.add_argument("--window", nargs=2, type=float, action=WindowAction)

gives ``medlens demo: error: --n-patients: expected an integer >= 1, got 0``
(:class:`MedlensArgumentParser` drops argparse's ``argument`` prefix). Plan and config
files are still checked by their own loaders.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

__all__ = [
    "EXPECTED_FLOAT",
    "EXPECTED_INT",
    "EXPECTED_NAMES",
    "MedlensArgumentParser",
    "WINDOW_WIDTH",
    "WindowAction",
    "float_between",
    "int_at_least",
    "name_list",
]

EXPECTED_INT = "expected an integer >= {low}, got {got}"
EXPECTED_FLOAT = "expected a number {rule}, got {got}"
EXPECTED_NAMES = "unknown name(s) {bad}; available: {available}"
WINDOW_WIDTH = "expected CENTER WIDTH with WIDTH > 0, got {center} {width}"


class MedlensArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose errors name the flag first: ``--flag: message``.

    argparse words a bad value as ``argument --flag: message``; this parser drops the
    word ``argument`` so the line reads like the other medlens errors. Subparsers made
    with ``add_subparsers`` inherit the class.
    """

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument "):
            message = message[len("argument ") :]
        super().error(message)


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``low``.

    Parameters
    ----------
    low : int
        Smallest value accepted.

    Returns
    -------
    callable
        Parses the text; raises :class:`argparse.ArgumentTypeError` with
        :data:`EXPECTED_INT` for anything else (``1.5``, ``x``, ``low - 1``).
    """
    if isinstance(low, bool) or not isinstance(low, int):
        raise TypeError(f"low must be an int, got {low!r}")

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(EXPECTED_INT.format(low=low, got=text)) from None
        if value < low:
            raise argparse.ArgumentTypeError(EXPECTED_INT.format(low=low, got=text))
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def float_between(
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in a range (bounds inclusive by default).

    Returns
    -------
    callable
        Parses the text; raises :class:`argparse.ArgumentTypeError` with
        :data:`EXPECTED_FLOAT` for text that is not a finite number in range.
    """
    parts = []
    if low > -math.inf:
        parts.append(f"{'>=' if low_inclusive else '>'} {low:g}")
    if high < math.inf:
        parts.append(f"{'<=' if high_inclusive else '<'} {high:g}")
    rule = " and ".join(parts) or "(finite)"

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except (TypeError, ValueError):
            value = math.nan
        ok = math.isfinite(value)
        ok = ok and (value >= low if low_inclusive else value > low)
        ok = ok and (value <= high if high_inclusive else value < high)
        if not ok:
            raise argparse.ArgumentTypeError(EXPECTED_FLOAT.format(rule=rule, got=text))
        return value

    parse.__name__ = f"number {rule}"
    return parse


def name_list(available: Sequence[str] | Callable[[], Sequence[str]]) -> Callable[[str], list[str]]:
    """An argparse ``type``: comma-separated names, each one of ``available``.

    Parameters
    ----------
    available : sequence of str, or a callable returning one
        The valid names (a callable is asked only when a value is parsed, so that a
        registry is imported lazily).

    Returns
    -------
    callable
        Parses ``"a,b"`` into ``["a", "b"]`` (blanks dropped, order kept); an unknown
        name raises :class:`argparse.ArgumentTypeError` with :data:`EXPECTED_NAMES` and a
        close match when there is one.
    """

    def parse(text: str) -> list[str]:
        import difflib

        names = [n.strip() for n in text.split(",") if n.strip()]
        valid = list(available() if callable(available) else available)
        bad = [n for n in names if n not in valid]
        if bad:
            hints = [difflib.get_close_matches(n, valid, n=1) for n in bad]
            shown = ", ".join(
                f"{n!r} (did you mean {h[0]!r}?)" if h else repr(n)
                for n, h in zip(bad, hints, strict=True)
            )
            raise argparse.ArgumentTypeError(
                EXPECTED_NAMES.format(bad=shown, available=", ".join(sorted(valid)))
            )
        return names

    parse.__name__ = "comma-separated names"
    return parse


class WindowAction(argparse.Action):
    """``--window CENTER WIDTH`` (``nargs=2, type=float``): a finite center, a width > 0."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        center, width = values
        if not (math.isfinite(center) and math.isfinite(width) and width > 0):
            raise argparse.ArgumentError(
                self, WINDOW_WIDTH.format(center=f"{center:g}", width=f"{width:g}")
            )
        setattr(namespace, self.dest, [center, width])
