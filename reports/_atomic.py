"""Atomic file writes: temp file in the target's folder, fsync, then rename.

An interrupted run (exception, Ctrl-C, kill between two statements) never leaves a
half-written report: readers see either the previous complete file or the new complete
file, never a truncated one. The temporary file lives in the same folder as the target so
that :func:`os.replace` is an atomic rename on the same file system.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medlens._errors import param_error

__all__ = ["atomic_output", "atomic_write_bytes", "atomic_write_text"]

TEMP_PREFIX = ".medlens-tmp-"
TEMP_SUFFIX = ".part"


def _current_umask() -> int:
    """Return the process umask without changing it (Linux), or by a set/restore fallback."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Flush a directory entry (the rename) to disk where the platform allows it."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_path(path: object, func: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise param_error("path", func, "a non-empty str or os.PathLike", path)
    target = Path(path)
    if target.is_dir():
        raise param_error("path", func, "a file path, not an existing directory", str(path))
    return target


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` atomically when the block succeeds.

    Write the complete output to the yielded path. On normal exit the file is fsynced,
    given the permissions a newly created file would get (``0o666 & ~umask``, or the mode
    of the file it replaces) and renamed over ``path`` with :func:`os.replace`. On any
    exception (including ``KeyboardInterrupt``) the temporary file is removed, ``path``
    is left exactly as it was, and the exception propagates.

    Parameters
    ----------
    path : str or os.PathLike
        Final file path. Its folder must exist.

    Yields
    ------
    Path
        Temporary file path in the same folder (already created, empty).

    Raises
    ------
    MedlensError
        If ``path`` is not a path or names an existing directory.
    FileNotFoundError
        If the target folder does not exist.
    """
    target = _check_path(path, "atomic_output")
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{target.name}.", suffix=TEMP_SUFFIX, dir=folder
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        try:
            mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_current_umask()
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(folder)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`).

    Parameters
    ----------
    path : str or os.PathLike
        Final file path; its folder must exist.
    data : bytes or bytearray or memoryview
        The complete file content.

    Returns
    -------
    Path
        The written path.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise param_error("data", "atomic_write_bytes", "bytes", type(data).__name__)
    target = _check_path(path, "atomic_write_bytes")
    with atomic_output(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return target


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", newline: str = "\n"
) -> Path:
    """Write ``text`` to ``path`` atomically with a fixed encoding and line ending.

    Line endings are written as ``newline`` on every platform (no platform translation),
    so the same text gives the same bytes everywhere.

    Parameters
    ----------
    path : str or os.PathLike
        Final file path; its folder must exist.
    text : str
        The complete file content.
    encoding : str, default "utf-8"
    newline : str, default "\\n"
        Written for each ``"\\n"`` in ``text``.

    Returns
    -------
    Path
        The written path.
    """
    if not isinstance(text, str):
        raise param_error("text", "atomic_write_text", "a str", type(text).__name__)
    if newline not in ("\n", "\r\n"):
        raise param_error("newline", "atomic_write_text", "'\\n' or '\\r\\n'", newline)
    if newline != "\n":
        text = text.replace("\n", newline)
    return atomic_write_bytes(path, text.encode(encoding))
