"""Read an analysis plan for a command, with one-line errors that point into the file.

:func:`medlens.validation.load_plan` words a YAML syntax error as PyYAML does (several
lines with carets) and a bad key as a list under "invalid analysis plan:". A command
line wants one line per problem, ``plan.yaml:LINE:COL: message``, like a compiler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._errors import ConfigError

__all__ = ["PLAN_SYNTAX", "load_plan_for_cli", "yaml_position"]

PLAN_SYNTAX = "not valid YAML: {problem}"
_INVALID = "invalid analysis plan:"


def yaml_position(text: str, loc: str) -> tuple[int, int] | None:
    """1-based (line, column) of the value at dotted ``loc`` (``a.b.0.c``) in a YAML text.

    The deepest node of ``loc`` that exists is taken (an unknown key points at its
    own entry); None when the text does not parse or ``loc`` is empty.
    """
    import yaml

    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if node is None or not loc:
        return None
    mark = node.start_mark
    for part in loc.split("."):
        nxt = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    mark, nxt = key.start_mark, value
                    break
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            nxt = node.value[int(part)]
            mark = nxt.start_mark
        if nxt is None:
            break
        node = nxt
    return mark.line + 1, mark.column + 1


def load_plan_for_cli(path: str | Path) -> tuple[Any, str]:
    """:func:`medlens.validation.load_plan` with one-line, positioned error messages.

    Returns
    -------
    plan : AnalysisPlan
    sha256 : str
        Of the file's bytes.

    Raises
    ------
    ConfigError
        ``FILE:LINE:COL: not valid YAML: <problem>`` for a syntax error;
        ``FILE:LINE:COL: invalid analysis plan: <key>: <message>`` (``; `` between
        several) for invalid settings.
    """
    import yaml

    from ..validation import load_plan

    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return load_plan(path)  # its own (one-line) read error
    try:
        yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        raise ConfigError(PLAN_SYNTAX.format(problem=problem), source=where) from None
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise ConfigError(PLAN_SYNTAX.format(problem=problem), source=str(path)) from None
    try:
        return load_plan(path)
    except ConfigError as exc:
        lines = [ln.strip() for ln in exc.message.splitlines()]
        if not lines or lines[0] != _INVALID or len(lines) < 2:
            raise
        parts = []
        for line in lines[1:]:
            loc = line.split(": ", 1)[0]
            pos = yaml_position(text, loc if loc != "(top level)" else "")
            where = f"{path}:{pos[0]}:{pos[1]}" if pos else str(path)
            parts.append(f"{where}: {_INVALID} {line}")
        raise ConfigError("; ".join(parts)) from None
