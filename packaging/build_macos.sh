#!/usr/bin/env bash
# Build DeskLM for macOS: dist/DeskLM.app and dist/DeskLM-<version>.dmg.
#   packaging/build_macos.sh        # needs python3 (3.11+), Xcode command line tools, cmake
# llama.cpp is built with Metal (the Apple GPU) and without CPU-specific flags.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=build/venv
VERSION=$($PY -c "import tomllib;print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")
$PY -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip wheel
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_METAL=on ${CMAKE_ARGS:-}" "$VENV/bin/pip" install -q \
  --no-cache-dir "llama-cpp-python>=0.3.36,<0.4"
"$VENV/bin/pip" install -q . "pyinstaller>=6.10"
"$VENV/bin/python" packaging/make_icons.py
"$VENV/bin/pyinstaller" --noconfirm --clean --distpath dist --workpath build/pyinstaller \
  packaging/desklm.spec
hdiutil create -volname DeskLM -srcfolder dist/DeskLM.app -ov -format UDZO \
  "dist/DeskLM-$VERSION.dmg"
du -sh dist/DeskLM.app "dist/DeskLM-$VERSION.dmg"
