"""``medlens inspect``."""

from __future__ import annotations

import numpy as np

from medlens.cli import main


def test_inspect_prints_what_the_reader_sees(tmp_path, capsys, write_dicom_file, markers):
    write_dicom, MARKERS = write_dicom_file, markers
    path = write_dicom(
        tmp_path / "ct.dcm",
        np.arange(64, dtype=np.int16).reshape(8, 8),
        RescaleSlope=2,
        RescaleIntercept=-1024,
        PatientSex="F",
        PatientAge="067Y",
        **MARKERS,
    )
    assert main(["inspect", str(path), "--window", "40", "400"]) == 0
    out = capsys.readouterr().out
    assert "shape:      (8, 8)" in out and "dtype:      float32" in out
    assert "modality_lut slope=2 intercept=-1024" in out
    assert "voi_window center=40 width=400 function=LINEAR_EXACT source=config" in out
    assert "age_band: 60-79" in out and "sex: F" in out and "manufacturer: Acme" in out
    assert "ZZMARKER" not in out


def test_inspect_use_file_window(tmp_path, capsys, write_dicom_file):
    write_dicom = write_dicom_file
    path = write_dicom(
        tmp_path / "w.dcm", np.zeros((4, 4), np.uint16), WindowCenter=100, WindowWidth=50
    )
    assert main(["inspect", str(path), "--use-file-window"]) == 0
    assert "voi_window center=100 width=50 function=LINEAR source=file" in capsys.readouterr().out


def test_inspect_bad_file_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 10)
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("medlens inspect: error:") and "bad.dcm: not a DICOM file" in err
