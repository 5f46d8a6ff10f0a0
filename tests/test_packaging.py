"""The package installs as one `medlens` namespace with a console script."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_PACKAGES = [
    "medlens",
    "medlens.io",
    "medlens.model",
    "medlens.testing",
    "medlens.xai",
    "medlens.validation",
    "medlens.reports",
]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize("name", ["medlens.xai", "medlens.validation", "medlens.reports"])
def test_mapped_packages_import_from_their_folders(name):
    mod = importlib.import_module(name)
    folder = name.split(".")[1]
    assert Path(mod.__file__).parent == ROOT / folder


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_public_all_is_sorted_and_resolves(name):
    mod = importlib.import_module(name)
    exported = list(mod.__all__)
    assert exported == sorted(exported), f"{name}.__all__ is not sorted"
    missing = [n for n in exported if not hasattr(mod, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"


def test_every_package_folder_is_listed_in_pyproject():
    cfg = _pyproject()["tool"]["setuptools"]
    listed = set(cfg["packages"])
    dirs = cfg["package-dir"]
    found = set()
    for pkg, folder in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            parts = [p for p in rel.parts]
            if any(p.startswith((".", "_")) or p == "tests" for p in parts):
                continue
            # a folder under medlens/ that is itself remapped is reported under its own entry
            name = ".".join([pkg, *parts])
            if pkg == "medlens" and parts and f"medlens.{parts[0]}" in dirs:
                continue
            found.add(name)
    assert found <= listed, f"packages missing from pyproject: {sorted(found - listed)}"


def test_console_script_help():
    exe = Path(sys.executable).parent / "medlens"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "usage: medlens" in out.stdout


@pytest.mark.slow
def test_wheel_installs_subpackages_only_under_medlens(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("medlens-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top <= {"medlens", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, (
        top
    )
    for sub in ("xai", "validation", "reports"):
        assert f"medlens/{sub}/__init__.py" in names
    assert (
        "medlens/data/demo_model.pt" in names or not (ROOT / "medlens/data/demo_model.pt").exists()
    )
