"""Atomic writes never leave a half-written or temporary file behind."""

from __future__ import annotations

import os
import stat

import pytest

from medlens import MedlensError
from medlens.reports import atomic_output, atomic_write_bytes, atomic_write_text
from medlens.reports._atomic import TEMP_PREFIX


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_write_bytes_and_text(tmp_path):
    p = atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01abc")
    assert p.read_bytes() == b"\x00\x01abc"
    atomic_write_text(tmp_path / "b.txt", "line1\nline2\n", newline="\r\n")
    assert (tmp_path / "b.txt").read_bytes() == b"line1\r\nline2\r\n"
    assert _leftovers(tmp_path) == []


def test_new_file_gets_umask_permissions_not_mkstemp_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "r.pdf", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.pdf").stat().st_mode) == 0o644


def test_replacing_keeps_mode_of_existing_file(tmp_path):
    target = tmp_path / "r.json"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_exception_inside_leaves_no_target_and_no_temp(tmp_path):
    target = tmp_path / "report.pdf"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half a rep")
            assert tmp.parent == tmp_path
            raise RuntimeError("boom")
    assert not target.exists()
    assert _leftovers(tmp_path) == []


def test_failed_write_keeps_existing_target_intact(tmp_path):
    target = tmp_path / "report.pdf"
    target.write_bytes(b"complete old report")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"complete old report"
    assert _leftovers(tmp_path) == []


def test_write_text_failing_encoding_keeps_old_file(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(target, "caf\u00e9", encoding="ascii")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_bad_input(tmp_path):
    with pytest.raises(MedlensError, match="'data' parameter of atomic_write_bytes must be bytes"):
        atomic_write_bytes(tmp_path / "x", "text")  # type: ignore[arg-type]
    with pytest.raises(MedlensError, match="'text' parameter of atomic_write_text"):
        atomic_write_text(tmp_path / "x", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(MedlensError, match="not an existing directory"):
        atomic_write_bytes(tmp_path, b"x")
    with pytest.raises(MedlensError, match="'path' parameter of atomic_output"):
        with atomic_output(""):
            pass
    with pytest.raises(MedlensError, match="'newline' parameter"):
        atomic_write_text(tmp_path / "x", "a", newline="\r")
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "missing" / "x", b"x")
