#!/usr/bin/env bash
# Build DeskLM for Linux: the one-folder bundle (dist/desklm/) and a .deb (dist/*.deb).
#
#   packaging/build_linux.sh            # from a clean checkout; needs python3 (3.11+), a C++
#                                       # compiler and cmake (llama.cpp is compiled), dpkg-deb
#
# The bundle runs with no Python installed. Set DESKLM_NATIVE=1 to reuse a llama.cpp built for
# this machine's CPU (faster to build, but the result may not run on older CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=build/venv
VERSION=$($PY -c "import tomllib;print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")

$PY -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip wheel
if [ "${DESKLM_NATIVE:-0}" != "1" ]; then
  # A llama.cpp for any x86-64 CPU with AVX2, not only the build machine's (GGML_NATIVE=OFF).
  # --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS and would return a native build.
  CMAKE_ARGS="-DGGML_NATIVE=OFF ${CMAKE_ARGS:-}" "$VENV/bin/pip" install -q --no-cache-dir \
    "llama-cpp-python>=0.3.36,<0.4"
fi
"$VENV/bin/pip" install -q ".[package]"
"$VENV/bin/python" packaging/make_icons.py
"$VENV/bin/pyinstaller" --noconfirm --clean --distpath dist --workpath build/pyinstaller \
  packaging/desklm.spec
DEB_COMPRESSION=${DEB_COMPRESSION:-xz} packaging/linux/make_deb.sh "$VERSION"
du -sh dist/desklm dist/*.deb
