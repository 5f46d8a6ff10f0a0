#!/usr/bin/env bash
# Create (or update) the virtual environment that the README's commands use.
#   bash scripts/bootstrap.sh [VENV_DIR]
# - torch: where a local CPU wheel is on disk (as on the project's build machines) it is
#   installed first so pip does not fetch a multi-GB CUDA build; everywhere else pip installs
#   the normal torch for the platform. Override with TORCH_SPEC, e.g. TORCH_SPEC="torch==2.5.1".
#   A torch already in the venv is kept (pinned while the rest installs).
# - Debian tools used by some tests (dciodvfy, pdftoppm, qpdf) are installed when apt-get is
#   available and we are root; otherwise those tests skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip setuptools wheel

if [ -n "${TORCH_SPEC:-}" ]; then
  "${PIP[@]}" install -q "$TORCH_SPEC"
elif ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  local_wheel=$(ls /opt/wheels/torch-*+cpu-*.whl 2>/dev/null | head -n 1 || true)
  if [ -n "$local_wheel" ]; then
    "${PIP[@]}" install -q "$local_wheel"
  fi
fi

# Keep whatever torch is now installed: without this, a dependency that wants a newer
# torch (e.g. torchvision via the test-only grad-cam) would replace a CPU build with a
# multi-GB CUDA one.
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
if torch_version=$("$VENV/bin/python" -c "import torch; print(torch.__version__)" 2>/dev/null); then
  echo "torch==$torch_version" > "$constraints"
fi
"${PIP[@]}" install -q -c "$constraints" -e ".[dev]"

need=()
command -v dciodvfy >/dev/null || need+=(dicom3tools)
command -v pdftoppm >/dev/null || need+=(poppler-utils)
command -v qpdf >/dev/null || need+=(qpdf)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "note: ${need[*]} not installed; tests that need them will be skipped" >&2
  fi
fi
